"""The benchmark suites: every task builds, and its metric is what its reward optimises."""

from __future__ import annotations

import re

import pytest

from fl_gym.baselines import baselines_for
from fl_gym.benchmark import SUITES, get_suite, make_task_env

METRIC_OF_MODE = {
    "time-to-accuracy": {"rounds-to-target", "time-to-target"},
    "energy-to-accuracy": {"energy-to-target"},
    "accuracy-at-budget": {"accuracy-at-budget"},
}


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_every_task_builds_with_its_objective(suite: str) -> None:
    tasks = get_suite(suite)
    assert re.fullmatch(r"[A-Z]+-\d+-v\d+", suite)
    assert len({t.name for t in tasks}) == len(tasks)
    controlled = set()
    for task in tasks:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", task.name)
        env = make_task_env(task)
        config = env.unwrapped.config
        assert task.metric in METRIC_OF_MODE[config.reward_mode], task.name
        assert env.spec.max_episode_steps == task.max_episode_steps
        assert baselines_for(env), f"{task.name}: no heuristic to compare against"
        controlled |= set(env.unwrapped.controls)
        env.close()
    assert controlled == {"selection", "power", "compression", "frequency"}


def test_tasks_are_immutable_and_unknown_suites_refused() -> None:
    task = get_suite("FLW-7-v0")[0]
    with pytest.raises(TypeError):
        task.config["target_accuracy"] = 0.5  # type: ignore[index]
    with pytest.raises(ValueError, match="FLW-7-v0"):
        get_suite("FLW-0")
