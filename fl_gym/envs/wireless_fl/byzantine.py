"""Federated learning under Byzantine attack: which devices to trust and which rule to aggregate
with, one round per step."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

from fl_gym.envs.obs_mode import (
    Observation,
)
from fl_gym.envs.wireless_fl.codec import SelectionState, WirelessFLCodec, bin_levels, unbin_levels
from fl_gym.envs.wireless_fl.config import WirelessFLConfig, apply_overrides
from fl_gym.envs.wireless_fl.env import (
    _OBS_BOUND,
    DEVICE_FEATURES,
    SERVER_FEATURES,
    WirelessFLEnv,
    observe_many,
)
from fl_gym.sim.config import check_bool, check_instance
from fl_gym.sim.learning.adversary import AdversaryConfig, ByzantineTransform, UpdateMonitor
from fl_gym.sim.learning.aggregation import fedavg_trusted, get_aggregator
from fl_gym.sim.learning.federation import AGGREGATOR_NAMES
from fl_gym.sim.plan import RoundPlan, RoundReport
from fl_gym.sim.radio.cell import WirelessConfig
from fl_gym.sim.rounds import UpdateTransform
from fl_gym.sim.threads import DEFAULT_NUM_THREADS

__all__ = [
    "BYZANTINE_DEVICE_FEATURES",
    "BYZANTINE_PRESETS",
    "ByzantineCodec",
    "ByzantineFLConfig",
    "ByzantineSelectionEnv",
]

BYZANTINE_DEVICE_FEATURES = (*DEVICE_FEATURES, "update_norm", "update_cosine", "byzantine")
"""Columns of ``obs["devices"]``: the wireless FL columns, then the update statistics and the
known-Byzantine flag (always 0 unless ``server_knows_byzantine``)."""
BYZANTINE_SERVER_FEATURES = (*SERVER_FEATURES, "aggregator")
"""Entries of ``obs["server"]``: the wireless FL entries, then the last rule's position."""

NORM_DECADES = 1.0
"""``update_norm`` column = log10(norm / median norm of the round's senders) / this."""

AGGREGATOR_CHOICES = (
    "fedavg",
    "median",
    "trimmed_mean",
    "geometric_median",
    "krum",
    "multi_krum",
    "centered_clipping",
    "norm_clipping",
)


@dataclass(frozen=True)
class ByzantineFLConfig(WirelessFLConfig):
    """A wireless FL configuration with Byzantine devices and a choice of aggregation rules.

    Attributes:
        adversary: The Byzantine devices and their attack
            (:class:`~fl_gym.sim.learning.adversary.AdversaryConfig`).
        aggregator_choices: The aggregation rules the action's last entry picks from, distinct
            names of :data:`~fl_gym.sim.learning.federation.AGGREGATOR_NAMES`.
        server_knows_byzantine: Show the devices that sent a Byzantine update in the last round
            in the observation's ``byzantine`` column (an oracle for studies; 0 otherwise).
    """

    adversary: AdversaryConfig = field(
        default_factory=lambda: AdversaryConfig(attack="sign_flip", fraction=0.3)
    )
    aggregator_choices: tuple[str, ...] = AGGREGATOR_CHOICES
    server_knows_byzantine: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_instance("adversary", self.adversary, AdversaryConfig)
        check_bool("server_knows_byzantine", self.server_knows_byzantine)
        choices = self.aggregator_choices
        if (
            isinstance(choices, (str, bytes))
            or not isinstance(choices, (tuple, list))
            or not choices
            or len(set(choices)) != len(choices)
            or any(c not in AGGREGATOR_NAMES for c in choices)
        ):
            raise ValueError(
                "aggregator_choices must be a non-empty tuple of distinct rules from "
                f"{list(AGGREGATOR_NAMES)}, got {choices!r}"
            )
        object.__setattr__(self, "aggregator_choices", tuple(choices))


