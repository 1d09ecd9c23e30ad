"""Play a benchmark suite: every controller of every task on every evaluation seed, one row each.

For each task of a suite (:mod:`fl_gym.benchmark`) and each evaluation seed this plays

* ``random-actions``: uniformly random actions of the task's action space (the score's 0);
* every heuristic that applies (:func:`fl_gym.baselines.baselines_for`);
* on the wireless FL tasks where planners apply, the model-predictive planner ``mpc`` and the
  clairvoyant planner ``clairvoyant`` (:mod:`fl_gym.baselines.planning`), the bound a score's 1
  stands for;
* every trained agent shipped for the task, found as ``DIR/<task-name>/<algo>-<policy>-s<seed>``
  (``.pt`` weights + ``.json`` metadata, :func:`fl_gym.agents.save_agent`); an agent family is
  ``<algo>-<policy>``, its training seeds are its runs. Agents act deterministically.

Each episode is one :class:`EpisodeRow` (return, the task's metric, accuracy, energy, rounds,
CPU seconds); :func:`write_rows` / :func:`read_rows` keep them in a CSV so that a report can be
made again without replaying (:mod:`fl_gym.agents.suite_report`). Every episode is built afresh
from its task, controller and seed in its own environment, so the rows do not depend on the
order the episodes are played in nor on how many processes play them (``jobs``).

The clairvoyant planner simulates every other controller's whole episode (agents included) at
its first round and keeps the best, so on every seed no controller's return is above it;
:func:`check_bound` verifies this and raises :class:`BoundViolation` otherwise (a controller
that is not deterministic given the environment's state, or a planner defect).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fl_gym.agents.agent_files import AgentFiles
from fl_gym.benchmark import Task, make_task_env

__all__ = [
    "CONTROLLER_KINDS",
    "MULTI_AGENT_TASK_ENVS",
    "TASK_METRICS",
    "BoundViolation",
    "ControllerSpec",
    "EpisodeRow",
    "RandomActions",
    "SampledActions",
    "ShippedAgent",
    "check_bound",
    "controller_specs",
    "find_agents",
    "has_planners",
    "play_episode",
    "read_rows",
    "run_suite",
    "task_metric",
    "write_rows",
]

CONTROLLER_KINDS = ("random", "heuristic", "planner", "bound", "agent")
"""What a row's controller is: random actions, a heuristic, the MPC planner, the clairvoyant
bound, or a trained agent."""

MULTI_AGENT_TASK_ENVS = ("vehicular_v1", "uav_swarm_v0")
"""Task ``env_id`` values that name PettingZoo environments (no planner applies to them)."""

PLANNER_BASES = ("round-robin", "best-channel", "energy-aware", "proportional-fair")
"""The heuristics the planners build on, those of them that apply to the task (else the first
three that apply)."""

RANDOM = "random-actions"
MPC = "mpc"
BOUND = "clairvoyant"


def has_planners(task: Task) -> bool:
    """Whether the MPC and clairvoyant planners play ``task`` (wireless FL tasks only)."""
    return bool(getattr(task, "planning", True)) and task.env_id not in MULTI_AGENT_TASK_ENVS


# -- the task's metric -----------------------------------------------------------------------------


def _to_target(name: str) -> Callable[[Any, Any], float | None]:
    def metric(result: Any, env: Any) -> float | None:
        value = getattr(result, name)(env.unwrapped.config.target_accuracy)
        return None if value is None else float(value)

    return metric


def _accuracy_at_budget(result: Any, env: Any) -> float:
    cfg = env.unwrapped.config
    return float(
        result.accuracy_within(
            cfg.energy_budget_j or float("inf"), cfg.time_budget_s or float("inf")
        )
    )


TASK_METRICS: dict[str, Callable[[Any, Any], float | None]] = {
    "rounds-to-target": _to_target("rounds_to"),
    "time-to-target": _to_target("time_to"),
    "energy-to-target": _to_target("energy_to"),
    "accuracy-at-budget": _accuracy_at_budget,
}
"""How each task metric is read from an episode: ``metric(result, env)`` with the rollout's
result (:class:`~fl_gym.envs.rollout.EpisodeResult` for the FL tasks) and the environment
after the episode; ``None`` where the episode did not reach what the metric measures."""


def task_metric(task: Task, result: Any, env: Any) -> float:
    """The task's metric of one episode (NaN where the target was not reached).

    A metric missing from :data:`TASK_METRICS` is read as the result's attribute of that name
    (``"share-above-threshold"`` -> ``VehicularEpisode.share_above_threshold``, as
    :class:`fl_gym.benchmark.Task` defines the multi-agent metrics) when it has one; otherwise
    it is NaN (the report says the metric was not computed).
    """
    rule = TASK_METRICS.get(task.metric)
    if rule is not None:
        value = rule(result, env)
    else:
        value = getattr(result, task.metric.replace("-", "_"), None)
    return float("nan") if value is None else float(value)


# -- controllers -----------------------------------------------------------------------------------


class RandomActions:
    """Uniformly random actions of the environment's space, one stream seeded once.

    Plays Gymnasium environments (the action space's ``sample``) and PettingZoo parallel
    environments (a dict of the live agents' samples, each agent's space seeded from ``seed``).
    """

    name = RANDOM

    def __init__(self, env: Any, seed: int) -> None:
        from fl_gym.envs.rollout import is_multi_agent

        if is_multi_agent(env):
            self._spaces = {a: env.action_space(a) for a in env.possible_agents}
            for i, space in enumerate(self._spaces.values()):
                space.seed(int(seed) + i)
            self.space = None
        else:
            self.space = env.action_space
            self.space.seed(int(seed))

    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[Any, Any]:
        """A fresh sample (the observation is not read)."""
        if self.space is None:
            return {a: self._spaces[a].sample() for a in observation}, state
        return self.space.sample(), state


@dataclass(frozen=True)
class ShippedAgent:
    """A trained agent shipped for a task.

    Attributes:
        family: ``<algo>-<policy>`` (the file name without its training seed).
        training_seed: The ``s<seed>`` of the file name.
        files: The agent's files, read into memory.
    """

    family: str
    training_seed: int
    files: AgentFiles

    @property
    def name(self) -> str:
        """The controller's name in the rows: the file name, ``<family>-s<seed>``."""
        return f"{self.family}-s{self.training_seed}"


_AGENT_FILE = re.compile(r"(?P<family>[a-z0-9]+(?:-[a-z0-9]+)+)-s(?P<seed>\d+)")


def find_agents(
    directory: str | Path, tasks: Sequence[Task], *, trust_pickle: bool = False
) -> dict[str, list[ShippedAgent]]:
    """The trained agents under ``directory/<task-name>/`` for each task.

    Every ``<algo>-<policy>-s<seed>.json`` there is an agent (with its ``.pt``, or with
    ``trust_pickle`` an SB3 ``.zip``). Its metadata must name the task's environment and
    configuration: an agent trained on something else would not measure the task.

    Args:
        directory: The suite's agents, e.g. ``models/FLW-7-v0``.
        tasks: The tasks to look for.
        trust_pickle: Also read agents saved as SB3 ``.zip`` files (unpickled on load).

    Returns:
        ``{task name: [agent, ...]}`` sorted by family and training seed (tasks without
        agents are absent).

    Raises:
        FileNotFoundError: If ``directory`` is not a directory.
        ValueError: If a file name does not read as ``<algo>-<policy>-s<seed>`` or an agent's
            metadata names another environment or configuration than its task.
    """
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"no agents directory {root} (expected {root}/<task-name>/)")
    found: dict[str, list[ShippedAgent]] = {}
    for task in tasks:
        folder = root / task.name
        if not folder.is_dir():
            continue
        agents = []
        for meta in sorted(folder.glob("*.json")):
            match = _AGENT_FILE.fullmatch(meta.stem)
            if match is None:
                raise ValueError(
                    f"{meta}: an agent's file is named <algo>-<policy>-s<seed>.json "
                    "(e.g. ppo-device-set-s0.json)"
                )
            files = AgentFiles.read(meta.with_suffix(""), trust_pickle=trust_pickle)
            _check_trained_for(files, task, meta)
            agents.append(ShippedAgent(match["family"], int(match["seed"]), files))
        if agents:
            found[task.name] = sorted(agents, key=lambda a: (a.family, a.training_seed))
    return found


