"""Scores interval features with an exported Isolation Forest (one ONNX file).

The model file is self-describing: its ``metadata_props`` carry the feature names and order,
the interval length, the decision threshold, name/version and a self-test vector. Loading a
file runs the self-test, so a model that loads is a model that scores as it did when it was
exported; anything else is a :class:`ModelError` saying why, and the caller keeps the model
it had. numpy, and onnxruntime when installed: this module runs on the gateway.

Two evaluators compute the same scores from the same signed file: onnxruntime, and a numpy
evaluator of the file's tree ensemble (:mod:`edge_agent.onnx_trees`) for gateways without
onnxruntime (no armv7l wheels, or ~20 MB less memory). ``GRIDSIGHT_SCORER`` chooses: ``auto``
(default: onnxruntime when it can be imported, else numpy), ``numpy`` or ``onnxruntime``.
``Scorer.kind`` says which one runs.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from edge_agent.features import FEATURE_DESCRIPTIONS
from gridsight.errors import GridsightError

__all__ = [
    "ModelError",
    "Scorer",
    "scorer_kind",
    "SCORER_KINDS",
    "select_scorer",
    "describe_features",
    "META_PREFIX",
    "MAX_MODEL_BYTES",
    "SELFTEST_TOLERANCE",
]

META_PREFIX = "gridsight."
# A compact 100-tree model is a few hundred kB; anything near this is not one of ours.
MAX_MODEL_BYTES = 64 * 1024 * 1024
SELFTEST_TOLERANCE = 1e-5
_REQUIRED = ("feature_names", "threshold", "interval_s", "version", "name", "selftest")


class ModelError(GridsightError):
    """A model file that cannot be used: unreadable, tampered, incompatible. The message says why."""


SCORER_KINDS = ("auto", "numpy", "onnxruntime")


def scorer_kind(env: dict[str, str] | None = None) -> str:
    """The evaluator to use: ``GRIDSIGHT_SCORER`` (auto | numpy | onnxruntime); auto picks onnxruntime
    when it can be imported, else numpy."""
    wanted = (os.environ if env is None else env).get("GRIDSIGHT_SCORER", "auto").strip().lower() or "auto"
    if wanted not in SCORER_KINDS:
        raise ModelError(f"GRIDSIGHT_SCORER={wanted!r}: expected auto, numpy or onnxruntime")
    if wanted != "auto":
        return wanted
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "numpy"
    return "onnxruntime"


class _OnnxRuntime:
    """onnxruntime's session behind the evaluator interface: ``run(X)`` and ``n_features``."""

    kind = "onnxruntime"

    def __init__(self, session: Any, source: str) -> None:
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise ModelError(f"{source}: expected one input and a score output")
        shape = inputs[0].shape
        if len(shape) != 2:
            raise ModelError(f"{source}: input shape {shape} is not (rows, features)")
        self.n_features = shape[1] if isinstance(shape[1], int) else None
        self._session = session
        self._input = inputs[0].name

    def run(self, X: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: X})[0]


class _NumpyTrees:
    """:class:`edge_agent.onnx_trees.TreeEnsembleModel` behind the same interface."""

    kind = "numpy"

    def __init__(self, model: Any) -> None:
        self._model = model
        self.n_features = model.n_features

    def run(self, X: np.ndarray) -> np.ndarray:
        return self._model.run(X)


def _parse_metadata(props: dict[str, str], source: str) -> dict[str, Any]:
    meta = {k[len(META_PREFIX) :]: v for k, v in props.items() if k.startswith(META_PREFIX)}
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise ModelError(f"{source}: not a gridsight model (metadata {META_PREFIX}{missing[0]} missing)")
    try:
        names = json.loads(meta["feature_names"])
        threshold = float(meta["threshold"])
        interval_s = int(meta["interval_s"])
        selftest = json.loads(meta["selftest"])
    except (ValueError, TypeError) as exc:
        raise ModelError(f"{source}: unreadable gridsight metadata ({exc})") from None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ModelError(f"{source}: {META_PREFIX}feature_names must be a non-empty list of names")
    unknown = [n for n in names if n not in FEATURE_DESCRIPTIONS]
    if unknown:
        raise ModelError(f"{source}: model needs feature {unknown[0]!r}, which this agent cannot compute")
    if not math.isfinite(threshold) or not 1 <= interval_s <= 86_400:
        raise ModelError(f"{source}: threshold or interval_s out of range")
    if not isinstance(selftest, dict) or "X" not in selftest or "scores" not in selftest:
        raise ModelError(f"{source}: {META_PREFIX}selftest must hold X and scores")
    meta.update(
        feature_names=tuple(names),
        threshold=threshold,
        interval_s=interval_s,  # type: ignore[call-overload]
        selftest=selftest,
    )
    return meta


