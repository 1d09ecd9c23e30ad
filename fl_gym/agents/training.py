"""Train Stable-Baselines3 agents on fl_gym environments and save them with their provenance.

A trained agent is two files: ``NAME.pt``, the policy's weights (a ``state_dict`` that loads
without unpickling), and ``NAME.json``, the run's metadata (environment id, preset, config
overrides, algorithm, policy, seed, timesteps, the versions of the libraries involved) with the
spec the policy is rebuilt from (see :mod:`fl_gym.agents.agent_files`). :func:`load_agent` reads
both, so an agent can always be evaluated on the environment it was trained for. An SB3 ``.zip``
is loaded only on request (``trust_pickle=True``): unpickling it can run code.
"""

from __future__ import annotations

import datetime
import inspect
import math
import platform
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from fl_gym.sim.config import check_int
from fl_gym.sim.threads import DEFAULT_NUM_THREADS, check_num_threads, torch_threads

__all__ = [
    "ALGORITHMS",
    "POLICY_ARCHITECTURES",
    "TrainedAgent",
    "load_agent",
    "make_training_env",
    "train",
]

ALGORITHMS = ("ppo", "a2c", "sac", "td3", "dqn")
"""Stable-Baselines3 algorithms :func:`train` knows, by lower-case name."""

POLICY_ARCHITECTURES = ("device-set", "mlp")
"""``device-set``: :class:`~fl_gym.agents.device_set.DeviceSetPolicy` (PPO, A2C) or the
:class:`~fl_gym.agents.device_set.DeviceSetExtractor` under SB3's heads (SAC, TD3, DQN);
``mlp``: SB3's default ``MultiInputPolicy`` on the flattened observation."""


@dataclass
class TrainedAgent:
    """A trained SB3 model and where it came from.

    Attributes:
        model: The SB3 model (``model.predict`` has the baselines' signature).
        metadata: What :func:`train` recorded (env id, preset, config, algo, seed, ...).
        path: Where it was saved (without suffix), if it was.
    """

    model: Any
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[Any, Any]:
        """SB3's ``predict``, so an agent plays wherever a baseline does."""
        return self.model.predict(
            observation, state=state, episode_start=episode_start, deterministic=deterministic
        )

    @property
    def name(self) -> str:
        return f"{self.metadata.get('algo', 'agent')}:{self.path}" if self.path else "agent"


def _algorithm_class(algo: str) -> Any:
    import stable_baselines3 as sb3

    name = str(algo).lower()
    if name not in ALGORITHMS:
        raise ValueError(f"algo must be one of {ALGORITHMS}, got {algo!r}")
    return getattr(sb3, name.upper())


def _check_spaces(algo: str, action_space: gym.Space) -> None:
    from gymnasium import spaces

    if algo in ("sac", "td3") and not isinstance(action_space, spaces.Box):
        raise ValueError(f"{algo} needs a Box action space; this environment has {action_space}")
    if algo == "dqn" and not isinstance(action_space, spaces.Discrete):
        raise ValueError(f"dqn needs a Discrete action space; this environment has {action_space}")


