"""One error tree for every role.

Each error a person can act on derives from :class:`GridsightError` and carries the exit code
a CLI returns for it; :func:`gridsight.cli.run_cli` prints any of them as one line. Standard
library only: the gateway imports it.
"""

from __future__ import annotations

__all__ = ["FetchError", "GridsightError", "ProvisionError"]


class GridsightError(Exception):
    """An error a person can act on. ``exit_code`` is what a CLI returns for it (2: usage or input)."""

    exit_code: int = 2


class ProvisionError(GridsightError):
    """A provisioning or enrollment step that cannot proceed; the message says what to do."""


class FetchError(GridsightError, RuntimeError):
    """A download that gave nothing usable (a model, its signature, a provider's JSON).

    ``url`` is what was asked for (secrets removed) and ``status`` the HTTP status, when known."""

    exit_code = 1

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
