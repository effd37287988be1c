"""TabPy endpoints behind Tableau's ``SCRIPT_REAL`` calculations, and their deployment.

Tableau sends every argument as a list (one value per row of the partition; a parameter is
repeated per row) and expects one number back per row. Each endpoint here has that shape and
calls the code gridsight already trusts, so Tableau and the rest of the system never disagree:

* ``anomaly_score`` scores a meter's interval series with a given ONNX model through the
  agent's own feature builder and scorer (``edge_agent.features`` / ``edge_agent.scorer``);
* ``load_forecast`` forecasts the rows of a series that have no measurement yet with the
  collector's forecaster (Prophet, or its fallback on short histories);
* ``policy_sandbox`` applies the sandbox sliders with ``collector.policy``;
* ``carbon_co2_kg`` turns kWh and g CO2/kWh into kg CO2 with ``collector.carbon.co2_kg``, the
  factor of the API, the CLI and the ``tableau.carbon_by_region`` view.

A Tableau calculation calls them with the script :func:`tableau_script` writes, for example::

    SCRIPT_REAL("r = tabpy.query('policy_sandbox', _arg1, _arg2, _arg3, _arg4, _arg5, _arg6, _arg7)
    if 'response' not in r:
        raise RuntimeError(...the endpoint's error...)
    return r['response']", ATTR([hour_of_day]), SUM([avg_kwh]), SUM([meters]), [tou_shift_pct], ...)

An endpoint that refuses its input (a slider out of range) makes TabPy's ``/query`` answer 500
with the reason; TabPy's own ``['response']`` idiom would turn that into a ``KeyError`` that
``/evaluate`` reports as a 404 "endpoint did not respond". The script above raises the reason
instead, so ``/evaluate`` answers with TabPy's error response carrying the message, and
Tableau shows it.

The TabPy server must run in an environment with gridsight installed (``pip install
'gridsight[tableau]'``): deployed endpoints import it there.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from gridsight.errors import GridsightError

__all__ = ["TabPyError", "Endpoint", "ENDPOINTS", "anomaly_score_endpoint", "load_forecast", "policy_sandbox",
           "carbon_co2_kg", "tableau_script", "deploy"]


class TabPyError(GridsightError, RuntimeError):
    """Deployment failed: server unreachable, credentials refused, or a bad model file."""

    exit_code = 1


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    description: str
    needs_model: bool = False


ENDPOINTS: dict[str, Endpoint] = {e.name: e for e in (
    Endpoint("anomaly_score", "Isolation Forest score per interval of one meter's series (lower = more "
                              "anomalous): _arg1 interval start, _arg2 kWh, optional _arg3 meter id", needs_model=True),
    Endpoint("load_forecast", "Forecast kWh for the rows without a measurement: _arg1 period start, "
                              "_arg2 kWh (null in the future); measured rows are returned as they are"),
    Endpoint("policy_sandbox", "Hourly load after the sandbox policies: _arg1 hour of day, _arg2 kWh, "
                               "_arg3 meters, _arg4..7 time-of-use shift, demand-response cap, efficiency and EV adoption in percent"),
    Endpoint("carbon_co2_kg", "kg CO2 per row: _arg1 kWh, _arg2 carbon intensity in g CO2/kWh (the region's own, "
                              "else the system's, as tableau.regional_hourly gives it)"),
)}


def tableau_script(endpoint: str, arguments: int) -> str:
    """The Python a Tableau ``SCRIPT_REAL`` sends to call ``endpoint`` with ``_arg1.._argN``.

    When the endpoint fails, it raises the endpoint's own message, which ``/evaluate`` returns
    as TabPy's error response (instead of the 404 of ``tabpy.query(...)['response']``).
    """
    names = ", ".join(f"_arg{i}" for i in range(1, arguments + 1))
    return (f"r = tabpy.query('{endpoint}', {names})\n"
            "if 'response' not in r:\n"
            "    i = r.get('info')\n"
            "    raise RuntimeError(str((i.get('error') if isinstance(i, dict) else i) or r.get('message')))\n"
            "return r['response']")


def _epoch(value: Any) -> float:
    """A time as Tableau sends it (ISO text, with or without zone; or a number) in Unix seconds, UTC."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip().replace("Z", "+00:00")
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"cannot read {value!r} as a time") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return parsed.timestamp()
    raise ValueError(f"cannot read {value!r} as a time")


def _number(value: Any) -> float | None:
    if value is None:
        return None
    out = float(value)
    return None if math.isnan(out) else out


# ---------------------------------------------------------------------------- anomaly scoring

_SCORERS: dict[str, Any] = {}


def _scorer(model: bytes):
    from edge_agent.scorer import Scorer

    key = hashlib.sha256(model).hexdigest()
    if key not in _SCORERS:
        _SCORERS[key] = Scorer.from_bytes(model, source=f"model {key[:12]}")
    return _SCORERS[key]


def score_series(model: bytes, interval_start: Sequence[Any], kwh: Sequence[Any],
                 meter_id: Sequence[Any] | None = None) -> list[float]:
    """Scores row for row: the series goes through the agent's feature builder in time order."""
    from edge_agent.features import IntervalStats, batch_features

    scorer = _scorer(model)
    if len(interval_start) != len(kwh) or (meter_id is not None and len(meter_id) != len(kwh)):
        raise ValueError("interval start, kWh and meter id need one value per row")
    stats = []
    for i, (start, value) in enumerate(zip(interval_start, kwh)):
        energy = _number(value)
        meter = str(meter_id[i]) if meter_id is not None else "series"
        stats.append(IntervalStats(meter, _epoch(start), scorer.interval_s, 0.0 if energy is None else energy,
                                   1, None, None, None, None))
    X, ordered = batch_features(stats, scorer.feature_names, scorer.interval_s)
    scores, _ = scorer.score(X)
    by_key = {(s.meter_id, s.interval_start): float(v) for s, v in zip(ordered, scores)}
    return [by_key[(s.meter_id, s.interval_start)] for s in stats]


