"""Native vector environments for the wireless FL environments: E federations, one batched step.

``gym.make_vec("fl_gym/WirelessFL-v0", num_envs=E)`` (or ``vectorization_mode=
"vector_entry_point"``) builds a :class:`WirelessFLVectorEnv`. It behaves as
``gym.make_vec(id, num_envs=E, vectorization_mode="sync")`` does, step for step (observations,
rewards, terminated, truncated and infos for the same seeds and actions), but its E rounds are
one run of the round pipeline (:mod:`fl_gym.sim.rounds`), the same code a single environment
runs as a batch of one: local training, compression, uplink and evaluation of all E federations
are batched, every row from its own environment's model and generator; the observations are
one :func:`~fl_gym.envs.wireless_fl.env.observe_many` call. Environments with their own update
transforms (the Byzantine environment's adversary and monitor, the private environment's
client-level DP) run them on their own federation inside the batched round, and the private
environment's DP-SGD setting applies to its own federation.

Conventions are Gymnasium 1.x's (those of :class:`gymnasium.vector.SyncVectorEnv`):

* Next-step autoreset (``metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP``): the step after
  an episode ended resets that environment, ignores its action and returns the first
  observation of the new episode with reward 0, ``terminated = truncated = False`` and the
  reset's info.
* Observations are a dict of stacked arrays, ``devices (E, K, F)`` and ``server (E, G)``, or
  with ``obs_mode="flat"`` one ``(E, K * F + G)`` array of the environments' flat rows; infos
  are batched as ``SyncVectorEnv`` batches them (a ``"_key"`` mask beside every key).
* ``reset(seed=s)`` seeds the environments ``s, s + 1, ...``; a list seeds them one by one;
  ``options`` goes to every environment (``options["reset_mask"]`` resets only some).
* Episodes are truncated after ``max_episode_steps`` steps (from the registration), as the
  ``TimeLimit`` wrapper of ``gym.make`` does.

Actions are validated for every environment before any of them moves: a bad action raises
(``ValueError`` / ``TypeError`` naming the environment) and leaves the vector env as it was.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from gymnasium.spaces import Space
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, iterate

from fl_gym.envs.actions import show_action
from fl_gym.envs.obs_mode import Observation
from fl_gym.envs.wireless_fl.byzantine import ByzantineSelectionEnv
from fl_gym.envs.wireless_fl.env import WirelessFLEnv
from fl_gym.envs.wireless_fl.localization import FederatedLocalizationEnv
from fl_gym.envs.wireless_fl.over_the_air import OverTheAirFLEnv
from fl_gym.envs.wireless_fl.private import PrivateFLEnv
from fl_gym.sim.learning.federation import Federation
from fl_gym.sim.learning.training import LocalTrainingResult
from fl_gym.sim.plan import RoundPlan
from fl_gym.sim.rounds import PendingUpdates, RoundPipeline, RoundStart, UpdateTransform
from fl_gym.sim.threads import with_torch_threads

__all__ = [
    "ByzantineSelectionVectorEnv",
    "FederatedLocalizationVectorEnv",
    "OverTheAirFLVectorEnv",
    "PrivateFLVectorEnv",
    "WirelessFLVectorEnv",
]


class WirelessFLVectorEnv(VectorEnv):
    """E wireless FL environments stepped together, their local training batched.

    Args:
        num_envs: Number of environments E.
        max_episode_steps: Truncate an episode after this many steps (``None``: never), as the
            ``TimeLimit`` wrapper does; ``gym.make_vec`` passes the registration's value.
        **env_kwargs: Arguments of every environment (``controls``, ``config``, ``preset``,
            ``render_mode``, ``device``, ``obs_mode``; see
            :class:`~fl_gym.envs.wireless_fl.env.WirelessFLEnv`).

    Attributes:
        envs: The E environments (raw, unwrapped); read them, do not step them directly.
    """

    env_class: ClassVar[type[WirelessFLEnv]] = WirelessFLEnv
    metadata: ClassVar[dict[str, Any]] = {
        **WirelessFLEnv.metadata,
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(
        self, num_envs: int = 1, *, max_episode_steps: int | None = None, **env_kwargs: Any
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)):
            raise TypeError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        if num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        if max_episode_steps is not None and (
            isinstance(max_episode_steps, bool)
            or not isinstance(max_episode_steps, (int, np.integer))
            or max_episode_steps < 1
        ):
            raise ValueError(
                f"max_episode_steps must be None or an integer >= 1, got {max_episode_steps!r}"
            )
        self.num_envs = int(num_envs)
        self.max_episode_steps = None if max_episode_steps is None else int(max_episode_steps)
        self.envs: list[WirelessFLEnv] = [
            self.env_class(**env_kwargs) for _ in range(self.num_envs)
        ]
        first = self.envs[0]
        self.render_mode = first.render_mode
        self.num_threads = first.num_threads
        self.single_observation_space: Space = first.observation_space
        self.single_action_space: Space = first.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._env_transforms = _EnvTransforms()
        self.pipeline = RoundPipeline(
            first.make_transport(), (self._env_transforms,) if first.pipeline.transforms else ()
        )
        """The round's stages, run on all stepped environments at once."""
        self._elapsed_steps = np.zeros(self.num_envs, dtype=np.int64)
        self._autoreset_envs = np.zeros(self.num_envs, dtype=np.bool_)
        self._needs_reset = True
        self._env_obs: list[Observation] = [{} for _ in range(self.num_envs)]

    # -- Gymnasium VectorEnv API -------------------------------------------------------------------

    @property
    def np_random_seed(self) -> tuple[int, ...]:
        """The seeds of the environments' generators."""
        return tuple(env.np_random_seed for env in self.envs)

    @property
    def np_random(self) -> tuple[np.random.Generator, ...]:
        """The environments' generators."""
        return tuple(env.np_random for env in self.envs)

    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[Observation, dict[str, Any]]:
        """Reset all environments (or those of ``options["reset_mask"]``).

        Args:
            seed: ``None`` (fresh entropy), an int (environment ``i`` gets ``seed + i``) or one
                seed per environment.
            options: Passed to every reset environment (e.g. ``{"config": {...}}``);
                ``"reset_mask"``, a ``(E,)`` bool array, selects the environments to reset.

        Returns:
            The stacked observations and the batched infos of the reset environments.
        """
        infos: dict[str, Any] = {}
        for i, info_i in self.reset_envs(seed=seed, options=options).items():
            infos = self._add_info(infos, info_i, i)
        return self._stack_observations(), infos

    @with_torch_threads
    def reset_envs(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> dict[int, dict[str, Any]]:
        """:meth:`reset` without batching: the reset environments' infos by index.

        The observations are those of :meth:`observations`. Adapters to other vector APIs
        (SB3's, whose infos are a list of dicts) use this and :meth:`step_envs`.
        """
        n = self.num_envs
        if seed is None:
            seeds: list[int | None] = [None] * n
        elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            seeds = [int(seed) + i for i in range(n)]
        else:
            seeds = list(seed)  # type: ignore[arg-type]
            if len(seeds) != n:
                raise ValueError(
                    f"seed must be None, an int or a list of num_envs = {n} seeds, "
                    f"got a list of length {len(seeds)}"
                )
        mask = np.ones(n, dtype=np.bool_)
        if options is not None and "reset_mask" in options:
            options = dict(options)
            mask = options.pop("reset_mask")
            if not isinstance(mask, np.ndarray) or mask.shape != (n,) or mask.dtype != np.bool_:
                raise ValueError(
                    f"options['reset_mask'] must be a bool numpy array of shape ({n},), "
                    f"got {mask!r}"
                )
            if not mask.any():
                raise ValueError("options['reset_mask'] must select at least one environment")
        infos: dict[int, dict[str, Any]] = {}
        for i in np.flatnonzero(mask).tolist():
            self._env_obs[i], infos[i] = self.envs[i].reset(seed=seeds[i], options=options)
            self._elapsed_steps[i] = 0
            self._autoreset_envs[i] = False
        self._needs_reset = False
        return infos

    def step(
        self, actions: Any
    ) -> tuple[Observation, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every environment; those whose episode ended at the last step reset instead.

        Args:
            actions: A batch of the ``action_space`` (one action per environment).

        Returns:
            Stacked observations, rewards ``(E,)`` float64, terminated and truncated ``(E,)``
            bool, and the batched infos.
        """
        rewards, terminated, truncated, env_infos = self.step_envs(actions)
        return (
            self._stack_observations(),
            rewards,
            terminated,
            truncated,
            self._batch_infos(env_infos),
        )

    @with_torch_threads
    def step_envs(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """:meth:`step` without batching: rewards, terminated, truncated and a list of infos.

        The observations are those of :meth:`observations`.
        """
        if self._needs_reset:
            raise RuntimeError("call reset() before step()")
        n = self.num_envs
        action_list = self._split_actions(actions)
        resetting = self._autoreset_envs.copy()
        # Decode (and so validate) every action before any environment moves.
        decoded: dict[int, tuple[RoundPlan, dict[str, Any]]] = {}
        for i in range(n):
            if not resetting[i]:
                try:
                    decoded[i] = self.envs[i].decode_action(action_list[i])
                except (TypeError, ValueError) as exc:
                    raise type(exc)(f"environment {i}: {exc}") from exc
        for i, (_, decode_info) in decoded.items():
            self.envs[i]._before_round(decode_info)
        reports = self._play_rounds(decoded)

        rewards = np.zeros(n, dtype=np.float64)
        terminated = np.zeros(n, dtype=np.bool_)
        truncated = np.zeros(n, dtype=np.bool_)
        infos: list[dict[str, Any]] = []
        # The stepped environments' observations are made together after their steps.
        for i, env in enumerate(self.envs):
            if resetting[i]:
                self._env_obs[i], info_i = env.reset()
                self._elapsed_steps[i] = 0
            else:
                self._env_obs[i], reward, term, trunc, info_i = env._finish_step(
                    reports[i], decoded[i][1], observe=False
                )
                self._elapsed_steps[i] += 1
                if self.max_episode_steps is not None:
                    trunc = trunc or bool(self._elapsed_steps[i] >= self.max_episode_steps)
                rewards[i], terminated[i], truncated[i] = reward, term, trunc
            infos.append(info_i)
        if decoded:
            stepped = sorted(decoded)
            observations = self.env_class.observe_envs([self.envs[i] for i in stepped])
            for i, obs in zip(stepped, observations, strict=True):
                self._env_obs[i] = obs
        self._autoreset_envs = terminated | truncated
        return rewards, terminated, truncated, infos

    def observations(self) -> Observation:
        """The current observations, stacked (a fresh copy): a dict of ``(E, ...)`` arrays, or
        ``(E, D)`` in flat mode."""
        return self._stack_observations()

    def render(self) -> tuple[np.ndarray | None, ...]:
        """Every environment's frame."""
        return tuple(env.render() for env in self.envs)

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Call method ``name`` of every environment (or read attribute ``name``)."""
        results = []
        for env in self.envs:
            attr = getattr(env, name)
            results.append(attr(*args, **kwargs) if callable(attr) else attr)
        return tuple(results)

    def get_attr(self, name: str) -> tuple[Any, ...]:
        """Attribute ``name`` of every environment."""
        return tuple(getattr(env, name) for env in self.envs)

    def set_attr(self, name: str, values: list[Any] | tuple[Any, ...] | Any) -> None:
        """Set attribute ``name`` of every environment (one value each, or one for all)."""
        if not isinstance(values, (list, tuple)):
            values = [values] * self.num_envs
        if len(values) != self.num_envs:
            raise ValueError(
                f"values must have one entry per environment ({self.num_envs}), got {len(values)}"
            )
        for env, value in zip(self.envs, values, strict=True):
            setattr(env, name, value)

    def close_extras(self, **kwargs: Any) -> None:
        # getattr: __del__ closes a vector env whose construction failed before self.envs.
        for env in getattr(self, "envs", ()):
            env.close()

    # -- internals ---------------------------------------------------------------------------------

    def _split_actions(self, actions: Any) -> list[Any]:
        """One action per environment; each is then checked by its env's codec (the one input
        policy of :mod:`fl_gym.envs.actions`)."""
        n = self.num_envs
        expected = f"actions must be a batch of {n} actions of {self.single_action_space}"
        if actions is None or isinstance(actions, (str, bytes, Mapping)):
            raise TypeError(f"{expected}, got {show_action(actions)}")
        try:
            length = len(actions)
        except TypeError:
            raise TypeError(f"{expected}, got {show_action(actions)}") from None
        if length != n:
            raise ValueError(f"actions must hold num_envs = {n} actions, got {length}")
        try:
            return list(iterate(self.action_space, actions))
        except (TypeError, ValueError, IndexError) as exc:
            raise TypeError(f"{expected}, got {show_action(actions)}") from exc

    def _play_rounds(self, decoded: dict[int, tuple[RoundPlan, dict[str, Any]]]) -> dict[int, Any]:
        """The decoded environments' rounds as one run of the round pipeline."""
        order = list(decoded)
        self._env_transforms.envs = [self.envs[i] for i in order]
        # Each environment's DP-SGD setting (the private environment's action sets it).
        privacy = [self.envs[i].pipeline.local_privacy for i in order]
        self.pipeline.local_privacy = (
            privacy if any(p is not None for p in privacy) else None  # type: ignore[assignment]
        )
        reports = self.pipeline.run(
            [self._federation(i) for i in order],
            [decoded[i][0] for i in order],
            [self.envs[i].np_random for i in order],
            allow_empty=True,
        )
        for i, report in zip(order, reports, strict=True):
            self.envs[i]._after_round(decoded[i][0], report)
        return dict(zip(order, reports, strict=True))

    def _batch_infos(self, env_infos: list[dict[str, Any]]) -> dict[str, Any]:
        """The environments' infos batched as :meth:`VectorEnv._add_info` batches them, key by
        key rather than environment by environment where every environment has the same keys
        (every step but those with an autoreset)."""
        first = env_infos[0]
        keys = first.keys()
        if any(info.keys() != keys for info in env_infos[1:]) or "final_obs" in keys:
            infos: dict[str, Any] = {}
            for i, info_i in enumerate(env_infos):
                infos = self._add_info(infos, info_i, i)
            return infos
        return _batch_same_keys(env_infos, self.num_envs)

    def _federation(self, i: int) -> Federation:
        fed = self.envs[i].federation
        assert fed is not None
        return fed

    def _stack_observations(self) -> Observation:
        observations = self._env_obs
        first = observations[0]
        if isinstance(first, dict):
            return {key: np.stack([obs[key] for obs in observations]) for key in first}  # type: ignore[index]
        return np.stack(observations)  # type: ignore[arg-type]


class _EnvTransforms(UpdateTransform):
    """Every stepped environment's own update transforms, each on its own federation.

    An environment's transforms (an adversary, a monitor) keep per-episode state for the
    federations they see and are read back by their environment as for a batch of one, so each
    runs on its environment's federation alone, in the order the single environment runs them;
    the rest of the round stays batched. ``envs`` lists the environments of the pipeline's
    federations, in order.
    """

    def __init__(self) -> None:
        self.envs: list[WirelessFLEnv] = []

    def apply(
        self,
        feds: Sequence[Federation],
        starts: Sequence[RoundStart],
        trained: list[LocalTrainingResult],
    ) -> list[LocalTrainingResult]:
        out = list(trained)
        for e, env in enumerate(self.envs):
            for transform in env.pipeline.transforms:
                out[e] = transform.apply([feds[e]], [starts[e]], [out[e]])[0]
        return out

    def after_aggregate(
        self,
        feds: Sequence[Federation],
        starts: Sequence[RoundStart],
        pendings: Sequence[PendingUpdates],
        fields: Sequence[dict[str, Any]],
    ) -> None:
        for e, env in enumerate(self.envs):
            for transform in env.pipeline.transforms:
                hook = getattr(transform, "after_aggregate", None)
                if hook is not None:
                    hook([feds[e]], [starts[e]], [pendings[e]], [fields[e]])


def _batch_same_keys(env_infos: list[dict[str, Any]], num_envs: int) -> dict[str, Any]:
    """Infos that all have the same keys, batched with ``_add_info``'s types: a number becomes
    an array of the first environment's type, an array a stacked array, a dict a batched dict,
    anything else an object array; every key gets an all-true ``"_key"`` mask."""
    out: dict[str, Any] = {}
    mask = np.ones(num_envs, dtype=np.bool_)
    first = env_infos[0]
    for key, value in first.items():
        values = [info[key] for info in env_infos]
        kind = type(value)
        if isinstance(value, dict):
            if all(isinstance(v, dict) and v.keys() == value.keys() for v in values):
                array: Any = _batch_same_keys(values, num_envs)
            else:
                array = {}
                for i, v in enumerate(values):
                    array = _add_info_to(array, v, i, num_envs)
        elif kind in (int, float, bool) or issubclass(kind, np.number):
            array = np.zeros(num_envs, dtype=kind)
            array[:] = values
        elif isinstance(value, np.ndarray) and all(
            isinstance(v, np.ndarray) and v.shape == value.shape for v in values
        ):
            array = np.zeros((num_envs, *value.shape), dtype=value.dtype)
            for i, v in enumerate(values):
                array[i] = v
        else:
            array = np.full(num_envs, fill_value=None, dtype=object)
            for i, v in enumerate(values):
                array[i] = v
        out[key] = array
        out[f"_{key}"] = mask.copy()
    return out


def _add_info_to(
    infos: dict[str, Any], info: dict[str, Any], i: int, num_envs: int
) -> dict[str, Any]:
    """:meth:`VectorEnv._add_info` of a throwaway vector env of ``num_envs`` environments."""
    holder = VectorEnv()
    holder.num_envs = num_envs
    return holder._add_info(infos, info, i)


class OverTheAirFLVectorEnv(WirelessFLVectorEnv):
    """E over-the-air FL environments
    (:class:`~fl_gym.envs.wireless_fl.over_the_air.OverTheAirFLEnv`).

    Same conventions as :class:`WirelessFLVectorEnv`; its rounds run through the same pipeline
    with the over-the-air transport (local training batched across the environments).
    """

    env_class: ClassVar[type[WirelessFLEnv]] = OverTheAirFLEnv


class ByzantineSelectionVectorEnv(WirelessFLVectorEnv):
    """E Byzantine-selection environments
    (:class:`~fl_gym.envs.wireless_fl.byzantine.ByzantineSelectionEnv`).

    Same conventions as :class:`WirelessFLVectorEnv`: training, compression, uplink and
    evaluation are batched; each environment's adversary and monitor act on its own federation
    and each aggregates with the rule its action picked.
    """

    env_class: ClassVar[type[WirelessFLEnv]] = ByzantineSelectionEnv


class PrivateFLVectorEnv(WirelessFLVectorEnv):
    """E private FL environments (:class:`~fl_gym.envs.wireless_fl.private.PrivateFLEnv`).

    Same conventions as :class:`WirelessFLVectorEnv`: each environment's client-level DP
    (clipping, noise) acts on its own federation, its DP-SGD setting trains its own federation
    (environments without DP-SGD train batched, each with DP-SGD in its own batched call) and
    its accountant counts its own rounds.
    """

    env_class: ClassVar[type[WirelessFLEnv]] = PrivateFLEnv


class FederatedLocalizationVectorEnv(WirelessFLVectorEnv):
    """E federated localisation environments
    (:class:`~fl_gym.envs.wireless_fl.localization.FederatedLocalizationEnv`), stepped as
    :class:`WirelessFLVectorEnv` steps its environments."""

    env_class: ClassVar[type[WirelessFLEnv]] = FederatedLocalizationEnv
