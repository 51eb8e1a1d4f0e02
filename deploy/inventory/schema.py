"""Turn raw YAML mappings into frozen dataclasses, or one precise error.

The validator walks a dataclass's fields: unknown keys are reported with the
nearest valid key, wrong types with what was expected, and every message
names the file and the dotted key path so the user can go straight there.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from deploy.inventory.errors import InventoryError
from deploy.inventory.model import RULE


def nearest(word: str, choices: typing.Iterable[str]) -> str | None:
    """The closest of *choices* to *word*, if one is close enough to be a typo."""
    found = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def unknown_key_error(file: Path, path: str, key: str, allowed: typing.Iterable[str]) -> InventoryError:
    guess = nearest(key, allowed)
    fix = f"did you mean '{guess}'?" if guess else f"valid keys: {', '.join(sorted(allowed))}"
    return InventoryError(file, _join(path, key), f"unknown key; {fix}")


def build(cls: type, raw: Any, file: Path, path: str) -> Any:
    """Validate *raw* against dataclass *cls*; missing keys take field defaults."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InventoryError(file, path, f"expected a mapping, got {_describe(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in raw:
        if not isinstance(key, str) or key not in fields:
            raise unknown_key_error(file, path, str(key), fields)
    values = {}
    for name, field in fields.items():
        if name in raw:
            values[name] = checked_value(field, hints[name], raw[name], file, _join(path, name))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise InventoryError(file, _join(path, name), "required key is missing; add it")
    return cls(**values)


def field_value(cls: type, name: str, value: Any, file: Path, path: str) -> Any:
    """*value* for the field *name* of dataclass *cls*: its type, then its rule."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    return checked_value(field, typing.get_type_hints(cls)[name], value, file, path)


def checked_value(field: dataclasses.Field, hint: Any, value: Any, file: Path, path: str) -> Any:
    """Convert *value* to *hint*, then apply the field's rule (``deploy.inventory.values``), if any."""
    value = convert(hint, value, file, path)
    rule = field.metadata.get(RULE)
    if rule is None or value is None:
        return value
    try:
        return rule(value)
    except ValueError as exc:
        raise InventoryError(file, path, str(exc)) from None


def convert(hint: Any, value: Any, file: Path, path: str) -> Any:
    """Check *value* against the type *hint*, converting nested dataclasses."""
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, file, path)
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            guess = nearest(str(value), [str(c) for c in choices])
            hint_text = f"did you mean '{guess}'?" if guess else "use one of " + ", ".join(map(str, choices))
            raise InventoryError(file, path, f"'{value}' is not allowed; {hint_text}")
        return value
    if origin in (typing.Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        inner = [o for o in options if o is not type(None)]
        return convert(inner[0], value, file, path)
    if origin is tuple:
        (item,) = get_args(hint)[:1]
        if not isinstance(value, list):
            raise InventoryError(file, path, f"expected a list, got {_describe(value)}")
        return tuple(convert(item, v, file, f"{path}[{i}]") for i, v in enumerate(value))
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InventoryError(file, path, f"expected an integer, got {_describe(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InventoryError(file, path, f"expected a number, got {_describe(value)}")
        return float(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise InventoryError(file, path, f"expected true or false, got {_describe(value)}")
        return value
    if hint is str:
        if not isinstance(value, str) or not value:
            quote = "; put it in quotes (YAML reads 30 or 1:30:00 as a number)" if type(value) in (int, float) else ""
            raise InventoryError(file, path, f"expected a non-empty string, got {_describe(value)}{quote}")
        return value
    raise TypeError(f"schema type {hint!r} is not supported")  # a bug in our schema, not user input


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    kind = {dict: "a mapping", list: "a list", bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{kind.get(type(value), type(value).__name__)} {text}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
