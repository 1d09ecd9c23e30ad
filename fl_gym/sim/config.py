"""Validators and the override resolver shared by every frozen configuration dataclass.

Validators (:func:`check_int`, :func:`check_real`, :func:`check_choice`, :func:`check_bool`,
:func:`check_int_tuple`, ...) raise one message style, ``NAME must be ALLOWED, got VALUE``,
naming the field, what it may be and the value given. A value of the wrong type raises
:class:`ConfigTypeError`, which is both a ``TypeError`` and a ``ValueError``: a config field set
by a user is bad input whichever way it is wrong, and callers catch either.

:func:`resolve_config` is the one override resolver: a frozen config dataclass (nested config
dataclasses included) plus a named preset plus overrides given as dotted keys, bare names of
nested fields, nested dicts or config objects. Every family's builder (``make_config``,
``make_urllc_config``, ``make_vehicular_config``, ``make_uav_config``) is a thin call to it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import numpy as np
import torch

__all__ = [
    "MAX_BATCH_SIZE",
    "MAX_DEVICES",
    "MAX_HIDDEN_LAYERS",
    "MAX_HIDDEN_UNITS",
    "MAX_LOCAL_STEPS",
    "MAX_UAVS",
    "MAX_VEHICLE_PAIRS",
    "MEMORY_LIMIT_BYTES",
    "ConfigTypeError",
    "Range",
    "apply_overrides",
    "check_bool",
    "check_choice",
    "check_instance",
    "check_int",
    "check_int_tuple",
    "check_memory",
    "check_point",
    "check_positive",
    "check_ranges",
    "check_real",
    "check_rng",
    "check_rows",
    "config_key_names",
    "field_names",
    "flatten_overrides",
    "is_int",
    "is_real",
    "preset_overrides",
    "reject_unknown_arguments",
    "resolve_config",
    "unknown_keys_error",
    "with_overrides",
]

C = TypeVar("C")


# -- limits --------------------------------------------------------------------------------------
# Sizes that scale memory are checked against these before anything is allocated, so that an
# absurd value is a clear error at construction instead of a stall or a failure deep in numpy or
# torch. The checks are arithmetic on config fields: cheap enough for every env construction.

MEMORY_LIMIT_BYTES = 8 * 2**30
"""Largest memory (8 GiB) one estimate of a simulator's arrays may need (a federated data set,
a round's minibatch indices and activations, a vehicular system's ``(K, K)`` links, ...)."""

MAX_DEVICES = 100_000
"""Most devices (clients) ``K`` of a wireless FL environment or federation."""

MAX_HIDDEN_UNITS = 4096
"""Widest hidden layer of a federation's MLP."""

MAX_HIDDEN_LAYERS = 16
"""Most hidden layers of a federation's MLP."""

MAX_BATCH_SIZE = 65_536
"""Largest minibatch of a local step."""

MAX_LOCAL_STEPS = 10_000
"""Most local steps of one client in one round."""

MAX_UAVS = 100_000
"""Most UAVs of a swarm."""

MAX_VEHICLE_PAIRS = 10_000
"""Most V2V pairs of a vehicular system (its links are ``(K, K)`` arrays)."""


# -- validators ----------------------------------------------------------------------------------


class ConfigTypeError(TypeError, ValueError):
    """A value of the wrong type for a configuration field or argument.

    Both a ``TypeError`` and a ``ValueError`` (as numpy's ``AxisError`` is both a ``ValueError``
    and an ``IndexError``): code that validates a whole config catches ``ValueError``, code that
    checks an argument's type catches ``TypeError``, and both see this error.
    """


def _bad_type(name: str, value: object, allowed: str) -> ConfigTypeError:
    return ConfigTypeError(f"{name} must be {allowed}, got {value!r}")


def _bad_value(name: str, value: object, allowed: str) -> ValueError:
    return ValueError(f"{name} must be {allowed}, got {value!r}")


def _fmt(bound: float) -> str:
    return f"{bound:g}" if isinstance(bound, float) else str(bound)


