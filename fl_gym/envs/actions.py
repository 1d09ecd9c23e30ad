"""One input policy for the actions of every environment family.

Every codec (wireless FL, vehicular) and the UAV environment check their actions here, so an
action that one family rejects is rejected by all, with the same words:

* **numbers only**: an action is an array (or a scalar, a nested list) of booleans, integers or
  floats. Strings (numeric ones too: ``"0.5"``), bytes, complex numbers (numpy would drop the
  imaginary part), ``None``, dicts, ragged lists and object arrays are a ``TypeError``; nothing
  is parsed or cast before this check.
* **booleans count as 0 and 1**, in every space. Gymnasium's own spaces accept them
  (``Box.contains`` and ``MultiDiscrete.contains`` cast with ``np.can_cast``, and Python's
  ``True`` is the integer 1), the Box and vehicular environments always did, and a mask of
  booleans is a natural way to write a selection or an on/off level; rejecting them in the
  discrete spaces only was the inconsistency.
* **shape** must be the space's exactly (no broadcasting, no squeezing): ``ValueError``.
* **Box**: NaN and infinities are a ``ValueError`` naming their positions; finite values outside
  the bounds pass, and the caller clips them and says so (``info["action_clipped"]``).
* **Discrete / MultiDiscrete**: whole numbers within range, checked on the values as given,
  before any cast, so ``1e300``, ``2**63`` or ``np.uint64(2**64 - 1)`` are reported as they
  were written (a cast to int64 first would report them wrapped, after a RuntimeWarning).
  Python integers too large for any numpy integer type are checked as Python integers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["as_number_array", "check_box_action", "check_discrete_action", "show_action"]

_MAX_SHOWN = 200
"""Longest representation of an action quoted in an error message (longer ones are cut)."""


def show_action(action: Any) -> str:
    """``repr(action)`` for an error message, cut to a readable length."""
    try:
        text = repr(action)
    except Exception:  # a broken __repr__ must not hide the real error
        text = f"<{type(action).__name__} object>"
    text = " ".join(text.split())
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _type_error(action: Any, expected: str, detail: str) -> TypeError:
    return TypeError(
        f"{expected}, got {show_action(action)} ({detail}); allowed: numbers (bool, int, float "
        "or arrays of them), not strings, complex numbers, None or other objects"
    )


def _is_plain_real(value: Any) -> bool:
    """A Python int or float (what a list holding an int beyond 64 bits may also hold)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def as_number_array(action: Any, expected: str) -> np.ndarray:
    """``action`` as a numpy array of bools, integers or floats, without any cast.

    Python integers too large for numpy (beyond the int64 / uint64 range), alone or in (nested)
    lists (possibly beside Python floats), come back as an object array of Python numbers;
    callers compare them exactly. An object
    array passed as such is refused, whatever it holds.

    Args:
        action: The action as given.
        expected: What an action must be (``"action must be ... of shape (3,)"``), the start
            of the error message.

    Returns:
        The array, dtype kind ``b``, ``i``, ``u`` or ``f`` (or ``O`` holding only Python ints).

    Raises:
        TypeError: For strings, bytes, complex numbers, None, mappings, ragged sequences and
            objects that are not numbers, naming the value given.
    """
    if action is None or isinstance(action, (str, bytes, dict)):
        raise _type_error(action, expected, f"a {type(action).__name__}")
    try:
        arr = np.asarray(action)
    except (TypeError, ValueError, OverflowError) as exc:  # ragged sequences, odd objects
        raise _type_error(action, expected, "not an array of numbers") from exc
    if arr.dtype.kind in "biuf":
        return arr
    if (
        arr.dtype.kind == "O"
        and not isinstance(action, np.ndarray)  # an object array given as such is refused
        and arr.size
        and all(_is_plain_real(v) for v in arr.flat)
    ):
        return arr  # Python ints beyond 64 bits, which numpy holds as objects: compared exactly
    raise _type_error(action, expected, f"dtype {arr.dtype}")


