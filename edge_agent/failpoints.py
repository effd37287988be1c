"""Failpoints: the agent kills itself at a named step, for crash tests with a real process.

``GRIDSIGHT_FAILPOINT="<step>:<n>"`` makes the n-th time the process reaches ``<step>`` its last:
it sends itself SIGKILL there, as a power cut would stop it (no cleanup, no flush, no log).
Unset, which it always is outside crash tests, a step costs one string comparison.

Steps, in the order one poll cycle reaches them:

* ``agent.polled``: the readers have handed this cycle's readings over; nothing is stored yet.
* ``agent.stored``: the outbox transaction holding them has committed; no reader cursor has moved.
* ``reader.cursor_written``: the simulator reader's new cursor is written and fsynced to its
  temporary file, not yet renamed over the committed one.
* ``agent.committed``: the readers' cursors have moved past what is stored.
"""

from __future__ import annotations

import os
import signal

__all__ = ["hit"]

_STEP, _, _COUNT = os.environ.get("GRIDSIGHT_FAILPOINT", "").partition(":")
_left = int(_COUNT) if _COUNT.isdigit() else 1


def hit(step: str) -> None:
    """Mark that the process reached ``step``; SIGKILL it if this is the armed failpoint's n-th time."""
    global _left
    if step != _STEP:
        return
    _left -= 1
    if _left <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