def _check_trained_for(files: AgentFiles, task: Task, where: Path) -> None:
    meta = files.metadata
    trained_on = str(meta.get("env_id", task.env_id)).removeprefix("fl_gym.envs.")
    if trained_on != task.env_id:
        raise ValueError(f"{where} was trained on {trained_on}, task {task.name} is {task.env_id}")
    recorded = meta.get("config") or {}
    expected = json.loads(json.dumps(dict(task.config)))
    if recorded != expected:
        raise ValueError(
            f"{where} was trained with config {recorded}, task {task.name} has {expected}"
        )


@dataclass(frozen=True)
class ControllerSpec:
    """One controller of a task's table.

    Attributes:
        name: The row's controller name (a heuristic's registry name, ``random-actions``,
            ``mpc``, ``clairvoyant`` or an agent's ``<family>-s<seed>``).
        kind: One of :data:`CONTROLLER_KINDS`.
        family: The agent family (an agent), else the name.
        training_seed: The agent's training seed, else ``None``.
        agent: The agent's files (an agent), else ``None``.
        sampled: An agent that plays actions sampled from its policy (family
            ``<algo>-<policy>-sampled``) rather than its deterministic (mean or arg-max) action.
    """

    name: str
    kind: str
    family: str
    training_seed: int | None = None
    agent: AgentFiles | None = None
    sampled: bool = False


