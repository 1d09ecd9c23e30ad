"""Configuration of the wireless FL environments: one frozen dataclass and named presets.

A :class:`WirelessFLConfig` holds the scenario (data, partition, number of devices), the episode
and reward settings, and two nested configurations: ``learning`` (a
:class:`~fl_gym.sim.learning.federation.FederationConfig`) and ``wireless`` (a
:class:`~fl_gym.sim.radio.cell.WirelessConfig`). :func:`make_config` builds one from a preset and
overrides given as a dict; a key may name a field of the top level, of ``learning`` or of
``wireless`` (``{"deadline_s": 0.5}``, or ``{"wireless.deadline_s": 0.5}`` to be explicit, or
``{"wireless": {"deadline_s": 0.5}}``). An unknown key is an error that names it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from fl_gym.sim.config import (
    MAX_DEVICES,
    MAX_LOCAL_STEPS,
    Range,
    check_bool,
    check_choice,
    check_instance,
    check_int_tuple,
    check_memory,
    check_ranges,
    is_int,
    resolve_config,
)
from fl_gym.sim.config import apply_overrides as sim_apply_overrides
from fl_gym.sim.learning.data import (
    SYNTHETIC_BYTES_PER_VALUE,
    SYNTHETIC_MEAN_SAMPLES_PER_USER,
    FederatedDataset,
    make_federated_dataset,
)
from fl_gym.sim.learning.federation import FederationConfig, check_federation_size
from fl_gym.sim.localization.scenario import LOCALIZATION_PRESETS, LocalizationScenario
from fl_gym.sim.radio.cell import WirelessConfig

__all__ = [
    "DEFAULT_WIRELESS",
    "PRESETS",
    "REWARD_MODES",
    "TARGET_REQUIRED_MODES",
    "WirelessFLConfig",
    "apply_overrides",
    "build_dataset",
    "make_config",
]

FAMILY = "the wireless FL envs"
"""How errors name this family of environments."""

DATASETS = ("digits", "synthetic", "localization")
_SHAPES = {"digits": (64, 10), "synthetic": (60, 10)}
"""Features and classes of each data set as the environments build it (localization: the
scenario's APs and 2 coordinates)."""
PARTITIONS = ("iid", "dirichlet", "shards", "quantity")
ANALOG_SCHEMES = ("beamforming", "broadband", "compressive-sensing")
REWARD_MODES = ("weighted", "time-to-accuracy", "energy-to-accuracy", "accuracy-at-budget")
"""The objectives a wireless FL environment can reward (see ``WirelessFLConfig.reward_mode``)."""
TARGET_REQUIRED_MODES = ("time-to-accuracy", "energy-to-accuracy")
"""Reward modes in which an episode that ends without reaching the target pays a penalty."""


DEFAULT_WIRELESS = WirelessConfig(
    num_subchannels=5, bandwidth_hz=5e6, battery_min_j=0.1, battery_max_j=0.2
)
"""The environments' cell: the physical defaults of :class:`WirelessConfig` except M = 5
sub-channels of 1 MHz for K = 10 devices (so that selection matters) and batteries of 0.1-0.2 J
(so that uploading everything at full power empties them within an episode)."""


@dataclass(frozen=True)
class WirelessFLConfig:
    """Everything a wireless FL environment is built from.

    Attributes:
        dataset: ``"digits"`` (scikit-learn's bundled 8x8 digits), ``"synthetic"`` (FedProx
            Synthetic(alpha, beta), one user per device) or ``"localization"`` (RSS fingerprints
            -> position, a regression task: :mod:`fl_gym.sim.localization`; the "accuracy" is
            the clipped coefficient of determination of the positions).
        num_devices: Number of devices K, in [1, 100000]
            (:data:`~fl_gym.sim.config.MAX_DEVICES`); the model state, a round's minibatches and
            the synthetic data it scales must also fit
            :data:`~fl_gym.sim.config.MEMORY_LIMIT_BYTES`.
        partition: How digits are split over devices: ``"iid"``, ``"dirichlet"``, ``"shards"``
            or ``"quantity"`` (ignored by ``"synthetic"``, whose users come with their data).
        dirichlet_alpha: Concentration of the Dirichlet label skew, in [0.01, 10000].
        synthetic_alpha: FedProx alpha (model heterogeneity, a standard deviation), in [0, 100].
        synthetic_beta: FedProx beta (data heterogeneity, a standard deviation), in [0, 100].
        synthetic_iid: Use FedProx's IID synthetic generator instead.
        localization_scenario: The localisation scenario, a name in
            :data:`~fl_gym.sim.localization.scenario.LOCALIZATION_PRESETS` (``"indoor"``,
            ``"outdoor"``, ``"few-aps"``); used by ``dataset="localization"``.
        samples_per_device: RSS fingerprints each device records along its random-waypoint
            path (``dataset="localization"``), in [1, 100000].
        num_test_points: Test positions, uniform over the area (``dataset="localization"``),
            in [1, 100000].
        target_accuracy: The episode terminates once test accuracy reaches it, in (0, 1].
        max_rounds: The horizon the round counter of the observation is normalised by, in
            [1, 1000000]. The
            registered environments truncate at 100 rounds (``max_episode_steps``); pass
            ``gym.make(id, max_episode_steps=N)`` together with ``max_rounds=N`` to change both.
        local_step_choices: The local-step counts an aggregation-frequency action picks from,
            each in [1, 10000] (:data:`~fl_gym.sim.config.MAX_LOCAL_STEPS`).
        default_local_steps: Local steps where the environment does not control them, in
            [1, 10000].
        default_compression: Compression level where the environment does not control it.
        power_min_dbm: Transmit power of the action -1 (the action +1 is ``p_max_dbm``);
            the action maps linearly in dBm in between. In [-100, 60) and below ``p_max_dbm``.
        accuracy_weight: Reward per unit of test-accuracy gain, in [0, 1e+06].
        energy_weight_per_j: Reward cost per joule spent by all devices in a round, in
            [0, 1e+06].
        time_weight_per_s: Reward cost per second of round duration, in [0, 1e+06].
        divergence_penalty: Reward cost of the round in which the global model diverges (its
            test loss or a parameter is NaN or infinite; the episode then terminates), in
            [0, 1e+06].
        reward_mode: The objective (the environment's Rewards section gives each formula):
            ``"weighted"`` (accuracy gain minus weighted energy and time, the default),
            ``"time-to-accuracy"`` (FAVOR's ``favor_base ** (accuracy - target) - 1`` per
            round), ``"energy-to-accuracy"`` (minus the weighted energy per round) or
            ``"accuracy-at-budget"`` (the accuracy gained within ``energy_budget_j`` /
            ``time_budget_s``). The two "to-accuracy" modes require the target: an episode that
            ends without reaching it pays a penalty no successful episode can fall below.
        favor_base: The base Xi of the time-to-accuracy reward, in (1, 1e+06]; FAVOR uses 64.
        energy_budget_j: Energy all devices may spend in an ``"accuracy-at-budget"`` episode
            (0: no energy budget), in [0, 1e+09].
        time_budget_s: Summed round durations an ``"accuracy-at-budget"`` episode may take (0: no
            time budget), in [0, 1e+09]. That mode needs at least one of the two budgets.
        learning: Learning configuration (model, optimiser, aggregation, compression levels).
        wireless: Cell configuration (geometry, channel, compute, deadline, batteries);
            :data:`DEFAULT_WIRELESS` by default.
        analog_scheme: How the over-the-air environment aggregates: ``"beamforming"``
            (multi-antenna receive beamforming, Yang et al. 2020) or ``"broadband"`` (broadband
            analog aggregation over OFDM sub-carriers with truncated channel inversion, Zhu et
            al. 2020, :class:`~fl_gym.sim.transports.BroadbandAnalog`) or
            ``"compressive-sensing"`` (top-k with error accumulation, a shared random
            projection to ``d / 2`` measurements and sparse recovery, Amiri and Gunduz 2020,
            :class:`~fl_gym.sim.transports.CSOverTheAir`). The environments with digital
            uploads accept only ``"beamforming"`` (the default, which they ignore).
    """

    dataset: str = "digits"
    num_devices: int = 10
    partition: str = "iid"
    dirichlet_alpha: float = 0.5
    synthetic_alpha: float = 1.0
    synthetic_beta: float = 1.0
    synthetic_iid: bool = False
    localization_scenario: str = "indoor"
    samples_per_device: int = 60
    num_test_points: int = 400
    target_accuracy: float = 0.95
    max_rounds: int = 100
    local_step_choices: tuple[int, ...] = (1, 2, 5, 10, 20)
    default_local_steps: int = 5
    default_compression: int = 0
    power_min_dbm: float = 0.0
    accuracy_weight: float = 100.0
    energy_weight_per_j: float = 20.0
    time_weight_per_s: float = 1.0
    divergence_penalty: float = 100.0
    reward_mode: str = "weighted"
    favor_base: float = 64.0
    energy_budget_j: float = 0.0
    time_budget_s: float = 0.0
    learning: FederationConfig = field(default_factory=FederationConfig)
    wireless: WirelessConfig = field(default_factory=lambda: DEFAULT_WIRELESS)
    analog_scheme: str = "beamforming"

    RANGES: ClassVar[Mapping[str, Range]] = {
        "num_devices": Range(1, MAX_DEVICES, integer=True),
        "dirichlet_alpha": Range(0.01, 1e4),
        "synthetic_alpha": Range(0.0, 100.0),
        "synthetic_beta": Range(0.0, 100.0),
        "samples_per_device": Range(1, 100_000, integer=True),
        "num_test_points": Range(1, 100_000, integer=True),
        "target_accuracy": Range(0.0, 1.0, low_open=True),
        "max_rounds": Range(1, 1_000_000, integer=True),
        "default_local_steps": Range(1, MAX_LOCAL_STEPS, integer=True),
        "power_min_dbm": Range(-100.0, 60.0, high_open=True),
        "accuracy_weight": Range(0.0, 1e6),
        "energy_weight_per_j": Range(0.0, 1e6),
        "time_weight_per_s": Range(0.0, 1e6),
        "divergence_penalty": Range(0.0, 1e6),
        "favor_base": Range(1.0, 1e6, low_open=True),
        "energy_budget_j": Range(0.0, 1e9),
        "time_budget_s": Range(0.0, 1e9),
    }
    """Documented plausible range of every numeric field (stated in its description);
    ``power_min_dbm`` is also below ``wireless.p_max_dbm``."""

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, DATASETS)
        check_choice("partition", self.partition, PARTITIONS)
        check_choice("analog_scheme", self.analog_scheme, ANALOG_SCHEMES)
        check_choice("localization_scenario", self.localization_scenario, LOCALIZATION_PRESETS)
        check_choice("reward_mode", self.reward_mode, REWARD_MODES)
        check_bool("synthetic_iid", self.synthetic_iid)
        check_ranges(self, self.RANGES)
        # Only a sequence of whole numbers: int() would silently truncate 1.5 or parse "12".
        choices = check_int_tuple("local_step_choices", self.local_step_choices, distinct=True)
        if max(choices) > MAX_LOCAL_STEPS:
            raise ValueError(
                f"local_step_choices must hold integers in [1, {MAX_LOCAL_STEPS}] "
                f"(fl_gym.sim.config.MAX_LOCAL_STEPS), got {self.local_step_choices!r}"
            )
        object.__setattr__(self, "local_step_choices", choices)
        check_instance("learning", self.learning, FederationConfig)
        check_instance("wireless", self.wireless, WirelessConfig)
        levels = len(self.learning.compression_levels)
        if not is_int(self.default_compression) or not 0 <= self.default_compression < levels:
            raise ValueError(
                f"default_compression must be a level in 0..{levels - 1} of "
                f"{list(self.learning.compression_levels)}, got {self.default_compression!r}"
            )
        p_max_dbm = self.wireless.p_max_dbm
        if not self.power_min_dbm < p_max_dbm:
            raise ValueError(
                f"power_min_dbm must be a finite number below p_max_dbm ({p_max_dbm}), "
                f"got {self.power_min_dbm!r}"
            )
        if (
            self.reward_mode == "accuracy-at-budget"
            and self.energy_budget_j == 0
            and self.time_budget_s == 0
        ):
            raise ValueError(
                "reward_mode='accuracy-at-budget' needs a budget: energy_budget_j > 0 or "
                f"time_budget_s > 0, got {self.energy_budget_j!r} and {self.time_budget_s!r}"
            )
        self._check_sizes()

    def _check_sizes(self) -> None:
        """Refuse, before anything is allocated, sizes whose arrays would not fit."""
        if self.dataset == "localization":
            features, classes = LOCALIZATION_PRESETS[self.localization_scenario].num_aps, 2
            check_memory(
                "num_devices x samples_per_device",
                (self.num_devices, self.samples_per_device),
                self.num_devices * self.samples_per_device * 8 * (features + 2),
                "the localisation fingerprints",
            )
        else:
            features, classes = _SHAPES[self.dataset]
        check_federation_size(
            self.num_devices,
            features,
            classes,
            self.learning,
            max_local_steps=max((*self.local_step_choices, self.default_local_steps)),
        )
        if self.dataset == "synthetic":
            check_memory(
                "num_devices",
                self.num_devices,
                self.num_devices
                * SYNTHETIC_MEAN_SAMPLES_PER_USER
                * SYNTHETIC_BYTES_PER_VALUE
                * features,
                "the synthetic data set (expected size)",
            )

    @property
    def num_compression_levels(self) -> int:
        return len(self.learning.compression_levels)


