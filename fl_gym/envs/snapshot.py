"""Snapshots of an environment's state: copy it, play on, and go back.

Planners and bounds (model-predictive control, a clairvoyant search over plans) play candidate
rounds from the same state. :meth:`take` copies everything an environment's future depends on,
its generator included, so restoring a snapshot and replaying the same actions gives the same
trajectory bit for bit; restoring it and reseeding the generator gives a fresh future from the
same state. Large objects that no step changes (datasets, configurations, the model's
architecture, spaces) are shared between the environment and its snapshots, not copied.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["EnvSnapshot", "restore", "take"]


@dataclass(frozen=True, eq=False)
class EnvSnapshot:
    """An environment's state at one moment (opaque: restore it with the environment's
    ``restore``).

    Attributes:
        env_type: The class of the environment it was taken from.
        state: Private copies of the environment's attributes.
    """

    env_type: type
    state: dict[str, Any]


def take(env: Any, kept: Iterable[str], shared: Iterable[Any]) -> EnvSnapshot:
    """Copy ``env``'s attributes but those named in ``kept``.

    Args:
        env: The environment.
        kept: Attributes that stay with the environment (spaces, renderers, caches): neither
            copied nor restored.
        shared: Objects no step changes, referenced by the copy instead of copied.

    Returns:
        The snapshot.
    """
    return EnvSnapshot(type(env), _copy(vars(env), set(kept), shared))


def restore(env: Any, snapshot: EnvSnapshot, kept: Iterable[str], shared: Iterable[Any]) -> None:
    """Put ``snapshot``'s state back into ``env`` (a copy of it, so a snapshot can be restored
    any number of times).

    Raises:
        TypeError: If ``snapshot`` is not an :class:`EnvSnapshot` of an environment of
            ``env``'s class.
    """
    if not isinstance(snapshot, EnvSnapshot):
        raise TypeError(f"snapshot must be an EnvSnapshot, got {type(snapshot).__name__}")
    if snapshot.env_type is not type(env):
        raise TypeError(
            f"snapshot was taken from a {snapshot.env_type.__name__}, "
            f"cannot restore it into a {type(env).__name__}"
        )
    vars(env).update(_copy(snapshot.state, set(kept), shared))


def _copy(state: dict[str, Any], kept: set[str], shared: Iterable[Any]) -> dict[str, Any]:
    memo = {id(obj): obj for obj in shared}
    return {key: copy.deepcopy(value, memo) for key, value in state.items() if key not in kept}