def is_int(value: object) -> bool:
    """Whether ``value`` is a whole number (Python or numpy integer), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value: object) -> bool:
    """Whether ``value`` is a real number (Python or numpy, integer or float), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _int_range(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f"an integer in [{minimum}, {maximum}]"
    if minimum is not None:
        return f"an integer >= {minimum}"
    if maximum is not None:
        return f"an integer <= {maximum}"
    return "an integer"


def check_int(
    name: str, value: object, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """Validate a whole number in ``[minimum, maximum]`` (either bound optional).

    Args:
        name: The field or argument, for the message.
        value: The value given.
        minimum: Smallest allowed value, or ``None``.
        maximum: Largest allowed value, or ``None``.

    Returns:
        ``value`` as a Python ``int``.

    Raises:
        ConfigTypeError: Not an integer (bools and floats such as ``2.0`` are not).
        ValueError: Out of range.
    """
    allowed = _int_range(minimum, maximum)
    if not is_int(value):
        raise _bad_type(name, value, allowed)
    number = int(value)  # type: ignore[call-overload]
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise _bad_value(name, value, allowed)
    return number


def _real_range(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        return f"a finite number in {left}{_fmt(low)}, {_fmt(high)}{right}"
    if low is not None:
        return f"a finite number {'>' if low_open else '>='} {_fmt(low)}"
    if high is not None:
        return f"a finite number {'<' if high_open else '<='} {_fmt(high)}"
    return "a finite number"


def check_real(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Validate a finite real number within optional bounds.

    Args:
        name: The field or argument, for the message.
        value: The value given.
        low: Lower bound, or ``None``.
        high: Upper bound, or ``None``.
        low_open: Whether ``low`` itself is excluded.
        high_open: Whether ``high`` itself is excluded.

    Returns:
        ``value`` as a Python ``float``.

    Raises:
        ConfigTypeError: Not a real number (bools and strings are not).
        ValueError: NaN, infinite or out of range.
    """
    allowed = _real_range(low, high, low_open, high_open)
    if not is_real(value):
        raise _bad_type(name, value, allowed)
    number = float(value)  # type: ignore[arg-type]
    ok = math.isfinite(number)
    if ok and low is not None:
        ok = number > low if low_open else number >= low
    if ok and high is not None:
        ok = number < high if high_open else number <= high
    if not ok:
        raise _bad_value(name, value, allowed)
    return number


def _fmt_bytes(size: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size:.0f} B"


def check_memory(
    name: str,
    value: object,
    estimate_bytes: float,
    what: str,
    *,
    limit_bytes: float | None = None,
) -> None:
    """Refuse a size whose estimated memory exceeds the limit, before anything is allocated.

    Args:
        name: The field or argument that sets the size (several may, e.g. ``"num_devices x
            batch_size"``), for the message.
        value: The value given (or values, as a tuple).
        estimate_bytes: Estimated memory the size needs.
        what: What the memory holds, for the message (e.g. ``"the synthetic data set"``).
        limit_bytes: The limit; :data:`MEMORY_LIMIT_BYTES` if ``None``.

    Raises:
        ValueError: ``NAME=VALUE needs an estimated E for WHAT, above the limit of L
            (fl_gym.sim.config.MEMORY_LIMIT_BYTES)``.
    """
    limit = MEMORY_LIMIT_BYTES if limit_bytes is None else limit_bytes
    if estimate_bytes > limit:
        raise ValueError(
            f"{name}={value!r} needs an estimated {_fmt_bytes(estimate_bytes)} for {what}, above "
            f"the limit of {_fmt_bytes(limit)} (fl_gym.sim.config.MEMORY_LIMIT_BYTES); "
            "allowed: smaller sizes"
        )


def check_positive(
    name: str, value: object, *, allow_zero: bool = False, high: float | None = None
) -> float:
    """Validate a finite number ``> 0`` (or ``>= 0`` with ``allow_zero``), at most ``high`` if
    given; see :func:`check_real`."""
    return check_real(name, value, low=0.0, low_open=not allow_zero, high=high)


def check_choice(name: str, value: object, allowed: Iterable[Any]) -> Any:
    """Validate that ``value`` is one of ``allowed``; returns it.

    Raises:
        ValueError: ``NAME must be one of [...], got VALUE``.
    """
    options = list(allowed)
    try:
        ok = value in options
    except TypeError:  # an unhashable or uncomparable value is not a choice
        ok = False
    if not ok:
        raise _bad_value(name, value, f"one of {options}")
    return value


def check_rows(
    name: str, value: object, *, min_rows: int = 0, min_width: int = 1, finite: bool = False
) -> Any:
    """Validate the updates of a round: a 2-D floating ``torch.Tensor`` ``(K, d)``, one row per
    client, with at least ``min_rows`` rows of at least ``min_width`` entries and, with
    ``finite``, no NaN or infinite entry (the rows that hold one are named); returns it.

    Raises:
        TypeError: Not a tensor, or not of a floating dtype.
        ValueError: Another shape, too few rows, or a non-finite entry where none is allowed.
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape (K, d), got {type(value).__name__}"
        )
    if value.ndim != 2 or value.shape[1] < min_width or value.shape[0] < min_rows:
        raise ValueError(
            f"{name} must be a 2-D tensor of shape (K, d), one row per client, with "
            f"d >= {min_width} and K >= {min_rows}, got shape {tuple(value.shape)}"
        )
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if finite:
        ok = torch.isfinite(value).all(dim=1)
        if not bool(ok.all()):
            rows = torch.nonzero(~ok).flatten().tolist()
            raise ValueError(f"{name} must be finite; rows {rows} hold NaN or inf")
    return value


def check_bool(name: str, value: object) -> bool:
    """Validate ``True`` or ``False`` (numpy bools too); returns a Python ``bool``.

    Raises:
        ConfigTypeError: Anything else, including ``0``, ``1`` and ``"yes"``.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise _bad_type(name, value, "True or False")
    return bool(value)


def check_int_tuple(
    name: str,
    value: object,
    *,
    minimum: int = 1,
    distinct: bool = False,
    nonempty: bool = True,
    example: str | None = None,
) -> tuple[int, ...]:
    """Validate a sequence (tuple, list or 1-D array, not a string) of whole numbers.

    Args:
        name: The field or argument, for the message.
        value: The value given.
        minimum: Smallest allowed item.
        distinct: Whether items must differ.
        nonempty: Whether at least one item is required.
        example: A valid value for the message (e.g. ``"(64,)"``).

    Returns:
        The items as a tuple of Python ints.

    Raises:
        ValueError: ``NAME must be a [non-empty ]tuple of [distinct ]integers >= MIN, got VALUE``
            (no ``float``, whose ``int()`` would truncate, and no string, whose items are
            characters).
    """
    allowed = (
        f"a {'non-empty ' if nonempty else ''}tuple of {'distinct ' if distinct else ''}"
        f"integers >= {minimum}" + (f", e.g. {example}" if example else "")
    )
    if not isinstance(value, (tuple, list, np.ndarray)) or np.ndim(value) != 1:
        raise _bad_value(name, value, allowed)
    items = tuple(value)
    if not all(is_int(v) and v >= minimum for v in items):
        raise _bad_value(name, value, allowed)
    out = tuple(int(v) for v in items)
    if (nonempty and not out) or (distinct and len(set(out)) != len(out)):
        raise _bad_value(name, value, allowed)
    return out


def check_point(name: str, value: object) -> tuple[float, float]:
    """Validate a 2-D point: two finite numbers ``(x_m, y_m)``; returns them as floats."""
    items = tuple(value) if isinstance(value, (tuple, list, np.ndarray)) else ()
    if len(items) != 2 or not all(is_real(c) and math.isfinite(float(c)) for c in items):
        raise _bad_value(name, value, "two finite numbers (x_m, y_m)")
    return (float(items[0]), float(items[1]))


def check_instance(name: str, value: object, cls: type[C]) -> C:
    """Validate that ``value`` is a ``cls`` (a nested config, typically); returns it.

    Raises:
        TypeError: ``NAME must be a CLS, got VALUE``.
    """
    if not isinstance(value, cls):
        raise TypeError(f"{name} must be a {cls.__name__}, got {value!r}")
    return value


def check_rng(value: object, where: str | None = None) -> np.random.Generator:
    """Validate a ``numpy.random.Generator``; returns it.

    Args:
        value: The value given.
        where: What needs it, for the message (a function name), or ``None``.

    Raises:
        TypeError: ``rng must be a numpy.random.Generator ..., got TYPE`` (``WHERE needs
            rng=numpy.random.Generator ...`` with ``where``).
    """
    if not isinstance(value, np.random.Generator):
        head = "rng must be" if where is None else f"{where} needs rng="
        raise TypeError(
            f"{head}{'' if where else ' a '}numpy.random.Generator "
            f"(e.g. numpy.random.default_rng(0)), got {type(value).__name__}"
        )
    return value


@dataclasses.dataclass(frozen=True)
class Range:
    """The documented plausible range of a numeric config field.

    Every physical and reward quantity of a config dataclass has one (in its class's
    ``RANGES``), so that no accepted configuration can make a reward or an observation
    non-finite; the field's docstring states it (``in (0, 1e+12]``).

    Attributes:
        low: Lower bound, or ``None``.
        high: Upper bound, or ``None``.
        low_open: Whether ``low`` itself is excluded.
        high_open: Whether ``high`` itself is excluded.
        integer: Whether the field is a whole number (then both bounds are included).
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def check(self, name: str, value: object) -> float | int:
        """Validate ``value`` (:func:`check_int` or :func:`check_real`); returns it converted."""
        if self.integer:
            low = None if self.low is None else int(self.low)
            high = None if self.high is None else int(self.high)
            return check_int(name, value, minimum=low, maximum=high)
        return check_real(
            name,
            value,
            low=self.low,
            high=self.high,
            low_open=self.low_open,
            high_open=self.high_open,
        )

    def __str__(self) -> str:
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        low = "-inf" if self.low is None else _fmt(self.low)
        high = "inf" if self.high is None else _fmt(self.high)
        return f"{left}{low}, {high}{right}"


def check_ranges(config: Any, ranges: Mapping[str, Range]) -> None:
    """Validate every field of ``config`` named in ``ranges`` against its range."""
    for name, allowed in ranges.items():
        allowed.check(name, getattr(config, name))


# -- overrides -----------------------------------------------------------------------------------


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


def _is_config(value: object) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _nested_fields(config: Any) -> dict[str, Any]:
    """The fields of ``config`` that hold a config dataclass, by name."""
    return {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if _is_config(getattr(config, f.name))
    }


def _dotted_leaf_paths(config: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every field below ``config``'s nested configs (not its own fields)."""
    paths: list[str] = []
    for name, inner in _nested_fields(config).items():
        for f in dataclasses.fields(inner):
            paths.append(f"{prefix}{name}.{f.name}")
        paths += _dotted_leaf_paths(inner, f"{prefix}{name}.")
    return paths


def _allowed_keys(config: Any) -> list[str]:
    """The keys an unknown-key error lists: own fields, then dotted fields of nested configs."""
    return sorted(f.name for f in dataclasses.fields(config)) + _dotted_leaf_paths(config)


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


@dataclasses.dataclass
class _Routed:
    """Overrides sorted by where they go: own fields, and per nested config its own routing."""

    own: dict[str, Any]
    nested: dict[str, _Routed]


def _route(config: Any, flat: Mapping[str, Any], prefix: str, unknown: list[str]) -> _Routed:
    """Sort flat (dotted) overrides of ``config`` by the field they set; unknown keys are
    appended to ``unknown`` with their full dotted path."""
    own_names = {f.name for f in dataclasses.fields(config)}
    # Bare names of fields anywhere below, with the dotted paths they name.
    bare: dict[str, list[str]] = {}
    for path in _dotted_leaf_paths(config):
        bare.setdefault(path.rsplit(".", 1)[1], []).append(path)
    own: dict[str, Any] = {}
    inner: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        head, dot, rest = key.partition(".")
        if head in own_names:
            if not dot:
                own[head] = value
            elif _is_config(getattr(config, head)):
                inner.setdefault(head, {})[rest] = value
            else:
                unknown.append(prefix + key)
            continue
        paths = bare.get(head, [])
        if len(paths) > 1:
            raise ValueError(
                f"config key {prefix + key!r} is ambiguous: {head!r} is a field of several "
                f"nested configs; name one of {[prefix + p for p in paths]}"
            )
        if not paths:
            unknown.append(prefix + key)
            continue
        first, _, path_rest = paths[0].partition(".")
        inner.setdefault(first, {})[path_rest + dot + rest] = value
    nested: dict[str, _Routed] = {}
    for name, keys in inner.items():
        # Keys inside a nested config apply to the object given for it, if any.
        target = own.get(name, getattr(config, name))
        if _is_config(target):
            nested[name] = _route(target, keys, f"{prefix}{name}.", unknown)
    return _Routed(own, nested)


def _apply(config: C, routed: _Routed) -> C:
    changes = dict(routed.own)
    for name, inner in routed.nested.items():
        changes[name] = _apply(changes.get(name, getattr(config, name)), inner)
    return dataclasses.replace(config, **changes) if changes else config  # type: ignore[type-var]


def apply_overrides(config: C, overrides: Mapping[str, Any], family: str) -> C:
    """``config`` with overrides applied, in :func:`resolve_config`'s key syntax.

    Args:
        config: A frozen config dataclass instance, possibly with nested config fields.
        overrides: ``{key: value}``; see :func:`resolve_config`.
        family: What the configuration is of, for error messages.

    Returns:
        The new configuration (validated by the dataclasses' ``__post_init__``).

    Raises:
        TypeError: ``overrides`` is not a mapping, or a key is not a string.
        ValueError: An unknown or ambiguous key, or an invalid value.
    """
    if not isinstance(overrides, Mapping):
        raise TypeError(f"config overrides must be a dict, got {type(overrides).__name__}")
    unknown: list[str] = []
    routed = _route(config, flatten_overrides(overrides), "", unknown)
    if unknown:
        raise unknown_keys_error(unknown, _allowed_keys(config), family)
    return _apply(config, routed)


def resolve_config(
    base: C,
    preset: str | None = None,
    overrides: Mapping[str, Any] | C | None = None,
    *,
    presets: Mapping[str, Mapping[str, Any]],
    family: str,
) -> C:
    """A configuration from a base, a named preset and overrides: the one resolver of all families.

    Keys of a preset or of ``overrides`` may be:

    * a field of the config itself (``"num_devices"``); a nested config field takes a config
      object (which replaces it) or a dict of its own keys (``{"wireless": {"deadline_s": 1}}``);
    * a dotted path into nested configs (``"wireless.deadline_s"``);
    * the bare name of a field of a nested config (``"deadline_s"``), when exactly one nested
      config has it (an own field wins over a nested one; a name in several nested configs is an
      error listing their dotted paths).

    Nested dicts read as dotted keys. Nested config objects apply first, then the keys inside them.

    Args:
        base: The configuration the preset and overrides apply to (its type is the result's).
        preset: A name in ``presets``, or ``None``.
        overrides: ``None``, a dict of overrides applied after the preset's, or a complete
            config object of ``base``'s type, returned as it is (it cannot be combined with a
            preset, which it would silently drop).
        presets: The family's named presets, in the same key syntax.
        family: How errors name the family (``"the wireless FL envs"``).

    Returns:
        The validated configuration.

    Raises:
        TypeError: ``overrides`` is neither a dict, a config of ``base``'s type nor ``None``.
        ValueError: An unknown preset, an unknown or ambiguous key, a preset beside a config
            object, or an invalid value.
    """
    kind = type(base).__name__
    if isinstance(overrides, type(base)):
        if preset is not None:
            raise ValueError(
                f"preset={preset!r} and a {kind} object cannot be combined (the object is "
                "complete); pass the preset with a dict of overrides, or the object alone"
            )
        return overrides
    if overrides is not None and not isinstance(overrides, Mapping):
        raise TypeError(
            f"config must be a {kind} or a dict of overrides, got {type(overrides).__name__}"
        )
    config = base
    if preset is not None:
        config = apply_overrides(config, preset_overrides(preset, presets, family), family)
    if overrides:
        config = apply_overrides(config, overrides, family)
    return config


def with_overrides(config: C, overrides: Mapping[str, Any] | C | None) -> C:
    """Return ``config`` with some fields replaced (:func:`resolve_config` without presets).

    Args:
        config: A frozen dataclass instance.
        overrides: ``None`` (no change), an instance of the same dataclass (used as is), or a
            mapping of keys (:func:`resolve_config`'s syntax) to new values.

    Returns:
        The new configuration; its ``__post_init__`` validates the values.
    """
    return resolve_config(config, None, overrides, presets={}, family=type(config).__name__)


def config_key_names(config: Any) -> set[str]:
    """Every key ``config=`` may name in a (nested) configuration dataclass: field names,
    dotted paths of nested fields and, for nested fields, their bare names."""
    names: set[str] = set()
    for f in dataclasses.fields(config):
        names.add(f.name)
        value = getattr(config, f.name)
        if _is_config(value):
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


@functools.cache
def field_names(cls: type) -> tuple[str, ...]:
    """The field names of a dataclass, computed once per class (``dataclasses.fields`` walks
    the class every call, which shows in the records made every round)."""
    return tuple(f.name for f in dataclasses.fields(cls))
