"""The action codec of the vehicular URLLC environments: (power level, resource block) per pair.

The Gymnasium environment's action ``MultiDiscrete([L, N] * K)`` alternates, pair by pair, a
power level (0 is silence, ``l >= 1`` is ``power_levels_dbm[l - 1]``) and a resource block; the
PettingZoo environment gives each agent ``pair_<k>`` one ``(level, block)`` pair. Both
environments and the vehicular baselines decode and encode through :class:`VehicularCodec`, so
the layout, the agents' names and the validation (clear errors naming the value given and the
allowed ranges) are written once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from fl_gym.envs.actions import check_discrete_action
from fl_gym.sim.vehicular.system import VehicularConfig

__all__ = ["AGENT_PREFIX", "VehicularCodec", "check_levels_and_blocks"]

AGENT_PREFIX = "pair_"
"""Agent ``k`` of the PettingZoo environment is named ``pair_<k>``."""


def check_levels_and_blocks(
    action: Any, shape: tuple[int, ...], num_levels: int, num_blocks: int
) -> np.ndarray:
    """Validate an integer action whose last axis alternates (power level, block).

    The policy of :mod:`fl_gym.envs.actions` (booleans count as 0 / 1): ``TypeError`` for
    what is not numbers and ``ValueError`` for wrong shapes, non-integers, NaN and values out
    of range, naming the value given and the allowed ranges.

    Args:
        action: The action.
        shape: Its expected shape (the last axis of even length).
        num_levels: L, the number of power levels (silence included).
        num_blocks: N, the number of resource blocks.

    Returns:
        The action as int64.
    """
    if len(shape) == 0 or shape[-1] % 2:
        raise ValueError(f"shape must end in an axis of even length, got {shape}")
    nvec = np.tile(np.array([num_levels, num_blocks], dtype=np.int64), shape[-1] // 2)
    return check_discrete_action(
        action,
        shape,
        np.broadcast_to(nvec, shape),
        allowed=(
            f"power levels in 0..{num_levels - 1} and resource blocks in 0..{num_blocks - 1} "
            "(alternating)"
        ),
    )


class VehicularCodec:
    """Per-pair power levels and resource blocks <-> the vehicular environments' actions.

    Args:
        num_pairs: K, the V2V pairs (agents).
        num_power_levels: L, the power levels, silence (level 0) included.
        num_resource_blocks: N, the shared resource blocks.

    Attributes:
        action_space: The Gymnasium environment's ``MultiDiscrete([L, N] * K)``.
        agent_action_space: One agent's ``MultiDiscrete([L, N])``.
        agent_names: ``pair_0`` ... ``pair_{K-1}``.
    """

    SILENT_LEVEL = 0
    """The power level of a pair that does not transmit (and of an agent without an action)."""

    def __init__(self, num_pairs: int, num_power_levels: int, num_resource_blocks: int) -> None:
        self.num_pairs = int(num_pairs)
        self.num_power_levels = int(num_power_levels)
        self.num_resource_blocks = int(num_resource_blocks)
        pair = [self.num_power_levels, self.num_resource_blocks]
        self.action_space = spaces.MultiDiscrete(np.tile(pair, self.num_pairs).astype(np.int64))
        self.agent_action_space = spaces.MultiDiscrete(np.array(pair, dtype=np.int64))
        self.agent_names = [f"{AGENT_PREFIX}{k}" for k in range(self.num_pairs)]
        self._index = {name: k for k, name in enumerate(self.agent_names)}

    @classmethod
    def from_system(cls, system: VehicularConfig) -> VehicularCodec:
        """The codec of a vehicular system's K, L and N."""
        return cls(system.num_pairs, system.num_power_levels, system.num_resource_blocks)

    def __repr__(self) -> str:
        return (
            f"VehicularCodec(num_pairs={self.num_pairs}, num_power_levels="
            f"{self.num_power_levels}, num_resource_blocks={self.num_resource_blocks})"
        )

    @property
    def max_level(self) -> int:
        """The level of ``p_max`` (the last of ``power_levels_dbm``)."""
        return self.num_power_levels - 1

    # -- the Gymnasium environment's action ------------------------------------------------------

    def check(self, action: Any, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """:func:`check_levels_and_blocks` against this codec's L and N (``shape`` defaults to
        the action space's)."""
        return check_levels_and_blocks(
            action,
            self.action_space.shape if shape is None else shape,
            self.num_power_levels,
            self.num_resource_blocks,
        )

    def decode(self, action: Any) -> tuple[np.ndarray, np.ndarray]:
        """Validated ``(power levels (K,), blocks (K,))`` of an action of :attr:`action_space`."""
        arr = self.check(action)
        return arr[0::2], arr[1::2]

    def encode(self, levels: np.ndarray, blocks: np.ndarray) -> np.ndarray:
        """The action of per-pair power levels and blocks (``(..., K)`` each -> ``(..., 2K)``;
        validated on decoding)."""
        levels, blocks = np.asarray(levels), np.asarray(blocks)
        out = np.empty((*levels.shape[:-1], 2 * levels.shape[-1]), dtype=np.int64)
        out[..., 0::2], out[..., 1::2] = levels, blocks
        return out

    # -- the PettingZoo environment's actions ----------------------------------------------------

    def agent_index(self, name: str) -> int:
        """The pair of agent ``name``, or a ``ValueError`` naming it and the allowed names."""
        try:
            return self._index[name]
        except (KeyError, TypeError):
            raise ValueError(
                f"{name!r} is not an agent of this environment; allowed: "
                f"{AGENT_PREFIX}0 .. {AGENT_PREFIX}{self.num_pairs - 1}"
            ) from None

    def decode_agents(self, actions: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Validated per-pair ``(levels (K,), blocks (K,))`` of an actions dict; pairs without
        an action stay silent (level 0, block 0).

        Raises ``ValueError`` naming agents that are not ``pair_<k>`` and, for a bad action,
        ``TypeError`` / ``ValueError`` naming its agent.
        """
        k = self.num_pairs
        levels = np.zeros(k, dtype=np.int64)
        blocks = np.zeros(k, dtype=np.int64)
        if not actions:
            return levels, blocks
        unknown = [name for name in actions if name not in self._index]
        if unknown:
            raise ValueError(
                f"actions for {unknown[:3]!r}, which are not agents of this environment; "
                f"allowed: the names in env.agents (e.g. {self.agent_names[:3]})"
            )
        rows = np.array([self._index[name] for name in actions])
        arr: np.ndarray | None = None
        try:
            stacked = np.asarray(list(actions.values()))
            if stacked.shape == (len(rows), 2) and stacked.dtype.kind in "biuf":
                arr = self.check(stacked.reshape(-1), (2 * len(rows),))
        except (TypeError, ValueError):
            arr = None
        if arr is None:
            # Error path only: find the first bad action and name its agent.
            for name, value in actions.items():
                try:
                    self.check(value, (2,))
                except (TypeError, ValueError) as exc:
                    raise type(exc)(f"action of {name!r}: {exc}") from exc
            raise TypeError(f"actions must be arrays of shape (2,), got {actions!r}")
        levels[rows], blocks[rows] = arr[0::2], arr[1::2]
        return levels, blocks

    def encode_agents(
        self, levels: np.ndarray, blocks: np.ndarray, names: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """The actions dict of the agents ``names`` from per-pair levels and blocks ``(K,)``."""
        index = np.array([self.agent_index(name) for name in names], dtype=np.int64)
        chosen = np.stack([np.asarray(levels)[index], np.asarray(blocks)[index]], axis=1)
        return dict(zip(names, chosen, strict=True))
