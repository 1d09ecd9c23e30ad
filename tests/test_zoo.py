"""The shipped rl-zoo3 hyperparameters (``fl_gym/hyperparams/ppo.yml``)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

import fl_gym
from fl_gym.hyperparams import config_path, load

yaml = pytest.importorskip("yaml")


def _wrapper(dotted: str) -> type:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def test_yml_has_every_env_id_and_module_form_loads_it() -> None:
    with open(config_path("ppo")) as f:
        hyperparams = yaml.safe_load(f)
    assert set(hyperparams) == set(fl_gym.ENV_IDS)
    from fl_gym.hyperparams.ppo import hyperparams as from_module

    assert from_module == hyperparams == load("ppo")
    with pytest.raises(ValueError, match=r"'sac'.*\['ppo'\]"):
        config_path("sac")


@pytest.mark.parametrize("env_id", fl_gym.ENV_IDS)
def test_each_entry_builds_a_flat_env_for_mlp_policy(env_id: str) -> None:
    entry = load("ppo")[env_id]
    assert entry["policy"] == "MlpPolicy"
    # PPO's batch: n_envs x n_steps, split evenly into minibatches, at least an episode long.
    n_envs, n_steps, batch = entry["n_envs"], entry["n_steps"], entry["batch_size"]
    assert (n_envs * n_steps) % batch == 0 and n_envs * n_steps >= 100
    assert float(entry["n_timesteps"]) >= 10 * n_envs * n_steps
    env = gym.make(env_id, **entry.get("env_kwargs", {}))
    if "env_wrapper" in entry:
        env = _wrapper(entry["env_wrapper"])(env)
    assert isinstance(env.observation_space, spaces.Box)
    assert len(env.observation_space.shape) == 1
    # The observation is obs_mode="flat"'s, bit for bit.
    flat_env = gym.make(env_id, obs_mode="flat")
    obs, _ = env.reset(seed=0)
    flat, _ = flat_env.reset(seed=0)
    assert obs.dtype == flat.dtype == np.float32 and np.array_equal(obs, flat)


@pytest.mark.slow
def test_rl_zoo3_trains_with_the_shipped_yml(tmp_path: Path) -> None:
    pytest.importorskip("rl_zoo3")
    env_id = "fl_gym/ClientSelection-v0"
    command = [
        sys.executable,
        "-m",
        "rl_zoo3.train",
        "--algo",
        "ppo",
        "--env",
        env_id,
        "--gym-packages",
        "fl_gym",
        "--conf-file",
        str(config_path("ppo")),
        "-n",
        "512",
        "--seed",
        "0",
        "-f",
        str(tmp_path),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    saved = list(tmp_path.glob("ppo/fl_gym-ClientSelection-v0_*/fl_gym-ClientSelection-v0.zip"))
    assert len(saved) == 1
    from stable_baselines3 import PPO

    model = PPO.load(saved[0])
    assert model.observation_space.shape == (107,)
    assert model.num_timesteps >= 512
