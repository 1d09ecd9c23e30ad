"""The policy interface every heuristic shares, with Stable-Baselines3's calling convention.

A :class:`BaselinePolicy` turns one observation into a :class:`~fl_gym.sim.plan.RoundPlan` and,
through the environment's ``encode_plan``, into an action of that environment's space. It decides
only its own knobs (:attr:`BaselinePolicy.knobs`); the others take the environment's documented
defaults from the environment's own action codec
(:class:`~fl_gym.envs.wireless_fl.codec.WirelessFLCodec`), so a plan is exactly what the
environment plays:

* selection: round-robin, the M available devices that have gone longest without being
  selected, lower index first on ties (the codec's rule, replayed from the observations'
  ``selected`` column);
* power: ``p_max``; compression: ``default_compression``; local steps: ``default_local_steps``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from fl_gym.baselines.features import ObservationFeatures, read_observation, split_batch
from fl_gym.envs.wireless_fl.codec import SelectionState, WirelessFLCodec, rank_select
from fl_gym.envs.wireless_fl.env import WirelessFLEnv
from fl_gym.sim.plan import RoundPlan
from fl_gym.sim.threads import with_torch_threads

__all__ = [
    "BaselinePolicy",
    "EpisodeMemory",
    "applies_to_uplink",
    "rank_select",
]


@dataclass
class EpisodeMemory:
    """What a policy remembers within one episode of one environment.

    Attributes:
        rounds_planned: Rounds planned so far in this episode.
        last_selected_round: ``(K,)`` round in which each device was last selected, -1 if never
            (read from the observations, so it holds what the environment really did).
        extra: Policy-specific state (e.g. average rates), created by
            :meth:`BaselinePolicy._new_episode_state`.
    """

    rounds_planned: int
    last_selected_round: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)


def applies_to_uplink(cls: type[BaselinePolicy], env: WirelessFLEnv) -> bool:
    """Whether a policy class's kind of uplink (digital or over-the-air) is ``env``'s (and, for
    a Byzantine defence, whether ``env`` is the Byzantine environment and offers the defence's
    aggregation rule, if it names one)."""
    from fl_gym.envs.wireless_fl.byzantine import ByzantineSelectionEnv
    from fl_gym.envs.wireless_fl.over_the_air import OverTheAirFLEnv

    if getattr(cls, "byzantine", False):
        if not isinstance(env, ByzantineSelectionEnv):
            return False  # a defence reads features only the Byzantine environment has
        rule = getattr(cls, "aggregator", None)
        if rule is not None and rule not in env.codec.aggregator_choices:  # type: ignore[attr-defined]
            return False
    return cls.over_the_air == isinstance(env, OverTheAirFLEnv)


class BaselinePolicy(abc.ABC):
    """A heuristic controller of a wireless FL environment, used like an SB3 model.

    Args:
        env: The environment (wrapped or not) whose actions the policy produces; the policy keeps
            ``env.unwrapped`` for its configuration and ``encode_plan``.

    Subclasses set :attr:`name` and :attr:`knobs` and implement :meth:`_decide`; keyword
    arguments of their ``__init__`` are the baseline's options (validated there).

    Per-episode memory (round-robin order, average rates) is kept per environment of a batch. It
    is cleared by :meth:`reset`, where ``predict``'s ``episode_start`` is true, on the first call,
    when the batch size changes, and when an observation is the first of an episode (its round
    counter is 0), so a policy reused across episodes without ``episode_start`` stays right.
    :meth:`plan` and :meth:`predict` treat each call as the next round of the episode.
    """

    name: ClassVar[str]
    """Registry name, e.g. ``"round-robin"``."""

    knobs: ClassVar[frozenset[str]]
    """The knobs the policy decides, a subset of ``{"selection", "power", "compression",
    "frequency"}``."""

    over_the_air: ClassVar[bool] = False
    """Whether the policy is for over-the-air environments (analog aggregation, no sub-channel
    limit) rather than for digital uploads on M sub-channels; each kind applies to its own."""

    def __init__(self, env: gym.Env) -> None:
        unwrapped = getattr(env, "unwrapped", None)
        if not isinstance(unwrapped, WirelessFLEnv):
            raise TypeError(
                f"baseline {self.name!r} needs a wireless FL environment (an fl_gym "
                f"WirelessFLEnv, e.g. gym.make('fl_gym/WirelessFL-v0')), got {env!r}"
            )
        if applies_to_uplink(type(self), unwrapped) is False:
            kind = "over-the-air" if self.over_the_air else "digital (sub-channel)"
            raise ValueError(
                f"baseline {self.name!r} is a {kind} policy and does not apply to "
                f"{type(unwrapped).__name__}; fl_gym.baselines.baselines_for(env) lists the "
                "baselines that do"
            )
        if not self.knobs & set(unwrapped.controls):
            raise ValueError(
                f"baseline {self.name!r} decides {sorted(self.knobs)}, which this environment "
                f"does not control (it controls {list(unwrapped.controls)}); "
                "fl_gym.baselines.baselines_for(env) lists the baselines that apply"
            )
        self.env: WirelessFLEnv = unwrapped
        self._memories: list[EpisodeMemory | None] = []
        self.observation: Any = None
        """The last observation decided on, as the environment returned it."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, knobs={sorted(self.knobs)})"

    # -- the decision ------------------------------------------------------------------------------

    @abc.abstractmethod
    def _decide(self, features: ObservationFeatures, memory: EpisodeMemory) -> dict[str, Any]:
        """The values of this policy's knobs for the coming round.

        Args:
            features: The current observation, decoded.
            memory: This episode's memory (already updated with the observation).

        Returns:
            One entry per knob in :attr:`knobs`: ``"selection"`` a ``(K,)`` bool mask of at most
            M available devices, ``"power"`` ``(K,)`` watts, ``"compression"`` a level index,
            ``"frequency"`` a number of local steps.
        """

    def _new_episode_state(self) -> dict[str, Any]:
        """Policy-specific per-episode state (none by default)."""
        return {}

    @property
    def num_threads(self) -> int | None:
        """torch intra-op threads while deciding: the environment's (see
        :mod:`fl_gym.sim.threads`)."""
        return self.env.num_threads

    @property
    def codec(self) -> WirelessFLCodec:
        """The environment's action codec: its power map, top-M and round-robin rules and the
        defaults of the knobs this policy leaves alone."""
        return self.env.codec

    @staticmethod
    def selection_state(features: ObservationFeatures, memory: EpisodeMemory) -> SelectionState:
        """The devices' availability (from the observation) and selection history (from the
        episode's memory), as the codec's selection rules take them."""
        return SelectionState(features.available, memory.last_selected_round)

    # -- public API --------------------------------------------------------------------------------

    @with_torch_threads
    def plan(self, obs: dict[str, np.ndarray]) -> RoundPlan:
        """The round plan for one (unbatched) observation.

        Each call counts as the next round of the episode (it uses and advances the memory of
        the first environment of a batch); pass the observations of an episode in order.

        Args:
            obs: An observation of the environment, ``{"devices": (K, F), "server": (G,)}``.

        Returns:
            The plan; knobs this policy does not decide hold the environment's defaults.
        """
        if not self._memories:
            self._memories = [None]
        return self._plan_slot(self._read(obs), 0)

    @with_torch_threads
    def predict(
        self,
        observation: dict[str, np.ndarray],
        state: Any = None,
        episode_start: np.ndarray | bool | None = None,
        deterministic: bool = True,
    ) -> tuple[Any, Any]:
        """Stable-Baselines3's ``predict``: the action for an observation or a batch of them.

        Args:
            observation: One observation, or a batch stacked as a vector env stacks them
                (``"devices"`` of shape ``(n, K, F)``).
            state: Passed through (the policies keep no recurrent state for the caller).
            episode_start: ``(n,)`` flags (or one flag) marking observations that start an
                episode; their memory is cleared.
            deterministic: Ignored; a randomised baseline stays randomised.

        Returns:
            The action (of the environment's action space) or the stacked actions, and
            ``state``.
        """
        del deterministic
        batch = split_batch(observation)
        observations = [observation] if batch is None else batch
        n = len(observations)
        starts = _episode_starts(episode_start, n)
        if len(self._memories) != n:
            self._memories = [None] * n
        actions = []
        for slot, obs in enumerate(observations):
            if starts[slot]:
                self._memories[slot] = None
            features = self._read(obs)
            actions.append(self._encode(self._plan_slot(features, slot)))
        if batch is None:
            return actions[0], state
        return np.stack([np.asarray(a) for a in actions]), state

    def reset(self) -> None:
        """Forget every episode's memory."""
        self._memories = []

    # -- internals ---------------------------------------------------------------------------------

    def _read(self, obs: Any) -> ObservationFeatures:
        """One observation decoded (the wireless FL columns of an environment that adds more);
        the raw observation stays in :attr:`observation` for policies that read the rest."""
        self.observation = obs
        return read_observation(self.env.wireless_observation(obs), self.env.num_devices)

    def _encode(self, plan: RoundPlan) -> Any:
        """The environment's action for ``plan``."""
        return self.env.encode_plan(plan)

    def _plan_slot(self, features: ObservationFeatures, slot: int) -> RoundPlan:
        memory = self._memories[slot]
        if memory is None or (features.is_first_round and memory.rounds_planned > 0):
            memory = EpisodeMemory(
                rounds_planned=0,
                last_selected_round=np.full(features.num_devices, -1, dtype=np.int64),
                extra=self._new_episode_state(),
            )
            self._memories[slot] = memory
        if memory.rounds_planned > 0:
            # The observation reports who took part in the round just played.
            memory.last_selected_round[features.selected] = memory.rounds_planned - 1
        decided = self._decide(features, memory)
        if set(decided) != self.knobs:
            raise RuntimeError(
                f"baseline {self.name!r} decided {sorted(decided)}, expected {sorted(self.knobs)}"
            )
        memory.rounds_planned += 1
        return self.codec.complete(decided, self.selection_state(features, memory))


def _episode_starts(episode_start: Any, n: int) -> np.ndarray:
    if episode_start is None:
        return np.zeros(n, dtype=bool)
    starts = np.asarray(episode_start)
    if starts.ndim == 0:
        return np.full(n, bool(starts))
    starts = starts.reshape(-1)
    if starts.shape[0] != n:
        raise ValueError(
            f"episode_start must hold one flag per observation ({n}), got shape {starts.shape}"
        )
    return starts.astype(bool)
