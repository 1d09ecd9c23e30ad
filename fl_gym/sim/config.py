"""Helpers shared by the frozen configuration dataclasses."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = ["check_choice", "check_positive", "flatten_overrides", "with_overrides"]

C = TypeVar("C")


def flatten_overrides(overrides: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested override dicts as dotted keys: ``{"a": {"b": 1}}`` becomes ``{"a.b": 1}``.

    Args:
        overrides: A mapping whose values may be mappings themselves.
        prefix: Prepended to every key (used by the recursion).

    Returns:
        A flat ``{dotted key: value}`` dict.

    Raises:
        TypeError: If a key is not a string.
    """
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if not isinstance(key, str):
            raise TypeError(f"config keys must be strings, got {key!r}")
        if isinstance(value, Mapping):
            out.update(flatten_overrides(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def with_overrides(config: C, overrides: Mapping[str, Any] | C | None) -> C:
    """Return ``config`` with some fields replaced.

    Args:
        config: A frozen dataclass instance.
        overrides: ``None`` (no change), an instance of the same dataclass (used as is), or a
            mapping from field names to new values. Unknown names are an error that lists them
            and the allowed names.

    Returns:
        The new configuration; its ``__post_init__`` validates the values.
    """
    if overrides is None:
        return config
    if isinstance(overrides, type(config)):
        return overrides
    if not isinstance(overrides, Mapping):
        raise TypeError(
            f"config overrides must be a {type(config).__name__} or a dict, "
            f"got {type(overrides).__name__}"
        )
    allowed = {f.name for f in dataclasses.fields(config)}  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ValueError(
            f"unknown {type(config).__name__} field(s) {unknown}; allowed: {sorted(allowed)}"
        )
    return dataclasses.replace(config, **dict(overrides))  # type: ignore[type-var]


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is a finite number > 0 (or >= 0)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and value == value and abs(value) != float("inf")
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


def check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
