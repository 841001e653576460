"""Plain data (YAML, `--set`, papermill parameters) into typed dataclasses, every key and value checked.

`build(cls, mapping, where)` fills defaults for missing keys and checks every given key against the dataclass's
type hints: an unknown key is an error naming it, the keys allowed there and the closest one; a value of the
wrong type names the key, the value and the type expected. A dataclass may offer `sections()` (name -> nested
dataclass), so that an unknown top-level key can point at the section that has it. retune.profiles is its user.
"""
from __future__ import annotations

import copy
import difflib
import types
import typing
from dataclasses import MISSING, fields, is_dataclass
from typing import Any, Union


class ProfileError(ValueError):
    """A profile (or one of its overrides) that cannot be used; the message names the key and the problem."""


def _describe(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is list:
        plural = {int: "integers", float: "numbers", str: "strings"}
        return f"a list of {plural.get(args[0], _describe(args[0]))}" if args else "a list"
    if origin is dict:
        return f"a mapping of {_describe(args[0])} to {_describe(args[1])}" if args else "a mapping"
    if is_dataclass(hint):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false", dict: "a mapping",
            type(None): "null", Any: "anything"}.get(hint, str(hint))


def _wrong(where: str, value, hint) -> ProfileError:
    return ProfileError(f"{where}: expected {_describe(hint)}, got {value!r}")


def _convert(value, hint, where: str):
    """`value` checked against the type `hint` (and converted: int -> float, nested mappings -> dataclasses)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return copy.deepcopy(value)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in args:
            if option is type(None):
                continue
            try:
                return _convert(value, option, where)
            except ProfileError as err:
                if is_dataclass(option) and isinstance(value, dict):
                    raise err  # the mapping was meant for the section: its own error says more
        raise _wrong(where, value, hint)
    if is_dataclass(hint):
        return build(hint, value, where)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _wrong(where, value, hint)
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _wrong(where, value, hint)
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise _wrong(where, value, hint)
    if hint is str:
        if isinstance(value, str):
            return value
        raise _wrong(where, value, hint)
    if origin is list or hint is list:
        if not isinstance(value, list):
            raise _wrong(where, value, hint)
        return [_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise _wrong(where, value, hint)
        if not args:
            return copy.deepcopy(value)
        return {_convert(k, args[0], f"{where} key"): _convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    raise TypeError(f"no check for type {hint!r} ({where})")  # a new field type needs a rule here


def unknown_key(key: str, allowed, where: str, sections: dict[str, type] | None = None) -> ProfileError:
    """An error naming an unknown key, the keys allowed there and the closest one (or the section that has it)."""
    allowed = list(allowed)
    close = difflib.get_close_matches(str(key), allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    if sections and not close:
        homes = [f"{name}.{key}" for name, cls in sections.items() if key in {f.name for f in fields(cls)}]
        hint = f"; did you mean {' or '.join(homes)}?" if homes else ""
    return ProfileError(f"unknown key {key!r} in {where}{hint} (allowed: {', '.join(allowed)})")


_HINTS: dict[type, dict] = {}


def _hints(cls) -> dict:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def build(cls, data, where: str = "profile"):
    """An instance of the dataclass `cls` from a mapping: defaults for missing keys, every given key checked."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise _wrong(where, data, cls)
    hints = _hints(cls)
    names = [f.name for f in fields(cls)]
    for key in data:
        if key not in hints:
            raise unknown_key(key, names, where, cls.sections() if hasattr(cls, "sections") else None)
    prefix = "" if where == "profile" else f"{where}."
    values = {k: _convert(v, hints[k], f"{prefix}{k}") for k, v in data.items()}
    for f in fields(cls):  # a mapping given for a mapping default is merged over it key by key
        if f.name in values and isinstance(values[f.name], dict) and f.default_factory is not MISSING:
            default = f.default_factory()
            if isinstance(default, dict):
                values[f.name] = default | values[f.name]
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:  # a section's own check (e.g. Limits) rejected a value
        raise ProfileError(f"{where}: {err}") from None