BYZANTINE_DEFAULTS: dict[str, Any] = {
    "num_devices": 10,
    "wireless": WirelessConfig(
        num_subchannels=10, bandwidth_hz=10e6, battery_min_j=1.0, battery_max_j=2.0
    ),
    "learning.aggregator": "median",
}
"""What the Byzantine environment changes in :class:`WirelessFLConfig`'s defaults: one 1 MHz
sub-channel per device (every device can upload, so selection is a matter of trust, not of
bandwidth), batteries of 1-2 J that last an episode, and the coordinate median as the rule a
plan encodes when it names none (so the generic selection baselines play a robust rule)."""

_DEFAULT_BYZANTINE = ByzantineFLConfig()

_PRESET_ATTACKS = ("sign_flip", "gaussian", "large_norm", "alie", "ipm", "label_flip", "nan")
BYZANTINE_PRESETS: dict[str, dict[str, Any]] = {
    f"{attack.replace('_', '-')}-{percent}": {
        "adversary.attack": attack,
        "adversary.fraction": percent / 100,
    }
    for attack in _PRESET_ATTACKS
    for percent in (10, 20, 30, 40)
}
"""Named scenarios ``"<attack>-<percent>"``: 10, 20, 30 or 40 % of the devices Byzantine, fixed
per episode, with each attack (``sign-flip``, ``gaussian``, ``large-norm``, ``alie``, ``ipm``,
``label-flip``, ``nan``) at its default strength."""


def byzantine_settings(config: WirelessFLConfig) -> ByzantineFLConfig:
    """``config`` itself if it is a :class:`ByzantineFLConfig`, else the Byzantine defaults
    (a plain :class:`WirelessFLConfig` given to the environment keeps its attack and rules)."""
    return config if isinstance(config, ByzantineFLConfig) else _DEFAULT_BYZANTINE


class ByzantineCodec(WirelessFLCodec):
    """The codec of the Byzantine environment: ``Box(-1, 1, (K + 1,))``.

    The first K entries are device scores (the top-M rule of
    :class:`~fl_gym.envs.wireless_fl.codec.WirelessFLCodec`), the last one the aggregation rule,
    binned uniformly into ``aggregator_choices`` (``floor((a + 1) / 2 * R)``, capped at
    ``R - 1``). Power, compression and local steps stay at their defaults.

    Args:
        config: The environment's configuration.
    """

    def __init__(self, config: WirelessFLConfig) -> None:
        super().__init__(config, ("selection",))
        self.aggregator_choices = byzantine_settings(config).aggregator_choices

    def _layout_slices(self) -> dict[str, slice]:
        k = self.num_devices
        return {"selection": slice(0, k), "aggregator": slice(k, k + 1)}

    def _make_action_space(self) -> spaces.Space:
        return spaces.Box(-1.0, 1.0, (self.num_devices + 1,), np.float32)

    def decode(self, action: Any, state: SelectionState) -> tuple[RoundPlan, dict[str, Any]]:
        """Scores and rule -> plan; ``info["aggregator"]`` names the rule."""
        box, clipped = self._unit_box(action)
        info: dict[str, Any] = {"action_clipped": clipped}
        scores = box[:-1]
        wanted = scores > 0
        info["dropped_unavailable"] = np.flatnonzero(wanted & ~state.available).tolist()
        index = int(bin_levels(box[-1:], len(self.aggregator_choices))[0])
        info["aggregator"] = self.aggregator_choices[index]
        info["aggregator_index"] = index
        plan = self._decoded({"selection": self.top(scores, wanted & state.available)}, state)
        return plan, info

    def encode(self, plan: RoundPlan, aggregator: str | None = None) -> np.ndarray:
        """The action selecting ``plan.selected`` and aggregating with ``aggregator``; if
        ``None``, with ``learning.aggregator`` (the coordinate median in this environment's
        defaults) or, when that is not a choice, the first of ``aggregator_choices``."""
        if not isinstance(plan, RoundPlan) or plan.num_clients != self.num_devices:
            raise ValueError(
                f"plan must be a RoundPlan for {self.num_devices} devices, got {plan!r}"
            )
        choices = self.aggregator_choices
        default = self.config.learning.aggregator
        if aggregator is None:
            aggregator = default if default in choices else choices[0]
        name = aggregator
        if name not in choices:
            raise ValueError(
                f"aggregator {name!r} is not one of this environment's aggregator_choices "
                f"{list(choices)}"
            )
        value = unbin_levels(np.array([choices.index(name)]), len(choices))
        return np.append(np.where(plan.selected, 1.0, -1.0), value).astype(np.float32)