def _planner_bases(applicable: Sequence[str]) -> list[str]:
    return [b for b in PLANNER_BASES if b in applicable] or list(applicable[:3])


def controller_specs(task: Task, agents: Sequence[ShippedAgent] = ()) -> list[ControllerSpec]:
    """Every controller of ``task``'s table, in the order of the rows (the bound last)."""
    from fl_gym.baselines import baselines_for

    env = make_task_env(task)
    try:
        heuristics = baselines_for(env)
    finally:
        env.close()
    specs = [ControllerSpec(RANDOM, "random", RANDOM)]
    specs += [ControllerSpec(h, "heuristic", h) for h in heuristics]
    for sampled in (False, True):
        suffix = SAMPLED_SUFFIX if sampled else ""
        specs += [
            ControllerSpec(
                f"{a.family}{suffix}-s{a.training_seed}",
                "agent",
                a.family + suffix,
                a.training_seed,
                a.files,
                sampled,
            )
            for a in agents
        ]
    if has_planners(task):
        specs += [ControllerSpec(MPC, "planner", MPC), ControllerSpec(BOUND, "bound", BOUND)]
    return specs


class _SharedPolicy:
    """A parameter-shared agent playing a PettingZoo parallel environment: the live agents'
    observations as one batch, one deterministic ``predict``, the actions back by agent."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent

    def predict(
        self,
        observation: Mapping[str, Any],
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[dict[str, Any], Any]:
        names = list(observation)
        if not names:
            return {}, state
        batch = np.stack([np.asarray(observation[a]) for a in names])
        actions, _ = self.agent.predict(batch, deterministic=deterministic)
        return {a: actions[i] for i, a in enumerate(names)}, state


SAMPLED_SUFFIX = "-sampled"
"""Family suffix of an agent that plays sampled actions (see :class:`SampledActions`)."""


class SampledActions:
    """An agent playing actions sampled from its policy, reproducibly.

    SB3 samples with torch's global generator; each call here runs under a forked generator
    state seeded from ``(seed, call index)``, so the same episode replays the same samples (the
    clairvoyant bound's reference runs included) and the caller's torch random state is left
    as it was. Why sample: a selection codec thresholds scores, and a Gaussian policy's mean
    can lie below the threshold for every device although its samples select some.
    """

    def __init__(self, policy: Any, seed: int) -> None:
        self.policy = policy
        self.seed = int(seed)
        self.calls = 0

    @classmethod
    def for_episode(cls, policy: Any, eval_seed: int, training_seed: int) -> SampledActions:
        """The sampler of the suite's episode of an agent of ``training_seed`` on evaluation
        seed ``eval_seed`` (one stream per pair)."""
        return cls(policy, int(eval_seed) * 1_009 + int(training_seed))

    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[Any, Any]:
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + self.calls)
            self.calls += 1
            return self.policy.predict(observation, state, episode_start, deterministic=False)


def _load_agent(files: AgentFiles, env: Any) -> Any:
    from fl_gym.envs.rollout import is_multi_agent

    if is_multi_agent(env):
        return _SharedPolicy(files.load())
    on_env = env if files.metadata.get("policy") == "device-set" else None
    return files.load(on_env)


def _maker(spec: ControllerSpec, seed: int, bases: Sequence[str]) -> Callable[[Any], Any]:
    """A builder ``make(env) -> policy`` of ``spec`` (the bound's references use them too)."""
    from fl_gym.baselines import make_policy
    from fl_gym.baselines.planning import MPCPlanner

    if spec.kind == "random":
        return lambda env: RandomActions(env, seed)
    if spec.kind == "heuristic":
        return lambda env: make_policy(spec.name, env)
    if spec.kind == "agent":
        assert spec.agent is not None
        files = spec.agent
        if spec.sampled:
            return lambda env: SampledActions.for_episode(
                _load_agent(files, env), seed, spec.training_seed or 0
            )
        return lambda env: _load_agent(files, env)
    if spec.kind == "planner":
        return lambda env: MPCPlanner(
            env, list(bases), horizon=3, num_scenarios=1, num_random=1, seed=seed
        )
    raise ValueError(f"no builder for a {spec.kind!r} controller")


@dataclass(frozen=True)
class EpisodeRow:
    """One episode of one controller on one task (a CSV row).

    Attributes:
        task: The task's name.
        controller: The controller (see :class:`ControllerSpec`).
        kind: One of :data:`CONTROLLER_KINDS`.
        family: The agent family, else the controller's name.
        training_seed: The agent's training seed, else ``None``.
        eval_seed: The episode's reset seed.
        episode_return: Sum of the rewards (over agents and steps for a multi-agent task).
        metric: The task's metric (NaN where the target was not reached).
        accuracy: Final test accuracy (NaN for non-FL tasks).
        energy_j: Energy spent by all devices (NaN for non-FL tasks).
        rounds: Rounds (steps) played.
        cpu_s: CPU seconds of the episode (process time, the controller's planning included).
    """

    task: str
    controller: str
    kind: str
    family: str
    training_seed: int | None
    eval_seed: int
    episode_return: float
    metric: float
    accuracy: float
    energy_j: float
    rounds: int
    cpu_s: float

    def as_row(self) -> dict[str, Any]:
        """A flat dict (the CSV's columns; ``None`` as an empty cell)."""
        row = dataclasses.asdict(self)
        return {k: "" if v is None else v for k, v in row.items()}

    @classmethod
    def from_row(cls, row: Mapping[str, str]) -> EpisodeRow:
        """The row a CSV line holds (floats read back exactly: they are written with repr)."""
        try:
            return cls(
                task=row["task"],
                controller=row["controller"],
                kind=row["kind"],
                family=row["family"],
                training_seed=int(row["training_seed"]) if row["training_seed"] else None,
                eval_seed=int(row["eval_seed"]),
                episode_return=float(row["episode_return"]),
                metric=float(row["metric"]),
                accuracy=float(row["accuracy"]),
                energy_j=float(row["energy_j"]),
                rounds=int(row["rounds"]),
                cpu_s=float(row["cpu_s"]),
            )
        except (KeyError, ValueError) as exc:
            raise ValueError(
                f"not a suite benchmark row ({exc}); columns: {list(cls.__dataclass_fields__)}"
            ) from exc


class _SummingRecorder:
    """The family's recorder, plus the sum of every reward over agents and steps (the return
    of a multi-agent task, :mod:`fl_gym.benchmark`)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.total = 0.0

    def start(self, env: Any, policy: Any, seed: int, observation: Any, info: Any) -> None:
        self.total = 0.0
        self.inner.start(env, policy, seed, observation, info)

    def step(self, env: Any, reward: Any, terminated: Any, truncated: Any, info: Any) -> None:
        values = reward.values() if isinstance(reward, Mapping) else [reward]
        self.total += float(sum(float(v) for v in values))
        self.inner.step(env, reward, terminated, truncated, info)

    def result(self, env: Any, policy: Any) -> Any:
        return self.inner.result(env, policy)


def _episode_numbers(result: Any, total: float) -> tuple[float, float, float, int]:
    """Return, accuracy, energy and rounds of a rollout result of any family (``total``: the
    rewards summed over agents and steps, the return of a multi-agent task)."""
    from fl_gym.envs.rollout import EpisodeResult, SwarmEpisode

    if isinstance(result, EpisodeResult):
        return (
            result.episode_return,
            result.final_accuracy,
            result.total_energy_j,
            result.rounds,
        )
    if isinstance(result, SwarmEpisode):
        return total, math.nan, math.nan, result.steps
    return total, math.nan, math.nan, int(result.slots)


def play_episode(task: Task, specs: Sequence[ControllerSpec], index: int, seed: int) -> EpisodeRow:
    """Play controller ``specs[index]`` on ``task`` from ``reset(seed=seed)`` in a fresh env.

    Args:
        task: The task.
        specs: Every controller of the task (:func:`controller_specs`): the clairvoyant bound
            simulates all the others as references.
        index: Which of them plays.
        seed: The evaluation seed.

    Returns:
        The episode's row.
    """
    from fl_gym.baselines import baselines_for
    from fl_gym.baselines.planning import ClairvoyantPlanner
    from fl_gym.envs.rollout import make_recorder, rollout

    spec = specs[index]
    env = make_task_env(task)
    try:
        bases = _planner_bases(baselines_for(env)) if has_planners(task) else []
        start = time.process_time()
        if spec.kind == "bound":
            references = [_maker(s, seed, bases) for s in specs if s.kind != "bound"]
            player = ClairvoyantPlanner(env, bases, num_random=1, references=references, seed=seed)
        else:
            player = _maker(spec, seed, bases)(env)
        recorder = _SummingRecorder(make_recorder(env))
        result = rollout(env, player, seed=seed, deterministic=True, recorder=recorder)
        cpu_s = time.process_time() - start
        episode_return, accuracy, energy_j, rounds = _episode_numbers(result, recorder.total)
        value = task_metric(task, result, env)
    finally:
        env.close()
    return EpisodeRow(
        task=task.name,
        controller=spec.name,
        kind=spec.kind,
        family=spec.family,
        training_seed=spec.training_seed,
        eval_seed=int(seed),
        episode_return=float(episode_return),
        metric=value,
        accuracy=float(accuracy),
        energy_j=float(energy_j),
        rounds=int(rounds),
        cpu_s=float(cpu_s),
    )


class BoundViolation(RuntimeError):
    """A controller's return is above the clairvoyant bound's on a seed."""


def check_bound(rows: Iterable[EpisodeRow], *, tolerance: float = 1e-9) -> None:
    """Check that on every (task, seed) with a bound no controller's return is above it.

    Raises:
        BoundViolation: Naming the task, seed, controller and both returns.
    """
    rows = list(rows)
    bound = {(r.task, r.eval_seed): r.episode_return for r in rows if r.kind == "bound"}
    for r in rows:
        limit = bound.get((r.task, r.eval_seed))
        if limit is not None and r.episode_return > limit + tolerance:
            raise BoundViolation(
                f"{r.task}, seed {r.eval_seed}: {r.controller} ({r.episode_return:.6f}) above "
                f"the clairvoyant bound ({limit:.6f})"
            )


# -- running ---------------------------------------------------------------------------------------


def _task_fields(task: Task) -> dict[str, Any]:
    """A task as plain, picklable fields (its config is a read-only mapping proxy)."""
    fields = {f.name: getattr(task, f.name) for f in dataclasses.fields(task)}
    fields["config"] = dict(fields["config"])
    return fields


def _job(
    task_fields: dict[str, Any], specs: list[ControllerSpec], index: int, seed: int
) -> EpisodeRow:
    from fl_gym.sim.threads import torch_threads

    task = Task(**task_fields)
    with torch_threads(1):
        return play_episode(task, specs, index, seed)


def run_suite(
    tasks: Sequence[Task],
    seeds: Sequence[int],
    *,
    agents: Mapping[str, Sequence[ShippedAgent]] | None = None,
    jobs: int = 1,
    progress: bool = False,
    check: bool = True,
) -> list[EpisodeRow]:
    """Play every controller of every task on every seed.

    Args:
        tasks: The tasks (a suite's, or made for the purpose).
        seeds: Evaluation seeds, the same for every controller (common random numbers).
        agents: ``{task name: agents}`` (:func:`find_agents`).
        jobs: Processes to play the episodes in (1: this process). The rows do not depend
            on it.
        progress: Show a progress bar (on stderr).
        check: Apply :func:`check_bound` to the rows before returning them.

    Returns:
        The rows, by task, controller (the order of :func:`controller_specs`) and seed.

    Raises:
        BoundViolation: If ``check`` and a controller beats the clairvoyant bound on a seed.
    """
    from fl_gym.agents.evaluation import parse_seeds
    from fl_gym.sim.config import check_int

    jobs = check_int("jobs", jobs, minimum=1)
    seed_list = parse_seeds(list(seeds))
    if not tasks:
        raise ValueError("tasks must hold at least one task")
    agents = agents or {}
    unknown = sorted(set(agents) - {t.name for t in tasks})
    if unknown:
        raise ValueError(f"agents given for tasks {unknown}, not among {[t.name for t in tasks]}")
    work: list[tuple[dict[str, Any], list[ControllerSpec], int, int]] = []
    for task in tasks:
        specs = controller_specs(task, agents.get(task.name, ()))
        fields = _task_fields(task)
        work += [(fields, specs, i, s) for i in range(len(specs)) for s in seed_list]
    from fl_gym._console import make_progress

    rows: list[EpisodeRow] = []
    with make_progress(enabled=progress, unit="episodes") as bar:
        handle = bar.add_task("suite", total=len(work))
        if jobs == 1:
            for item in work:
                bar.update(handle, description=f"{item[0]['name']} {item[1][item[2]].name}")
                rows.append(_job(*item))
                bar.advance(handle)
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            context = multiprocessing.get_context("spawn")  # no forked torch state
            with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
                futures = [pool.submit(_job, *item) for item in work]
                for future in futures:
                    rows.append(future.result())
                    bar.advance(handle)
    if check:
        check_bound(rows)
    return rows


# -- CSV -------------------------------------------------------------------------------------------


def write_rows(rows: Iterable[EpisodeRow], path: str | Path) -> Path:
    """Write the rows as a CSV (one line per episode; floats written exactly)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(EpisodeRow.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(r.as_row() for r in rows)
    return out


def read_rows(path: str | Path) -> list[EpisodeRow]:
    """The rows a CSV written by :func:`write_rows` holds.

    Raises:
        FileNotFoundError: If there is no such file.
        ValueError: If a line is not a row of the suite benchmark.
    """
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"no results file {source} (write one with --results)")
    with source.open(newline="") as handle:
        rows = [EpisodeRow.from_row(line) for line in csv.DictReader(handle)]
    if not rows:
        raise ValueError(f"{source} holds no episode")
    return rows