def _versions() -> dict[str, str]:
    import gymnasium
    import stable_baselines3
    import torch

    import fl_gym

    return {
        "fl_gym": fl_gym.__version__,
        "stable_baselines3": stable_baselines3.__version__,
        "gymnasium": gymnasium.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def make_training_env(
    env_id: str,
    *,
    n_envs: int = 1,
    seed: int = 0,
    config: dict[str, Any] | None = None,
    preset: str | None = None,
    vectorization: str = "dummy",
    max_episode_steps: int | None = None,
) -> Any:
    """An SB3 ``VecEnv`` of ``n_envs`` copies of ``env_id``, seeded ``seed, seed + 1, ...``.

    Args:
        env_id: A registered fl_gym environment id or a PettingZoo environment name (see
            :func:`train`).
        n_envs: Parallel environments.
        seed: Seed of the first one.
        config: Config overrides passed to every copy.
        preset: Scenario preset of every copy.
        vectorization: ``"dummy"`` (SB3's ``DummyVecEnv``, one process), ``"subproc"`` (one
            process per copy) or ``"native"`` (fl_gym's batched vector env: the copies'
            clients train in one batched computation; the wireless FL envs only).
        max_episode_steps: Truncate episodes after this many steps instead of the
            registration's (Gymnasium ids only; a multi-agent environment's episode length is
            a key of its config).

    Returns:
        The vectorised environment (monitored, so episode returns reach SB3's logger).
    """
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    from fl_gym.agents.multiagent import (
        MULTI_AGENT_ENVS,
        ParameterSharingVecEnv,
        make_parallel_env,
    )

    if not (isinstance(n_envs, int) and n_envs >= 1):
        raise ValueError(f"n_envs must be an integer >= 1, got {n_envs!r}")
    if max_episode_steps is not None:
        max_episode_steps = check_int("max_episode_steps", max_episode_steps, minimum=1)
    if env_id.removeprefix("fl_gym/") in MULTI_AGENT_ENVS:
        if max_episode_steps is not None:
            raise ValueError(
                f"max_episode_steps applies to the Gymnasium ids; {env_id!r} takes its episode "
                "length from its config"
            )
        ma_kwargs: dict[str, Any] = {"config": config, "preset": preset}

        def make_copy() -> Any:
            return make_parallel_env(env_id, **ma_kwargs)

        return ParameterSharingVecEnv([make_copy] * n_envs, seed=seed)
    classes = {"dummy": DummyVecEnv, "subproc": SubprocVecEnv}
    if vectorization not in (*classes, "native"):
        raise ValueError(
            f"vectorization must be one of {[*sorted(classes), 'native']}, got {vectorization!r}"
        )
    kwargs: dict[str, Any] = {}
    if config:
        kwargs["config"] = config
    if preset is not None:
        kwargs["preset"] = preset
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = max_episode_steps
    if vectorization == "native":
        from fl_gym.agents.vec_adapter import make_native_vec_env

        return make_native_vec_env(env_id, n_envs, seed=seed, **kwargs)
    return make_vec_env(
        env_id, n_envs=n_envs, seed=seed, env_kwargs=kwargs, vec_env_cls=classes[vectorization]
    )


def _policy_for(
    algo: str, architecture: str | None, policy_kwargs: dict[str, Any], observation_space: Any
) -> tuple[Any, dict, str]:
    from gymnasium import spaces

    from fl_gym.agents.device_set import DeviceSetExtractor, DeviceSetPolicy

    is_dict = isinstance(observation_space, spaces.Dict)
    if architecture is None:
        architecture = "device-set" if is_dict else "mlp"
    if architecture not in POLICY_ARCHITECTURES:
        raise ValueError(f"policy must be one of {POLICY_ARCHITECTURES}, got {architecture!r}")
    kwargs = dict(policy_kwargs)
    if architecture == "mlp":
        return ("MultiInputPolicy" if is_dict else "MlpPolicy"), kwargs, architecture
    if not is_dict:
        raise ValueError(
            "policy 'device-set' needs Dict(devices, server) observations; this environment "
            f"observes {observation_space}: use policy 'mlp'"
        )
    if algo in ("ppo", "a2c"):
        return DeviceSetPolicy, kwargs, architecture
    kwargs.setdefault("features_extractor_class", DeviceSetExtractor)
    return "MultiInputPolicy", kwargs, architecture


def train(
    env_id: str,
    algo: str = "ppo",
    total_timesteps: int = 10_000,
    *,
    seed: int = 0,
    n_envs: int = 1,
    config: dict[str, Any] | None = None,
    preset: str | None = None,
    policy: str | None = None,
    policy_kwargs: dict[str, Any] | None = None,
    algo_kwargs: dict[str, Any] | None = None,
    save_path: str | Path | None = None,
    progress_bar: bool = False,
    tensorboard_log: str | Path | None = None,
    vectorization: str = "dummy",
    verbose: int = 0,
    num_threads: int | None = DEFAULT_NUM_THREADS,
    max_episode_steps: int | None = None,
) -> TrainedAgent:
    """Train an SB3 agent on an fl_gym environment.

    Args:
        env_id: A registered fl_gym environment id, or the name of one of fl_gym's PettingZoo
            environments (``"vehicular_v1"``, ``"uav_swarm_v0"``): then one policy acts for
            every agent (parameter sharing, see
            :class:`~fl_gym.agents.multiagent.ParameterSharingVecEnv`) and ``n_envs`` counts
            copies of the multi-agent environment.
        algo: One of :data:`ALGORITHMS` (SAC and TD3 need a Box action space, DQN a Discrete
            one).
        total_timesteps: Environment steps to train for (summed over the ``n_envs`` copies).
            SB3 runs whole rollouts: see :func:`plan_timesteps` for how the budget is met (a
            warning says when it is rounded up); the metadata records the steps that ran
            (``total_timesteps``) beside the ones asked for (``requested_timesteps``).
        seed: Seed of the algorithm and of the first training environment.
        n_envs: Parallel training environments.
        config: Config overrides of the environment.
        preset: Scenario preset of the environment.
        policy: One of :data:`POLICY_ARCHITECTURES`; by default ``device-set`` for the FL
            environments' Dict observations and ``mlp`` otherwise.
        policy_kwargs: Passed to the SB3 policy (e.g. ``{"features_extractor_kwargs":
            {"pooling": "deepsets"}}``).
        algo_kwargs: Passed to the SB3 algorithm (e.g. ``{"n_steps": 256}``).
        save_path: Where to save ``.pt`` and ``.json`` (suffix optional; see
            :func:`~fl_gym.agents.agent_files.save_agent`); nothing is saved when ``None``.
        progress_bar: Show SB3's progress bar.
        tensorboard_log: Directory for TensorBoard logs (needs the ``tensorboard`` package).
        vectorization: See :func:`make_training_env`.
        verbose: SB3's verbosity.
        num_threads: torch intra-op threads for the whole run (the environments and the
            algorithm's updates; the caller's setting is restored afterwards). One is fastest
            for these small networks and far faster on a busy machine; parallelise with
            ``n_envs`` and ``vectorization`` instead. ``None`` leaves torch's setting alone.
        max_episode_steps: Episode length of the training environments instead of the
            registration's (see :func:`make_training_env`); recorded in the metadata.

    Returns:
        The trained agent with its metadata.
    """
    with torch_threads(check_num_threads(num_threads)):
        return _train(
            env_id,
            algo,
            total_timesteps,
            seed=seed,
            n_envs=n_envs,
            config=config,
            preset=preset,
            policy=policy,
            policy_kwargs=policy_kwargs,
            algo_kwargs=algo_kwargs,
            save_path=save_path,
            progress_bar=progress_bar,
            tensorboard_log=tensorboard_log,
            vectorization=vectorization,
            verbose=verbose,
            max_episode_steps=max_episode_steps,
        )


def _train(
    env_id: str,
    algo: str,
    total_timesteps: int,
    *,
    seed: int,
    n_envs: int,
    config: dict[str, Any] | None,
    preset: str | None,
    policy: str | None,
    policy_kwargs: dict[str, Any] | None,
    algo_kwargs: dict[str, Any] | None,
    save_path: str | Path | None,
    progress_bar: bool,
    tensorboard_log: str | Path | None,
    vectorization: str,
    verbose: int,
    max_episode_steps: int | None,
) -> TrainedAgent:
    from fl_gym.agents.agent_files import policy_kwargs_to_json, rebuild_algo_kwargs

    algo_name = str(algo).lower()
    algo_class = _algorithm_class(algo_name)
    try:
        policy_kwargs_spec: dict[str, Any] | None = policy_kwargs_to_json(policy_kwargs or {})
    except ValueError:
        if save_path is not None:
            raise  # before training, not after: the agent could not be saved
        policy_kwargs_spec = None
    if not (isinstance(total_timesteps, int) and total_timesteps >= 1):
        raise ValueError(f"total_timesteps must be an integer >= 1, got {total_timesteps!r}")
    if tensorboard_log is not None:
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise ImportError(
                "tensorboard_log needs TensorBoard: pip install 'fl-gym[tensorboard]'"
            )
    vec_env = make_training_env(
        env_id,
        n_envs=n_envs,
        seed=seed,
        config=config,
        preset=preset,
        vectorization=vectorization,
        max_episode_steps=max_episode_steps,
    )
    try:
        _check_spaces(algo_name, vec_env.action_space)
        policy_class, kwargs, policy = _policy_for(
            algo_name, policy, policy_kwargs or {}, vec_env.observation_space
        )
        steps, effective_kwargs, note = plan_timesteps(
            algo_name, total_timesteps, vec_env.num_envs, algo_kwargs or {}
        )
        if note is not None:
            warnings.warn(note, UserWarning, stacklevel=3)
        model = algo_class(
            policy_class,
            vec_env,
            seed=seed,
            policy_kwargs=kwargs or None,
            tensorboard_log=None if tensorboard_log is None else str(tensorboard_log),
            verbose=verbose,
            **effective_kwargs,
        )
        model.learn(total_timesteps=steps, progress_bar=progress_bar)
        num_envs = vec_env.num_envs
    finally:
        vec_env.close()
    algo_kwargs_spec, not_recorded = rebuild_algo_kwargs(effective_kwargs)
    metadata = {
        "env_id": env_id,
        "preset": preset,
        "config": config or {},
        "algo": algo_name,
        "policy": policy,
        "policy_kwargs": _jsonable(policy_kwargs or {}),
        "algo_kwargs": _jsonable(effective_kwargs),
        "seed": seed,
        "n_envs": n_envs,
        "vectorization": vectorization,
        "max_episode_steps": max_episode_steps,
        "total_timesteps": int(model.num_timesteps),
        "requested_timesteps": total_timesteps,
        "versions": _versions(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "num_envs": num_envs,
        "policy_kwargs_spec": policy_kwargs_spec,
        "algo_kwargs_spec": algo_kwargs_spec,
    }
    if not_recorded:
        metadata["algo_kwargs_not_recorded"] = not_recorded
    agent = TrainedAgent(model=model, metadata=metadata)
    if save_path is not None:
        agent.path = _save(agent, save_path)
    return agent


ON_POLICY = ("ppo", "a2c")
"""Algorithms that collect whole rollouts of ``n_steps`` per environment before each update."""


def plan_timesteps(
    algo: str, total_timesteps: int, num_envs: int, algo_kwargs: dict[str, Any]
) -> tuple[int, dict[str, Any], str | None]:
    """How many environment steps SB3 will really run for ``total_timesteps``, and with what.

    SB3 stops only at the end of a rollout: an on-policy algorithm (PPO, A2C) runs whole
    rollouts of ``n_steps x num_envs`` steps, an off-policy one whole vector steps of
    ``num_envs``. So that ``total_timesteps`` is what runs whenever it can be, an on-policy
    rollout longer than the budget is shortened (``n_steps = ceil(total / num_envs)``, and PPO's
    ``batch_size`` to the rollout if it was larger) unless the caller set ``n_steps``; otherwise
    the budget is rounded up to whole rollouts and the returned note says so.

    Args:
        algo: Lower-case algorithm name (one of :data:`ALGORITHMS`).
        total_timesteps: The steps asked for.
        num_envs: Environments stepped together (agents x copies for the multi-agent envs).
        algo_kwargs: The caller's algorithm arguments.

    Returns:
        The steps that will run (pass them to ``learn`` so the progress bar is exact), the
        algorithm arguments to build it with, and a warning text when the steps differ from
        ``total_timesteps`` (else ``None``).
    """
    kwargs = dict(algo_kwargs)
    if algo not in ON_POLICY:
        steps = math.ceil(total_timesteps / num_envs) * num_envs
        unit = f"whole vector steps of {num_envs} environments"
    else:
        defaults = inspect.signature(_algorithm_class(algo).__init__).parameters
        if "n_steps" not in kwargs:
            default = int(defaults["n_steps"].default)
            wanted = math.ceil(total_timesteps / num_envs)
            # PPO needs a rollout of at least two steps to normalise its advantages.
            minimum = 2 if algo == "ppo" and num_envs == 1 else 1
            if default * num_envs > total_timesteps:
                kwargs["n_steps"] = max(wanted, minimum)
        rollout = int(kwargs.get("n_steps", defaults["n_steps"].default)) * num_envs
        if algo == "ppo" and "batch_size" not in kwargs:
            if rollout < int(defaults["batch_size"].default):
                kwargs["batch_size"] = rollout
        steps = math.ceil(total_timesteps / rollout) * rollout
        unit = f"whole rollouts of n_steps x n_envs = {rollout} steps"
    note = None
    if steps != total_timesteps:
        note = (
            f"{algo.upper()} runs {unit}: training {steps:,} steps, not the {total_timesteps:,} "
            f"asked for (ask for a multiple to train exactly that many)"
        )
    return steps, kwargs, note


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return getattr(value, "__name__", repr(value))


def _stem(path: str | Path) -> Path:
    p = Path(path)
    return p.with_suffix("") if p.suffix in (".pt", ".zip", ".json") else p


def _save(agent: TrainedAgent, path: str | Path) -> Path:
    from fl_gym.agents.agent_files import save_agent

    return save_agent(agent, path)


def load_agent(
    path: str | Path, env: gym.Env | None = None, *, trust_pickle: bool = False
) -> TrainedAgent:
    """Load an agent saved by :func:`train` (``path`` with or without suffix).

    fl_gym's format (``PATH.pt`` + ``PATH.json``) loads without unpickling anything. An SB3
    ``PATH.zip`` (with fl_gym's ``PATH.json`` beside it) is unpickled, which runs whatever code
    its author stored in it, so it loads only with ``trust_pickle=True``.

    Args:
        path: The saved agent.
        env: The environment it will play, when its spaces differ from the training
            environment's only in the number of devices: a device-set policy has no weight that
            depends on K, so it loads onto the new spaces (other policies fail to play it).
        trust_pickle: Load an SB3 ``.zip`` (only for a file from a source you trust).

    Returns:
        The agent with its metadata; the algorithm comes from the metadata.

    Raises:
        FileNotFoundError: If the weights or the ``.json`` file are missing.
        fl_gym.agents.agent_files.UntrustedAgentError: If only an SB3 ``.zip`` is there and
            ``trust_pickle`` is false (a ``ValueError``).
    """
    from fl_gym.agents.agent_files import AgentFiles

    return AgentFiles.read(path, trust_pickle=trust_pickle).load(env)