def anomaly_score_endpoint(model: bytes) -> Callable[..., list[float]]:
    """The ``anomaly_score`` endpoint with ``model`` (ONNX bytes) inside it, so the server needs no file."""
    _scorer(model)  # refuse a bad model here, not on the first Tableau query

    def anomaly_score(interval_start, kwh, meter_id=None):
        """Isolation Forest score per row (lower = more anomalous)."""
        return score_series(model, interval_start, kwh, meter_id)

    return anomaly_score


# ---------------------------------------------------------------------------- forecast


def load_forecast(period_start: Sequence[Any], kwh: Sequence[Any]) -> list[float | None]:
    """Measured rows unchanged; rows after the last measurement get the forecast of their step."""
    import pandas as pd

    from collector.forecasting import forecast_load

    if len(period_start) != len(kwh):
        raise ValueError("period start and kWh need one value per row")
    times = [_epoch(t) for t in period_start]
    values = [_number(v) for v in kwh]
    measured = sorted((t, v) for t, v in zip(times, values) if v is not None)
    if not measured:
        raise ValueError("no measured rows to forecast from")
    last = measured[-1][0]
    future = [t for t, v in zip(times, values) if v is None and t > last]
    if not future:
        return [v for v in values]
    index = pd.to_datetime([t for t, _ in measured], unit="s", utc=True)
    history = pd.Series([v for _, v in measured], index=index)
    step = float(pd.Series(index).diff().dt.total_seconds().mode().iloc[0])
    horizon = int(round((max(future) - last) / step))
    frame = forecast_load(history, horizon).frame
    yhat = {int(ts.timestamp()): float(v) for ts, v in frame["yhat"].items()}
    return [v if v is not None else yhat.get(int(t)) for t, v in zip(times, values)]


# ---------------------------------------------------------------------------- policy sandbox


def policy_sandbox(hour_of_day, kwh, meters, tou_shift_pct, dr_cap_pct, efficiency_pct, ev_adoption_pct):
    """One region's average day after the policies, row for row, in the sliders' percent units."""
    from collector.policy import day_profile_after

    return day_profile_after(hour_of_day, kwh, meters, tou_shift_pct=tou_shift_pct, dr_cap_pct=dr_cap_pct,
                             efficiency_pct=efficiency_pct, ev_adoption_pct=ev_adoption_pct)


# ---------------------------------------------------------------------------- carbon


def carbon_co2_kg(kwh: Sequence[Any], intensity_g_per_kwh: Sequence[Any]) -> list[float | None]:
    """kg CO2 row for row (None where either is missing), by the factor every gridsight report uses."""
    from collector.carbon import co2_kg

    if len(kwh) != len(intensity_g_per_kwh):
        raise ValueError("kWh and intensity need one value per row")
    out: list[float | None] = []
    for energy, intensity in zip(kwh, intensity_g_per_kwh):
        e, g = _number(energy), _number(intensity)
        out.append(None if e is None or g is None else float(co2_kg(e, g)))
    return out


# ---------------------------------------------------------------------------- deployment


def deploy(tabpy_url: str, names: Sequence[str], model_path: Path | None = None, username: str | None = None,
           password: str | None = None, progress: Callable[[str], None] | None = None) -> list[str]:
    """Deploy ``names`` to the TabPy server at ``tabpy_url`` (replacing older versions).

    TabPy's client writes the pickled endpoint into the server's state folder, so this runs on
    the TabPy host (or one sharing its file system), as TabPy's own deployment tools do.
    """
    from tabpy.tabpy_tools.client import Client

    # TabPy's client logs each failed request as well as raising it; the raised error is reported once, below
    logging.getLogger("tabpy").setLevel(logging.CRITICAL)
    say = progress or (lambda msg: None)
    funcs: dict[str, Callable] = {}
    for name in names:
        endpoint = ENDPOINTS[name]
        if endpoint.needs_model:
            if model_path is None:
                raise TabPyError(f"{name}: needs --model, the ONNX anomaly model to score with")
            try:
                data = Path(model_path).read_bytes()
                funcs[name] = anomaly_score_endpoint(data)
            except OSError as exc:
                raise TabPyError(f"--model {model_path}: {exc.strerror}") from None
            except Exception as exc:  # ModelError and onnxruntime's own errors: all say the file is unusable
                raise TabPyError(f"--model {model_path}: {exc}") from None
        elif name == "load_forecast":
            funcs[name] = load_forecast
        elif name == "carbon_co2_kg":
            funcs[name] = carbon_co2_kg
        else:
            funcs[name] = policy_sandbox
    try:
        client = Client(tabpy_url.rstrip("/") + "/")
        if username is not None:
            client.set_credentials(username, password or "")
        deployed_names = set(client.get_endpoints())
    except Exception as exc:  # requests' connection errors and TabPy's RuntimeError on 401
        raise TabPyError(f"TabPy at {tabpy_url}: {_reason(exc)}") from None
    for name, func in funcs.items():
        say(f"tabpy-deploy: {name} -> {tabpy_url}")
        try:
            client.deploy(name, func, ENDPOINTS[name].description, override=name in deployed_names)
        except Exception as exc:
            raise TabPyError(f"TabPy at {tabpy_url}: deploying {name}: {_reason(exc)}") from None
    return list(funcs)


def _reason(exc: Exception) -> str:
    import requests

    if isinstance(exc, requests.exceptions.ConnectionError):
        return "cannot connect (is TabPy running there?)"
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
