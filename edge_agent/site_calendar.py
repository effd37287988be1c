"""The site's calendar: local day, local hour and day type (weekday, Saturday, Sunday or holiday).

Consumption follows the clock on the wall, not UTC: an office opens at 08:00 local time in
summer and in winter, and is closed on Sundays and public holidays. Every time-of-day comparison
of the features goes through :class:`SiteCalendar`, so a daylight-saving change moves no profile
and a holiday is compared with Sundays instead of looking like an outage.

Holidays come from the ``holidays`` package for the site's country. Importing it costs about
15 MB of resident memory, more than the gateway can spare, so the agent asks a short-lived child
process for the dates (:func:`holiday_ordinals_in_child`) and keeps them in its data directory
(:func:`holiday_ordinals_cached`), so a restart does not start Python a second time; training and
offline scoring import it directly (:func:`holiday_ordinals`). Standard library only otherwise: this module runs on the gateway.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path
from datetime import date, datetime, timezone
from typing import Iterable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gridsight.errors import GridsightError
from gridsight.files import write_atomically

__all__ = [
    "SiteCalendar",
    "WEEKDAY",
    "SATURDAY",
    "SUNDAY_OR_HOLIDAY",
    "DAY_TYPES",
    "holiday_ordinals",
    "holiday_ordinals_in_child",
    "holiday_ordinals_cached",
    "CalendarError",
]

log = logging.getLogger(__name__)

WEEKDAY, SATURDAY, SUNDAY_OR_HOLIDAY = 0, 1, 2
DAY_TYPES = ("weekday", "saturday", "sunday_or_holiday")


class CalendarError(GridsightError, ValueError):
    """A time zone or holiday country the calendar cannot use; the message says which."""


def holiday_ordinals(country: str, years: Iterable[int]) -> frozenset[int]:
    """Public holidays of ``country`` (ISO 3166 code, optionally ``CC-SUBDIV``) as date ordinals."""
    try:
        import holidays
    except ImportError:
        raise CalendarError("holidays need the 'holidays' package: pip install holidays") from None
    code, _, subdiv = country.strip().partition("-")
    try:
        days = holidays.country_holidays(code.upper(), subdiv=subdiv or None, years=list(years))
    except (NotImplementedError, KeyError) as exc:
        raise CalendarError(f"no public holidays known for country {country!r} ({exc})") from None
    return frozenset(d.toordinal() for d in days)


def holiday_ordinals_in_child(country: str, years: Iterable[int], timeout_s: float = 60.0) -> frozenset[int]:
    """:func:`holiday_ordinals` computed in a child process, so the package never stays in memory."""
    code = (
        "import json, sys; from edge_agent.site_calendar import holiday_ordinals; "
        "print(json.dumps(sorted(holiday_ordinals(sys.argv[1], map(int, sys.argv[2:])))))"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, country, *map(str, years)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CalendarError(f"could not compute holidays for {country!r} ({exc})") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise CalendarError(f"could not compute holidays for {country!r}: {last[:200]}")
    return frozenset(int(d) for d in json.loads(done.stdout))


def _holidays_version() -> str:
    """Size and time of the installed ``holidays`` package's ``__init__.py``: an upgrade changes them.

    (Not ``importlib.metadata``: the agent would keep it in memory for this one question.)
    """
    try:
        spec = find_spec("holidays")
        origin = spec.origin if spec is not None else None
        if not origin:
            return "absent"
        st = os.stat(origin)
    except (ImportError, ValueError, OSError):
        return "absent"
    return f"{st.st_size:x}{st.st_mtime_ns:x}"


def holiday_ordinals_cached(country: str, years: Iterable[int], cache_dir: Path | str) -> frozenset[int]:
    """:func:`holiday_ordinals_in_child`, remembered in ``cache_dir`` across restarts.

    The file's name holds the country, the years and the installed ``holidays`` package's
    identity, so an upgrade of the package (new or moved holidays) computes them again. An unreadable or damaged
    file is computed again and replaced; a directory that cannot be written only costs the cache.
    """
    years = sorted(set(int(y) for y in years))
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in country.strip().upper())
    span = f"{years[0]}-{years[-1]}" if years else "none"
    path = Path(cache_dir) / f"holidays-{safe}-{span}-{_holidays_version()}.json"
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("country") == country and stored.get("years") == years:
            return frozenset(int(d) for d in stored["days"])
        log.warning("holiday cache %s is for another country or years; computing again", path)
    except FileNotFoundError:
        pass
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("holiday cache %s is unreadable (%s); computing again", path, exc)
    days = holiday_ordinals_in_child(country, years)
    try:
        write_atomically(path, json.dumps({"country": country, "years": years, "days": sorted(days)}).encode())
    except OSError as exc:
        log.info("holidays not cached in %s (%s)", cache_dir, exc)
    return days


class SiteCalendar:
    """Local day (date ordinal), local hour, seconds into the hour and day type of a UTC time."""

    def __init__(self, time_zone: str = "UTC", holidays: Iterable[int] = ()) -> None:
        try:
            self.zone = ZoneInfo(time_zone or "UTC")
        except (ZoneInfoNotFoundError, ValueError):
            raise CalendarError(
                f"unknown time zone {time_zone!r} (expected an IANA name such as Europe/Paris or America/New_York)"
            ) from None
        self.time_zone = time_zone or "UTC"
        self.holidays = frozenset(int(d) for d in holidays)
        self._last: tuple[int, tuple[int, int, int, int]] | None = None

    def locate(self, ts: float) -> tuple[int, int, int, int]:
        """(local day ordinal, local hour 0-23, seconds into the local hour, day type) of ``ts``."""
        key = int(ts // 60)  # every meter of an interval asks about the same minute
        if self._last is not None and self._last[0] == key:
            day, hour, second, kind = self._last[1]
            return day, hour, second + int(ts) % 60, kind
        local = datetime.fromtimestamp(key * 60, timezone.utc).astimezone(self.zone)
        day = local.toordinal()
        kind = self.day_type(day, local.weekday())
        found = (day, local.hour, local.minute * 60, kind)
        self._last = (key, found)
        return day, local.hour, local.minute * 60 + int(ts) % 60, kind

    def day_type(self, day: int, weekday: int | None = None) -> int:
        if weekday is None:
            weekday = date.fromordinal(day).weekday()
        if weekday == 6 or day in self.holidays:
            return SUNDAY_OR_HOLIDAY
        return SATURDAY if weekday == 5 else WEEKDAY
