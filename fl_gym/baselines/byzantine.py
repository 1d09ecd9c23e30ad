"""Defences for :class:`~fl_gym.envs.wireless_fl.byzantine.ByzantineSelectionEnv`.

Each picks the devices that upload and the server's aggregation rule:

* ``select-all-<rule>``: every device with energy left, aggregated by one fixed rule (FedAvg,
  or one of the robust rules of :mod:`fl_gym.sim.learning.aggregation`);
* ``norm-outlier-rejection``: leaves out the devices whose last update's norm was more than
  ``threshold_decades`` decades away from the round's median (the observation's
  ``update_norm`` column), for ``retry_rounds`` rounds, then lets them try again; the kept
  devices are aggregated by centered clipping;
* ``cosine-outlier-rejection``: the same with the cosine between a device's last update and
  the global model's previous step (``update_cosine``) below ``min_cosine``.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from fl_gym.baselines.base import BaselinePolicy, EpisodeMemory, rank_select
from fl_gym.baselines.features import ObservationFeatures
from fl_gym.envs.wireless_fl.byzantine import (
    AGGREGATOR_CHOICES,
    BYZANTINE_DEVICE_FEATURES,
    ByzantineSelectionEnv,
)
from fl_gym.sim.config import check_choice, check_int, check_real
from fl_gym.sim.plan import RoundPlan

__all__ = ["BYZANTINE_BASELINES", "CosineOutlierRejection", "NormOutlierRejection"]

_NORM = BYZANTINE_DEVICE_FEATURES.index("update_norm")
_COSINE = BYZANTINE_DEVICE_FEATURES.index("update_cosine")


class _ByzantineDefence(BaselinePolicy):
    """A selection and a rule for the Byzantine environment."""

    knobs: ClassVar[frozenset[str]] = frozenset({"selection"})
    byzantine: ClassVar[bool] = True
    aggregator: str | None = "fedavg"
    """The rule it needs the environment to offer (``None``: it adapts to the offer)."""

    def __init__(self, env: gym.Env) -> None:
        unwrapped = getattr(env, "unwrapped", None)
        if not isinstance(unwrapped, ByzantineSelectionEnv):
            raise ValueError(
                f"baseline {self.name!r} is a defence of fl_gym/ByzantineSelection-v0 "
                f"(ByzantineSelectionEnv), got {type(unwrapped).__name__}"
            )
        super().__init__(env)
        choices = self.env.codec.aggregator_choices  # type: ignore[attr-defined]
        check_choice("aggregator", self.aggregator, choices)

    def _cap(self, keep: np.ndarray, memory: EpisodeMemory) -> np.ndarray:
        """At most M of the ``keep`` devices: those unselected longest (lower index on ties)."""
        return rank_select([-memory.last_selected_round], keep, self.codec.max_selected)

    def _encode(self, plan: RoundPlan) -> Any:
        return self.env.encode_plan(plan, aggregator=self.aggregator)  # type: ignore[call-arg]

    def _devices(self) -> np.ndarray:
        """The ``(K, F)`` device columns of the last observation."""
        obs = self.observation
        k, wide = self.env.num_devices, len(BYZANTINE_DEVICE_FEATURES)
        if isinstance(obs, dict):
            return np.asarray(obs["devices"], dtype=np.float64)
        return np.asarray(obs, dtype=np.float64)[: k * wide].reshape(k, wide)


def _select_all(rule: str) -> type[_ByzantineDefence]:
    def decide(
        self: _ByzantineDefence, features: ObservationFeatures, memory: EpisodeMemory
    ) -> dict[str, Any]:
        return {"selection": self._cap(features.available, memory)}

    name = "select-all-" + rule.replace("_", "-")
    doc = (
        f"Every device with energy left uploads (the M unselected longest, where more than M "
        f"have energy); the server aggregates with ``{rule}``. A reference defence: the rule "
        "alone, with no selection."
    )
    return type(  # type: ignore[return-value]
        "SelectAll" + "".join(part.title() for part in rule.split("_")),
        (_ByzantineDefence,),
        {
            "__doc__": doc,
            "__module__": __name__,
            "name": name,
            "aggregator": rule,
            "_decide": decide,
        },
    )


class _OutlierRejection(_ByzantineDefence):
    """Leaves out devices whose last update was an outlier, for a number of rounds."""

    aggregator: str | None = None

    def __init__(self, env: gym.Env, aggregator: str | None = None, retry_rounds: int = 10) -> None:
        if aggregator is None:
            # Centered clipping where the environment offers it, else FedAvg (a server that
            # can only sum, e.g. under secure aggregation, must rely on the selection).
            offered = env.unwrapped.codec.aggregator_choices
            aggregator = "centered_clipping" if "centered_clipping" in offered else "fedavg"
        self.aggregator = aggregator
        super().__init__(env)
        self.retry_rounds = check_int("retry_rounds", retry_rounds, minimum=1)

    def _new_episode_state(self) -> dict[str, Any]:
        return {"banned_until": np.zeros(self.env.num_devices, dtype=np.int64)}

    @abc.abstractmethod
    def _outliers(self, devices: np.ndarray) -> np.ndarray:
        """``(K,)`` bool: the devices whose last update this rule counts as an outlier."""

    def _decide(self, features: ObservationFeatures, memory: EpisodeMemory) -> dict[str, Any]:
        banned_until = memory.extra["banned_until"]
        now = memory.rounds_planned
        if now > 0:
            outliers = self._outliers(self._devices()) & features.selected
            banned_until[outliers] = now + self.retry_rounds
        keep = features.available & (banned_until <= now)
        if not keep.any():
            keep = features.available.copy()
        return {"selection": self._cap(keep, memory)}


class NormOutlierRejection(_OutlierRejection):
    """Rejects devices whose update norm was far from the round's median.

    Args:
        env: The Byzantine environment.
        threshold_decades: A device whose ``|log10(norm / median)|`` exceeded this is left
            out, > 0 (0.5: more than about 3.2 times the median, or less than a third of it).
        aggregator: The rule the server aggregates the kept devices with (by default centered
            clipping, so that a first round with every device does not already poison the
            model, nor the step the cosines are measured against; FedAvg where the
            environment's ``aggregator_choices`` do not offer centered clipping).
        retry_rounds: Rounds a rejected device stays out, >= 1.
    """

    name: ClassVar[str] = "norm-outlier-rejection"

    def __init__(
        self,
        env: gym.Env,
        threshold_decades: float = 0.5,
        aggregator: str | None = None,
        retry_rounds: int = 10,
    ) -> None:
        super().__init__(env, aggregator, retry_rounds)
        self.threshold_decades = check_real(
            "threshold_decades", threshold_decades, low=0.0, low_open=True
        )

    def _outliers(self, devices: np.ndarray) -> np.ndarray:
        return np.abs(devices[:, _NORM]) > self.threshold_decades


class CosineOutlierRejection(_OutlierRejection):
    """Rejects devices whose update pointed away from the global model's last step.

    Args:
        env: The Byzantine environment.
        min_cosine: A device whose cosine with the previous step was below this is left out,
            in [-1, 1].
        aggregator: The rule the server aggregates the kept devices with (by default centered
            clipping, so that a first round with every device does not already poison the
            model, nor the step the cosines are measured against; FedAvg where the
            environment's ``aggregator_choices`` do not offer centered clipping).
        retry_rounds: Rounds a rejected device stays out, >= 1.
    """

    name: ClassVar[str] = "cosine-outlier-rejection"

    def __init__(
        self,
        env: gym.Env,
        min_cosine: float = 0.0,
        aggregator: str | None = None,
        retry_rounds: int = 10,
    ) -> None:
        super().__init__(env, aggregator, retry_rounds)
        self.min_cosine = check_real("min_cosine", min_cosine, low=-1.0, high=1.0)

    def _outliers(self, devices: np.ndarray) -> np.ndarray:
        # A device with no cosine yet (first round) shows 0 and is kept at the default.
        return devices[:, _COSINE] < self.min_cosine


BYZANTINE_BASELINES: tuple[type[BaselinePolicy], ...] = (
    *(_select_all(rule) for rule in AGGREGATOR_CHOICES),
    NormOutlierRejection,
    CosineOutlierRejection,
)
"""The defences, in registry order."""
