"""Helpers shared by the frozen configuration dataclasses."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = [
    "check_choice",
    "check_positive",
    "config_key_names",
    "flatten_overrides",
    "preset_overrides",
    "reject_unknown_arguments",
    "unknown_keys_error",
    "with_overrides",
]

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


def preset_overrides(
    preset: str, presets: Mapping[str, Mapping[str, Any]], family: str
) -> Mapping[str, Any]:
    """The overrides of a named preset, or the error every environment family gives.

    Args:
        preset: The name given.
        presets: The family's presets by name.
        family: What the presets are of, for the message (e.g. ``"the wireless FL envs"``).

    Raises:
        ValueError: ``unknown preset 'x' for FAMILY; allowed: [...]``.
    """
    if not isinstance(preset, str) or preset not in presets:
        raise ValueError(f"unknown preset {preset!r} for {family}; allowed: {sorted(presets)}")
    return presets[preset]


def unknown_keys_error(unknown: list[str], allowed: list[str] | str, family: str) -> ValueError:
    """The error every environment family gives for configuration keys it does not know."""
    return ValueError(f"unknown config key(s) {sorted(unknown)} for {family}; allowed: {allowed}")


def config_key_names(config: Any) -> set[str]:
    """Every key ``config=`` may name in a (nested) configuration dataclass: field names,
    dotted paths of nested fields and, for nested fields, their bare names."""
    names: set[str] = set()
    for f in dataclasses.fields(config):
        names.add(f.name)
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            for inner in config_key_names(value):
                names.add(f"{f.name}.{inner}")
                names.add(inner)
    return names


def reject_unknown_arguments(
    owner: str, arguments: Mapping[str, Any], config: Any, allowed: list[str]
) -> None:
    """Raise the error for keyword arguments a constructor does not take.

    A configuration key passed as a plain keyword (``num_devices=5``) gets an error that says
    to pass it in ``config=``; anything else an error listing the arguments ``owner`` takes.

    Args:
        owner: The constructor, e.g. ``"WirelessFLEnv"``.
        arguments: The unexpected keyword arguments (nothing is raised when empty).
        config: The environment's configuration dataclass (to recognise its keys).
        allowed: The keyword arguments ``owner`` takes.

    Raises:
        TypeError: Naming the arguments and what to do instead.
    """
    if not arguments:
        return
    keys = config_key_names(config)
    as_config = {k: v for k, v in arguments.items() if k in keys}
    if as_config:
        raise TypeError(
            f"{owner}() got {sorted(as_config)} as keyword argument(s), but they are config keys: "
            f"pass them as config={as_config!r}"
        )
    raise TypeError(
        f"{owner}() got unexpected keyword argument(s) {sorted(arguments)}; allowed: {allowed} "
        "(configuration goes in config={...}; fl-gym list NAME shows the keys)"
    )
