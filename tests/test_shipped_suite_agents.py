"""The agents shipped for the benchmark suite (models/FLW-11-v1/) load and play their task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import fl_gym  # noqa: F401  (registers the environments)
from fl_gym.agents.suite_bench import SampledActions, _load_agent, find_agents
from fl_gym.benchmark import get_suite, make_task_env

SUITE = "FLW-11-v1"
ROOT = Path(__file__).resolve().parent.parent / "models" / SUITE
TASKS = get_suite(SUITE)
AGENTS = find_agents(ROOT, TASKS)


def test_every_task_ships_ppo_on_three_training_seeds() -> None:
    for task in TASKS:
        families = {a.family for a in AGENTS.get(task.name, [])}
        ppo = [a for a in AGENTS.get(task.name, []) if a.family.startswith("ppo-")]
        assert families and sorted(a.training_seed for a in ppo) == [0, 1, 2], task.name


@pytest.mark.parametrize("task", TASKS, ids=[t.name for t in TASKS])
def test_the_agents_play_their_task(task) -> None:
    env = make_task_env(task)
    try:
        for agent in AGENTS[task.name]:
            meta = agent.files.metadata
            assert meta["env_id"] == task.env_id and meta["seed"] == agent.training_seed
            policy = _load_agent(agent.files, env)
            for player in (policy, SampledActions(policy, 0)):
                if task.multi_agent:
                    obs, _ = env.reset(seed=100)
                    actions, _ = player.predict(obs)
                    assert set(actions) == set(obs)
                    env.step(actions)
                else:
                    obs, _ = env.reset(seed=100)
                    action, _ = player.predict(obs)
                    assert env.action_space.contains(np.asarray(action, env.action_space.dtype))
                    env.step(action)
    finally:
        env.close()
