"""Federated learning under a differential-privacy budget: the controller sets the DP noise."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

from fl_gym.envs.obs_mode import (
    Observation,
)
from fl_gym.envs.wireless_fl.codec import SelectionState, WirelessFLCodec
from fl_gym.envs.wireless_fl.config import WirelessFLConfig, apply_overrides
from fl_gym.envs.wireless_fl.env import (
    DEVICE_FEATURES,
    SERVER_FEATURES,
    WirelessFLEnv,
    observe_many,
)
from fl_gym.sim.config import Range, check_bool, check_choice, check_ranges, resolve_config
from fl_gym.sim.learning.privacy import PrivacyAccountant, SampleLevelDP
from fl_gym.sim.plan import RoundPlan, RoundReport
from fl_gym.sim.privacy import NOISE_PLACEMENTS, ClientLevelDP
from fl_gym.sim.rounds import DigitalUplink, OverTheAir, RoundPipeline, Transport
from fl_gym.sim.threads import DEFAULT_NUM_THREADS

__all__ = [
    "PRIVACY_FEATURES",
    "PRIVATE_PRESETS",
    "PrivateFLCodec",
    "PrivateFLConfig",
    "PrivateFLEnv",
]

FAMILY = "fl_gym/PrivateFL-v0"
"""How errors name this environment."""
PRIVACY_LEVELS = ("client", "sample")
CLIENT_SAMPLING = ("none", "poisson")
PRIVACY_FEATURES = ("epsilon_spent", "noise_multiplier", "clip_norm")
"""Server entries the private environment appends to the wireless FL observation."""


@dataclass(frozen=True)
class PrivateFLConfig(WirelessFLConfig):
    """:class:`WirelessFLConfig` plus the privacy mechanism, its ranges, budget and reward.

    Attributes:
        privacy_level: ``"client"`` (DP-FedAvg: each device's update clipped, Gaussian noise on
            the average) or ``"sample"`` (DP-SGD in local training).
        noise_at: Client level: ``"server"`` (central noise on the aggregate) or ``"device"``
            (each device adds its share; the guarantee then assumes the server sees only the
            aggregate). See :mod:`fl_gym.sim.privacy`.
        over_the_air: Aggregate over the air (analog superposition with receiver noise) instead
            of digital uploads.
        count_channel_noise: Over the air with server noise, count the receiver noise toward
            the DP noise (the server only tops it up).
        client_sampling: How the accountant treats client selection at the client level:
            ``"none"`` (rate 1: the controller picks the devices, so no amplification by
            sampling) or ``"poisson"`` (rate ``n / K``, as if the ``n`` devices were sampled
            independently at random: an assumption the controller's choices do not guarantee).
        noise_multiplier_min: Noise multiplier of the action -1, in (0, 1000].
        noise_multiplier_max: Noise multiplier of the action +1 (log scale in between), in
            (0, 1000] and >= the minimum.
        clip_norm_min: Clipping norm of the action -1, in (0, 1000].
        clip_norm_max: Clipping norm of the action +1 (log scale in between), in (0, 1000] and
            >= the minimum.
        default_noise_multiplier: What a plan without privacy knobs plays (``encode_plan``), in
            (0, 1000].
        default_clip_norm: Likewise for the clipping norm, in (0, 1000].
        target_delta: The ``delta`` of the reported ``(epsilon, delta)``, in (0, 0.1].
        epsilon_budget: The episode terminates once the spent epsilon reaches it, in
            (0, 1e+06].
        privacy_weight_per_epsilon: Reward cost per unit of epsilon spent in a round, in
            [0, 1e+06].
    """

    privacy_level: str = "client"
    noise_at: str = "server"
    over_the_air: bool = False
    count_channel_noise: bool = True
    client_sampling: str = "none"
    noise_multiplier_min: float = 1.0
    noise_multiplier_max: float = 8.0
    clip_norm_min: float = 0.02
    clip_norm_max: float = 2.0
    default_noise_multiplier: float = 3.0
    default_clip_norm: float = 0.2
    target_delta: float = 1e-5
    epsilon_budget: float = 10.0
    privacy_weight_per_epsilon: float = 5.0

    PRIVACY_RANGES: ClassVar[Mapping[str, Range]] = {
        "noise_multiplier_min": Range(0.0, 1000.0, low_open=True),
        "noise_multiplier_max": Range(0.0, 1000.0, low_open=True),
        "clip_norm_min": Range(0.0, 1000.0, low_open=True),
        "clip_norm_max": Range(0.0, 1000.0, low_open=True),
        "default_noise_multiplier": Range(0.0, 1000.0, low_open=True),
        "default_clip_norm": Range(0.0, 1000.0, low_open=True),
        "target_delta": Range(0.0, 0.1, low_open=True),
        "epsilon_budget": Range(0.0, 1e6, low_open=True),
        "privacy_weight_per_epsilon": Range(0.0, 1e6),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("privacy_level", self.privacy_level, PRIVACY_LEVELS)
        check_choice("noise_at", self.noise_at, NOISE_PLACEMENTS)
        check_choice("client_sampling", self.client_sampling, CLIENT_SAMPLING)
        check_bool("over_the_air", self.over_the_air)
        check_bool("count_channel_noise", self.count_channel_noise)
        check_ranges(self, self.PRIVACY_RANGES)
        for low, high in (
            ("noise_multiplier_min", "noise_multiplier_max"),
            ("clip_norm_min", "clip_norm_max"),
        ):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(
                    f"{low} must be <= {high} ({getattr(self, high)}), got {getattr(self, low)!r}"
                )
        if self.privacy_level == "client" and self.learning.aggregator != "fedavg":
            raise ValueError(
                "client-level DP bounds the sensitivity of the weighted average: "
                f"learning.aggregator must be 'fedavg', got {self.learning.aggregator!r}"
            )


PRIVATE_DEFAULTS: dict[str, Any] = {
    "num_devices": 100,
    "wireless.num_subchannels": 50,
    "wireless.bandwidth_hz": 50e6,
    "learning.model": "logreg",
    "learning.weighting": "uniform",
    "target_accuracy": 0.9,
}
"""What the private environment changes in :class:`WirelessFLConfig`'s defaults: client-level
DP needs many participants (the noise on the average falls as ``1 / n``), so 100 devices of
which up to 50 upload on 1 MHz sub-channels, logistic regression (few parameters for the noise
to cover) and the uniform average of DP-FedAvg."""

PRIVATE_PRESETS: dict[str, dict[str, Any]] = {
    "central": {},
    "distributed": {"noise_at": "device"},
    "over-the-air": {
        "over_the_air": True,
        "wireless.num_antennas": 4,
        "learning.weighting": "samples",
    },
    "sample-level": {
        "privacy_level": "sample",
        "num_devices": 10,
        "wireless.num_subchannels": 5,
        "wireless.bandwidth_hz": 5e6,
        "default_clip_norm": 1.0,
        "clip_norm_min": 0.1,
        "clip_norm_max": 10.0,
    },
}
"""Named scenarios of the private environment: overrides of its defaults."""


def _log_map(value: float, low: float, high: float) -> float:
    """An action in [-1, 1] -> [low, high], geometrically."""
    return float(low * (high / low) ** ((value + 1.0) / 2.0))


def _log_unmap(x: float, low: float, high: float) -> float:
    if high == low:
        return 0.0
    return float(np.clip(2.0 * math.log(x / low) / math.log(high / low) - 1.0, -1.0, 1.0))


class PrivateFLCodec(WirelessFLCodec):
    """The private environment's codec: ``Box(-1, 1, (K + 2,))``.

    K device scores (selection as in ``ClientSelection-v0``: the M highest scores > 0 among the
    available devices), then the noise multiplier and the clipping norm, each mapped
    geometrically onto ``[*_min, *_max]``.
    """

    def __init__(self, config: PrivateFLConfig) -> None:
        super().__init__(config, ("selection",))

    def _make_action_space(self) -> spaces.Space:
        return spaces.Box(-1.0, 1.0, (self.num_devices + 2,), np.float32)

    def privacy_knobs(self, action: Any) -> tuple[float, float]:
        """The noise multiplier and clipping norm an action asks for."""
        box = np.clip(self.check_box(action), -1.0, 1.0)
        cfg: PrivateFLConfig = self.config  # type: ignore[assignment]
        k = self.num_devices
        z = _log_map(float(box[k]), cfg.noise_multiplier_min, cfg.noise_multiplier_max)
        c = _log_map(float(box[k + 1]), cfg.clip_norm_min, cfg.clip_norm_max)
        return z, c

    def decode(self, action: Any, state: SelectionState) -> tuple[RoundPlan, dict[str, Any]]:
        """Scores -> plan; ``info`` also carries the round's ``noise_multiplier`` and
        ``clip_norm``."""
        plan, info = super().decode(action, state)
        info["noise_multiplier"], info["clip_norm"] = self.privacy_knobs(action)
        return plan, info

    def encode(self, plan: RoundPlan) -> np.ndarray:
        """The action selecting ``plan.selected`` with the default noise and clipping."""
        scores = super().encode(plan)
        cfg: PrivateFLConfig = self.config  # type: ignore[assignment]
        knobs = [
            _log_unmap(
                cfg.default_noise_multiplier, cfg.noise_multiplier_min, cfg.noise_multiplier_max
            ),
            _log_unmap(cfg.default_clip_norm, cfg.clip_norm_min, cfg.clip_norm_max),
        ]
        return np.append(np.asarray(scores, dtype=np.float64)[: self.num_devices], knobs).astype(
            np.float32
        )


class PrivateFLEnv(WirelessFLEnv):
    r"""Federated learning under a differential-privacy budget, one round per step.

    ## Description

    The wireless FL round of :class:`~fl_gym.envs.wireless_fl.env.WirelessFLEnv` with
    differential privacy in the pipeline (:mod:`fl_gym.sim.privacy`), after McMahan et al.,
    "Learning Differentially Private Recurrent Language Models" (ICLR 2018, client level) and
    Abadi et al., "Deep Learning with Differential Privacy" (CCS 2016, sample level). Every round
    the controller picks the devices and the round's noise multiplier ``z`` and clipping norm
    ``C``: at the client level each selected device's update is clipped to ``C`` and the server
    adds ``N(0, (z C / n)^2)`` to the uniform average of the ``n`` updates it aggregates (or each
    device adds its share, preset ``distributed``); at the sample level every local step clips
    each example's gradient to ``C`` and adds ``N(0, z^2 C^2)`` to their sum. A Renyi-DP
    accountant (Google's ``dp-accounting``, the ``privacy`` extra) composes the rounds into the
    ``epsilon`` spent at ``target_delta``; the episode ends when it reaches ``epsilon_budget``.
    Small ``C`` biases the updates, large ``C`` needs large noise; large ``z`` slows learning but
    stretches the budget over more rounds.

    Client-level accounting composes one Gaussian mechanism per round with the round's
    effective noise multiplier (``noise_std / sensitivity``: lower than ``z`` when device noise
    is lost with an update; over the air, receiver noise counts when ``count_channel_noise``),
    at sampling rate 1 (``client_sampling="none"``: the controller chooses, so amplification by
    sampling does not apply) or ``n / K`` (``"poisson"``, an assumption). Sample-level
    accounting bounds every device's epsilon by that of a device that takes part in every round
    with the smallest data set: ``max(local_steps)`` Poisson-subsampled Gaussian steps at rate
    ``min(1, B / n_min)`` per round (minibatches are drawn uniformly with replacement and
    accounted as Poisson sampling, as TensorFlow Privacy and Opacus do).

    ## Action Space

    ``Box(-1, 1, (K + 2,))``: K device scores (the M highest scores > 0 among devices with
    energy left upload, as in ``ClientSelection-v0``), then the noise multiplier, mapped
    geometrically onto ``[noise_multiplier_min, noise_multiplier_max]`` (1 to 8), then the
    clipping norm, geometrically onto ``[clip_norm_min, clip_norm_max]`` (0.02 to 2).
    Out-of-range values are clipped (``info["action_clipped"]``).

    ## Observation Space

    As :class:`~fl_gym.envs.wireless_fl.env.WirelessFLEnv`, with three more server entries:
    ``epsilon_spent`` (epsilon spent / budget, capped at 5), ``noise_multiplier`` (the last
    round's, / ``noise_multiplier_max``) and ``clip_norm`` (the last round's, /
    ``clip_norm_max``): ``server`` is ``Box(-5, 5, (10,))``.

    ## Rewards

    The wireless FL reward (accuracy gain x ``accuracy_weight``, minus energy and time costs)
    minus ``privacy_weight_per_epsilon`` (5) x the epsilon the round spent; each term is in
    ``info["reward_terms"]`` (``privacy``). ``info`` carries ``epsilon`` (spent so far),
    ``delta``, ``epsilon_round``, ``noise_multiplier`` and ``clip_norm`` (the round's),
    ``effective_noise_multiplier``, ``noise_std``, ``clipped_fraction`` (client level) and
    ``privacy_budget_spent``.

    ## Episode End

    Terminates when the test accuracy reaches ``target_accuracy`` (0.9), when no device has
    energy left, or when the spent epsilon reaches ``epsilon_budget`` (10; the round that
    crosses it is played and counted, so the final epsilon may exceed the budget by one round's
    share). The registered environment truncates after 100 rounds.

    ## Arguments

    As :class:`~fl_gym.envs.wireless_fl.env.WirelessFLEnv`; ``config`` is a
    :class:`PrivateFLConfig` or a dict of overrides, ``preset`` one of
    :data:`PRIVATE_PRESETS` (``central``, ``distributed``, ``over-the-air``, ``sample-level``).
    Defaults differ from the wireless FL family's: 100 devices, 50 sub-channels of 1 MHz,
    logistic regression with the uniform average, target accuracy 0.9. The privacy accountant
    is Google's dp-accounting (a dependency).

    ## Version History

    * v0: initial release.
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = PRIVATE_PRESETS
    """This environment's named scenarios (instead of the wireless FL family's)."""

    def __init__(
        self,
        config: PrivateFLConfig | dict[str, Any] | None = None,
        preset: str | None = None,
        render_mode: str | None = None,
        device: str = "cpu",
        num_threads: int | None = DEFAULT_NUM_THREADS,
        obs_mode: str = "dict",
        **unexpected: Any,
    ) -> None:
        if not isinstance(config, PrivateFLConfig):
            config = resolve_config(
                self.default_config(), preset, config, presets=PRIVATE_PRESETS, family=FAMILY
            )
        elif preset is not None:
            raise ValueError(
                f"preset={preset!r} with a PrivateFLConfig: pass the preset with dict overrides "
                "(or the config alone)"
            )
        self._accountant: PrivacyAccountant | None = None
        super().__init__(
            controls=("selection",),
            config=config,
            preset=None,
            render_mode=render_mode,
            device=device,
            num_threads=num_threads,
            obs_mode=obs_mode,
            **unexpected,
        )
        self.pipeline = RoundPipeline(self.make_transport(), [self._client_dp()])

    def _client_dp(self) -> ClientLevelDP:
        cfg: PrivateFLConfig = self.config  # type: ignore[assignment]
        return ClientLevelDP(
            cfg.default_noise_multiplier,
            cfg.default_clip_norm,
            noise_at=cfg.noise_at,
            count_channel_noise=cfg.count_channel_noise,
        )

    def default_config(self) -> PrivateFLConfig:
        return apply_overrides(PrivateFLConfig(), PRIVATE_DEFAULTS)

    def make_codec(self) -> PrivateFLCodec:
        """K scores, the noise multiplier and the clipping norm (:class:`PrivateFLCodec`)."""
        return PrivateFLCodec(self.config)  # type: ignore[arg-type]

    def make_transport(self) -> Transport:
        """Digital uploads, or over-the-air aggregation with ``over_the_air``."""
        return OverTheAir() if getattr(self.config, "over_the_air", False) else DigitalUplink()

    def _build_spaces(self) -> None:
        super()._build_spaces()
        self._set_observation_layout(DEVICE_FEATURES, (*SERVER_FEATURES, *PRIVACY_FEATURES))

    # -- gymnasium API -----------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Observation, dict[str, Any]]:
        new = (options or {}).get("config")
        if isinstance(new, WirelessFLConfig) and not isinstance(new, PrivateFLConfig):
            raise ValueError(
                "reset(options={'config': ...}) of fl_gym/PrivateFL-v0 takes a PrivateFLConfig "
                f"or a dict of overrides, got a {type(new).__name__}"
            )
        cfg: PrivateFLConfig = self.config  # type: ignore[assignment]
        # A missing accounting library is a clear error before anything else happens.
        self._accountant = PrivacyAccountant(cfg.target_delta)
        self._epsilon = 0.0
        self._round_knobs = (cfg.default_noise_multiplier, cfg.default_clip_norm)
        self._last_knobs = (0.0, 0.0)
        self._privacy_info: dict[str, Any] = {}
        result = super().reset(seed=seed, options=options)
        cfg = self.config  # type: ignore[assignment]
        if self._accountant.delta != cfg.target_delta:
            self._accountant = PrivacyAccountant(cfg.target_delta)
        self.pipeline = RoundPipeline(self.make_transport(), [self._client_dp()])
        return result

    def _before_round(self, decode_info: dict[str, Any]) -> None:
        """The action's noise multiplier and clipping norm become the round's DP settings."""
        cfg: PrivateFLConfig = self.config  # type: ignore[assignment]
        z, c = self._round_knobs = (decode_info["noise_multiplier"], decode_info["clip_norm"])
        transform = self.pipeline.transforms[0]
        assert isinstance(transform, ClientLevelDP)
        if cfg.privacy_level == "client":
            transform.noise_multiplier, transform.clip_norm = z, c
            self.pipeline.local_privacy = None
        else:
            # Clipping at a bound no update reaches and no noise: the transform is inert.
            transform.noise_multiplier, transform.clip_norm = 0.0, 1e6
            self.pipeline.local_privacy = SampleLevelDP(z, c)

    def _after_round(self, plan: RoundPlan, report: RoundReport) -> None:
        """Account the round's privacy loss."""
        assert self.federation is not None and self._accountant is not None
        cfg: PrivateFLConfig = self.config  # type: ignore[assignment]
        z, c = self._round_knobs
        transform = self.pipeline.transforms[0]
        assert isinstance(transform, ClientLevelDP)
        before = self._epsilon
        info: dict[str, Any] = {"noise_multiplier": z, "clip_norm": c}
        if cfg.privacy_level == "client":
            last = transform.last[0]
            if last.num_aggregated:
                q = 1.0 if cfg.client_sampling == "none" else last.num_aggregated / plan.num_clients
                self._accountant.record(last.noise_multiplier, q)
            info["effective_noise_multiplier"] = last.noise_multiplier
            info["noise_std"] = last.noise_std
            clipped = last.clipped
            info["clipped_fraction"] = float(clipped.mean()) if clipped.size else 0.0
        else:
            if plan.selected.any():
                fed = self.federation
                smallest = int(fed.data.client_sizes.min())
                q = min(1.0, fed.config.batch_size / smallest)
                steps = int(plan.local_steps[plan.selected].max())
                self._accountant.record(z, q, steps=steps)
            info["effective_noise_multiplier"] = z
            info["noise_std"] = z * c / self.federation.config.batch_size
        self._epsilon = self._accountant.epsilon()
        info["epsilon_round"] = self._epsilon - before
        self._last_knobs = (z, c)
        self._privacy_info = info

    def _finish_step(
        self, report: RoundReport, decode_info: dict[str, Any], *, observe: bool = True
    ) -> tuple[Observation, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = super()._finish_step(
            report, decode_info, observe=observe
        )
        cfg: PrivateFLConfig = self.config  # type: ignore[assignment]
        spent = self._epsilon >= cfg.epsilon_budget
        info["privacy_budget_spent"] = spent
        return obs, reward, bool(terminated or spent), truncated, info

    def _reward(self, report: RoundReport, failed: bool = False) -> tuple[float, dict[str, float]]:
        return self._with_privacy(*super()._reward(report, failed=failed))

    def _budget_reward(
        self, report: RoundReport, over_budget: bool
    ) -> tuple[float, dict[str, float]]:
        return self._with_privacy(*super()._budget_reward(report, over_budget))

    def _with_privacy(
        self, reward: float, terms: dict[str, float]
    ) -> tuple[float, dict[str, float]]:
        """The reward of the wireless FL mode minus the privacy the round spent."""
        cfg: PrivateFLConfig = self.config  # type: ignore[assignment]
        spent = self._privacy_info.get("epsilon_round", 0.0)
        # A round without noise spends an infinite budget: its cost is capped at the budget.
        spent = min(spent, cfg.epsilon_budget) if math.isfinite(spent) else cfg.epsilon_budget
        terms["privacy"] = -cfg.privacy_weight_per_epsilon * spent
        return reward + terms["privacy"], terms

    def _info(
        self,
        report: RoundReport | None,
        terms: dict[str, float],
        decode_info: dict[str, Any],
    ) -> dict[str, Any]:
        info = super()._info(report, terms, decode_info)
        cfg: PrivateFLConfig = self.config  # type: ignore[assignment]
        info["epsilon"] = self._epsilon
        info["delta"] = cfg.target_delta
        info["privacy_budget_spent"] = self._epsilon >= cfg.epsilon_budget
        if report is not None:
            info.update(self._privacy_info)
        return info

    @classmethod
    def observe_envs(cls, envs: list[WirelessFLEnv]) -> list[Observation]:
        """The wireless FL observations with each environment's privacy entries appended to
        ``server``."""
        return [
            env._with_privacy_entries(base)  # type: ignore[attr-defined]
            for env, base in zip(envs, observe_many(envs), strict=True)
        ]

    def _with_privacy_entries(self, obs: Observation) -> Observation:
        """``obs`` (this environment's wireless FL observation) with its entries appended."""
        cfg: PrivateFLConfig = self.config  # type: ignore[assignment]
        z, c = self._last_knobs
        spent = self._epsilon / cfg.epsilon_budget
        extra = np.array(
            [
                min(spent, 5.0) if math.isfinite(spent) else 5.0,
                z / cfg.noise_multiplier_max,
                c / cfg.clip_norm_max,
            ],
            dtype=np.float32,
        )
        if self.obs_mode == "dict":
            return {"devices": obs["devices"], "server": np.concatenate([obs["server"], extra])}
        return np.concatenate([obs, extra])
