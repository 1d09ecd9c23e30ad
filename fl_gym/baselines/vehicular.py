"""Heuristic power and resource-block allocation for the vehicular URLLC environments.

Every policy reads only observations (queue, per-block SNR and last interference of each pair,
and the roadside unit's federated tail estimate) and decides for all pairs at once, in one
vectorised computation. It serves both environments:

* ``fl_gym/VehicularURLLC-v1`` (Gymnasium): ``predict(obs, state, episode_start,
  deterministic) -> (action, state)``, Stable-Baselines3's convention, for its Dict
  observation (one observation or a vector env's batch);
* ``vehicular_v1`` (PettingZoo): the same ``predict`` given the dict of the agents'
  observations returns the dict of their actions.

| name | power | block |
| --- | --- | --- |
| `vehicular-lyapunov` | drift-plus-penalty, virtual queues for the tail (the paper) | best |
| `vehicular-average-queue` | drift-plus-penalty on the average queue (its baseline) | best |
| `vehicular-max-power` | ``p_max`` | best |
| `vehicular-queue-proportional` | level proportional to ``Q / q0`` (silent when empty) | best |
| `vehicular-random-rb` | ``p_max`` | uniform at random (option ``seed``) |

"best" is the block of the highest estimated SINR.

The estimated SINR of pair k on block b at power p is ``(p / p_max) snr_kb / (1 + inr_kb)``,
the observed SNR at ``p_max`` for the coming slot over the interference the receiver saw on that
block in the last slot (interference is assumed to persist for one slot).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from fl_gym.envs.vehicular.codec import VehicularCodec
from fl_gym.envs.vehicular.env import SNR_SCALE_DB, VehicularURLLCConfig

__all__ = [
    "VEHICULAR_BASELINES",
    "AverageQueuePolicy",
    "LyapunovTailPolicy",
    "MaxPowerPolicy",
    "QueueProportionalPolicy",
    "RandomBlockPolicy",
    "VehicularPolicy",
    "make_vehicular_baseline",
]


class VehicularPolicy(abc.ABC):
    """Base class: decoding of observations, episode memory, the two calling conventions.

    Args:
        env: A vehicular environment (Gymnasium, wrapped or not, or PettingZoo), read for its
            configuration only.
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = "vehicular"
    """The environment family the policy plays (see :func:`fl_gym.envs.rollout.env_family`)."""

    def __init__(self, env: Any) -> None:
        config = getattr(getattr(env, "unwrapped", env), "config", None)
        if not isinstance(config, VehicularURLLCConfig):
            raise TypeError(f"env must be a vehicular URLLC environment, got {env!r}")
        self.config = config
        sys_cfg = config.system
        self.codec = VehicularCodec.from_system(sys_cfg)
        """The environments' action codec: levels and blocks <-> actions, agents' names."""
        self.num_pairs = sys_cfg.num_pairs
        self.num_blocks = sys_cfg.num_resource_blocks
        self.power_fraction = sys_cfg.power_levels_w / sys_cfg.p_max_w  # (L,)
        self._memories: dict[int, dict[str, np.ndarray]] = {}

    # -- reading observations ------------------------------------------------------------------

    def _decode(self, devices: np.ndarray) -> dict[str, np.ndarray]:
        n = self.num_blocks
        q0 = self.config.system.queue_threshold_bits
        d = np.asarray(devices, dtype=np.float64)
        snr = np.power(10.0, d[:, 1 : 1 + n] * SNR_SCALE_DB / 10.0)
        inr = np.power(10.0, d[:, 1 + n :] * SNR_SCALE_DB / 10.0) - 1.0
        return {"queue_bits": d[:, 0] * q0, "effective_snr": snr / (1.0 + np.maximum(inr, 0.0))}

    def _best_block(self, effective_snr: np.ndarray) -> np.ndarray:
        return np.argmax(effective_snr, axis=1)

    def _served_bits(self, queue: np.ndarray, effective_snr: np.ndarray) -> np.ndarray:
        """``(K, L)`` bits each power level would serve on the pair's chosen block."""
        sys_cfg = self.config.system
        sinr = self.power_fraction[None, :] * effective_snr[:, None]
        rate = sys_cfg.rb_bandwidth_hz * np.log1p(sinr) / math.log(2.0)
        return np.minimum(queue[:, None], rate * sys_cfg.slot_duration_s)

    # -- deciding ------------------------------------------------------------------------------

    @abc.abstractmethod
    def decide(
        self, devices: np.ndarray, server: np.ndarray, memory: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Power levels ``(K,)`` and blocks ``(K,)`` of every pair; may update ``memory``."""

    def new_memory(self) -> dict[str, np.ndarray]:
        """The policy's state at the start of an episode."""
        return {}

    def reset(self) -> None:
        """Forget every episode (the next call starts afresh, as a newly built policy would)."""
        self._memories = {}

    def predict(
        self,
        observation: Mapping[str, np.ndarray],
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[Any, Any]:
        """The action(s) for an observation, with Stable-Baselines3's calling convention.

        Args:
            observation: The Gymnasium environment's Dict observation (``devices``,
                ``server``; one or a vector env's batch), or the PettingZoo environment's dict
                of agents' observations (agents named ``pair_<k>``).
            state: Returned unchanged (episode memory is kept per environment of a batch).
            episode_start: True where an episode starts (clears that environment's memory).
            deterministic: Ignored (the policies are deterministic given their seed).

        Returns:
            The action(s) of the Gymnasium space, or the dict of every agent's action; and
            ``state``.
        """
        if "devices" not in observation:
            return self._predict_agents(observation, episode_start), state
        devices = np.asarray(observation["devices"])
        server = np.asarray(observation["server"])
        batched = devices.ndim == 3
        if not batched:
            devices, server = devices[None], server[None]
        starts = np.broadcast_to(
            np.asarray(False if episode_start is None else episode_start), (devices.shape[0],)
        )
        actions = np.empty((devices.shape[0], 2 * self.num_pairs), dtype=np.int64)
        for env_index in range(devices.shape[0]):  # over environments of a batch
            if starts[env_index] or env_index not in self._memories:
                self._memories[env_index] = self.new_memory()
            levels, blocks = self.decide(
                devices[env_index], server[env_index], self._memories[env_index]
            )
            actions[env_index] = self.codec.encode(levels, blocks)
        return (actions if batched else actions[0]), state

    def _predict_agents(
        self, observations: Mapping[str, np.ndarray], episode_start: Any
    ) -> dict[str, np.ndarray]:
        """Every agent's action of the PettingZoo environment from the agents' observations."""
        names = list(observations)
        if not names:
            return {}
        rows = np.stack([observations[name] for name in names])
        width = 1 + 2 * self.num_blocks
        index = np.array([self.codec.agent_index(name) for name in names])
        devices = np.zeros((self.num_pairs, width))
        devices[index] = rows[:, :width]
        start = bool(np.any(episode_start)) if episode_start is not None else False
        if start or 0 not in self._memories:
            self._memories[0] = self.new_memory()
        levels, blocks = self.decide(devices, rows[0, width:], self._memories[0])
        return self.codec.encode_agents(levels, blocks, names)


class MaxPowerPolicy(VehicularPolicy):
    """Every pair at ``p_max`` on its best block (best estimated SINR).

    The reliability end of the trade-off: it spends the most power, whatever the queue, and
    serves as the reference of the other policies' power savings.
    """

    name = "vehicular-max-power"

    def decide(
        self, devices: np.ndarray, server: np.ndarray, memory: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        obs = self._decode(devices)
        levels = np.full(self.num_pairs, self.codec.max_level)
        return levels, self._best_block(obs["effective_snr"])


class QueueProportionalPolicy(VehicularPolicy):
    """Power level proportional to the backlog: ``ceil((L - 1) min(Q / q0, 1))``, best block.

    An empty queue stays silent; a queue at or above ``q0`` transmits at ``p_max``.
    """

    name = "vehicular-queue-proportional"

    def decide(
        self, devices: np.ndarray, server: np.ndarray, memory: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        obs = self._decode(devices)
        top = self.codec.max_level
        ratio = np.minimum(obs["queue_bits"] / self.config.system.queue_threshold_bits, 1.0)
        levels = np.ceil(top * ratio - 1e-12).clip(0, top).astype(np.int64)
        return levels, self._best_block(obs["effective_snr"])


class RandomBlockPolicy(VehicularPolicy):
    """``p_max`` on a resource block drawn uniformly at random per pair and slot.

    Args:
        env: The environment.
        seed: Seed of the policy's own generator (the environment's randomness is untouched).
    """

    name = "vehicular-random-rb"

    def __init__(self, env: Any, *, seed: int = 0) -> None:
        super().__init__(env)
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def reset(self) -> None:
        """Forget every episode and re-seed the block draws, as a newly built policy would."""
        super().reset()
        self._rng = np.random.default_rng(self.seed)

    def decide(
        self, devices: np.ndarray, server: np.ndarray, memory: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        levels = np.full(self.num_pairs, self.codec.max_level)
        return levels, self._rng.integers(0, self.num_blocks, self.num_pairs)


class _DriftPlusPenalty(VehicularPolicy):
    """Shared machinery: per pair, the power level minimising a one-slot drift-plus-penalty
    bound on its best block, with the next queue predicted at the mean arrival."""

    def __init__(self, env: Any, *, tradeoff_v: float = 1.0) -> None:
        super().__init__(env)
        if not (math.isfinite(tradeoff_v) and tradeoff_v >= 0):
            raise ValueError(f"tradeoff_v must be a finite number >= 0, got {tradeoff_v!r}")
        self.tradeoff_v = float(tradeoff_v)

    def _predict_queue(
        self, queue: np.ndarray, effective_snr: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Chosen blocks ``(K,)``, bits served ``(K, L)`` and predicted next queue ``(K, L)``."""
        blocks = self._best_block(effective_snr)
        best = effective_snr[np.arange(self.num_pairs), blocks]
        served = self._served_bits(queue, best)
        arrivals = self.config.system.mean_arrival_bits_per_slot
        return blocks, served, queue[:, None] - served + arrivals


class LyapunovTailPolicy(_DriftPlusPenalty):
    """Drift-plus-penalty with virtual queues for the URLLC tail constraints (Samarakoon et al.).

    Three virtual queues per pair track the constraints ``Pr(Q > q0) <= eps``,
    ``E[X | Q > q0] <= gamma1`` and ``E[X^2 | Q > q0] <= gamma2`` (``X = Q - q0``), normalised:
    after each observed queue ``Q``,
    ``Z0 <- (Z0 + 1{Q > q0} - eps)^+``, ``Z1 <- (Z1 + 1{Q > q0} (X / gamma1 - 1))^+``,
    ``Z2 <- (Z2 + 1{Q > q0} (X^2 / gamma2 - 1))^+``. Each pair then picks the power level
    minimising, for the next queue ``Q'`` predicted at the mean arrival and ``X' = (Q' - q0)^+``,

        ``V p / p_max - (Q / q0)(served / q0) + u [Z0 1{Q' > q0} + Z1 (X' / gamma1)
        + Z2 (X'^2 / gamma2)]``,

    where the federated tail estimate sets the urgency ``u = max(1, m1 / gamma1, m2 / gamma2)``
    from the GPD's conditional moments ``m1 = sigma / (1 - xi)``, ``m2 = 2 sigma^2 / ((1 - xi)
    (1 - 2 xi))``: when the network-wide tail is heavier than the target, every pair weighs
    reliability more. This is our reading of the paper's joint power and resource allocation,
    written for the slot-by-slot decisions of this environment.

    Args:
        env: The environment.
        tradeoff_v: ``V``, the weight of power against the queues (larger saves more power).
    """

    name = "vehicular-lyapunov"

    def new_memory(self) -> dict[str, np.ndarray]:
        return {"z": np.zeros((3, self.num_pairs))}

    def decide(
        self, devices: np.ndarray, server: np.ndarray, memory: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        sys_cfg = self.config.system
        q0 = sys_cfg.queue_threshold_bits
        g1, g2 = sys_cfg.tail_mean_target_bits, sys_cfg.tail_second_moment_target_bits2
        obs = self._decode(devices)
        queue = obs["queue_bits"]
        over = queue > q0
        x = np.maximum(queue - q0, 0.0)
        z = memory["z"]
        z[0] = np.maximum(z[0] + over - sys_cfg.tail_probability_target, 0.0)
        z[1] = np.maximum(z[1] + over * (x / g1 - 1.0), 0.0)
        z[2] = np.maximum(z[2] + over * (x * x / g2 - 1.0), 0.0)
        sigma = float(server[0]) * sys_cfg.tail_scale_target_bits
        xi = min(float(server[1]), 0.49)
        m1 = sigma / (1.0 - xi)
        m2 = 2.0 * sigma**2 / ((1.0 - xi) * (1.0 - 2.0 * xi))
        urgency = max(1.0, m1 / g1, m2 / g2)
        blocks, served, next_queue = self._predict_queue(queue, obs["effective_snr"])
        x_next = np.maximum(next_queue - q0, 0.0)
        cost = (
            self.tradeoff_v * self.power_fraction[None, :]
            - (queue / q0)[:, None] * served / q0
            + urgency
            * (
                z[0][:, None] * (x_next > 0)
                + z[1][:, None] * x_next / g1
                + z[2][:, None] * x_next**2 / g2
            )
        )
        return np.argmin(cost, axis=1), blocks


class AverageQueuePolicy(_DriftPlusPenalty):
    """Drift-plus-penalty on the average queue length, the baseline of Samarakoon et al.

    Reliability is asked of the mean only: ``E[Q] <= target_queue_fraction * q0``, tracked by a
    virtual queue ``Y <- (Y + Q / q0 - target)^+``; each pair picks the power level minimising
    ``V p / p_max + (Q / q0 + Y)(Q' / q0)`` on its best block, blind to the tail.

    Args:
        env: The environment.
        tradeoff_v: ``V``, the weight of power against the queue.
        target_queue_fraction: The average-queue target as a fraction of ``q0``.
    """

    name = "vehicular-average-queue"

    def __init__(
        self, env: Any, *, tradeoff_v: float = 1.0, target_queue_fraction: float = 0.5
    ) -> None:
        super().__init__(env, tradeoff_v=tradeoff_v)
        if not (math.isfinite(target_queue_fraction) and target_queue_fraction > 0):
            raise ValueError(
                f"target_queue_fraction must be a finite number > 0, got {target_queue_fraction!r}"
            )
        self.target_queue_fraction = float(target_queue_fraction)

    def new_memory(self) -> dict[str, np.ndarray]:
        return {"y": np.zeros(self.num_pairs)}

    def decide(
        self, devices: np.ndarray, server: np.ndarray, memory: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        q0 = self.config.system.queue_threshold_bits
        obs = self._decode(devices)
        queue = obs["queue_bits"]
        memory["y"] = np.maximum(memory["y"] + queue / q0 - self.target_queue_fraction, 0.0)
        blocks, _, next_queue = self._predict_queue(queue, obs["effective_snr"])
        weight = queue / q0 + memory["y"]
        cost = self.tradeoff_v * self.power_fraction[None, :] + weight[:, None] * next_queue / q0
        return np.argmin(cost, axis=1), blocks


VEHICULAR_BASELINES: dict[str, type[VehicularPolicy]] = {
    cls.name: cls
    for cls in (
        LyapunovTailPolicy,
        AverageQueuePolicy,
        MaxPowerPolicy,
        QueueProportionalPolicy,
        RandomBlockPolicy,
    )
}
"""The vehicular policies by name."""


def make_vehicular_baseline(name: str, env: Any, **kwargs: Any) -> VehicularPolicy:
    """Build the vehicular policy ``name`` for ``env`` with its keyword options."""
    if name not in VEHICULAR_BASELINES:
        raise ValueError(
            f"unknown vehicular baseline {name!r}; allowed: {list(VEHICULAR_BASELINES)}"
        )
    return VEHICULAR_BASELINES[name](env, **kwargs)