class Scorer:
    """A loaded, self-tested model: ``score(X)`` gives decision scores and anomaly labels."""

    def __init__(self, evaluator: Any, metadata: dict[str, Any], source: str) -> None:
        self._evaluator = evaluator
        self.kind: str = evaluator.kind  # "onnxruntime" or "numpy"
        self.metadata = metadata
        self.source = source
        self.name: str = metadata["name"]
        self.version: str = metadata["version"]
        self.feature_names: tuple[str, ...] = metadata["feature_names"]
        self.threshold: float = metadata["threshold"]
        self.interval_s: int = metadata["interval_s"]
        self.meter_class: str | None = metadata.get("meter_class") or None
        # The training site's calendar; a gateway's own configuration takes precedence.
        self.time_zone: str = metadata.get("time_zone") or "UTC"
        self.holiday_country: str | None = metadata.get("holiday_country") or None

    @classmethod
    def load(cls, path: str | Path, kind: str | None = None) -> "Scorer":
        """Load a model file, check its metadata and run its self-test; :class:`ModelError` if unusable."""
        p = Path(path)
        try:
            size = p.stat().st_size
            if size > MAX_MODEL_BYTES:
                raise ModelError(f"{p}: {size} bytes is larger than any gridsight model ({MAX_MODEL_BYTES})")
            data = p.read_bytes()
        except OSError as exc:
            raise ModelError(f"{p}: cannot read model file ({exc.strerror or exc})") from None
        return cls.from_bytes(data, str(p), kind)

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>", kind: str | None = None) -> "Scorer":
        """Load a model from its bytes (used by over-the-air updates) with the evaluator ``kind``
        (default: :func:`scorer_kind`), check its metadata and run its self-test."""
        if len(data) > MAX_MODEL_BYTES:
            raise ModelError(f"{source}: larger than any gridsight model")
        kind = kind or scorer_kind()
        if kind == "numpy":
            from edge_agent.onnx_trees import TreeEnsembleModel, UnsupportedModel

            try:
                model = TreeEnsembleModel.parse(data)
            except UnsupportedModel as exc:
                raise ModelError(
                    f"{source}: the numpy scorer cannot evaluate this file ({exc}); "
                    "install onnxruntime or use a model from 'gridsight model train'"
                ) from None
            scorer = cls(_NumpyTrees(model), _parse_metadata(model.metadata, source), source)
            scorer._check_io()
            scorer._self_test()
            return scorer
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelError(
                "GRIDSIGHT_SCORER=onnxruntime but onnxruntime is not installed: "
                "pip install 'gridsight[edge-onnx]' or use GRIDSIGHT_SCORER=numpy"
            ) from None
        options = ort.SessionOptions()
        # A gateway scores a handful of rows per interval: one thread, no thread-pool spin-up.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        # No memory arena: it would keep the buffers of the largest batch ever scored for the
        # session's lifetime; one scoring per interval can afford plain malloc and free.
        options.enable_cpu_mem_arena = False
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors for any broken file
            raise ModelError(f"{source}: not a loadable ONNX model ({str(exc).splitlines()[0][:160]})") from None
        # onnxruntime's Python wrapper keeps the file's bytes for the lifetime of the session, only
        # to rebuild it on another execution provider; we have one provider, and the parsed graph
        # is all the session needs. Without this the model would be in memory twice.
        session.disable_fallback()
        if getattr(session, "_model_bytes", None) is not None:
            session._model_bytes = None
        props = dict(session.get_modelmeta().custom_metadata_map)
        scorer = cls(_OnnxRuntime(session, source), _parse_metadata(props, source), source)
        scorer._check_io()
        scorer._self_test()
        return scorer

    def _check_io(self) -> None:
        width = self._evaluator.n_features
        if width is not None and width != len(self.feature_names):
            raise ModelError(
                f"{self.source}: input width {width} does not match {len(self.feature_names)} feature names"
            )

    def _self_test(self) -> None:
        X = np.asarray(self.metadata["selftest"]["X"], dtype=np.float32)
        expected = np.asarray(self.metadata["selftest"]["scores"], dtype=np.float64)
        if X.ndim != 2 or X.shape[0] == 0 or X.shape[0] != expected.shape[0]:
            raise ModelError(f"{self.source}: self-test vector is malformed")
        try:
            got, _ = self.score(X)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{self.source}: self-test could not run ({exc})") from None
        worst = float(np.max(np.abs(got - expected)))
        if not worst <= SELFTEST_TOLERANCE:
            raise ModelError(
                f"{self.source}: self-test failed (scores differ by {worst:.3g} from those recorded at export)"
            )

    def score(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores (float64, sklearn ``decision_function`` convention: lower is more anomalous) and
        labels (``scores < threshold``) of feature rows ``X`` (n, n_features)."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim == 1:
            X = X.reshape(1, -1)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise ValueError(f"expected rows of {len(self.feature_names)} features, got shape {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError("feature rows must be finite")
        if X.shape[0] == 0:
            return np.empty(0, dtype=np.float64), np.empty(0, dtype=bool)
        out = self._evaluator.run(X)
        scores = np.asarray(out, dtype=np.float64).reshape(-1)
        return scores, scores < self.threshold

    def explain(self, features_row: np.ndarray) -> str | None:
        """A short human reason for a flag: the feature furthest from its neutral value."""
        row = np.asarray(features_row, dtype=np.float64).reshape(-1)
        if row.shape[0] != len(self.feature_names):
            return None
        named = dict(zip(self.feature_names, row.tolist()))
        return describe_features(named)


def select_scorer(scorers: Iterable[Scorer], meter_class: str | None) -> Scorer | None:
    """The model for a meter of ``meter_class``: the one trained for that class, else the general one.

    Per-class models carry ``gridsight.meter_class`` (residential, commercial, industrial, pv…);
    a model without it serves every class. None when neither exists.
    """
    general = None
    wanted = meter_class.lower() if meter_class else None
    for scorer in scorers:
        if scorer.meter_class is None:
            general = general or scorer
        elif wanted is not None and scorer.meter_class == wanted:
            return scorer
    return general


# (feature, neutral value, weight) — weight puts hours and ratios on a comparable footing.
_EXPLAIN = (
    ("zero_hours", 0.0, 1.0 / 2.0),
    ("flatline_hours", 0.0, 1.0 / 3.0),
    ("level_vs_hour_of_day", 0.0, 1.0),
    ("level_vs_hour_of_week", 0.0, 0.9),
    ("level_vs_recent", 0.0, 0.8),
    ("level_3h_vs_profile", 0.0, 1.3),
    ("level_6h_vs_profile", 0.0, 1.4),
    ("variability_vs_typical", 0.0, 0.4),
    ("excess_vs_level", 0.0, 0.5),
    ("excess_3h_vs_level", 0.0, 0.8),
    ("day_vs_typical_day", 0.0, 1.2),
    ("day_vs_typical_month", 0.0, 1.2),
    ("step_vs_previous", 0.0, 0.6),
    ("z_vs_hour_of_day", 0.0, 0.15),
    ("spike_ratio", 1.0, 0.3),
    ("night_share", 0.25, 3.0),
    ("zero_hours_vs_days", 0.0, 1.0 / 2.0),
    ("flatline_hours_vs_days", 0.0, 1.0 / 3.0),
    ("level_3h_vs_days", 0.0, 1.3),
    ("level_6h_vs_days", 0.0, 1.4),
    ("day_vs_days", 0.0, 1.2),
    ("peak_vs_days", 0.0, 1.0),
    ("level_vs_daytype", 0.0, 1.0),
    ("level_3h_vs_daytype", 0.0, 1.2),
    ("level_24h_vs_daytype", 0.0, 1.3),
    ("level_72h_vs_daytype", 0.0, 1.4),
    ("shift_24h_vs_daytype", 0.0, 1.5),
    ("shift_72h_vs_daytype", 0.0, 1.6),
    ("shift_168h_vs_daytype", 0.0, 1.7),
    ("z_vs_daytype", 0.0, 0.5),
    ("z_3h_vs_daytype", 0.0, 0.55),
    ("z_24h_vs_daytype", 0.0, 0.6),
    ("dev_vs_daytype", 0.0, 0.5),
    ("dev_3h_vs_recent", 0.0, 0.55),
    ("dev_24h_vs_daytype", 0.0, 0.6),
    ("dev_72h_vs_daytype", 0.0, 0.65),
    ("near_zero_hours_vs_habit", 0.0, 1.0 / 2.0),
    ("constant_hours_vs_habit", 0.0, 1.0 / 3.0),
    ("voltage_vs_recent", 0.0, 4.0),
    ("voltage_min_pu", 1.0, 3.0),
    ("voltage_mean_pu", 1.0, 3.0),
    ("export_share", 0.0, 0.3),
)
_PHRASES = {
    "level_vs_hour_of_day": "hour-of-day profile",
    "level_vs_hour_of_week": "hour-of-week profile",
    "level_vs_recent": "recent level",
    "level_3h_vs_profile": "profile over the last 3 h",
    "level_6h_vs_profile": "profile over the last 6 h",
    "day_vs_typical_day": "typical day (24 h energy)",
    "day_vs_typical_month": "last month's typical day (24 h energy)",
    "step_vs_previous": "previous interval",
    "level_3h_vs_days": "the same 3 h on previous days",
    "level_6h_vs_days": "the same 6 h on previous days",
    "day_vs_days": "the same 24 h on previous days",
    "peak_vs_days": "the largest interval of previous days",
    "level_vs_daytype": "the same hour on the same day type",
    "level_3h_vs_daytype": "the same 3 h on their day types",
    "level_24h_vs_daytype": "the same 24 h on their day types",
    "level_72h_vs_daytype": "the same 72 h on their day types",
    "shift_24h_vs_daytype": "the same hours on their day types, median hour of the last 24 h",
    "shift_72h_vs_daytype": "the same hours on their day types, median hour of the last 72 h",
    "shift_168h_vs_daytype": "the same hours on their day types, median hour of the last 7 days",
}
# Features in units of spread: sign * log(1 + |deviation / usual size|) or of a robust sd.
_SPREAD_PHRASES = {
    "z_vs_daytype": ("sd", "the same hour on the same day type"),
    "z_3h_vs_daytype": ("sd", "the same 3 h on their day types"),
    "z_24h_vs_daytype": ("sd", "the same 24 h on their day types"),
    "dev_vs_daytype": ("usual deviations", "the same hour on the same day type"),
    "dev_3h_vs_recent": ("usual deviations", "the same 3 h on their day types, at the level of the 6 h before"),
    "dev_24h_vs_daytype": ("usual deviations", "the same 24 h on their day types"),
    "dev_72h_vs_daytype": ("usual deviations", "the same 72 h on their day types"),
}


def describe_features(named: dict[str, float]) -> str | None:
    """Reason text from named feature values, e.g. ``"kWh 0.05x hour-of-day profile (drop)"``."""
    best, best_w = None, 0.0
    for name, neutral, weight in _EXPLAIN:
        if name in named and math.isfinite(named[name]):
            w = abs(named[name] - neutral) * weight
            if w > best_w:
                best, best_w = name, w
    if best is None or best_w < 0.2:
        return None
    value = named[best]
    if best in _PHRASES:
        ratio = math.exp(value)
        kind = "spike" if value > 0 else "drop"
        return f"kWh {ratio:.2f}x {_PHRASES[best]} ({kind})"
    if best in _SPREAD_PHRASES:
        unit, what = _SPREAD_PHRASES[best]
        kind = "spike" if value > 0 else "drop"
        return f"kWh {math.expm1(abs(value)):.1f} {unit} {'above' if value > 0 else 'below'} {what} ({kind})"
    if best == "near_zero_hours_vs_habit":
        return f"near zero (under 2 % of its typical level) for {value:.1f} h longer than usual (outage)"
    if best == "constant_hours_vs_habit":
        return f"reading unchanged for {value:.1f} h longer than usual (stuck)"
    if best in ("voltage_min_pu", "voltage_mean_pu"):
        return f"voltage {value:.2f} per unit of nominal ({'sag' if value < 1 else 'swell'})"
    if best == "export_share":
        return f"exported {min(value, 1.0):.0%} of the interval's energy (export)"
    if best == "voltage_vs_recent":
        return f"voltage {math.exp(value):.2f}x its recent level ({'sag' if value < 0 else 'swell'})"
    if best == "zero_hours_vs_days":
        return f"no consumption for {value:.1f} h longer than on previous days (zero)"
    if best == "flatline_hours_vs_days":
        return f"consumption unchanged for {value:.1f} h longer than on previous days (flatline)"
    if best == "zero_hours":
        return f"no consumption for {value:.1f} h (zero)"
    if best == "flatline_hours":
        return f"consumption unchanged for {value:.1f} h (flatline)"
    if best == "z_vs_hour_of_day":
        return f"kWh {value:+.1f} sd from hour-of-day profile ({'spike' if value > 0 else 'drop'})"
    if best in ("excess_vs_level", "excess_3h_vs_level"):
        span = "the last 3 h" if best == "excess_3h_vs_level" else "this interval"
        return f"{value:+.1f} mean intervals vs profile over {span} ({'spike' if value > 0 else 'drop'})"
    if best == "variability_vs_typical":
        return f"load variability {math.exp(value):.2f}x usual ({'erratic' if value > 0 else 'flatline'})"
    if best == "spike_ratio":
        return f"peak power {value:.1f}x interval mean (spike)"
    return f"{value:.0%} of the day's energy in quiet hours (night load)"
