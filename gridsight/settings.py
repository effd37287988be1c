"""The one configuration loader: a typed dataclass filled from a TOML file, then the environment.

Every component (agent, collector, simulator) describes its settings as a dataclass and calls
:func:`load_settings`. Precedence, lowest first: dataclass defaults, the TOML file, environment
variables, explicit overrides (CLI flags). Nested dataclasses are TOML tables; in the
environment they are ``PREFIX_TABLE__KEY``. A field may also name a conventional variable
(``field(metadata={"env": "DATABASE_URL"})``), or only that variable and not its prefixed name
(``"env_only": True``, for a name two roles would otherwise share). A secret (``"secret": True``)
may instead be given as the path of a file holding it, in ``NAME_FILE``, which wins over ``NAME``;
either way surrounding whitespace is dropped. Unknown keys and bad values raise
:class:`ConfigError` naming the key, so start-up fails with one line a person can act on.
Standard library only: it runs on the gateway.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

from gridsight.errors import GridsightError

__all__ = ["ConfigError", "load_settings", "settings_as_dict"]

T = TypeVar("T")


class ConfigError(GridsightError, ValueError):
    """A configuration value that cannot be used. ``key`` is the dotted key at fault."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"config {key}: {reason}")
        self.key = key
        self.reason = reason


def _coerce(key: str, tp: Any, value: Any, from_env: bool) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if value is None or (from_env and value == ""):
            if type(None) in args:
                return None
        return _coerce(key, non_none[0], value, from_env)
    if tp is typing.Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if (
            from_env
            and isinstance(value, str)
            and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off")
        ):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(key, f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if from_env and isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(key, f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if from_env and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(key, f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(key, f"expected a string, got {value!r}")
    if tp is Path:
        if isinstance(value, (str, Path)) and str(value):
            return Path(value).expanduser()
        raise ConfigError(key, f"expected a path, got {value!r}")
    if origin in (list, tuple):
        if from_env and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        items = [_coerce(f"{key}[{i}]", item_tp, v, from_env) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a table, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, typing.cast(type, tp)):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"expected a table, got {value!r}")
        return _build(typing.cast(type, tp), value, key)
    raise ConfigError(key, f"unsupported setting type {tp!r}")


def _build(cls: type[T], values: Mapping[str, Any], prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(typing.cast(Any, cls))
    names = {f.name for f in fields if f.init}
    for key in values:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else key
            raise ConfigError(where, "unknown key")
    kwargs = {}
    for f in fields:
        if not f.init or f.name not in values:
            continue
        where = f"{prefix}.{f.name}" if prefix else f.name
        raw = values[f.name]
        kwargs[f.name] = _coerce(where, hints[f.name], raw, from_env=isinstance(raw, _EnvStr))
    try:
        obj = cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(prefix or cls.__name__, str(exc)) from None
    return obj


class _EnvStr(str):
    """A string that came from the environment, so it may be parsed as a number or a list."""


def _merge(base: dict, top: Mapping) -> dict:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _env_values(cls: type, env: Mapping[str, str], prefix: str) -> dict:
    out: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        name = f"{prefix}{f.name.upper()}"
        if dataclasses.is_dataclass(tp):
            nested = _env_values(typing.cast(type, tp), env, f"{name}__")
            if nested:
                out[f.name] = nested
            continue
        for candidate in (None if f.metadata.get("env_only") else name, f.metadata.get("env")):
            if not candidate:
                continue
            if f.metadata.get("secret"):
                secret = _secret_from(candidate, env)
                if secret is not None:
                    out[f.name] = _EnvStr(secret)
                    break
            elif candidate in env:
                out[f.name] = _EnvStr(env[candidate])
                break
    return out


def _secret_from(name: str, env: Mapping[str, str]) -> str | None:
    """The secret in the file named by ``{name}_FILE`` (preferred) or in ``{name}``; None if neither."""
    path = env.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{name}_FILE", f"cannot read ({exc.strerror})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{name}_FILE", "not a text file") from None
    value = env.get(name)
    return value.strip() if value and value.strip() else None


def load_settings(
    cls: type[T],
    path: str | Path | None = None,
    *,
    env_prefix: str = "GRIDSIGHT_",
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> T:
    """Build ``cls`` from defaults, an optional TOML file, the environment and overrides."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            with p.open("rb") as fh:
                values = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError("file", f"{p} does not exist") from None
        except PermissionError:
            raise ConfigError("file", f"{p} is not readable") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("file", f"{p} is not valid TOML ({exc})") from None
    values = _merge(values, _env_values(cls, env, env_prefix))
    if overrides:
        values = _merge(values, {k: v for k, v in overrides.items() if v is not None})
    return _build(cls, values)


def settings_as_dict(obj: Any) -> dict:
    """Plain dict of a settings object (paths as strings), for printing or TOML export."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [plain(i) for i in v]
        return v

    return plain(obj)
