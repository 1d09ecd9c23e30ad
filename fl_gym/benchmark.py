"""Named benchmark suites: versioned sets of (environment, configuration, objective) tasks.

A suite fixes what "the benchmark" is, so that numbers reported against it compare: each
:class:`Task` names a registered environment id, the configuration overrides of its scenario
(chosen so that the controller's decisions matter: label skew, cell-edge fading, scarce
batteries, tight deadlines, many devices and few sub-channels) and a reward mode whose metric
is what an FL operator wants (rounds, seconds or joules to a target accuracy; accuracy within a
budget; see the wireless FL environments' Rewards section). A suite's name carries its version:
a change of any task makes a new name, never a silent edit.

``make_task_env(task)`` builds a task's environment; :data:`SUITES` lists the suites.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import gymnasium as gym

__all__ = ["SUITES", "Task", "get_suite", "make_task_env"]


@dataclass(frozen=True)
class Task:
    """One task of a benchmark suite.

    Attributes:
        name: The task's name within its suite (kebab-case).
        env_id: A registered Gymnasium id.
        config: Configuration overrides (the environment's ``config`` argument).
        metric: The quantity the task's reward optimises, as reported beside the return:
            ``"rounds-to-target"``, ``"energy-to-target"``, ``"time-to-target"`` or
            ``"accuracy-at-budget"``.
        description: What makes the task's decisions matter.
        max_episode_steps: Rounds after which an episode is truncated.
    """

    name: str
    env_id: str
    config: Mapping[str, Any] = field(default_factory=dict)
    metric: str = "rounds-to-target"
    description: str = ""
    max_episode_steps: int = 100

    def __post_init__(self) -> None:
        object.__setattr__(self, "config", MappingProxyType(dict(self.config)))


_SKEW = {"partition": "shards"}  # two shards of sorted labels per device: 1-2 classes each
_SCARCE = {"wireless.battery_min_j": 0.03, "wireless.battery_max_j": 0.08}

FLW_7_V0 = (
    Task(
        "selection-label-skew",
        "fl_gym/ClientSelection-v0",
        {**_SKEW, "reward_mode": "time-to-accuracy", "target_accuracy": 0.9},
        "rounds-to-target",
        "Each device holds one or two digits: which devices take part decides which classes "
        "the model sees.",
    ),
    Task(
        "selection-scarce-energy",
        "fl_gym/ClientSelection-v0",
        {
            **_SCARCE,
            "wireless.edge_fraction": 0.6,
            "reward_mode": "energy-to-accuracy",
            "target_accuracy": 0.85,
        },
        "energy-to-target",
        "Batteries for a few uploads, most devices at the cell edge: spending energy where the "
        "channel is good reaches the target before the batteries run out.",
    ),
    Task(
        "power-cell-edge",
        "fl_gym/PowerControl-v0",
        {"wireless.edge_fraction": 0.6, "reward_mode": "energy-to-accuracy"},
        "energy-to-target",
        "Transmit power trades packet errors at the cell edge against energy.",
    ),
    Task(
        "compression-deadline",
        "fl_gym/GradientCompression-v0",
        {"wireless.deadline_s": 0.05, "reward_mode": "time-to-accuracy", "target_accuracy": 0.9},
        "rounds-to-target",
        "A 50 ms deadline: uncompressed updates from weak channels miss it, heavy compression "
        "slows learning.",
    ),
    Task(
        "frequency-time-budget",
        "fl_gym/AggregationFrequency-v0",
        {"reward_mode": "accuracy-at-budget", "time_budget_s": 3.0},
        "accuracy-at-budget",
        "Local steps cost compute time, rounds cost upload time: the accuracy reached in 3 s.",
    ),
    Task(
        "joint-large-k",
        "fl_gym/WirelessFL-v0",
        {
            **_SKEW,
            "num_devices": 100,
            "wireless.num_subchannels": 10,
            "wireless.bandwidth_hz": 10e6,
            "reward_mode": "time-to-accuracy",
            "target_accuracy": 0.9,
        },
        "rounds-to-target",
        "100 devices with skewed labels, 10 sub-channels: every knob at once.",
    ),
    Task(
        "ota-energy-budget",
        "fl_gym/OverTheAirFL-v0",
        {"reward_mode": "accuracy-at-budget", "energy_budget_j": 0.3},
        "accuracy-at-budget",
        "Over-the-air aggregation: who transmits sets both the aggregation error and the energy.",
    ),
)
"""``FLW-7-v0``: the first draft of the wireless FL suite (seven tasks, every control knob and
the over-the-air uplink); tasks whose headroom turns out small are dropped in later versions."""

_KEPT = {
    t.name: t
    for t in FLW_7_V0
    if t.name
    in ("selection-label-skew", "selection-scarce-energy", "power-cell-edge", "joint-large-k")
}

FLW_10_V1 = (
    _KEPT["selection-label-skew"],
    _KEPT["selection-scarce-energy"],
    _KEPT["power-cell-edge"],
    _KEPT["joint-large-k"],
    Task(
        "compression-edge-deadline",
        "fl_gym/GradientCompression-v0",
        {
            **_SKEW,
            "wireless.edge_fraction": 0.6,
            "wireless.deadline_s": 0.1,
            "reward_mode": "time-to-accuracy",
            "target_accuracy": 0.9,
        },
        "rounds-to-target",
        "Most devices at the cell edge, a 100 ms deadline and one or two digits per device: an "
        "update compressed too little misses the deadline and its classes go unseen, one "
        "compressed too much slows learning; the level has to follow each device's channel.",
    ),
)
"""``FLW-10-v1``: the wireless FL suite with measured headroom (benchmarks/headroom.md).

The four ``FLW-7-v0`` tasks with real headroom are kept unchanged (same name, same
configuration)."""

SUITES: Mapping[str, tuple[Task, ...]] = MappingProxyType(
    {"FLW-7-v0": FLW_7_V0, "FLW-10-v1": FLW_10_V1}
)
"""Every benchmark suite by its versioned name."""


def get_suite(name: str) -> tuple[Task, ...]:
    """The tasks of suite ``name``.

    Raises:
        ValueError: If there is no such suite (the message lists them).
    """
    if name not in SUITES:
        raise ValueError(f"unknown benchmark suite {name!r}; allowed: {list(SUITES)}")
    return SUITES[name]


def make_task_env(task: Task, **kwargs: Any) -> gym.Env:
    """The task's environment (``gym.make`` with the task's configuration and truncation; other
    keyword arguments, e.g. ``render_mode``, pass through)."""
    return gym.make(
        task.env_id,
        config=dict(task.config),
        max_episode_steps=task.max_episode_steps,
        **kwargs,
    )
