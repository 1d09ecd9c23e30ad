"""Device-selection heuristics from the literature on federated learning over wireless links.

Each policy selects at most M (``config.wireless.num_subchannels``, the codec's ``max_selected``)
devices, and only available ones (battery not empty). Rankings break ties by the lower device
index, with the ranking rule of the environment's codec (``self.codec.rank``,
:func:`~fl_gym.envs.wireless_fl.codec.rank_select`).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from fl_gym.baselines.base import BaselinePolicy, EpisodeMemory
from fl_gym.baselines.features import ObservationFeatures

__all__ = [
    "AgeBasedSelection",
    "BestChannelSelection",
    "EnergyAwareSelection",
    "FullParticipation",
    "ProportionalFairSelection",
    "RandomSelection",
    "RoundRobinSelection",
]

_SELECTION = frozenset({"selection"})


class RandomSelection(BaselinePolicy):
    """Random scheduling: M devices drawn uniformly, without replacement, among the available.

    The classic FedAvg client sampling (McMahan et al., "Communication-Efficient Learning of Deep
    Networks from Decentralized Data", AISTATS 2017) restricted to devices with energy left; the
    "random scheduling" reference of Yang, Liu, Quek and Poor, "Scheduling Policies for
    Federated Learning in Wireless Networks", IEEE Trans. Commun. 2020.

    Args:
        env: The environment.
        seed: Seed of the policy's own ``numpy.random.Generator`` (``None`` draws a fresh
            seed from the operating system). The generator is not re-seeded between episodes,
            so successive episodes see different draws; two policies with the same seed fed the
            same observations give the same actions.
    """

    name: ClassVar[str] = "random"
    knobs: ClassVar[frozenset[str]] = _SELECTION

    def __init__(self, env: gym.Env, *, seed: int | None = 0) -> None:
        super().__init__(env)
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0
        ):
            raise ValueError(f"seed must be None or an integer >= 0, got {seed!r}")
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def _decide(self, features: ObservationFeatures, memory: EpisodeMemory) -> dict[str, Any]:
        # Uniform keys for every device (not only the available ones), so the stream of draws
        # does not depend on who is available; the M smallest keys form a uniform subset.
        keys = self.rng.random(features.num_devices)
        return {"selection": self.codec.rank((-keys,), features.available)}


class RoundRobinSelection(BaselinePolicy):
    """Round-robin scheduling: cyclic over device indices, skipping devices with no energy.

    Each round takes the M available devices that have gone longest without being selected
    (lower index first on ties). With every device available this visits ``0..M-1``, then
    ``M..2M-1`` and so on, covering all K devices within ``ceil(K / M)`` rounds; exhausted
    devices drop out of the cycle. It is the "round robin" policy of Yang, Liu, Quek and Poor,
    "Scheduling Policies for Federated Learning in Wireless Networks", IEEE Trans. Commun. 2020,
    and exactly the environment's default selection where selection is not controlled.
    """

    name: ClassVar[str] = "round-robin"
    knobs: ClassVar[frozenset[str]] = _SELECTION

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)

    def _decide(self, features: ObservationFeatures, memory: EpisodeMemory) -> dict[str, Any]:
        return {"selection": self.codec.round_robin(self.selection_state(features, memory))}


class FullParticipation(BaselinePolicy):
    """Full participation (up to M): every available device takes part.

    The FedAvg setting with all clients every round (McMahan et al., AISTATS 2017, ``C = 1``).
    When more than M devices are available, the M lowest indices go: the devices the environment
    itself admits when every device asks to upload (ties go to the lower index). It is therefore
    meant for scenarios with ``K <= M``; with ``K > M`` it starves the higher indices, which is
    what round-robin and the channel-aware policies are compared against.
    """

    name: ClassVar[str] = "full"
    knobs: ClassVar[frozenset[str]] = _SELECTION

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)

    def _decide(self, features: ObservationFeatures, memory: EpisodeMemory) -> dict[str, Any]:
        return {"selection": self.codec.rank((), features.available)}


class BestChannelSelection(BaselinePolicy):
    """Best-channel (max-SNR, opportunistic) scheduling: the M available devices of highest SNR.

    The throughput-maximising scheduler of Knopp and Humblet, "Information capacity and power
    control in single-cell multiuser communications", ICC 1995, used as a baseline for FL by
    Amiri, Gunduz, Kulkarni and Poor, "Convergence of Update Aware Device Scheduling for
    Federated Learning at the Wireless Edge", IEEE TWC 2021. It ranks by the ``snr_db`` feature,
    the SNR at ``p_max`` on the current channel (the ranking of the channel gains).
    """

    name: ClassVar[str] = "best-channel"
    knobs: ClassVar[frozenset[str]] = _SELECTION

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)

    def _decide(self, features: ObservationFeatures, memory: EpisodeMemory) -> dict[str, Any]:
        return {"selection": self.codec.rank((features.snr_db,), features.available)}


class ProportionalFairSelection(BaselinePolicy):
    """Proportional-fair scheduling: the M available devices of largest ``r_k / R_k``.

    ``r_k = log2(1 + snr_k)`` is the device's instantaneous spectral efficiency at ``p_max``
    (the rate up to the sub-channel bandwidth, equal for all) and ``R_k`` its average served
    rate, an exponential average over about ``window_rounds`` rounds::

        R_k <- (1 - 1 / W) R_k + (1 / W) r_k [k was selected],   R_k = 0 at the episode start

    (Viswanath, Tse and Laroia, "Opportunistic beamforming using dumb antennas", IEEE Trans.
    Inf. Theory 2002; the PF baseline of Yang et al., IEEE Trans. Commun. 2020). A device counts
    as served when it was selected, whether or not its update then arrived: a device whose
    uploads keep failing would otherwise keep an average of 0 and a sub-channel forever. Devices
    never served (``R_k = 0``) come first, best channel first. With channels that do not change,
    every device gets the same share of the rounds.

    Args:
        env: The environment.
        window_rounds: ``W``, the averaging window in rounds (``>= 1``; 1 keeps the last round
            only).
    """

    name: ClassVar[str] = "proportional-fair"
    knobs: ClassVar[frozenset[str]] = _SELECTION

    # Floor of the average rate in the ratio, so never-served devices get a finite priority far
    # above any served one.
    _RATE_FLOOR = 1e-12

    def __init__(self, env: gym.Env, *, window_rounds: float = 10.0) -> None:
        super().__init__(env)
        ok = isinstance(window_rounds, (int, float, np.integer, np.floating))
        if (
            isinstance(window_rounds, bool)
            or not ok
            or not (math.isfinite(window_rounds) and window_rounds >= 1.0)
        ):
            raise ValueError(f"window_rounds must be a finite number >= 1, got {window_rounds!r}")
        self.window_rounds = float(window_rounds)

    def _new_episode_state(self) -> dict[str, Any]:
        k = self.env.num_devices
        return {"average_rate": np.zeros(k), "last_rate": np.zeros(k)}

    def _decide(self, features: ObservationFeatures, memory: EpisodeMemory) -> dict[str, Any]:
        rate = features.spectral_efficiency
        state = memory.extra
        if memory.rounds_planned > 0:
            # The observation says who was served in the round just played, at last round's rate.
            served = features.selected * state["last_rate"]
            forget = 1.0 / self.window_rounds
            state["average_rate"] = (1.0 - forget) * state["average_rate"] + forget * served
        state["last_rate"] = rate
        priority = rate / np.maximum(state["average_rate"], self._RATE_FLOOR)
        return {"selection": self.codec.rank((priority, rate), features.available)}


class AgeBasedSelection(BaselinePolicy):
    """Age-based scheduling: the M available devices whose last aggregated update is oldest.

    After Yang, Arafa, Quek and Poor, "Age-Based Scheduling Policy for Federated Learning in
    Mobile Edge Networks", ICASSP 2020, which schedules by the age of update (AoU, the rounds
    since a device's update last reached the global model) jointly with the instantaneous
    channel. Here the age decides (the ``staleness`` feature, capped at 50 rounds) and the
    channel breaks ties: among equally stale devices the higher SNR goes first. A device whose
    upload was lost keeps ageing, so it is retried before devices that were just aggregated.
    """

    name: ClassVar[str] = "age-based"
    knobs: ClassVar[frozenset[str]] = _SELECTION

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)

    def _decide(self, features: ObservationFeatures, memory: EpisodeMemory) -> dict[str, Any]:
        keys = (features.staleness_rounds, features.snr_db)
        return {"selection": self.codec.rank(keys, features.available)}


class EnergyAwareSelection(BaselinePolicy):
    """Energy-aware selection: the M available devices of largest battery x channel score.

    ``score_k = battery_fraction_k * log2(1 + snr_k)``: the energy left (as a fraction of the
    capacity) times the spectral efficiency at ``p_max``. An upload of a given size costs
    energy inversely proportional to the rate, so for equal capacities the score is
    proportional to the number of uploads the remaining battery affords at full power; devices
    that are nearly empty or badly placed are spared. In the spirit of EAFL (Arouj and
    Abdelmoniem, "Towards Energy-Aware Federated Learning on Battery-Powered Clients",
    arXiv:2208.04505, 2022), which favours clients with more battery left, combined with the
    channel as in the wireless scheduling literature.
    """

    name: ClassVar[str] = "energy-aware"
    knobs: ClassVar[frozenset[str]] = _SELECTION

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)

    def _decide(self, features: ObservationFeatures, memory: EpisodeMemory) -> dict[str, Any]:
        score = features.battery_fraction * features.spectral_efficiency
        return {"selection": self.codec.rank((score,), features.available)}
