"""Training lengths: what SB3 runs is what was asked for, or the metadata and a warning say not."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest

from fl_gym.agents import train
from fl_gym.agents.training import plan_timesteps

SMALL = {"config": {"max_rounds": 4}}


@pytest.mark.parametrize(
    ("algo", "total", "num_envs", "kwargs", "steps", "effective"),
    [
        # A default PPO rollout (2048 x 4) is longer than the budget: it is shortened.
        ("ppo", 1024, 4, {}, 1024, {"n_steps": 256}),
        ("ppo", 100, 3, {}, 102, {"n_steps": 34}),
        # The shipped agents' recipe: 98 rollouts of 256 x 4.
        ("ppo", 100_000, 4, {"n_steps": 256, "batch_size": 128}, 100_352, None),
        ("ppo", 100_000, 4, {}, 13 * 8192, {}),
        ("ppo", 40, 1, {}, 40, {"n_steps": 40, "batch_size": 40}),
        ("a2c", 7, 4, {}, 8, {"n_steps": 2}),
        ("a2c", 100, 4, {}, 100, {}),
        ("sac", 10, 4, {}, 12, {}),
        ("dqn", 10, 1, {}, 10, {}),
    ],
)
def test_plan_timesteps(
    algo: str,
    total: int,
    num_envs: int,
    kwargs: dict,
    steps: int,
    effective: dict | None,
) -> None:
    planned, used, note = plan_timesteps(algo, total, num_envs, kwargs)
    assert planned == steps
    assert used == (kwargs if effective is None else effective)
    n_steps = used.get("n_steps")
    if n_steps is not None:
        assert planned % (n_steps * num_envs) == 0  # whole rollouts
        assert planned - total < n_steps * num_envs  # and no more than needed
    assert (note is None) == (planned == total)
    if note is not None:
        assert f"{planned:,}" in note and f"{total:,}" in note


def test_train_runs_exactly_the_budget_and_says_so(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no rounding warning for an exact budget
        agent = train(
            "fl_gym/AggregationFrequency-v0",
            "ppo",
            24,
            n_envs=4,
            save_path=tmp_path / "agent",
            **SMALL,
        )
    assert agent.model.num_timesteps == 24
    saved = json.loads((tmp_path / "agent.json").read_text())
    assert saved["total_timesteps"] == saved["requested_timesteps"] == 24
    assert saved["algo_kwargs"] == {"n_steps": 6, "batch_size": 24}


def test_train_rounding_up_is_recorded_and_warned() -> None:
    with pytest.warns(UserWarning, match="training 32 steps, not the 20 asked for"):
        agent = train(
            "fl_gym/AggregationFrequency-v0",
            "ppo",
            20,
            n_envs=2,
            algo_kwargs={"n_steps": 16, "batch_size": 16, "n_epochs": 1},
            **SMALL,
        )
    assert agent.model.num_timesteps == 32 == math.ceil(20 / 32) * 32
    assert agent.metadata["total_timesteps"] == 32
    assert agent.metadata["requested_timesteps"] == 20


def test_shipped_agents_metadata_says_what_ran() -> None:
    # 100,352 is the num_timesteps SB3 recorded in the agents' original .zip files (read when
    # they were converted to .pt + .json): 98 rollouts of 4 environments x n_steps 256.
    for stem in ("ClientSelection-v0_ppo", "ClientSelection-v0_ppo_mlp"):
        path = Path(__file__).resolve().parents[1] / "models" / stem
        meta = json.loads(path.with_suffix(".json").read_text())
        assert meta["total_timesteps"] == 100_352 == 98 * 4 * meta["algo_kwargs"]["n_steps"]
        assert meta["requested_timesteps"] == 100_000
