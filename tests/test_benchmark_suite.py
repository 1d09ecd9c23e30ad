"""The benchmark suites: every task builds and steps; its metric is what its reward optimises."""

from __future__ import annotations

import dataclasses
import re

import gymnasium as gym
import numpy as np
import pytest
from pettingzoo import ParallelEnv

from fl_gym.baselines import baselines_for
from fl_gym.benchmark import METRICS, MULTI_AGENT_ENVS, SUITES, Task, get_suite, make_task_env
from fl_gym.envs.rollout import env_family, rollout

METRIC_OF_MODE = {
    "time-to-accuracy": {"rounds-to-target", "time-to-target"},
    "energy-to-accuracy": {"energy-to-target"},
    "accuracy-at-budget": {"accuracy-at-budget"},
    # The weighted reward ends an episode at the target too: any "-to-target" metric reads.
    "weighted": {"rounds-to-target", "time-to-target", "energy-to-target"},
}
METRIC_OF_MODULE = {
    "vehicular_v1": "share-above-threshold",
    "uav_swarm_v0": "collisions-per-uav-step",
}


class _RandomAgents:
    """Every live agent samples its own action space."""

    def __init__(self, env: ParallelEnv) -> None:
        self.env = env

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        return {agent: self.env.action_space(agent).sample() for agent in observation}, state


TASKS = [(suite, task) for suite in sorted(SUITES) for task in SUITES[suite]]


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_suite_names_and_coverage(suite: str) -> None:
    tasks = get_suite(suite)
    assert re.fullmatch(r"[A-Z]+-\d+-v\d+", suite)
    assert len({t.name for t in tasks}) == len(tasks)
    for task in tasks:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", task.name)
        assert task.metric in METRICS
        assert task.planning is not task.multi_agent
        assert task.multi_agent is (task.env_id in MULTI_AGENT_ENVS)
        assert task.multi_agent is (task.family != "wireless-fl")


@pytest.mark.parametrize(("suite", "task"), TASKS, ids=[f"{s}:{t.name}" for s, t in TASKS])
def test_every_task_builds_and_steps(suite: str, task: Task) -> None:
    env = make_task_env(task)
    assert baselines_for(env), f"{task.name}: no heuristic to compare against"
    assert env_family(env) == task.family
    if task.multi_agent:
        assert isinstance(env, ParallelEnv)
        assert task.metric == METRIC_OF_MODULE[task.env_id]
        observations, _ = env.reset(seed=0)
        assert set(observations) == set(env.possible_agents)
        actions = {agent: env.action_space(agent).sample() for agent in env.agents}
        _, rewards, _, _, _ = env.step(actions)
        assert set(rewards) <= set(env.possible_agents) and rewards
        assert all(np.isfinite(r) for r in rewards.values())
        # The task's episode length reaches the env: a 3-step copy truncates exactly there.
        short = make_task_env(dataclasses.replace(task, max_episode_steps=3))
        short.reset(seed=0)
        steps = 0
        while short.agents:
            _, _, _, truncated, _ = short.step(
                {agent: short.action_space(agent).sample() for agent in short.agents}
            )
            steps += 1
        assert steps == 3 and all(truncated.values())
        # The metric is the episode record's attribute of that name, a fraction.
        record = rollout(short, _RandomAgents(short), seed=0)
        value = getattr(record, task.metric.replace("-", "_"))
        assert isinstance(value, float) and 0.0 <= value <= 1.0
        short.close()
    else:
        assert isinstance(env, gym.Env)
        assert task.metric in METRIC_OF_MODE[env.unwrapped.config.reward_mode], task.name
        assert env.spec.max_episode_steps == task.max_episode_steps
        for key, value in task.config.items():
            node = env.unwrapped.config
            for part in key.split("."):
                node = getattr(node, part)
            assert node == value or (isinstance(value, tuple) and tuple(node) == value), key
        env.reset(seed=0)
        _, reward, _, _, _ = env.step(env.action_space.sample())
        assert np.isfinite(reward)
    env.close()


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_suites_control_every_knob(suite: str) -> None:
    controlled: set[str] = set()
    for task in get_suite(suite):
        if not task.multi_agent:
            env = make_task_env(task)
            controlled |= set(env.unwrapped.controls)
            env.close()
    assert controlled == {"selection", "power", "compression", "frequency"}


def test_planning_is_false_exactly_for_multi_agent_tasks() -> None:
    tasks = [task for tasks in SUITES.values() for task in tasks]
    assert {t.env_id for t in tasks if not t.planning} == set(MULTI_AGENT_ENVS) & {
        t.env_id for t in tasks
    }
    assert all(t.planning for t in tasks if t.env_id not in MULTI_AGENT_ENVS)
    with pytest.raises(ValueError, match="planning=False"):
        Task("swarm", "uav_swarm_v0", metric="collisions-per-uav-step")
    with pytest.raises(ValueError, match="allowed"):
        Task("bad", "fl_gym/ClientSelection-v0", metric="reward")


def test_tasks_are_immutable_and_unknown_suites_refused() -> None:
    task = get_suite("FLW-7-v0")[0]
    with pytest.raises(TypeError):
        task.config["target_accuracy"] = 0.5  # type: ignore[index]
    with pytest.raises(ValueError, match=r"FLW-7-v0.*FLW-11-v1"):
        get_suite("FLW-0")