PRESETS: dict[str, dict[str, Any]] = {
    "iid-digits": {},
    "noniid-digits": {"partition": "dirichlet", "dirichlet_alpha": 0.1},
    "synthetic-1-1": {
        "dataset": "synthetic",
        "num_devices": 30,
        "synthetic_alpha": 1.0,
        "synthetic_beta": 1.0,
        "learning.model": "logreg",
        "target_accuracy": 0.75,
    },
    "cell-edge": {"wireless.edge_fraction": 0.6},
    "large-k": {"num_devices": 100, "wireless.num_subchannels": 20, "wireless.bandwidth_hz": 20e6},
    "broadband": {
        "analog_scheme": "broadband",
        "wireless.num_antennas": 1,
        "wireless.downlink": True,
    },
    "cs-over-the-air": {"analog_scheme": "compressive-sensing"},
    "stragglers": {
        "wireless.bandwidth_hz": 1e6,
        "wireless.deadline_s": 0.3,
        "wireless.edge_fraction": 0.5,
        "learning.stragglers": "stale",
    },
    "coded": {
        "learning.model": "logreg",
        "wireless.bandwidth_hz": 2e5,
        "wireless.deadline_s": 0.1,
        "wireless.edge_fraction": 0.5,
        "learning.stragglers": "coded",
    },
    "time-to-accuracy": {"reward_mode": "time-to-accuracy"},
    "energy-to-accuracy": {"reward_mode": "energy-to-accuracy"},
    "accuracy-at-budget": {"reward_mode": "accuracy-at-budget", "energy_budget_j": 0.5},
}
"""Named scenarios: overrides of the defaults, in :func:`make_config`'s key syntax.

``"broadband"`` is for the over-the-air environment: single-antenna broadband analog
aggregation (Zhu et al. 2020) with the model broadcast's time in every round
(``wireless.downlink``); the environments with digital uploads refuse it."""


