"""Loading typed, frozen config dataclasses from YAML with dotted command-line overrides.

:func:`load_config` is generic: any frozen dataclass (nested dataclasses, ``Literal`` modes,
enums, ``Optional``, tuples) can be loaded from a named preset shipped in
``swe_srl/configs/<name>.yaml``, a YAML file, or a mapping, then patched with overrides such as
``grpo.num_generations=4``. Values are checked against the annotations once, here, and every
problem becomes one :class:`~swe_srl.errors.ConfigError` a user can act on. A preset may hold
sections for several commands (``train``'s, ``eval``'s); :func:`load_config` with ``section``
reads one of them.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import math
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from .errors import ConfigError

C = TypeVar("C")

PRESETS_DIR = Path(__file__).resolve().parent / "configs"


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, where: str) -> Any:  # noqa: C901 - one branch per supported type (Literal, Union, containers, dataclasses)
    """Check ``value`` (parsed YAML) against annotation ``tp``; return it in that type."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {tp}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {_type_name(tp)}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, where) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(a, v, where) for a, v in zip(args, value))
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_mapping(tp, value, prefix=f"{where}.")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return value if isinstance(value, tp) else tp(value)
        except ValueError:
            raise ConfigError(f"{where}: {value!r} is not one of {[m.value for m in tp]}") from None
    if tp in (bool, int, float, str):
        return _coerce_scalar(tp, value, where)
    if tp in (dict, Mapping) or origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    return value


def _coerce_scalar(tp: type, value: Any, where: str) -> Any:
    """bool / int / float / str, strictly: ``1`` is not ``true`` and ``2.5`` is not an int."""
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def from_mapping(cls: type[C], data: Mapping[str, Any], *, prefix: str = "") -> C:
    """Build dataclass ``cls`` from a (nested) mapping; unknown keys are errors with a hint
    (a key listed in the class's ``moved_keys`` mapping names its new place)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            moved = getattr(cls, "moved_keys", {}).get(key)
            if moved:
                raise ConfigError(f"config key {prefix}{key} moved to {moved}")
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else f" (known: {', '.join(names)})"
            raise ConfigError(f"unknown config key {prefix}{key}{hint}")
        kwargs[key] = _coerce(hints[key], _onto_default(cls, key, value), f"{prefix}{key}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{cls.__name__}: {exc}") from exc


def _onto_default(cls: type, key: str, value: Any) -> Any:
    """A partial mapping for a dataclass field whose default is not its class's defaults (eval's
    ``generation`` is greedy, train's samples 512 tokens) is laid over that default, so setting
    one key (``generation.max_new_tokens``) keeps the others (``temperature: 0``) as they were."""
    if not isinstance(value, Mapping):
        return value
    spec = next(f for f in dataclasses.fields(cls) if f.name == key)
    if spec.default is not dataclasses.MISSING:
        default = spec.default
    elif spec.default_factory is not dataclasses.MISSING:
        default = spec.default_factory()
    else:
        return value
    if not dataclasses.is_dataclass(default) or isinstance(default, type):
        return value
    return _deep_merge(to_mapping(default), value)


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def to_mapping(config: Any) -> dict[str, Any]:
    """The plain-YAML view of a config (enums as values, tuples as lists)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, enum.Enum):
            return value.value
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, Mapping):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(config)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value); the value is read as YAML (``4``, ``true``, ``[1, 2]``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise ConfigError(f"override {text!r} must look like section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str] | Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of ``data`` with dotted overrides set (nested mappings are created)."""
    out = _deep_copy(data)
    items = overrides.items() if isinstance(overrides, Mapping) else (parse_override(o) for o in overrides)
    for path, value in items:
        keys = path.split(".") if isinstance(path, str) else list(path)
        node = out
        for k in keys[:-1]:
            child = node.get(k)
            if child is None:
                child = node[k] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"override {'.'.join(keys)}: {k} is a value, not a section")
            node = child
        node[keys[-1]] = value
    return out


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def presets() -> list[str]:
    """Names of the presets shipped in ``swe_srl/configs``."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def read_yaml(source: str | os.PathLike) -> dict[str, Any]:
    """A preset name or a YAML file path -> its top-level mapping."""
    path = Path(source)
    if not path.suffix and not path.exists():
        path = PRESETS_DIR / f"{source}.yaml"
        if not path.exists():
            raise ConfigError(f"unknown config preset {str(source)!r} (presets: {', '.join(presets())}; or give a "
                              f"YAML file)")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} is not valid YAML") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


# Top-level sections of a config file that configure other commands than ``train``: a preset
# holds the train config at its top level and may carry ``eval:`` / ``dataset:`` / ``plan:`` sections.
COMMAND_SECTIONS = ("dataset", "eval", "plan")


def load_config(
    cls: type[C],
    source: str | os.PathLike | Mapping[str, Any] | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    *,
    section: str | None = None,
    flags: Mapping[str, Any] | None = None,
) -> C:
    """Load dataclass ``cls`` from a preset name / YAML path / mapping (None = defaults),
    then apply dotted ``overrides`` (``["grpo.num_generations=4"]`` or ``{"run.seed": 1}``),
    then ``flags`` (a command's own options, which win over ``--set``).

    ``section`` picks one command's section of the source (``eval``, ``dataset``); without
    it, those sections are left out (they are not part of the train config)."""
    if source is None:
        data: dict[str, Any] = {}
    elif isinstance(source, Mapping):
        data = _deep_copy(source)
    else:
        data = read_yaml(source)
    if section is not None:
        part = data.get(section) or {}
        if not isinstance(part, Mapping):
            raise ConfigError(f"config section {section!r} must be a mapping, got {part!r}")
        data = _deep_copy(part)
    else:
        data = {k: v for k, v in data.items() if k not in COMMAND_SECTIONS}
    data = apply_overrides(data, overrides)
    return from_mapping(cls, apply_overrides(data, flags or {}))


def save_config(config: Any, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML (what ``load_config(type(config), path)`` reads back)."""
    Path(path).write_text(yaml.safe_dump(to_mapping(config), sort_keys=False), encoding="utf-8")
