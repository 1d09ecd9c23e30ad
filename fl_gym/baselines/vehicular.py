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
| `vehicular-lyapunov` | Lyapunov JPRA with tail virtual queues (the paper) | clustered |
| `vehicular-average-queue` | the same JPRA on the queue alone (the paper's baseline) | clustered |
| `vehicular-drift-plus-penalty` | one-slot drift-plus-penalty with tail virtual queues | best |
| `vehicular-drift-plus-penalty-average-queue` | the same on an average-queue target | best |
| `vehicular-max-power` | ``p_max`` | best |
| `vehicular-queue-proportional` | level proportional to ``Q / q0`` (silent when empty) | best |
| `vehicular-random-rb` | ``p_max`` | uniform at random (option ``seed``) |

"best" is the block of the highest estimated SINR. "clustered" is the roadside unit's
resource-block allocation of the paper: pairs that interfere are grouped by spectral clustering,
every block is given to one pair of each cluster (orthogonal inside a cluster, reused across
clusters), in shares that grow with the queues, and each pair picks, among its blocks, the one
the per-slot optimisation prefers (see :class:`LyapunovJPRAPolicy`).

The estimated SINR of pair k on block b at power p is ``(p / p_max) snr_kb / (1 + inr_kb)``,
the observed SNR at ``p_max`` for the coming slot over the interference the receiver saw on that
block in the last slot (interference is assumed to persist for one slot).
"""

from __future__ import annotations

import abc
import math
import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from fl_gym.envs.vehicular.codec import VehicularCodec
from fl_gym.envs.vehicular.env import SNR_SCALE_DB, VehicularURLLCConfig
from fl_gym.sim.config import check_choice, check_int, check_real

__all__ = [
    "VEHICULAR_BASELINES",
    "AverageQueueJPRAPolicy",
    "DriftPlusPenaltyAverageQueuePolicy",
    "DriftPlusPenaltyTailPolicy",
    "LyapunovJPRAPolicy",
    "MaxPowerPolicy",
    "QueueProportionalPolicy",
    "RandomBlockPolicy",
    "VehicularPolicy",
    "allocate_blocks",
    "best_discrete_allocation",
    "estimate_coupling",
    "lindley_update",
    "make_vehicular_baseline",
    "spectral_clusters",
    "unscale_device_observation",
]


def unscale_device_observation(
    devices: np.ndarray, num_blocks: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The physical quantities behind the device rows of a vehicular observation.

    Inverts the scaling of
    :meth:`fl_gym.envs.vehicular.env.VehicularURLLCEnv.device_matrix`, which builds the rows
    ``[Q / q0, 10 log10(snr) / SNR_SCALE_DB, 10 log10(1 + I / noise) / SNR_SCALE_DB]`` (SNR at
    ``p_max`` and last-slot interference per block). Values the env clipped to ``OBS_BOUND``
    stay clipped.

    Args:
        devices: ``(K, 1 + 2N)`` device rows (``obs["devices"]``, or the first ``1 + 2N``
            entries of each PettingZoo agent's observation).
        num_blocks: ``N``, the number of resource blocks.

    Returns:
        ``(K,)`` queues in units of ``q0``; ``(K, N)`` SNR at ``p_max`` (linear); ``(K, N)``
        last interference over noise (linear, at least 0), all float64.
    """
    n = num_blocks
    d = np.asarray(devices, dtype=np.float64)
    snr = np.power(10.0, d[:, 1 : 1 + n] * SNR_SCALE_DB / 10.0)
    inr = np.maximum(np.power(10.0, d[:, 1 + n :] * SNR_SCALE_DB / 10.0) - 1.0, 0.0)
    return d[:, 0], snr, inr


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
        queue, snr, inr = unscale_device_observation(devices, self.num_blocks)
        q0 = self.config.system.queue_threshold_bits
        return {"queue_bits": queue * q0, "effective_snr": snr / (1.0 + inr)}

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


class DriftPlusPenaltyTailPolicy(_DriftPlusPenalty):
    """One-slot drift-plus-penalty with virtual queues for the URLLC tail constraints.

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
    reliability more. A simpler rule than the paper's allocation (:class:`LyapunovJPRAPolicy`):
    one block per pair by estimated SINR, the next queue predicted at the mean arrival.

    Args:
        env: The environment.
        tradeoff_v: ``V``, the weight of power against the queues (larger saves more power).
    """

    name = "vehicular-drift-plus-penalty"

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


class DriftPlusPenaltyAverageQueuePolicy(_DriftPlusPenalty):
    """One-slot drift-plus-penalty on the average queue length.

    Reliability is asked of the mean only: ``E[Q] <= target_queue_fraction * q0``, tracked by a
    virtual queue ``Y <- (Y + Q / q0 - target)^+``; each pair picks the power level minimising
    ``V p / p_max + (Q / q0 + Y)(Q' / q0)`` on its best block, blind to the tail.

    Args:
        env: The environment.
        tradeoff_v: ``V``, the weight of power against the queue.
        target_queue_fraction: The average-queue target as a fraction of ``q0``.
    """

    name = "vehicular-drift-plus-penalty-average-queue"

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


# -- the paper's joint power and resource-block allocation -------------------------------------


def lindley_update(queue: np.ndarray, increment: np.ndarray) -> np.ndarray:
    """One step of a (virtual) queue, ``max(Z + y, 0)``.

    Over a run of increments ``y_1 .. y_n`` from ``Z_0 = 0`` this gives Lindley's closed form
    ``Z_n = max(0, max_m sum_{i > m} y_i)``, the largest sum of a suffix of the increments.
    """
    return np.maximum(queue + increment, 0.0)


def estimate_coupling(gram: np.ndarray, cross: np.ndarray, ridge: float = 1e-6) -> np.ndarray:
    """Cross-link gains from the interference the receivers saw, by (ridge) least squares.

    In a slot, receiver k measures on block b the interference ``y_bk = sum_j x_bj G_jk`` with
    ``x_bj`` the power (fraction of ``p_max``) of transmitter j if it used block b, else 0.
    With ``gram = sum_t X_t^T X_t`` and ``cross = sum_t X_t^T Y_t`` accumulated over slots,
    ``G = (gram + ridge I)^-1 cross``; the fading averages out over the slots.

    Args:
        gram: ``(K, K)`` accumulated ``X^T X``.
        cross: ``(K, K)`` accumulated ``X^T Y`` (interference over noise).
        ridge: Regularisation relative to the mean diagonal of ``gram``.

    Returns:
        ``(K, K)`` estimated gains ``[tx j, rx k]`` at ``p_max`` over noise, clipped at 0, with a
        zero diagonal.
    """
    k = gram.shape[0]
    scale = max(float(np.trace(gram)) / k, 1e-12)
    gains = np.linalg.solve(gram + ridge * scale * np.eye(k), cross)
    gains = np.maximum(gains, 0.0)
    np.fill_diagonal(gains, 0.0)
    return gains


def spectral_clusters(
    affinity: np.ndarray, num_clusters: int, rng: np.random.Generator
) -> np.ndarray:
    """Normalised spectral clustering (Ng, Jordan and Weiss), as in the authors' simulations.

    The rows of the ``num_clusters`` eigenvectors of the smallest eigenvalues of the normalised
    Laplacian ``I - D^-1/2 S D^-1/2`` are scaled to unit length and grouped by k-means
    (:func:`scipy.cluster.vq.kmeans2`, k-means++ start drawn from ``rng``).

    Args:
        affinity: ``(K, K)`` symmetric non-negative similarities ``S``.
        num_clusters: Clusters wanted (at most K).
        rng: Draws the k-means start.

    Returns:
        ``(K,)`` cluster labels (a cluster k-means leaves empty is absent).
    """
    from scipy.cluster.vq import kmeans2

    s = 0.5 * (affinity + affinity.T)
    np.fill_diagonal(s, 0.0)
    inv_sqrt = 1.0 / np.sqrt(np.maximum(s.sum(axis=1), 1e-300))
    laplacian = np.eye(len(s)) - inv_sqrt[:, None] * s * inv_sqrt[None, :]
    _, vectors = np.linalg.eigh(laplacian)
    embedding = vectors[:, :num_clusters]
    embedding = embedding / np.maximum(np.linalg.norm(embedding, axis=1, keepdims=True), 1e-300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "one of the clusters is empty"
        _, labels = kmeans2(embedding, num_clusters, minit="++", seed=rng)
    return labels.astype(np.int64)


def allocate_blocks(
    labels: np.ndarray,
    queue: np.ndarray,
    num_blocks: int,
    rng: np.random.Generator,
    queue_offset: float = 1.0,
) -> np.ndarray:
    """The roadside unit's resource-block table: orthogonal in a cluster, reused across clusters.

    In each cluster every block is given to exactly one member; every member gets at least one
    block and the blocks left over go in proportion to ``queue + queue_offset`` (largest
    remainders); the blocks are then dealt to the members in a random order. A cluster with more
    members than blocks gives every member one block, some blocks going to two members.

    Args:
        labels: ``(K,)`` cluster of each pair.
        queue: ``(K,)`` queues (any unit; ``queue_offset`` in the same unit).
        num_blocks: N.
        rng: Draws the order of the blocks.
        queue_offset: Added to every queue, so that empty queues still share.

    Returns:
        ``(K, N)`` boolean table: pair k may use block b.
    """
    table = np.zeros((len(labels), num_blocks), dtype=bool)
    for cluster in np.unique(labels):
        members = np.flatnonzero(labels == cluster)
        size = members.size
        if size >= num_blocks:
            blocks = np.resize(rng.permutation(num_blocks), size)
            table[members, blocks] = True
            continue
        share = queue[members] + queue_offset
        extra = (num_blocks - size) * share / share.sum()
        counts = 1 + np.floor(extra).astype(np.int64)
        left = num_blocks - int(counts.sum())
        counts[np.argsort(-(extra - np.floor(extra)), kind="stable")[:left]] += 1
        owner = np.repeat(members, counts)[rng.permutation(num_blocks)]
        table[owner, np.arange(num_blocks)] = True
    return table


def best_discrete_allocation(
    weight: np.ndarray,
    cinr: np.ndarray,
    allowed: np.ndarray,
    power_fraction: np.ndarray,
    tradeoff_v: float,
    bits_per_unit: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Every pair's minimiser of the per-slot drift-plus-penalty bound over its actions.

    Pair k picks the power level l and, among its allowed blocks, the block b minimising
    ``V f_l - beta_k bits_per_unit log2(1 + f_l cinr_kb)`` (``f_l = p_l / p_max``, ``cinr`` the
    channel-to-interference-plus-noise ratio at ``p_max``). The network-wide bound is a sum of
    these per-pair terms once the blocks are orthogonal in a cluster (the interference from other
    clusters is the estimate), so the joint minimum is the pairs' own minima. Ties go to the lower
    power, then the lower block; silence (``f = 0``) costs 0.

    Args:
        weight: ``(K,)`` ``beta_k``, the queue-backlog weight of a served bit.
        cinr: ``(K, N)`` ratio at ``p_max``.
        allowed: ``(K, N)`` boolean table of the blocks each pair may use.
        power_fraction: ``(L,)`` ``f_l``, increasing, ``f_0 = 0``.
        tradeoff_v: ``V``.
        bits_per_unit: Served units per bit/s/Hz (``B dt`` over the unit of the queue).

    Returns:
        ``(K,)`` levels and ``(K,)`` blocks.
    """
    served = bits_per_unit * np.log2(1.0 + power_fraction[None, :, None] * cinr[:, None, :])
    cost = tradeoff_v * power_fraction[None, :, None] - weight[:, None, None] * served
    cost = np.where(allowed[:, None, :], cost, np.inf)  # (K, L, N)
    flat = np.argmin(cost.reshape(cost.shape[0], -1), axis=1)
    levels, blocks = np.divmod(flat, cinr.shape[1])
    return levels.astype(np.int64), blocks.astype(np.int64)


TAIL_THRESHOLDS = ("federated", "target")
"""Where :class:`LyapunovJPRAPolicy` takes the thresholds of its mean and second-moment queues."""


class LyapunovJPRAPolicy(VehicularPolicy):
    """The joint power and resource allocation (JPRA) of Samarakoon et al., slot by slot.

    **Virtual queues** (one per pair and tail constraint; ``q = Q / q0``, ``x = (q - 1)^+``, and
    ``g1 = m1 / q0``, ``g2 = m2 / q0^2`` the conditional mean and second moment
    ``m1 = sigma / (1 - xi)``, ``m2 = 2 sigma^2 / ((1 - xi)(1 - 2 xi))`` of the roadside unit's
    federated GPD estimate of the exceedances), updated on each observed queue::

        Z0 <- max(Z0 + 1{q > 1} - eps, 0)                     Pr(Q > q0) <= eps
        Z1 <- max(Z1 + 1{q > 1} (x / g1 - 1), 0)               E[X | Q > q0] <= m1
        Z2 <- max(Z2 + 1{q > 1} (x^2 / g2 - 1), 0)             E[X^2 | Q > q0] <= m2

    **Per-slot problem.** With ``L = (q^2 + Z0^2 + Z1^2 + Z2^2) / 2``, terms quadratic in the
    served bits ``s`` (in units of ``q0``) bounded by a constant, and ``1{q' > 1} <= q'^2``,
    the drift-plus-penalty bound of a slot is, up to terms the decision does not change,
    ``sum_k V p_k / p_max - beta_k s_k`` with the backlog weight

        ``beta = q (1 + 2 Z0) + 1{q > 1} (Z1 / g1 + 2 x Z2 / g2)``.

    It separates over the pairs: each pair minimises ``V p / p_max - beta s(p, b)`` over its
    power levels and allowed blocks (:func:`best_discrete_allocation`). The paper lets a pair
    spread power over all its blocks by water-filling, ``p_b / p_max = [beta B dt / (V q0 ln 2)
    - 1 / cinr_b]^+`` (a lower water level where ``sum_b p_b`` would pass ``p_max``); this
    environment gives a pair one block and discrete power levels a slot, so the exact minimiser
    over those actions is taken instead (on a fine grid of levels it is the water-filling level,
    tests/test_vehicular_jpra.py).
    The rate of a block is predicted from the SNR at ``p_max`` of the coming slot and the
    interference estimate ``I <- w I + (1 - w) I_last`` (``w = interference_memory``, 0.5 in
    the authors' simulations).

    **Resource blocks** (the roadside unit, every ``allocation_interval_slots``): the pairs are
    grouped into ``num_clusters`` clusters by spectral clustering (:func:`spectral_clusters`)
    and the blocks dealt by :func:`allocate_blocks` (orthogonal in a cluster, shares growing
    with the queues).
    The paper clusters by the vehicles' positions; the controllers here see no positions, so the
    affinity of two pairs is ``log(1 + G_jk + G_kj)`` with ``G`` the cross-link gains estimated
    from the observed interference (:func:`estimate_coupling`, exponentially forgotten with
    ``coupling_memory`` per slot): pairs that interfere share a cluster. Until the first
    transmissions have been seen every pair may use every block.

    Args:
        env: The environment.
        tradeoff_v: ``V``, the weight of power against the queues (larger saves more power).
        num_clusters: Clusters of the resource-block allocation (capped at K).
        allocation_interval_slots: Slots between two resource-block allocations.
        interference_memory: ``w`` of the interference estimate, in [0, 1).
        coupling_memory: Forgetting factor of the coupling estimate per slot, in (0, 1].
        tail_thresholds: ``"federated"`` (``m1``, ``m2`` of the federated estimate, as in the
            authors' simulations) or ``"target"`` (those of the target GPD ``(sigma_th,
            xi_th)`` of the configuration, ignoring the estimate).
        seed: Seed of the clustering and of the order the blocks are dealt in.
    """

    name = "vehicular-lyapunov"
    tail_aware: ClassVar[bool] = True
    """Whether the tail virtual queues enter the weight (False: the queue alone)."""

    def __init__(
        self,
        env: Any,
        *,
        tradeoff_v: float = 0.1,
        num_clusters: int = 4,
        allocation_interval_slots: int = 100,
        interference_memory: float = 0.5,
        coupling_memory: float = 0.99,
        tail_thresholds: str = "federated",
        seed: int = 0,
    ) -> None:
        super().__init__(env)
        self.tail_thresholds = check_choice("tail_thresholds", tail_thresholds, TAIL_THRESHOLDS)
        self.tradeoff_v = check_real("tradeoff_v", tradeoff_v, low=0.0)
        self.num_clusters = check_int("num_clusters", num_clusters, minimum=1)
        self.allocation_interval_slots = check_int(
            "allocation_interval_slots", allocation_interval_slots, minimum=1
        )
        self.interference_memory = check_real(
            "interference_memory", interference_memory, low=0.0, high=1.0, high_open=True
        )
        self.coupling_memory = check_real(
            "coupling_memory", coupling_memory, low=0.0, high=1.0, low_open=True
        )
        self.seed = check_int("seed", seed, minimum=0)
        sys_cfg = self.config.system
        self.bits_per_unit = (
            sys_cfg.rb_bandwidth_hz * sys_cfg.slot_duration_s / sys_cfg.queue_threshold_bits
        )

    def new_memory(self) -> dict[str, np.ndarray]:
        k, n = self.num_pairs, self.num_blocks
        return {
            "z": np.zeros((3, k)),
            "interference": np.zeros((k, n)),
            "gram": np.zeros((k, k)),
            "cross": np.zeros((k, k)),
            "allowed": np.ones((k, n), dtype=bool),
            "labels": np.zeros(k, dtype=np.int64),
            "last_levels": np.zeros(k, dtype=np.int64),
            "last_blocks": np.zeros(k, dtype=np.int64),
            "slot": np.zeros((), dtype=np.int64),
        }

    def tail_targets(self, server: np.ndarray) -> tuple[float, float]:
        """``(g1, g2)``: the thresholds of the virtual queues ``Z1``, ``Z2`` in units of ``q0``
        (the federated estimate's conditional moments, or the target's)."""
        sys_cfg = self.config.system
        q0 = sys_cfg.queue_threshold_bits
        if self.tail_thresholds == "target":
            return (
                sys_cfg.tail_mean_target_bits / q0,
                sys_cfg.tail_second_moment_target_bits2 / q0**2,
            )
        sigma = max(float(server[0]), 1e-6) * sys_cfg.tail_scale_target_bits
        xi = min(float(server[1]), 0.49)
        mean = sigma / (1.0 - xi)
        second = 2.0 * sigma**2 / ((1.0 - xi) * (1.0 - 2.0 * xi))
        return mean / q0, second / q0**2

    def update_virtual_queues(
        self, z: np.ndarray, queue: np.ndarray, targets: tuple[float, float]
    ) -> np.ndarray:
        """The three virtual queues ``(3, K)`` after observing the queues ``/ q0``."""
        g1, g2 = targets
        over = queue > 1.0
        x = np.maximum(queue - 1.0, 0.0)
        eps = self.config.system.tail_probability_target
        increments = np.stack([over - eps, over * (x / g1 - 1.0), over * (x * x / g2 - 1.0)])
        return lindley_update(z, increments)

    def backlog_weight(
        self, z: np.ndarray, queue: np.ndarray, targets: tuple[float, float]
    ) -> np.ndarray:
        """``beta (K,)``: the weight of a served unit in the per-slot bound."""
        if not self.tail_aware:
            return queue.copy()
        g1, g2 = targets
        over = queue > 1.0
        x = np.maximum(queue - 1.0, 0.0)
        return queue * (1.0 + 2.0 * z[0]) + over * (z[1] / g1 + 2.0 * x * z[2] / g2)

    def _learn_coupling(self, memory: dict[str, np.ndarray], inr: np.ndarray) -> None:
        """Fold the last slot's decision and the interference it caused into the estimate."""
        fraction = self.power_fraction[memory["last_levels"]]
        x = np.zeros((self.num_blocks, self.num_pairs))
        x[memory["last_blocks"], np.arange(self.num_pairs)] = fraction
        lam = self.coupling_memory
        memory["gram"] = lam * memory["gram"] + x.T @ x
        memory["cross"] = lam * memory["cross"] + x.T @ inr.T

    def _allocate(self, memory: dict[str, np.ndarray], queue: np.ndarray) -> np.ndarray:
        """The block table of the coming interval; ``memory["labels"]`` gets the clusters."""
        k = self.num_pairs
        if not np.any(np.diagonal(memory["gram"]) > 0):
            memory["labels"] = np.arange(k)  # no coupling seen yet: no orthogonality either
            return np.ones((k, self.num_blocks), dtype=bool)
        round_index = int(memory["slot"]) // self.allocation_interval_slots
        rng = np.random.default_rng([self.seed, round_index])
        clusters = min(self.num_clusters, k)
        if clusters == 1:
            labels = np.zeros(k, dtype=np.int64)
        elif clusters == k:
            labels = np.arange(k)
        else:
            gains = estimate_coupling(memory["gram"], memory["cross"])
            affinity = np.log1p(gains + gains.T) + 1e-6
            labels = spectral_clusters(affinity, clusters, rng)
        memory["labels"] = labels
        return allocate_blocks(labels, queue, self.num_blocks, rng)

    def decide(
        self, devices: np.ndarray, server: np.ndarray, memory: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        queue, snr, inr = unscale_device_observation(devices, self.num_blocks)
        slot = int(memory["slot"])
        if slot > 0:
            self._learn_coupling(memory, inr)
            w = self.interference_memory
            memory["interference"] = w * memory["interference"] + (1.0 - w) * inr
        else:
            memory["interference"] = inr
        targets = self.tail_targets(server)
        memory["z"] = self.update_virtual_queues(memory["z"], queue, targets)
        if slot % self.allocation_interval_slots == 0:
            memory["allowed"] = self._allocate(memory, queue)
        weight = self.backlog_weight(memory["z"], queue, targets)
        cinr = snr / (1.0 + memory["interference"])
        levels, blocks = best_discrete_allocation(
            weight,
            cinr,
            memory["allowed"],
            self.power_fraction,
            self.tradeoff_v,
            self.bits_per_unit,
        )
        memory["last_levels"], memory["last_blocks"] = levels, blocks
        memory["slot"] = np.asarray(slot + 1)
        return levels, blocks


class AverageQueueJPRAPolicy(LyapunovJPRAPolicy):
    """The paper's average-queue baseline: the same allocation with ``beta = Q / q0``.

    Without the tail virtual queues the drift-plus-penalty rule only keeps the queues stable
    (their average bounded, as ``O(V)``); everything else (clustering, block shares, the
    per-slot minimiser, the interference estimate) is :class:`LyapunovJPRAPolicy`'s.
    """

    name = "vehicular-average-queue"
    tail_aware = False


VEHICULAR_BASELINES: dict[str, type[VehicularPolicy]] = {
    cls.name: cls
    for cls in (
        LyapunovJPRAPolicy,
        AverageQueueJPRAPolicy,
        DriftPlusPenaltyTailPolicy,
        DriftPlusPenaltyAverageQueuePolicy,
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
