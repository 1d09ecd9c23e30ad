"""``examples/cleanrl_ppo.py``: a CleanRL-style PPO on fl_gym's native vector env."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import gymnasium as gym
import numpy as np
import pytest
import torch

import fl_gym  # noqa: F401

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cleanrl_ppo.py"
# Energy costs 100 per joule instead of 20: selecting one or two devices a round beats
# selecting at random by about 50 per 20-round episode, a signal PPO picks up within 10k steps.
EASY = {"energy_weight_per_j": 100.0}


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cleanrl_ppo", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building Args
    spec.loader.exec_module(module)
    return module


def _random_returns(args, steps: int) -> list[float]:
    """Episode returns of uniform random actions on the example's environments and seeds."""
    envs = gym.make_vec(
        args.env_id,
        num_envs=args.num_envs,
        vectorization_mode="vector_entry_point",
        obs_mode="flat",
        config=args.config,
        max_episode_steps=args.max_episode_steps,
    )
    envs.reset(seed=args.seed)
    space = envs.action_space
    space.seed(args.seed)
    returns, running = [], np.zeros(args.num_envs)
    autoreset = np.zeros(args.num_envs, dtype=bool)
    for _ in range(steps):
        _, reward, terminated, truncated, _ = envs.step(space.sample())
        running += np.where(autoreset, 0.0, reward)
        autoreset = terminated | truncated
        for i in np.flatnonzero(autoreset):
            returns.append(float(running[i]))
            running[i] = 0.0
    envs.close()
    return returns


def test_parse_args_reads_every_field() -> None:
    module = _example()
    args = module.parse_args(
        ["--num-envs", "3", "--config", '{"num_devices": 4}', "--target-kl", "0.02"]
    )
    assert (args.num_envs, args.config, args.target_kl) == (3, {"num_devices": 4}, 0.02)
    assert args.env_id == "fl_gym/ClientSelection-v0" and args.max_episode_steps is None
    assert module.parse_args(["--anneal-lr", "false"]).anneal_lr is False


def test_rejects_a_discrete_action_space() -> None:
    module = _example()
    args = module.parse_args(["--env-id", "fl_gym/AggregationFrequency-v0", "--num-envs", "1"])
    with pytest.raises(ValueError, match="Box action space"):
        module.train(args)


def test_tiny_run_completes_with_finite_returns(capsys: pytest.CaptureFixture[str]) -> None:
    module = _example()
    threads, torch_state = torch.get_num_threads(), torch.random.get_rng_state()
    args = module.parse_args(
        [
            "--num-envs",
            "2",
            "--num-steps",
            "8",
            "--total-timesteps",
            "32",
            "--max-episode-steps",
            "3",
            "--num-minibatches",
            "2",
            "--update-epochs",
            "2",
            "--config",
            '{"num_devices": 4}',
        ]
    )
    episodes = module.train(args)
    # 2 updates of 2 x 8 steps; an episode is 3 steps and one autoreset step: 4 per env.
    assert [step for step, _ in episodes] == [6, 6, 14, 14, 22, 22, 30, 30]
    assert all(np.isfinite(r) for _, r in episodes)
    assert "episodic_return=" in capsys.readouterr().out
    assert torch.get_num_threads() == threads  # one thread inside, the caller's count after
    assert torch.equal(torch.random.get_rng_state(), torch_state)  # seeded inside fork_rng
    # Seeded: the same arguments give the same returns.
    assert module.train(args) == episodes


@pytest.mark.slow
def test_learns_to_beat_a_random_policy() -> None:
    module = _example()
    args = module.parse_args(
        [
            "--config",
            '{"energy_weight_per_j": 100.0}',
            "--max-episode-steps",
            "20",
            "--num-envs",
            "8",
            "--num-steps",
            "42",
            "--total-timesteps",
            "10752",
            "--seed",
            "1",
        ]
    )
    assert args.config == EASY
    episodes = module.train(args)
    first = np.mean([r for _, r in episodes[:40]])
    last = np.mean([r for _, r in episodes[-40:]])
    random = _random_returns(args, steps=10752 // 8)
    assert len(episodes) == len(random) == 512
    # Measured: first 40 episodes -7.8, last 40 +7.4, random actions -2.0 (std 15 per episode).
    assert last > np.mean(random) + 5.0 and last > first + 10.0, (first, last, np.mean(random))
