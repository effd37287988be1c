"""The one logging setup of every role: one JSON object per line (journald keeps it as is).

JSON lines stay greppable on a gateway and parse without guessing in a log shipper.
"""

from __future__ import annotations

import json
import logging
import sys
import time

__all__ = ["setup_logging"]


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": round(record.created, 3),
                 "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
                 "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(level: str = "info", stream=None, *, everything: bool = False) -> None:
    """Route the ``gridsight`` loggers to ``stream`` (stdout) as JSON lines.

    ``everything`` routes every library's loggers too (the collector's database driver,
    migrations, web server), through the root logger, unless the host process (a test runner,
    an application embedding the collector) has already configured it, as ``logging.basicConfig``
    would leave it."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(_JsonLines())
    if everything:
        top = logging.getLogger()
        if not top.handlers:
            top.addHandler(handler)
            top.setLevel(level.upper())
        return
    root = logging.getLogger("gridsight")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
