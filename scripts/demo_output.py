"""Run `gridsight demo` and paste what it printed into docs/simulator.md, so the docs never show
a stale run. The block sits between `<!-- demo-output -->` and `<!-- /demo-output -->`.

    python scripts/demo_output.py              # the default demo (seed 7), as `make demo` runs it
    python scripts/demo_output.py --seed 3     # any `gridsight demo` option is passed through
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "simulator.md"
_BLOCK = re.compile(r"(<!-- demo-output -->\n```\n)(.*?)(```\n<!-- /demo-output -->)", re.S)


def replace_block(text: str, output: str) -> str:
    """``text`` with the demo block's content replaced by ``output``; ValueError when there is no block."""
    if not _BLOCK.search(text):
        raise ValueError(f"{DOC.name} has no <!-- demo-output --> block")
    body = output if output.endswith("\n") else output + "\n"
    return _BLOCK.sub(lambda m: m.group(1) + body + m.group(3), text, count=1)


def main(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv:
        print(__doc__)
        return 0
    cmd = [sys.executable, "-m", "gridsight", "demo", *argv]
    print("running: " + " ".join(cmd[2:]), file=sys.stderr)
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)   # progress goes to the terminal
    if done.returncode != 0:
        print(f"demo_output: gridsight demo exited {done.returncode}; {DOC} left unchanged", file=sys.stderr)
        return done.returncode
    # the docs show paths relative to the checkout, as `make demo` run from it prints them
    output = done.stdout.lstrip("\n").replace(str(DOC.parent.parent) + "/", "")
    DOC.write_text(replace_block(DOC.read_text(), output))
    print(f"demo_output: {DOC} updated ({len(done.stdout.splitlines())} lines)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
