"""Config fields that check themselves: each field declares its range, and every config checks the
type and range of every field when it is built, so a bad value is one clear line before any data
is read or any model is built.

    beta: float = setting(1.0, at_least=0)
    arch: str = setting("mlp", choices=("mlp", "conv"))
    recon_loss: str | None = setting(None, choices=("bce", "mse"))   # None: chosen by the rules
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from hashae.errors import ConfigError


def setting(
    default: Any,
    *,
    at_least: float | None = None,
    at_most: float | None = None,
    positive: bool = False,
    multiple_of: int | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A dataclass field with its allowed range (for numbers and each number of a tuple) or choices."""
    rules = {"at_least": at_least, "at_most": at_most, "positive": positive, "multiple_of": multiple_of, "choices": choices}
    return dataclasses.field(default=default, metadata={"rules": rules})


def check_all(config: Any) -> None:
    """Check and normalise every field of a frozen config dataclass in place (ints and floats as
    given in JSON, lists as tuples, dicts as the nested config); raises ConfigError on the first bad one."""
    hints = typing.get_type_hints(type(config))
    for item in dataclasses.fields(config):
        value = checked(config, item.name, getattr(config, item.name), hints[item.name], item.metadata.get("rules", {}))
        object.__setattr__(config, item.name, value)


def checked(owner: Any, name: str, value: Any, hint: Any, rules: dict[str, Any]) -> Any:
    """value as the field `name` of `owner` holds it; ConfigError naming the field when it cannot."""
    try:
        value = _coerce(value, hint)
    except _WrongType as wrong:
        raise ConfigError(f"{describe(owner)}: {name} must be {wrong.expected}, got {value!r}") from None
    problem = _out_of_range(value, rules)
    if problem:
        raise ConfigError(f"{describe(owner)}: {name} must be {problem}, got {value!r}")
    return value


def describe(owner: Any) -> str:
    """'vae config', 'corruption', 'training', ...: how an error names the config (or config class)
    it is about: a variant config by its kind, any other by its LABEL or class name."""
    cls = owner if isinstance(owner, type) else type(owner)
    kind_is_a_field = "kind" in {item.name for item in dataclasses.fields(cls)}
    if getattr(cls, "kind", "") and not kind_is_a_field:
        return f"{cls.kind} config"
    return getattr(cls, "LABEL", cls.__name__.lower())


class _WrongType(Exception):
    def __init__(self, expected: str) -> None:
        self.expected = expected


def _coerce(value: Any, hint: Any) -> Any:
    if _is_optional(hint):
        return None if value is None else _coerce(value, _without_none(hint))
    if hint is bool:
        if not isinstance(value, bool):
            raise _WrongType("true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _WrongType("a whole number")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _WrongType("a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise _WrongType("a word")
        return value
    if typing.get_origin(hint) is tuple:  # tuple[int, ...]; one number stands for a 1-tuple
        if isinstance(value, int) and not isinstance(value, bool):
            value = (value,)
        if not isinstance(value, (list, tuple)) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
            raise _WrongType("a list of whole numbers")
        return tuple(value)
    if dataclasses.is_dataclass(hint):  # a nested config, given as itself or as a dict of its fields
        if isinstance(value, hint):
            return value
        names = [item.name for item in dataclasses.fields(hint)]
        if not isinstance(value, dict) or set(value) - set(names):
            raise _WrongType(f"a {hint.__name__.lower()} with the fields {', '.join(names)}")
        return hint(**value)
    raise TypeError(f"no check for fields of type {hint!r}")  # a programming error, not a user's


def _is_optional(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


def _without_none(hint: Any) -> Any:
    (inner,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return inner


def _out_of_range(value: Any, rules: dict[str, Any]) -> str | None:
    """What the value must be, when it is not; None when it is fine (or None: chosen later)."""
    if value is None:
        return None
    if rules.get("choices") is not None and value not in rules["choices"]:
        return f"one of {', '.join(rules['choices'])}"
    numbers = value if isinstance(value, tuple) else (value,) if isinstance(value, (int, float)) else ()
    for number in numbers:
        if rules.get("positive") and not number > 0:
            return "positive" if not isinstance(value, tuple) else "positive numbers"
        if rules.get("at_least") is not None and number < rules["at_least"]:
            return f">= {rules['at_least']:g}"
        if rules.get("at_most") is not None and number > rules["at_most"]:
            return f"<= {rules['at_most']:g}"
        if rules.get("multiple_of") and number % rules["multiple_of"]:
            return f"a multiple of {rules['multiple_of']}"
    return None
