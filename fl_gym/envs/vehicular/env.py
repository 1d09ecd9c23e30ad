"""Vehicular URLLC: power and resource-block allocation of V2V pairs with a federated tail model.

This module holds what the Gymnasium environment (:class:`VehicularURLLCEnv`, the roadside unit
allocating for every pair) and the PettingZoo environment (:mod:`fl_gym.envs.vehicular_v1`, one
agent per transmitter) share: the configuration, the decoding of actions, the observation
features, the reward and the federated tail estimate. The physics is
:class:`fl_gym.sim.vehicular.system.VehicularSystem`; the tail model is
:mod:`fl_gym.sim.vehicular.tail`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from fl_gym.envs.human import HumanWindow, check_render_mode, ready_to_render
from fl_gym.envs.obs_mode import (
    Observation,
    check_obs_mode,
    flat_feature_names,
    flat_observation_space,
    flat_slices,
    flatten_observation,
)
from fl_gym.envs.vehicular.codec import VehicularCodec
from fl_gym.sim.config import (
    Range,
    check_instance,
    check_memory,
    check_ranges,
    reject_unknown_arguments,
    resolve_config,
)
from fl_gym.sim.threads import DEFAULT_NUM_THREADS, check_num_threads, with_torch_threads
from fl_gym.sim.vehicular.system import (
    PRESETS as SYSTEM_PRESETS,
)
from fl_gym.sim.vehicular.system import (
    SlotReport,
    VehicularConfig,
    VehicularSystem,
)
from fl_gym.sim.vehicular.tail import GPDParams, federated_round, gpd_conditional_moments

__all__ = [
    "REWARD_TERMS",
    "SERVER_FEATURES",
    "VehicularGame",
    "VehicularURLLCConfig",
    "VehicularURLLCEnv",
    "device_features",
    "make_urllc_config",
]

FAMILY = "the vehicular envs"
"""How errors name this family of environments."""

OBS_BOUND = 10.0
SNR_SCALE_DB = 30.0
"""``snr_db`` columns = SNR at ``p_max`` in dB / this."""
SERVER_FEATURES = ("tail_scale", "tail_shape", "time", "share_above_q0")
"""Entries of ``obs["server"]`` (and the last entries of a PettingZoo agent's observation)."""
REWARD_TERMS = ("power", "exceedance", "tail_mean", "tail_second_moment")
"""Terms of each pair's reward, in ``info["reward_terms"]``."""


PRESETS: dict[str, dict[str, Any]] = {
    name: {"system": dict(system)} for name, system in SYSTEM_PRESETS.items()
}
"""Named scenarios: the system presets (:data:`fl_gym.sim.vehicular.system.PRESETS`)."""


def device_features(num_resource_blocks: int) -> tuple[str, ...]:
    """Columns of ``obs["devices"]``: queue, N SNRs, N interference levels."""
    n = num_resource_blocks
    return ("queue", *(f"snr_db_{b}" for b in range(n)), *(f"inr_db_{b}" for b in range(n)))


@dataclass(frozen=True)
class VehicularURLLCConfig:
    """Everything a vehicular URLLC environment is built from.

    Attributes:
        system: The physics (:class:`~fl_gym.sim.vehicular.system.VehicularConfig`).
        max_steps: Episode length in slots: the ``time`` feature is ``slot / max_steps``; the
            PettingZoo environment truncates there (the Gymnasium one through
            ``max_episode_steps``, 100 when registered). In [1, 1000000].
        power_weight: Reward cost per unit of ``p / p_max``. In [0, 1e+06].
        exceedance_weight: Reward cost of a queue above ``q0`` (the ``Pr(Q > q0) <= eps``
            constraint). In [0, 1e+06].
        tail_mean_weight: Reward cost per unit of ``(X / gamma1 - 1)^+``, ``X = Q - q0`` the
            exceedance and ``gamma1`` the target conditional mean. In [0, 1e+06].
        tail_second_moment_weight: Reward cost per unit of ``(X^2 / gamma2 - 1)^+``, ``gamma2``
            the target conditional second moment. In [0, 1e+06].
        penalty_cap: Largest tail penalty (the last three terms together) of one pair in one
            slot, so that one runaway queue cannot swamp the return. In [0, 1e+06].
        fl_interval_slots: Slots between two federated rounds of the tail estimate. In [1, 1000000].
        fl_local_steps: Gradient steps per vehicle and round. In [1, 1000000].
        fl_learning_rate: Step size of those steps on ``(log sigma, xi)``. In (0, 1e+06].
        tail_buffer_size: Exceedances each vehicle keeps (the most recent ones) for the fit.
            In [2, 1000000].
    """

    system: VehicularConfig = field(default_factory=VehicularConfig)
    max_steps: int = 100
    power_weight: float = 1.0
    exceedance_weight: float = 1.0
    tail_mean_weight: float = 1.0
    tail_second_moment_weight: float = 1.0
    penalty_cap: float = 10.0
    fl_interval_slots: int = 10
    fl_local_steps: int = 5
    fl_learning_rate: float = 0.2
    tail_buffer_size: int = 64

    RANGES: ClassVar[Mapping[str, Range]] = {
        "max_steps": Range(1, 1_000_000, integer=True),
        "power_weight": Range(0.0, 1e6),
        "exceedance_weight": Range(0.0, 1e6),
        "tail_mean_weight": Range(0.0, 1e6),
        "tail_second_moment_weight": Range(0.0, 1e6),
        "penalty_cap": Range(0.0, 1e6),
        "fl_interval_slots": Range(1, 1_000_000, integer=True),
        "fl_local_steps": Range(1, 1_000_000, integer=True),
        "fl_learning_rate": Range(0.0, 1e6, low_open=True),
        "tail_buffer_size": Range(2, 1_000_000, integer=True),
    }
    """Documented plausible range of every numeric field (stated in its description)."""

    def __post_init__(self) -> None:
        check_instance("system", self.system, VehicularConfig)
        check_ranges(self, self.RANGES)
        check_memory(
            "num_pairs x tail_buffer_size",
            (self.system.num_pairs, self.tail_buffer_size),
            8 * self.system.num_pairs * self.tail_buffer_size,
            "the vehicles' exceedance buffers",
        )


def make_urllc_config(
    preset: str | None = None,
    overrides: Mapping[str, Any] | VehicularURLLCConfig | None = None,
    *,
    base: VehicularURLLCConfig | None = None,
) -> VehicularURLLCConfig:
    """A configuration from a preset and overrides.

    Args:
        preset: ``"urban"`` (the defaults) or ``"freeway"``
        (:data:`fl_gym.sim.vehicular.system.PRESETS`).
        overrides: A :class:`VehicularURLLCConfig` (used as is) or a dict. Keys are top-level
            field names, ``system.NAME`` or bare names of a ``system`` field; ``system`` may be
            a dict or a :class:`VehicularConfig`. Nested dicts read as dotted keys. Unknown keys
            are an error that names them.
        base: The configuration the preset and overrides apply to (the defaults if ``None``).

    Returns:
        The validated configuration.
    """
    base = VehicularURLLCConfig() if base is None else base
    return resolve_config(base, preset, overrides, presets=PRESETS, family=FAMILY)


# -- the shared game ---------------------------------------------------------------------------


class VehicularGame:
    """One episode of the vehicular system with rewards and the federated tail estimate.

    Both environments drive one of these: ``reset(rng)``, then ``play(levels, blocks, rng)``
    with validated per-pair power levels and blocks.
    """

    def __init__(self, config: VehicularURLLCConfig) -> None:
        self.config = config
        self.system = VehicularSystem(config.system)
        k, n = config.system.num_pairs, config.system.num_resource_blocks
        self.num_pairs, self.num_blocks = k, n
        self.num_device_features = 1 + 2 * n
        self.last_report: SlotReport | None = None

    def reset(self, rng: np.random.Generator) -> None:
        cfg = self.config
        k = self.num_pairs
        self.system.reset(rng)
        self.tail = GPDParams(cfg.system.tail_scale_target_bits, 0.0)
        self._buffer = np.zeros((k, cfg.tail_buffer_size))
        self._buffer_count = np.zeros(k, dtype=np.int64)
        self._buffer_next = np.zeros(k, dtype=np.int64)
        self.values_exchanged = 0
        self.fl_rounds = 0
        self.last_report = None

    @property
    def slot(self) -> int:
        return self.system.slot

    def play(
        self, levels: np.ndarray, blocks: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One slot; returns each pair's reward ``(K,)`` and its terms ``{name: (K,)}``."""
        cfg = self.config
        power_w = cfg.system.power_levels_w[levels]
        report = self.system.step(power_w, blocks, rng)
        self.last_report = report
        self._record_exceedances(report.exceedance_bits)
        if self.system.slot % cfg.fl_interval_slots == 0:
            self._federated_round()
        terms = self._reward_terms(report)
        return sum(terms.values()), terms  # type: ignore[return-value]

    def _record_exceedances(self, exceedance: np.ndarray) -> None:
        over = np.flatnonzero(exceedance > 0)
        if over.size == 0:
            return
        width = self.config.tail_buffer_size
        self._buffer[over, self._buffer_next[over]] = exceedance[over]
        self._buffer_next[over] = (self._buffer_next[over] + 1) % width
        self._buffer_count[over] = np.minimum(self._buffer_count[over] + 1, width)

    def _federated_round(self) -> None:
        cfg = self.config
        mask = np.arange(cfg.tail_buffer_size)[None, :] < self._buffer_count[:, None]
        new, active = federated_round(
            self._buffer,
            mask,
            self.tail,
            local_steps=cfg.fl_local_steps,
            learning_rate=cfg.fl_learning_rate,
        )
        if active:
            self.tail = new
            self.fl_rounds += 1
            # 3 values up per vehicle that took part, the 2 parameters down to every vehicle.
            self.values_exchanged += 3 * active + 2 * self.num_pairs

    def _reward_terms(self, report: SlotReport) -> dict[str, np.ndarray]:
        cfg = self.config
        sys_cfg = cfg.system
        x = report.exceedance_bits
        mean_excess = np.maximum(x / sys_cfg.tail_mean_target_bits - 1.0, 0.0)
        second_excess = np.maximum(x * x / sys_cfg.tail_second_moment_target_bits2 - 1.0, 0.0)
        penalty = np.stack(
            [
                cfg.exceedance_weight * (x > 0),
                cfg.tail_mean_weight * mean_excess,
                cfg.tail_second_moment_weight * second_excess,
            ]
        )
        # Scale the three tail terms down together where they exceed the cap.
        total = penalty.sum(axis=0)
        scale = np.where(total > cfg.penalty_cap, cfg.penalty_cap / np.maximum(total, 1e-300), 1.0)
        penalty = penalty * scale
        return {
            "power": -cfg.power_weight * report.power_w / sys_cfg.p_max_w,
            "exceedance": -penalty[0],
            "tail_mean": -penalty[1],
            "tail_second_moment": -penalty[2],
        }

    # -- observations ----------------------------------------------------------------------------

    def device_matrix(self) -> np.ndarray:
        """``(K, 1 + 2N)`` float32: queue / q0, SNR per block at p_max (dB / 30), interference
        per block at the receiver in the last slot (``10 log10(1 + I / noise) / 30``)."""
        sys_cfg = self.config.system
        noise = sys_cfg.noise_power_w
        out = np.empty((self.num_pairs, self.num_device_features))
        n = self.num_blocks
        out[:, 0] = self.system.queue_bits / sys_cfg.queue_threshold_bits
        snr = sys_cfg.p_max_w * self.system.own_gain / noise
        out[:, 1 : 1 + n] = 10.0 * np.log10(np.maximum(snr, 1e-30)) / SNR_SCALE_DB
        out[:, 1 + n :] = (
            10.0 * np.log10(1.0 + self.system.last_interference_w / noise) / (SNR_SCALE_DB)
        )
        return np.clip(out, -OBS_BOUND, OBS_BOUND).astype(np.float32)

    def server_vector(self) -> np.ndarray:
        """``(4,)`` float32: tail scale / sigma_th, tail shape, slot / max_steps, share of
        queues above q0."""
        sys_cfg = self.config.system
        values = np.array(
            [
                self.tail.scale / sys_cfg.tail_scale_target_bits,
                self.tail.shape,
                self.system.slot / self.config.max_steps,
                float(np.mean(self.system.queue_bits > sys_cfg.queue_threshold_bits)),
            ]
        )
        return np.clip(values, -OBS_BOUND, OBS_BOUND).astype(np.float32)

    def info(self) -> dict[str, Any]:
        """Network-wide numbers of the last slot."""
        sys_cfg = self.config.system
        q = self.system.queue_bits
        mean, second = gpd_conditional_moments(self.tail.scale, self.tail.shape)
        out: dict[str, Any] = {
            "slot": self.system.slot,
            "queue_bits": q.copy(),
            "share_above_q0": float(np.mean(q > sys_cfg.queue_threshold_bits)),
            "tail_scale_bits": self.tail.scale,
            "tail_shape": self.tail.shape,
            "tail_mean_bits": float(mean),
            "tail_second_moment_bits2": float(second),
            "fl_rounds": self.fl_rounds,
            "values_exchanged": self.values_exchanged,
        }
        report = self.last_report
        if report is not None:
            out.update(
                power_w=report.power_w,
                block=report.block,
                rate_bps=report.rate_bps,
                sinr=report.sinr,
                served_bits=report.served_bits,
                arrivals_bits=report.arrivals_bits,
                mean_power_w=float(report.power_w.mean()),
            )
        return out


# -- the Gymnasium environment -----------------------------------------------------------------


class VehicularURLLCEnv(gym.Env):
    r"""The roadside unit allocates power and resource blocks to every V2V pair, slot by slot.

    ## Description

    After Samarakoon, Bennis, Saad and Debbah, "Distributed Federated Learning for
    Ultra-Reliable Low-Latency Vehicular Communications" (IEEE Trans. Commun. 2020). K = 20
    vehicle-to-vehicle pairs drive a Manhattan grid (or a freeway with ``preset="freeway"``)
    and share N = 10 resource blocks of 180 kHz; pairs on the same block interfere. Every 1 ms
    slot each transmitter's queue receives Poisson packets (1 per ms of 1,600 bits on average)
    and drains at its Shannon rate. Ultra-reliability asks that queues rarely exceed
    ``q0 = 8,000`` bits and that the exceedances stay light-tailed: their generalised Pareto
    (GPD) tail, estimated every 10 slots by federated learning over the vehicles (each fits
    its own recent exceedances, the roadside unit averages), must have a conditional mean and
    second moment below those of a target GPD (``sigma_th = 2,000`` bits, ``xi_th = 0.1``).
    The controller trades transmit power against these tail constraints.
    The physics is documented in :mod:`fl_gym.sim.vehicular.system` (3GPP TR 36.885 path loss with
    LOS/NLOS, log-normal shadowing, Rayleigh fading per block).

    ## Action Space

    ``MultiDiscrete([L, N] * K)``: for pair k, entry ``2k`` is its power level (0 is silence,
    ``l >= 1`` is ``power_levels_dbm[l - 1]``, default ``(0, 6, 12, 18, 23)`` dBm, so L = 6)
    and entry ``2k + 1`` its resource block. Non-integers, NaN, out-of-range values, wrong
    shapes and types raise ``ValueError`` / ``TypeError`` and leave the environment unchanged.

    ## Observation Space

    ``Dict(devices=Box(-10, 10, (K, 1 + 2N)), server=Box(-10, 10, (4,)))``, float32, clipped to
    the bounds:

    | devices column | meaning | scaling |
    | --- | --- | --- |
    | `queue` | backlog of the transmitter, bits | / ``q0`` |
    | `snr_db_b` (N of them) | SNR on block b at ``p_max`` for the coming slot, dB | / 30 |
    | `inr_db_b` (N of them) | last slot's interference on block b at the receiver | see below |

    ``inr_db_b = 10 log10(1 + I_b / noise) / 30`` (0 without interference).

    | server entry | meaning | scaling |
    | --- | --- | --- |
    | `tail_scale` | federated GPD scale estimate ``sigma``, bits | / ``sigma_th`` |
    | `tail_shape` | federated GPD shape estimate ``xi`` | as is |
    | `time` | slots played | / ``max_steps`` |
    | `share_above_q0` | fraction of queues above ``q0`` | as is |

    With ``obs_mode="flat"`` the same float32 values come as one
    ``Box(-10, 10, (K (1 + 2N) + 4,))``: the ``devices`` matrix row-major, then the 4 server
    entries (for ``MlpPolicy``, rl-zoo3 and CleanRL). ``env.unwrapped.observation_slices``,
    ``observation_feature_names`` and ``dict_observation_space`` describe the layout in both
    modes (:mod:`fl_gym.envs.obs_mode`). SB3's ``check_env`` warns that the Dict mode's 2-D
    ``devices`` Box has an "unconventional shape"; the flat mode is the form without it.

    ## Rewards

    The mean over pairs of ``-power_weight p / p_max - exceedance_weight 1{Q > q0}
    - tail_mean_weight (X / gamma1 - 1)^+ - tail_second_moment_weight (X^2 / gamma2 - 1)^+``
    with ``X = (Q - q0)^+`` after the slot, ``gamma1 = sigma_th / (1 - xi_th)`` and
    ``gamma2 = 2 sigma_th^2 / ((1 - xi_th)(1 - 2 xi_th))`` (the paper's constraints on the
    conditional mean and second moment of the exceedances); the three tail terms of one pair
    are scaled down together to at most ``penalty_cap`` (10). All weights default to 1.
    ``info["reward_terms"]`` holds each term's mean over pairs.

    ## Episode End

    Never terminates; the registered environment truncates after 100 slots
    (``max_episode_steps``; ``max_steps`` in the configuration normalises the time feature).

    ## Arguments

    ``gym.make("fl_gym/VehicularURLLC-v1", config=None, preset=None, obs_mode="dict")``:
    ``obs_mode`` is ``"dict"`` or ``"flat"`` (see Observation Space); ``config`` is a
    :class:`VehicularURLLCConfig` or a dict of overrides (top-level names, ``system.NAME`` or
    bare names of :class:`~fl_gym.sim.vehicular.system.VehicularConfig` fields; unknown keys are an
    error naming them) applied on top of the preset (``"urban"``, ``"freeway"``).
    ``reset(options={"config": ...})`` replaces the configuration (same K, N and power levels).
    ``info`` carries the per-pair ``queue_bits``, ``power_w``, ``block``, ``rate_bps``,
    ``sinr``, the tail estimate and the values the federated rounds exchanged so far.
    ``render_mode="rgb_array"`` draws the road map from above with matplotlib (streets grey,
    transmitters green, red where the queue is above ``q0``, receivers and V2V links; legend,
    title with the slot, axes in metres): see :mod:`fl_gym.envs.vehicular.rendering`.

    ## Version History

    * v1: the roadside unit averages the vehicles' ``(log sigma, xi)`` (the coordinates of
      their gradient steps) instead of ``(sigma, xi)``, so the federated tail estimate has
      the pooled maximum-likelihood estimate as fixed point; tail estimates, observations
      and rewards change.
    * v0: initial release.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array", "human"], "render_fps": 10}
    controls = ("power", "resource_block")
    """What the controller decides (read by ``fl-gym list``)."""

    def __init__(
        self,
        config: VehicularURLLCConfig | Mapping[str, Any] | None = None,
        preset: str | None = None,
        render_mode: str | None = None,
        num_threads: int | None = DEFAULT_NUM_THREADS,
        obs_mode: str = "dict",
        **unexpected: Any,
    ) -> None:
        self.obs_mode = check_obs_mode(obs_mode)
        check_render_mode(render_mode, self.metadata)
        self.render_mode = render_mode
        self._window = HumanWindow(type(self).__name__, self.metadata["render_fps"])
        self.num_threads = check_num_threads(num_threads)
        self.config = make_urllc_config(preset, config)
        reject_unknown_arguments(
            type(self).__name__,
            unexpected,
            self.config,
            ["config", "preset", "render_mode", "num_threads", "obs_mode"],
        )
        self._build_spaces()
        self.game: VehicularGame | None = None

    def _build_spaces(self) -> None:
        sys_cfg = self.config.system
        k, n = sys_cfg.num_pairs, sys_cfg.num_resource_blocks
        self.num_pairs = k
        self.codec = VehicularCodec.from_system(sys_cfg)
        """The action codec (:mod:`fl_gym.envs.vehicular.codec`), shared with the baselines."""
        self.action_space = self.codec.action_space
        self.dict_observation_space = spaces.Dict(
            {
                "devices": spaces.Box(-OBS_BOUND, OBS_BOUND, (k, 1 + 2 * n), dtype=np.float32),
                "server": spaces.Box(
                    -OBS_BOUND, OBS_BOUND, (len(SERVER_FEATURES),), dtype=np.float32
                ),
            }
        )
        # The flat layout is exposed in both modes (see fl_gym.envs.obs_mode).
        self.observation_slices = flat_slices((k, 1 + 2 * n), len(SERVER_FEATURES))
        self.observation_feature_names = flat_feature_names(k, device_features(n), SERVER_FEATURES)
        self.observation_space = (
            self.dict_observation_space
            if self.obs_mode == "dict"
            else flat_observation_space(self.dict_observation_space)
        )

    @staticmethod
    def _layout(config: VehicularURLLCConfig) -> tuple[Any, ...]:
        s = config.system
        return s.num_pairs, s.num_resource_blocks, s.power_levels_dbm

    @with_torch_threads
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Observation, dict[str, Any]]:
        unknown = set(options or {}) - {"config"}
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; allowed: ['config']")
        if options and options.get("config") is not None:
            new = make_urllc_config(None, options["config"], base=self.config)
            if self._layout(new) != self._layout(self.config):
                raise ValueError(
                    "reset(options={'config': ...}) must keep num_pairs, num_resource_blocks "
                    "and power_levels_dbm (they shape the spaces); make a new environment"
                )
            self.config = new
        super().reset(seed=seed)
        self.game = VehicularGame(self.config)
        self.game.reset(self.np_random)
        observation, info = self._observe(), self.game.info()
        if self.render_mode == "human":
            self.render()
        return observation, info

    @with_torch_threads
    def step(self, action: Any) -> tuple[Observation, float, bool, bool, dict[str, Any]]:
        if self.game is None:
            raise RuntimeError("call reset() before step()")
        levels, blocks = self.decode_action(action)
        rewards, terms = self.game.play(levels, blocks, self.np_random)
        info = self.game.info()
        info["reward_terms"] = {name: float(terms[name].mean()) for name in REWARD_TERMS}
        info["pair_rewards"] = rewards
        if self.render_mode == "human":
            self.render()
        return self._observe(), float(rewards.mean()), False, False, info

    def decode_action(self, action: Any) -> tuple[np.ndarray, np.ndarray]:
        """Validated ``(power levels (K,), blocks (K,))`` of an action of this space."""
        return self.codec.decode(action)

    def encode_action(self, levels: np.ndarray, blocks: np.ndarray) -> np.ndarray:
        """The action of per-pair power levels and blocks (validated on decoding)."""
        return self.codec.encode(levels, blocks)

    def _observe(self) -> Observation:
        assert self.game is not None
        obs = {"devices": self.game.device_matrix(), "server": self.game.server_vector()}
        return obs if self.obs_mode == "dict" else flatten_observation(obs)

    def render(self) -> np.ndarray | None:
        if not ready_to_render(self.render_mode, self.game is not None):
            return None
        from fl_gym.envs.vehicular.rendering import render_road_map

        return self._window.deliver(render_road_map(self), self.render_mode)

    def close(self) -> None:
        self._window.close()
