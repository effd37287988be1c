"""The one logging setup of every role: one JSON object per line (journald keeps it as is).

JSON lines stay greppable on a gateway and parse without guessing in a log shipper.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time

__all__ = ["json_line", "setup_logging"]


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def json_line(level: str, msg: str, logger: str = "gridsight", **fields) -> str:
    """One log line in the same JSON shape, for what is written before or without a logger."""
    now = time.time()
    return json.dumps(
        {
            "ts": round(now, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "level": level,
            "logger": logger,
            "msg": msg,
            **fields,
        },
        default=str,
    )


def setup_logging(level: str = "info", stream=None, *, everything: bool = False) -> None:
    """Route the ``gridsight`` loggers to ``stream`` (stdout) as JSON lines.

    ``everything`` routes every library's loggers too (the collector's database driver,
    migrations, web server), through the root logger, unless the host process (a test runner,
    an application embedding the collector) has already configured it, as ``logging.basicConfig``
    would leave it.

    Without ``everything`` (the agent, a process of its own) every line the process logs is
    JSON as well: the ``gridsight`` loggers at ``level``; third-party libraries (pymodbus, paho)
    through the root logger at ``level`` but never chattier than warning unless ``level`` is
    debug; Python warnings; uncaught exceptions in threads. Without the root handler a
    library's warning would reach stderr as plain text through logging's last-resort handler."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(_JsonLines())
    if everything:
        top = logging.getLogger()
        if not top.handlers:
            top.addHandler(handler)
            top.setLevel(level.upper())
        return
    ours = logging.getLogger("gridsight")
    ours.handlers[:] = [handler]
    ours.setLevel(level.upper())
    ours.propagate = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(
        logging.DEBUG if level.lower() == "debug" else max(logging.WARNING, logging.getLevelName(level.upper()))
    )
    logging.captureWarnings(True)

    def thread_excepthook(args) -> None:
        if args.exc_type is SystemExit:
            return
        logging.getLogger("gridsight.thread").error(
            "uncaught exception in thread %s",
            getattr(args.thread, "name", "?"),
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        )

    threading.excepthook = thread_excepthook