class ByzantineSelectionEnv(WirelessFLEnv):
    r"""Federated learning with Byzantine devices: whom to trust and how to aggregate.

    ## Description

    The wireless FL round of :class:`~fl_gym.envs.wireless_fl.env.WirelessFLEnv` with an
    adversary stage between local training and upload
    (:class:`~fl_gym.sim.learning.adversary.ByzantineTransform`): a share of the K devices is
    Byzantine (30 % sending sign-flipped updates scaled by 4 by default; ``preset=`` picks
    another attack and share) and replaces its update with an attack. Every step the controller
    decides which devices upload and which aggregation rule the server applies (FedAvg,
    coordinate median, trimmed mean, geometric median, Krum, multi-Krum, centered clipping or
    norm clipping, :mod:`fl_gym.sim.learning.aggregation`). It sees, per device, the norm of
    the update it last sent relative to the round's median and its cosine similarity to the
    global model's previous step (:class:`~fl_gym.sim.learning.adversary.UpdateMonitor`), but
    not who is Byzantine (unless ``server_knows_byzantine``). Every device has its own 1 MHz
    sub-channel (M = K = 10), so any set can upload.

    ## Action Space

    ``Box(-1, 1, (K + 1,))``: K device scores (devices with a score > 0 and energy left upload)
    and one value binned uniformly into ``aggregator_choices`` (8 rules by default, in the order
    above). Out-of-range values are clipped (``info["action_clipped"]``); NaN, wrong shapes and
    types raise. ``env.unwrapped.encode_plan(plan, aggregator="krum")`` builds an action.

    ## Observation Space

    ``Dict(devices=Box(-5, 5, (K, 13)), server=Box(-5, 5, (8,)))``, float32: the 10 device
    columns and 7 server entries of the wireless FL environments, then

    | devices column | meaning | scaling |
    | --- | --- | --- |
    | `update_norm` | norm of the update it sent last round / the senders' median | log10 |
    | `update_cosine` | cosine of that update with the model's step the round before | as is |
    | `byzantine` | it sent a Byzantine update (``server_knows_byzantine`` only) | 0 or 1 |

    ``update_norm`` is clipped to [-5, 5] and is 5 for an update that is not finite;
    ``update_cosine`` is 0 in the first round and for an update that is zero or not finite.
    A device that did not upload in the last round has both at 0 in ``v0``; from ``v1``
    (``remember_updates=True``) it keeps the values of the last update it sent (0 until its
    first), so a defence without memory of its own still knows who misbehaved once (the
    ``staleness`` column says how long ago that was).

    | server entry | meaning | scaling |
    | --- | --- | --- |
    | `aggregator` | the last round's rule | its index / (R - 1) in [0, 1] (0 with R = 1) |

    ``obs_mode="flat"`` gives the same values as one ``Box(-5, 5, (13K + 8,))``.

    ## Rewards

    As the wireless FL environments: ``accuracy_weight * (accuracy gain) - energy_weight_per_j *
    energy - time_weight_per_s * round time``, minus ``divergence_penalty`` in the round the
    global model diverges.

    ## Episode End

    As the wireless FL environments: target accuracy, no energy left, or a diverged model
    (``info["diverged"]``); truncated after 100 rounds by the registration.

    ## Arguments

    As :class:`~fl_gym.envs.wireless_fl.env.WirelessFLEnv`; ``config`` is a
    :class:`ByzantineFLConfig` (a plain ``WirelessFLConfig`` gets the default attack and rules)
    or a dict of overrides (``"adversary.attack"``,
    ``"adversary.fraction"``, ``"adversary.devices"``, ``"adversary.redraw"``,
    ``"adversary.scale"``, ``"aggregator_choices"``, ``"server_knows_byzantine"`` beside the
    wireless FL keys) and ``preset`` one of :data:`BYZANTINE_PRESETS`. ``info`` carries every
    :class:`~fl_gym.sim.plan.RoundReport` field and ``byzantine`` (``(K,)`` bool, the devices
    that sent a Byzantine update), ``aggregator`` (the rule's name) and ``aggregator_index``.

    ## Arguments of the constructor

    ``remember_updates`` (bool, default False; True in ``v1``): see the observation above.

    ## Version History

    * v1: a device's update columns hold the values of its last upload
      (``remember_updates=True``) instead of 0 in the rounds it does not upload. v0 stays
      registered, unchanged.
    * v0: initial release.
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = BYZANTINE_PRESETS
    _KEPT_ATTRIBUTES: ClassVar[frozenset[str]] = WirelessFLEnv._KEPT_ATTRIBUTES | {
        "remember_updates"
    }

    def __init__(
        self,
        config: ByzantineFLConfig | dict[str, Any] | None = None,
        preset: str | None = None,
        render_mode: str | None = None,
        device: str = "cpu",
        num_threads: int | None = DEFAULT_NUM_THREADS,
        obs_mode: str = "dict",
        remember_updates: bool = False,
        **unexpected: Any,
    ) -> None:
        if not isinstance(remember_updates, bool):
            raise TypeError(f"remember_updates must be a bool, got {remember_updates!r}")
        self.remember_updates = remember_updates
        super().__init__(
            controls=("selection",),
            config=config,
            preset=preset,
            render_mode=render_mode,
            device=device,
            num_threads=num_threads,
            obs_mode=obs_mode,
            **unexpected,
        )
        self._rules: dict[str, Any] = {}

    def default_config(self) -> ByzantineFLConfig:
        return apply_overrides(ByzantineFLConfig(), BYZANTINE_DEFAULTS)

    def make_codec(self) -> ByzantineCodec:
        """K scores and one rule (:class:`ByzantineCodec`)."""
        return ByzantineCodec(self.config)

    def make_transforms(self) -> tuple[UpdateTransform, ...]:
        """The adversary, then the monitor of what the devices send."""
        self.adversary = ByzantineTransform(byzantine_settings(self.config).adversary)
        self.monitor = UpdateMonitor()
        return (self.adversary, self.monitor)  # type: ignore[return-value]

    def _build_spaces(self) -> None:
        super()._build_spaces()
        self._set_observation_layout(BYZANTINE_DEVICE_FEATURES, BYZANTINE_SERVER_FEATURES)

    # -- gymnasium API -----------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Observation, dict[str, Any]]:
        previous = self.config
        self._rule_index = 0
        self._update_features = np.zeros((self.num_devices, 3))
        observation, info = super().reset(seed=seed, options=options)
        if self.config is not previous:
            self.pipeline.transforms = self.make_transforms()
            observation = self.observe()
        return observation, info

    def restore(self, snapshot: Any) -> None:
        """Return to ``snapshot``; the restored adversary and monitor (copied with the
        federation they track) become the pipeline's transforms again."""
        super().restore(snapshot)
        self.pipeline.transforms = (self.adversary, self.monitor)  # type: ignore[assignment]

    def _before_round(self, decode_info: dict[str, Any]) -> None:
        """The action's aggregation rule becomes the server's for this round."""
        assert self.federation is not None
        self._rule_index = int(decode_info["aggregator_index"])
        self.federation.aggregator = self._rule(str(decode_info["aggregator"]))

    def _rule(self, name: str) -> Any:
        if name not in self._rules:
            options: dict[str, Any] = {}
            if name == "trimmed_mean":
                options["trim_ratio"] = self.config.learning.trim_ratio
            self._rules[name] = (
                fedavg_trusted if name == "fedavg" else get_aggregator(name, **options)
            )
        return self._rules[name]

    def encode_plan(  # type: ignore[override]
        self, plan: RoundPlan, aggregator: str | None = None
    ) -> np.ndarray:
        """The action playing ``plan``'s selection with ``aggregator`` (see
        :meth:`ByzantineCodec.encode`)."""
        return self.codec.encode(plan, aggregator)  # type: ignore[call-arg]

    # -- observation, info -------------------------------------------------------------------------

    def _finish_step(
        self, report: RoundReport, decode_info: dict[str, Any], *, observe: bool = True
    ) -> tuple[Observation, float, bool, bool, dict[str, Any]]:
        self._update_features = self._features()
        obs, reward, terminated, truncated, info = super()._finish_step(
            report, decode_info, observe=observe
        )
        if report.byzantine is None:  # an inactive adversary: nobody attacked
            info["byzantine"] = np.zeros(self.num_devices, dtype=bool)
        return obs, reward, terminated, truncated, info

    def _features(self) -> np.ndarray:
        """``(K, 3)`` update_norm, update_cosine and byzantine columns of the last round."""
        k = self.num_devices
        out = self._update_features.copy() if self.remember_updates else np.zeros((k, 3))
        norms = self.monitor.norms[0]
        measured = self.monitor.measured[0]
        finite = measured & np.isfinite(norms) & (norms > 0)
        if finite.any():
            reference = float(np.median(norms[finite]))
            with np.errstate(divide="ignore"):
                ratio = np.log10(np.where(finite, norms, reference) / reference) / NORM_DECADES
            out[measured, 0] = np.where(finite, ratio, 0.0)[measured]
        out[measured & ~np.isfinite(norms), 0] = _OBS_BOUND
        out[measured, 1] = self.monitor.cosines[0][measured]
        if byzantine_settings(self.config).server_knows_byzantine:
            out[:, 2] = self.adversary.last_attackers[0]
        return out

    def wireless_observation(self, observation: Observation) -> Observation:
        """The observation without the columns and entry this environment adds."""
        k = self.num_devices
        f, g = len(DEVICE_FEATURES), len(SERVER_FEATURES)
        wide = len(BYZANTINE_DEVICE_FEATURES)
        if isinstance(observation, Mapping):
            return {
                "devices": np.asarray(observation["devices"])[:, :f],
                "server": np.asarray(observation["server"])[:g],
            }
        flat = np.asarray(observation)
        devices = flat[: k * wide].reshape(k, wide)[:, :f]
        return np.concatenate([devices.reshape(-1), flat[k * wide : k * wide + g]])

    @classmethod
    def observe_envs(cls, envs: list[WirelessFLEnv]) -> list[Observation]:
        """The wireless FL observations with each environment's update statistics and last
        rule added."""
        return [
            env._with_update_columns(base)  # type: ignore[attr-defined]
            for env, base in zip(envs, observe_many(envs), strict=True)
        ]

    def _with_update_columns(self, base: Observation) -> Observation:
        """``base`` (this environment's wireless FL observation) with its columns added."""
        if self.obs_mode == "flat":
            k, f = self.num_devices, len(DEVICE_FEATURES)
            devices = np.asarray(base[: k * f]).reshape(k, f)
            server = np.asarray(base[k * f :])
        else:
            devices, server = base["devices"], base["server"]  # type: ignore[index]
        extra = np.nan_to_num(self._update_features, nan=0.0, posinf=_OBS_BOUND, neginf=-_OBS_BOUND)
        extra = np.clip(extra, -_OBS_BOUND, _OBS_BOUND)
        count = len(self.codec.aggregator_choices)  # type: ignore[attr-defined]
        rule = self._rule_index / (count - 1) if count > 1 else 0.0
        observation = {
            "devices": np.concatenate([devices, extra], axis=1).astype(np.float32),
            "server": np.append(server, rule).astype(np.float32),
        }
        return self._format_observation(observation)
