"""Plain data (YAML, `--set`, papermill parameters) into typed dataclasses, every key and value checked.

`build(cls, mapping, where)` fills defaults for missing keys and checks every given key against the dataclass's
type hints: an unknown key is an error naming it, the keys allowed there and the closest one; a value of the
wrong type names the key, the value and the type expected. A dataclass may offer `sections()` (name -> nested
dataclass), so that an unknown top-level key can point at the section that has it. retune.config.profiles is its user.

Also the pieces every such check shares: range checks that name the key, the value and what is allowed
(`at_least`, `positive_finite`, `check_seed`), and the YAML reader of profiles and `--set` values, which refuses a
key given twice in one mapping (PyYAML would keep the last silently).
"""
from __future__ import annotations

import copy
import difflib
import functools
import math
import types
import typing
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
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
        try:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
                return float(value)
        except (ValueError, OverflowError):  # not a number, or an integer beyond any float
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




# --- ranges ------------------------------------------------------------------------------------------------------
def at_least(where: str, value, low) -> None:
    """`value` >= `low` (a NaN fails too); else an error naming the key, the value and the bound."""
    if not value >= low:
        raise ProfileError(f"{where}: must be >= {low}, got {value!r}")


SEED_LIMIT = 2**32  # seeds are 0 <= seed < 2**32 (numpy's seeding, behind transformers' set_seed)


def check_seed(seed, where: str = "seed") -> int:
    """A seed every generator takes: numpy's (behind transformers' set_seed) needs 0 <= seed < 2**32."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise ProfileError(f"{where}: expected an integer in 0..{SEED_LIMIT - 1}, got {seed!r}")
    return seed


def positive_finite(where: str, value, zero: bool = False) -> None:
    """A finite number > 0 (>= 0 with `zero`). An infinite or NaN learning rate trains without a complaint, into
    weights that are all NaN; here it is refused by name."""
    if not (math.isfinite(value) and (value >= 0 if zero else value > 0)):
        raise ProfileError(f"{where}: must be a finite number {'>= 0' if zero else '> 0'}, got {value!r}")


# --- YAML --------------------------------------------------------------------------------------------------------
@functools.cache
def _unique_key_loader():
    """PyYAML's SafeLoader, except that a key given twice in one mapping is an error: SafeLoader keeps the last
    one silently, so a profile with two `train:` sections would lose the first without a word."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` merges; later keys override it
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeLoader's own error says so
                    break
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} given twice (first on line {first})", key_node.start_mark)
                seen[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader


def load_yaml(text: str):
    """A YAML document (safe types only; a duplicate key is a yaml.YAMLError)."""
    import yaml

    return yaml.load(text, Loader=_unique_key_loader())


def read_yaml(path) -> dict:
    """A profile's YAML file as a mapping; an error naming the file (and the line) for anything else."""
    import yaml

    try:
        doc = load_yaml(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ProfileError(f"profile {path} is not UTF-8 text (byte {err.start})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark else ""
        raise ProfileError(f"profile {path} is not valid YAML{at}: {getattr(err, 'problem', None) or err}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ProfileError(f"profile {path} must be a YAML mapping of keys to values, got {type(doc).__name__}")
    return doc


def merge(base: dict, over: dict) -> dict:
    """`over` merged into a copy of `base`: mappings merge key by key (recursively), anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_sets(items: list[str]) -> dict:
    """`--set KEY=YAML` pairs as one override mapping; a dotted key reaches into a section (train.max_steps=3)."""
    import yaml

    out: dict = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ProfileError(f"--set expects KEY=VALUE (a profile key, dotted into a section, and a YAML value);"
                               f" got {item!r}")
        try:
            value = load_yaml(text)
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or type(err).__name__
            raise ProfileError(f"--set {key}: {text!r} is not a YAML value ({problem})") from None
        layer = value
        for part in reversed(key.split(".")):
            layer = {part: layer}
        out = merge(out, layer)
    return out
