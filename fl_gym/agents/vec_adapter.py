"""SB3 ``VecEnv`` over a native Gymnasium vector env (:mod:`fl_gym.envs.wireless_fl.vector`).

SB3 resets an environment in the same step its episode ends: the step returns ``done = True``,
the episode's last observation in ``info["terminal_observation"]`` and, as the observation, the
first one of the next episode. Gymnasium 1.x vector envs reset one step later (next-step
autoreset). :class:`NativeVecEnv` converts: after a step in which some episodes ended it resets
exactly those environments at once (``reset(options={"reset_mask": done})``, no seed, as
``DummyVecEnv`` calls ``env.reset()``), so SB3 never sees the extra autoreset transition and the
rollouts equal those of ``DummyVecEnv`` over the same environments and seeds.

``make_native_vec_env(env_id, n_envs, seed=0)`` builds one (wrapped in ``VecMonitor`` so that
episode returns reach SB3's logger).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from copy import deepcopy
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs

from fl_gym.envs.wireless_fl.vector import WirelessFLVectorEnv

__all__ = ["NativeVecEnv", "make_native_vec_env"]


class NativeVecEnv(VecEnv):
    """SB3's ``VecEnv`` API on a :class:`~fl_gym.envs.wireless_fl.vector.WirelessFLVectorEnv`.

    Args:
        vec_env: The native vector env (e.g. ``gym.make_vec(id, num_envs=E)``); its next-step
            autoreset is turned into SB3's same-step reset.
    """

    def __init__(self, vec_env: WirelessFLVectorEnv) -> None:
        native = getattr(vec_env, "unwrapped", vec_env)
        if not isinstance(native, WirelessFLVectorEnv):
            raise TypeError(
                f"vec_env must be a fl_gym native vector env (WirelessFLVectorEnv), "
                f"got {type(vec_env).__name__}"
            )
        self.vec_env = native
        self._actions: Any = None
        super().__init__(
            native.num_envs, native.single_observation_space, native.single_action_space
        )

    # -- stepping ----------------------------------------------------------------------------------

    def reset(self) -> VecEnvObs:
        n = self.num_envs
        seeds = list(self._seeds)
        options = [dict(o) for o in self._options]
        if all(o == options[0] for o in options):
            infos = self.vec_env.reset_envs(seed=seeds, options=options[0] or None)
        else:  # different options per environment: one masked reset each
            infos = {}
            for i in range(n):
                mask = np.zeros(n, dtype=np.bool_)
                mask[i] = True
                infos.update(
                    self.vec_env.reset_envs(seed=seeds, options={**options[i], "reset_mask": mask})
                )
        for i, info in infos.items():
            self.reset_infos[i] = info
        self._reset_seeds()
        self._reset_options()
        return self.vec_env.observations()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> tuple[VecEnvObs, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        actions, self._actions = self._actions, None
        rewards, terminated, truncated, infos = self.vec_env.step_envs(actions)
        dones = terminated | truncated
        obs = self.vec_env.observations()
        for i, info in enumerate(infos):
            info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            if dones[i]:
                info["terminal_observation"] = (
                    {key: value[i] for key, value in obs.items()}
                    if isinstance(obs, dict)
                    else obs[i]
                )
        if dones.any():
            reset_infos = self.vec_env.reset_envs(options={"reset_mask": dones})
            for i, info in reset_infos.items():
                self.reset_infos[i] = info
            obs = self.vec_env.observations()
        return obs, rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        self.vec_env.close()

    # -- attributes and methods of the environments ------------------------------------------------

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self.vec_env.envs[i], attr_name) for i in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        for i in self._get_indices(indices):
            setattr(self.vec_env.envs[i], attr_name, deepcopy(value))

    def env_method(
        self,
        method_name: str,
        *method_args: Any,
        indices: VecEnvIndices = None,
        **method_kwargs: Any,
    ) -> list[Any]:
        return [
            getattr(self.vec_env.envs[i], method_name)(*method_args, **method_kwargs)
            for i in self._get_indices(indices)
        ]

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        # The native vector env holds raw environments; time limits are its own.
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        if self.render_mode != "rgb_array":
            return [None] * self.num_envs
        return list(self.vec_env.render())

    def _get_indices(self, indices: VecEnvIndices) -> Iterable[int]:
        return super()._get_indices(indices)


def make_native_vec_env(
    env_id: str,
    n_envs: int = 1,
    *,
    seed: int | None = 0,
    monitor: bool = True,
    **env_kwargs: Any,
) -> VecEnv:
    """SB3 ``VecEnv`` of ``n_envs`` environments stepped by the native vector env.

    Args:
        env_id: A fl_gym id with a native vector env (every single-agent FL id).
        n_envs: Number of environments.
        seed: Seed of the first environment (the others get ``seed + 1, ...``) at the first
            ``reset()``; ``None`` for fresh entropy.
        monitor: Wrap in SB3's ``VecMonitor`` (episode returns and lengths in the infos).
        **env_kwargs: Passed to every environment (``config``, ``preset``, ``obs_mode``, ...).

    Returns:
        The SB3 vector env.
    """
    vec = gym.make_vec(
        env_id, num_envs=n_envs, vectorization_mode="vector_entry_point", **env_kwargs
    )
    adapter = NativeVecEnv(vec)
    if seed is not None:
        adapter.seed(seed)
    return VecMonitor(adapter) if monitor else adapter