def _int_to_float(value: int) -> float:
    try:
        return float(value)
    except OverflowError:  # beyond float64: infinite in effect
        return math.inf if value > 0 else -math.inf


def check_box_action(action: Any, shape: tuple[int, ...], *, bounds: str = "[-1, 1]") -> np.ndarray:
    """A Box action as float64, or a clear error.

    Finite values outside the bounds pass (the caller clips them and reports it).

    Args:
        action: The action as given.
        shape: The shape the action must have.
        bounds: The space's bounds as written in the error messages.

    Returns:
        The action as a new float64 array of ``shape``.

    Raises:
        TypeError: If ``action`` is not numbers (see :func:`as_number_array`).
        ValueError: For a wrong shape, or NaN / infinite entries (named by position).
    """
    shape = tuple(shape)
    arr = as_number_array(action, f"action must be an array of floats of shape {shape}")
    if arr.shape != shape:
        raise ValueError(f"action must have shape {shape}, got shape {arr.shape}")
    if arr.dtype.kind == "O":
        # Python ints beyond 64 bits: the ones beyond float64 are infinite in effect.
        arr = np.array([_int_to_float(v) for v in arr.flat])
        arr = arr.reshape(shape)
    else:
        arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        bad = np.flatnonzero(~np.isfinite(arr)).tolist()
        raise ValueError(
            f"action has non-finite entries at {bad} (got {show_action(action)}); "
            f"allowed: finite numbers, {bounds} (others are clipped)"
        )
    return arr


def check_discrete_action(
    action: Any,
    shape: tuple[int, ...],
    n: int | np.ndarray,
    *,
    allowed: str | None = None,
) -> np.ndarray:
    """A Discrete / MultiDiscrete action as int64, or a clear error naming the value given.

    Every check runs on the values as given; the cast to int64 comes last, when every entry is
    known to be a whole number in range.

    Args:
        action: The action as given.
        shape: The shape the action must have (``()`` for Discrete).
        n: The number of choices: one int for every entry, or an array of ``shape`` (a
            MultiDiscrete's ``nvec``).
        allowed: The allowed values as written in the range error (default
            ``"integers in 0..n-1"``).

    Returns:
        The action as int64 (booleans as 0 / 1).

    Raises:
        TypeError: If ``action`` is not numbers (see :func:`as_number_array`).
        ValueError: For a wrong shape, non-whole or non-finite numbers, and entries out of range.
    """
    shape = tuple(shape)
    nvec = np.broadcast_to(np.asarray(n, dtype=np.int64), shape)
    if allowed is None:
        bounds = np.unique(nvec)
        allowed = (
            f"integers in 0..{int(bounds[0]) - 1}"
            if bounds.size == 1
            else f"integers in 0..nvec - 1 (nvec = {nvec.tolist()})"
        )
    what = "an integer" if shape == () else "integers"
    arr = as_number_array(action, f"action must be {what} of shape {shape}")
    if arr.shape != shape:
        raise ValueError(f"action must have shape {shape}, got shape {arr.shape}")
    given = arr.tolist()
    if arr.dtype.kind == "b":
        values = arr.astype(np.int64)
    elif arr.dtype.kind == "f" and (not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr))):
        raise ValueError(f"action must hold whole numbers ({allowed}), got {given}")
    elif arr.dtype.kind == "O" and not all(
        isinstance(v, int) or (math.isfinite(v) and v == round(v)) for v in arr.flat
    ):
        raise ValueError(f"action must hold whole numbers ({allowed}), got {given}")
    else:
        values = arr
    if values.dtype.kind == "O":
        out_of_range = np.array(
            [v < 0 or v >= m for v, m in zip(values.flat, nvec.flat, strict=True)]
        )
    else:
        # Comparisons of numpy integers and floats with int64 bounds are exact for integers and
        # need no cast of the action (a uint64 above 2**63 stays itself).
        out_of_range = (values < 0) | (values >= nvec)
    if np.any(out_of_range):
        raise ValueError(f"action must hold {allowed}, got {given}")
    return values.astype(np.int64).reshape(shape)