def make_config(
    preset: str | None = None,
    overrides: Mapping[str, Any] | WirelessFLConfig | None = None,
    *,
    base: WirelessFLConfig | None = None,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
) -> WirelessFLConfig:
    """Build a configuration from a preset and overrides (:func:`fl_gym.sim.config.resolve_config`).

    Args:
        preset: A name in :data:`PRESETS`, or ``None`` for the defaults.
        overrides: A :class:`WirelessFLConfig` (used as is) or a dict of overrides applied after
            the preset's. Keys are top-level field names, ``learning.NAME`` / ``wireless.NAME``,
            or bare names of a ``learning`` / ``wireless`` field; ``learning`` and ``wireless``
            may also be given as dicts or config objects.
        base: The configuration the preset and overrides apply to (the defaults if ``None``).
        presets: The named presets ``preset`` picks from (:data:`PRESETS` if ``None``).

    Returns:
        The validated configuration.
    """
    base = WirelessFLConfig() if base is None else base
    return resolve_config(
        base, preset, overrides, presets=PRESETS if presets is None else presets, family=FAMILY
    )


def apply_overrides(config: WirelessFLConfig, overrides: Mapping[str, Any]) -> WirelessFLConfig:
    """``config`` with the overrides applied (key syntax of :func:`make_config`)."""
    return sim_apply_overrides(config, overrides, FAMILY)


def build_dataset(config: WirelessFLConfig, rng: np.random.Generator) -> FederatedDataset:
    """Draw the scenario's federated dataset (partition and, for synthetic data, the data)."""
    if config.dataset == "localization":
        scenario = LocalizationScenario(LOCALIZATION_PRESETS[config.localization_scenario], rng)
        data = scenario.sample(
            config.num_devices, config.samples_per_device, config.num_test_points, rng
        )
        return data.federated_dataset()
    if config.dataset == "synthetic":
        return make_federated_dataset(
            "synthetic",
            config.num_devices,
            rng=rng,
            alpha=config.synthetic_alpha,
            beta=config.synthetic_beta,
            iid=config.synthetic_iid,
        )
    kwargs: dict[str, Any] = {}
    if config.partition == "dirichlet":
        kwargs["alpha"] = config.dirichlet_alpha
    return make_federated_dataset(
        "digits", config.num_devices, partition=config.partition, rng=rng, **kwargs
    )
