"""The leaderboard of a benchmark suite, reported as Agarwal et al. (2021) recommend, with rliable.

From the rows of :mod:`fl_gym.agents.suite_bench` (one per episode) this makes:

* a **normalised score** per episode, ``(return - random mean) / (bound mean - random mean)``
  with the task's means over its evaluation seeds: 0 = uniformly random actions, 1 = the
  clairvoyant bound; on a task without a bound (no planner applies) 1 = the best heuristic
  (the heuristic with the highest mean return on the task);
* per task, each controller's mean return and metric with 95% stratified-bootstrap intervals,
  and for each agent family whether its interval lies above the best heuristic's, the fraction
  of the headroom (bound - best heuristic) it closes, and its probability of improvement over
  the best heuristic;
* across tasks, the interquartile mean (IQM) of the normalised scores with stratified-bootstrap
  intervals (``rliable.library.get_interval_estimates``), the probability of improvement over
  the best heuristic of each task (``rliable.metrics.probability_of_improvement``) and
  performance profiles (``rliable.plot_utils``).

The score matrices are ``(runs, tasks)`` as rliable expects: the runs of a deterministic
controller are the evaluation seeds; those of an agent family are its (training seed,
evaluation seed) pairs, resampled as independent runs.

rliable's stratified bootstrap draws its resamples from numpy's global generator
(``np.random.choice``), whatever ``random_state`` it is given; every estimate here is made with
that generator seeded for the call and put back as it was afterwards, so a report is the same
every time it is made from the same rows and the caller's global random state is left alone.
rliable is an optional dependency: ``pip install "fl-gym[bench]"``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fl_gym.agents.suite_bench import TASK_METRICS, EpisodeRow

__all__ = [
    "BEST_HEURISTIC",
    "RunInfo",
    "TaskNormaliser",
    "agent_budgets",
    "bootstrap_interval",
    "fast_probability_of_improvement",
    "normalised_scores",
    "normalisers",
    "require_rliable",
    "score_matrices",
    "suite_markdown",
]

BEST_HEURISTIC = "best heuristic"
"""The aggregate entry that stands for each task's best heuristic (by mean return)."""

CONFIDENCE = 0.95


def require_rliable() -> Any:
    """Import rliable (its library, metrics and plot_utils), or explain which extra to install.

    Raises:
        ImportError: If rliable (or what it needs) is missing; the message names the extra.
    """
    try:
        from rliable import library, metrics, plot_utils  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f'the suite leaderboard needs rliable ({exc}): pip install "fl-gym[bench]"'
        ) from exc
    import rliable

    return rliable


@contextlib.contextmanager
def _global_numpy_seed(seed: int) -> Iterator[None]:
    """Seed numpy's global generator for rliable's bootstrap, restoring its state after."""
    # rliable leaves no other way to make its resamples reproducible.
    state = np.random.get_state()  # noqa: NPY002
    np.random.seed(seed)  # noqa: NPY002
    try:
        yield
    finally:
        np.random.set_state(state)  # noqa: NPY002


@dataclass(frozen=True)
class RunInfo:
    """How the rows were made (written beside the CSV, shown in the report's header).

    Attributes:
        command: The command line that played the episodes.
        date: When (ISO date).
        machine: The machine, in words.
        suite: The suite's name.
        seeds: The evaluation seeds.
        tasks: Each task's ``name``, ``env_id``, ``metric``, ``description``,
            ``max_episode_steps`` and ``config``.
        agents: The agents directory, if any.
        budgets: One entry per (task, agent family): ``task``, ``family``, ``algo``,
            ``training_seeds``, ``timesteps`` (environment steps each agent trained for; for a
            multi-agent task, agent-steps), ``n_envs``, ``cpu_s`` (mean training CPU seconds
            per agent, where its metadata records them) and ``algo_kwargs``.
    """

    command: str
    date: str
    machine: str
    suite: str
    seeds: list[int]
    tasks: list[dict[str, Any]] = field(default_factory=list)
    agents: str | None = None
    budgets: list[dict[str, Any]] = field(default_factory=list)

    def write(self, path: str | Path) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.__dict__, indent=2) + "\n")
        return out

    @classmethod
    def read(cls, path: str | Path) -> RunInfo:
        data = json.loads(Path(path).read_text())
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


# -- normalisation ---------------------------------------------------------------------------------


def _mean_returns(rows: Sequence[EpisodeRow], task: str) -> dict[str, float]:
    """Mean return of each family (agents pooled over training seeds) on ``task``."""
    by: dict[str, list[float]] = {}
    for r in rows:
        if r.task == task:
            by.setdefault(r.family, []).append(r.episode_return)
    return {name: float(np.mean(v)) for name, v in by.items()}


@dataclass(frozen=True)
class TaskNormaliser:
    """What 0 and 1 of a task's normalised score stand for.

    Attributes:
        task: The task's name.
        random_mean: Mean return of uniformly random actions (score 0).
        top_mean: Mean return of the reference (score 1).
        top: The reference: ``"clairvoyant"`` or the best heuristic's name.
        best_heuristic: The heuristic with the highest mean return (``None`` if none played).
        has_bound: Whether the reference is the clairvoyant bound.
    """

    task: str
    random_mean: float
    top_mean: float
    top: str
    best_heuristic: str | None
    has_bound: bool

    @property
    def valid(self) -> bool:
        """Whether the reference is above random actions (else scores are not defined)."""
        return self.top_mean > self.random_mean

    def score(self, episode_return: float) -> float:
        return (episode_return - self.random_mean) / (self.top_mean - self.random_mean)


def normalisers(rows: Sequence[EpisodeRow]) -> dict[str, TaskNormaliser]:
    """Each task's normaliser, in the order the tasks first appear in ``rows``.

    Raises:
        ValueError: If a task has no ``random-actions`` row, or neither a bound nor a heuristic.
    """
    out: dict[str, TaskNormaliser] = {}
    for task in dict.fromkeys(r.task for r in rows):
        kinds = {r.family: r.kind for r in rows if r.task == task}
        means = _mean_returns(rows, task)
        randoms = [f for f, k in kinds.items() if k == "random"]
        if not randoms:
            raise ValueError(f"task {task}: no random-actions episodes to normalise against")
        heuristics = [f for f, k in kinds.items() if k == "heuristic"]
        best = max(heuristics, key=lambda f: means[f]) if heuristics else None
        bounds = [f for f, k in kinds.items() if k == "bound"]
        top = bounds[0] if bounds else best
        if top is None:
            raise ValueError(f"task {task}: neither a bound nor a heuristic to normalise with")
        out[task] = TaskNormaliser(
            task, means[randoms[0]], means[top], top, best, has_bound=bool(bounds)
        )
    return out


def normalised_scores(
    rows: Sequence[EpisodeRow], norms: Mapping[str, TaskNormaliser] | None = None
) -> list[float]:
    """The normalised score of every row (NaN on a task whose reference is not above random)."""
    norms = normalisers(rows) if norms is None else norms
    return [
        norms[r.task].score(r.episode_return) if norms[r.task].valid else math.nan for r in rows
    ]


@dataclass(frozen=True)
class ScoreMatrix:
    """One aggregate entry's scores, ``(runs, tasks)``.

    Attributes:
        scores: The matrix.
        tasks: The tasks of its columns.
        runs: What a run is (e.g. ``"5 evaluation seeds"``).
        dropped: Episodes left out so that every task has the same runs.
    """

    scores: np.ndarray
    tasks: list[str]
    runs: str
    dropped: int = 0


def score_matrices(
    rows: Sequence[EpisodeRow], norms: Mapping[str, TaskNormaliser] | None = None
) -> dict[str, ScoreMatrix]:
    """The aggregate entries' score matrices over the normalisable tasks each one played.

    Entries: ``random-actions``, :data:`BEST_HEURISTIC` (each task's best heuristic), ``mpc``
    and ``clairvoyant`` where they played, then every agent family. A run is an evaluation seed
    (an agent family: a training seed and an evaluation seed); only the runs every task of the
    entry has are kept (``dropped`` counts the others).
    """
    norms = normalisers(rows) if norms is None else norms
    tasks = [t for t, n in norms.items() if n.valid]
    scores = normalised_scores(rows, norms)
    # (entry, task) -> {(training seed, eval seed): score}
    cells: dict[str, dict[str, dict[tuple[int, int], float]]] = {}
    kind_of: dict[str, str] = {}
    for r, s in zip(rows, scores, strict=True):
        if r.task not in tasks:
            continue
        entries = []
        if r.kind in ("random", "planner", "bound", "agent"):
            entries.append(r.family)
        if r.kind == "heuristic" and r.family == norms[r.task].best_heuristic:
            entries.append(BEST_HEURISTIC)
        for entry in entries:
            kind_of.setdefault(entry, "heuristic" if entry == BEST_HEURISTIC else r.kind)
            key = (-1 if r.training_seed is None else r.training_seed, r.eval_seed)
            cells.setdefault(entry, {}).setdefault(r.task, {})[key] = s
    order = {"random": 0, "heuristic": 1, "planner": 2, "bound": 3, "agent": 4}
    out: dict[str, ScoreMatrix] = {}
    for entry in sorted(cells, key=lambda e: (order[kind_of[e]], e)):
        by_task = cells[entry]
        covered = [t for t in tasks if t in by_task]
        common = set.intersection(*(set(by_task[t]) for t in covered))
        runs = sorted(common)
        dropped = sum(len(by_task[t]) for t in covered) - len(runs) * len(covered)
        matrix = np.array([[by_task[t][k] for t in covered] for k in runs], dtype=np.float64)
        trained = sorted({k[0] for k in runs if k[0] >= 0})
        evals = sorted({k[1] for k in runs})
        if trained:
            text = f"{len(trained)} training x {len(evals)} evaluation seeds"
        else:
            text = f"{len(evals)} evaluation seeds"
        out[entry] = ScoreMatrix(matrix, covered, text, dropped)
    return out


# -- estimates -------------------------------------------------------------------------------------


def fast_probability_of_improvement(scores_x: np.ndarray, scores_y: np.ndarray) -> float:
    """``rliable.metrics.probability_of_improvement`` without its per-task Mann-Whitney test.

    P(X > Y) + P(X = Y) / 2 over every pair of runs, averaged over tasks: the Mann-Whitney U
    statistic divided by the number of pairs, which is what rliable computes (0.5 for equal
    samples); written with numpy so that thousands of bootstrap resamples take a moment.
    """
    x = np.asarray(scores_x, dtype=np.float64)[:, None, :]
    y = np.asarray(scores_y, dtype=np.float64)[None, :, :]
    per_task = np.mean((x > y) + 0.5 * (x == y), axis=(0, 1))
    return float(np.mean(per_task))


def bootstrap_interval(
    data: np.ndarray | list[np.ndarray],
    func: Callable[..., float],
    *,
    reps: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """rliable's stratified-bootstrap estimate of ``func`` on ``data``, 95% percentile interval.

    Args:
        data: A ``(runs, tasks)`` matrix, or a list of them (each resampled independently, e.g.
            the two score matrices of a probability of improvement).
        func: The statistic of the matrix (or matrices).
        reps: Bootstrap resamples.
        seed: Seed of numpy's global generator for the call (restored after).

    Returns:
        ``(point estimate, low, high)``.
    """
    from rliable import library

    def statistic(*arrays: np.ndarray) -> np.ndarray:
        return np.array([func(*arrays)])

    with _global_numpy_seed(seed):
        point, interval = library.get_interval_estimates(
            {"x": data}, statistic, reps=reps, confidence_interval_size=CONFIDENCE
        )
    return float(point["x"][0]), float(interval["x"][0, 0]), float(interval["x"][1, 0])


def _iqm(scores: np.ndarray) -> float:
    from rliable import metrics

    return float(metrics.aggregate_iqm(scores))


def _mean(scores: np.ndarray) -> float:
    return float(np.mean(scores))


# -- Markdown --------------------------------------------------------------------------------------


def _fmt(value: float, spec: str = ".3f") -> str:
    if value is None or not np.isfinite(value):
        return "-"
    text = format(value, spec)
    # A value that rounds to zero is written without a sign.
    return text[1:] if text.startswith("-") and not any(c in "123456789" for c in text) else text


def _ci(point: float, low: float, high: float, spec: str = ".3f") -> str:
    return f"{_fmt(point, spec)} [{_fmt(low, spec)}, {_fmt(high, spec)}]"


def _link_target(path: str) -> str:
    text = path.replace("\\", "/")
    return f"<{text}>" if any(c in text for c in " ()") else text


def _seed_text(seeds: Sequence[int]) -> str:
    s = sorted(seeds)
    if len(s) > 1 and s == list(range(s[0], s[0] + len(s))):
        return f"{s[0]}-{s[-1]}"
    return ", ".join(map(str, s))


def _profile_plot(
    matrices: Mapping[str, ScoreMatrix], path: Path, reps: int, seed: int
) -> Path | None:
    """Performance profiles (fraction of runs above each score) of the entries, a PNG."""
    from rliable import library, plot_utils

    from fl_gym.envs.plotting import require_matplotlib

    require_matplotlib()
    from matplotlib.figure import Figure

    entries = {e: m.scores for e, m in matrices.items() if m.scores.size}
    if not entries:
        return None
    everything = np.concatenate([s.ravel() for s in entries.values()])
    low = min(0.0, float(np.quantile(everything, 0.05)))
    high = max(1.0, float(np.quantile(everything, 0.95)))
    taus = np.linspace(low, high, 81)
    with _global_numpy_seed(seed):
        profiles, cis = library.create_performance_profile(entries, taus, reps=reps)
    figure = Figure(figsize=(7.5, 4.5))
    ax = figure.subplots()
    plot_utils.plot_performance_profiles(
        profiles,
        taus,
        performance_profile_cis=cis,
        ax=ax,
        xlabel=r"normalised score $\tau$ (0 = random actions, 1 = bound)",
        ylabel=r"fraction of runs with score $> \tau$",
        labelsize="medium",
        ticklabelsize="small",
        legend=True,
        legendsize="small",
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def _task_info(info: RunInfo, task: str) -> dict[str, Any]:
    for t in info.tasks:
        if t.get("name") == task:
            return t
    return {"name": task}


def _budget_section(budgets: Sequence[Mapping[str, Any]]) -> list[str]:
    """The agents' training budgets (from their metadata), one row per task and family."""
    if not budgets:
        return []
    lines = [
        "## Agents and their training budgets",
        "",
        "Per task and agent family: the algorithm, the training seeds, the environment steps "
        "each agent trained for (agent-steps on a multi-agent task) in how many parallel "
        "environments, and the mean training CPU seconds per agent, from the agents' metadata.",
        "",
        "| task | family | algorithm | training seeds | steps per agent | envs | CPU s per agent |",
        "| --- | --- | --- | --- | ---: | ---: | ---: |",
    ]
    for b in budgets:
        cpu = b.get("cpu_s")
        lines.append(
            f"| {b['task']} | `{b['family']}` | {b['algo']} | "
            f"{', '.join(str(x) for x in b['training_seeds'])} | {int(b['timesteps']):,} | "
            f"{b['n_envs']} | {'-' if cpu is None else f'{cpu:.0f}'} |"
        )
    return [*lines, ""]


def agent_budgets(agents: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The :attr:`RunInfo.budgets` entries of shipped agents (``{task: [ShippedAgent]}``)."""
    out: list[dict[str, Any]] = []
    for task, found in agents.items():
        families: dict[str, list[Any]] = {}
        for agent in found:
            families.setdefault(agent.family, []).append(agent)
        for family, members in families.items():
            metas = [m.files.metadata for m in members]
            cpus = [float(m["training_cpu_s"]) for m in metas if "training_cpu_s" in m]
            out.append(
                {
                    "task": task,
                    "family": family,
                    "algo": metas[0].get("algo"),
                    "training_seeds": [m.training_seed for m in members],
                    "timesteps": int(metas[0].get("total_timesteps", 0)),
                    "n_envs": metas[0].get("n_envs"),
                    "cpu_s": float(np.mean(cpus)) if cpus else None,
                    "algo_kwargs": metas[0].get("algo_kwargs", {}),
                }
            )
    return out


def suite_markdown(
    rows: Sequence[EpisodeRow],
    info: RunInfo,
    *,
    out_dir: str | Path,
    markdown_path: str | Path,
    results_path: str | Path | None = None,
    reps: int = 2000,
    seed: int = 0,
) -> str:
    """The leaderboard of a suite run as Markdown; its plot is written under ``out_dir``.

    Args:
        rows: Every episode (:func:`~fl_gym.agents.suite_bench.run_suite` or
            :func:`~fl_gym.agents.suite_bench.read_rows`).
        info: How they were made (the header).
        out_dir: Where the performance-profile plot goes.
        markdown_path: Where the Markdown will be written (image links are relative to it).
        results_path: The CSV of the rows (named in the header so the page can be re-made).
        reps: Bootstrap resamples of every interval.
        seed: Seed of the bootstrap (the same rows give the same page).

    Returns:
        The Markdown text.
    """
    require_rliable()
    from rliable import metrics

    rows = list(rows)
    norms = normalisers(rows)
    matrices = score_matrices(rows, norms)
    md_dir = Path(markdown_path).parent
    lines = [f"# Leaderboard of `{info.suite}`", ""]
    remake = (
        f" Re-make this page from its results without replaying: `fl-gym bench --from-results "
        f"{Path(results_path).as_posix()} --out {Path(out_dir).as_posix()} --markdown "
        f"{Path(markdown_path).as_posix()}`."
        if results_path is not None
        else ""
    )
    no_bound = [t for t, n in norms.items() if not n.has_bound]
    invalid = [t for t, n in norms.items() if not n.valid]
    lines += [
        f"Made by `{info.command}` on {info.date} ({info.machine}); evaluation seeds "
        f"{_seed_text(info.seeds)} for every controller (common random numbers)"
        + (f"; agents from `{info.agents}`" if info.agents else "")
        + f".{remake}",
        "",
        "Normalised score of an episode = (return - mean return of uniformly random actions) / "
        "(mean return of the clairvoyant bound - mean return of random actions), per task: "
        "0 = random actions, 1 = the clairvoyant planner (a fortified rollout that sees the "
        "future and keeps the best of every other controller's episode, so no controller is "
        "above it on a seed; checked)."
        + (
            " Tasks without a bound (no planner applies): 1 = the best heuristic by mean "
            f"return ({', '.join(f'`{t}`' for t in no_bound)})."
            if no_bound
            else ""
        )
        + (
            " Not normalised (the reference is not above random actions), so left out of the "
            f"aggregates: {', '.join(f'`{t}`' for t in invalid)}."
            if invalid
            else ""
        ),
        "",
        f"Intervals: {CONFIDENCE:.0%} stratified-bootstrap percentile intervals (rliable, "
        f"{reps} resamples). Runs: an evaluation seed for a deterministic controller; a "
        "(training seed, evaluation seed) pair for an agent family, resampled as independent "
        f"runs. `{BEST_HEURISTIC}` is, on each task, the heuristic with the highest mean "
        "return (chosen on these episodes). P(improvement) is the probability that a run of "
        "the entry scores above a run of the best heuristic on the same task (ties count "
        "half), averaged over tasks (Agarwal et al. 2021).",
        "",
    ]
    lines += _aggregate_section(matrices, norms, out_dir, md_dir, reps, seed, metrics)
    lines += _budget_section(info.budgets)
    for task, norm in norms.items():
        lines += _task_section(rows, task, norm, _task_info(info, task), reps, seed, metrics)
    return "\n".join(lines)


def _aggregate_section(
    matrices: Mapping[str, ScoreMatrix],
    norms: Mapping[str, TaskNormaliser],
    out_dir: str | Path,
    md_dir: Path,
    reps: int,
    seed: int,
    metrics: Any,
) -> list[str]:
    valid = [t for t, n in norms.items() if n.valid]
    lines = [
        "## Aggregate over tasks",
        "",
        f"Over the {len(valid)} normalised task(s); an entry that played fewer tasks is "
        "aggregated over those it played (the `tasks` column), which makes it comparable only "
        "on those.",
        "",
        "| entry | tasks | runs | IQM normalised score [95% CI] | mean normalised score "
        "[95% CI] | P(improvement over best heuristic) [95% CI] |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    best = matrices.get(BEST_HEURISTIC)
    notes = []
    for entry, m in matrices.items():
        iqm = bootstrap_interval(m.scores, _iqm, reps=reps, seed=seed)
        mean = bootstrap_interval(m.scores, _mean, reps=reps, seed=seed)
        poi_text = "-"
        shared = [t for t in m.tasks if best is not None and t in best.tasks]
        if best is not None and entry != BEST_HEURISTIC and shared:
            x = m.scores[:, [m.tasks.index(t) for t in shared]]
            y = best.scores[:, [best.tasks.index(t) for t in shared]]
            point = float(metrics.probability_of_improvement(x, y))
            _, low, high = bootstrap_interval(
                [x, y], fast_probability_of_improvement, reps=reps, seed=seed
            )
            poi_text = _ci(point, low, high, ".2f")
        name = f"`{entry}`" if entry != BEST_HEURISTIC else BEST_HEURISTIC
        lines.append(
            f"| {name} | {len(m.tasks)} | {m.runs} | {_ci(*iqm)} | {_ci(*mean)} | {poi_text} |"
        )
        if m.dropped:
            notes.append(
                f"`{entry}`: {m.dropped} episode(s) left out of its matrix so that every task "
                "has the same runs."
            )
    lines.append("")
    lines += [*(f"{n}\n" for n in notes)]
    plot = _profile_plot(matrices, Path(out_dir) / "performance_profiles.png", reps, seed)
    if plot is not None:
        target = _link_target(os.path.relpath(plot, md_dir))
        lines += [
            "Performance profiles: the fraction of runs (all tasks pooled) whose normalised "
            "score is above each threshold, with 95% stratified-bootstrap bands.",
            "",
            f"![performance profiles of the normalised scores]({target})",
            "",
        ]
    return lines


def _family_rows(rows: Sequence[EpisodeRow], task: str) -> dict[str, list[EpisodeRow]]:
    out: dict[str, list[EpisodeRow]] = {}
    for r in rows:
        if r.task == task:
            out.setdefault(r.family, []).append(r)
    return out


def _task_section(
    rows: Sequence[EpisodeRow],
    task: str,
    norm: TaskNormaliser,
    task_info: Mapping[str, Any],
    reps: int,
    seed: int,
    metrics: Any,
) -> list[str]:
    metric = task_info.get("metric", "metric")
    env_id = task_info.get("env_id", "?")
    families = _family_rows(rows, task)
    mean = {f: float(np.mean([r.episode_return for r in rs])) for f, rs in families.items()}
    returns = {
        f: np.array([r.episode_return for r in rs], dtype=np.float64)[:, None]
        for f, rs in families.items()
    }
    intervals = {f: bootstrap_interval(x, _mean, reps=reps, seed=seed) for f, x in returns.items()}
    best = norm.best_heuristic
    lines = [f"## {task} (`{env_id}`, {metric})", ""]
    text = str(task_info.get("description", "")).strip()
    reference = "the clairvoyant bound" if norm.has_bound else f"the best heuristic `{best}`"
    text += (
        f" Score 0 = random actions (mean return {norm.random_mean:.3f}), 1 = {reference} "
        f"({norm.top_mean:.3f})."
    )
    if not norm.valid:
        text += " The reference is not above random actions: no normalised score on this task."
    elif norm.has_bound and best is not None:
        headroom = norm.top_mean - mean[best]
        text += (
            f" Headroom (bound - best heuristic `{best}`): {headroom:.3f} "
            f"({headroom / (norm.top_mean - norm.random_mean):.0%} of bound - random)."
        )
    if metric not in TASK_METRICS and all(math.isnan(r.metric) for r in rows if r.task == task):
        text += f" The metric {metric} has no rule in TASK_METRICS: not computed."
    lines += [text.strip(), ""]
    counted = "episodes that reached it" if metric.endswith("-to-target") else "episodes"
    lines += [
        f"| controller | kind | runs | return [95% CI] | normalised | {metric} [95% CI] "
        f"({counted}) | final accuracy | energy (J) | CPU s / episode |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for family in sorted(families, key=lambda f: -mean[f]):
        rs = families[family]
        values = np.array([r.metric for r in rs], dtype=np.float64)
        reached = values[np.isfinite(values)]
        if reached.size:
            shown = _ci(*bootstrap_interval(reached[:, None], _mean, reps=reps, seed=seed), ".3g")
            shown += f" ({reached.size}/{values.size})"
        else:
            shown = f"- (0/{values.size})"
        score = norm.score(mean[family]) if norm.valid else math.nan
        kind = rs[0].kind
        name = f"`{family}`" + (" (best heuristic)" if family == best else "")
        lines.append(
            f"| {name} | {kind} | {len(rs)} | {_ci(*intervals[family])} | {_fmt(score, '.2f')} "
            f"| {shown} | {_fmt(float(np.mean([r.accuracy for r in rs])))} "
            f"| {_fmt(float(np.mean([r.energy_j for r in rs])))} "
            f"| {np.mean([r.cpu_s for r in rs]):.2f} |"
        )
    lines.append("")
    for family, rs in families.items():
        if rs[0].kind == "agent":
            lines += [_agent_sentence(family, rs, norm, intervals, mean, returns, reps, seed), ""]
    return lines


def _agent_sentence(
    family: str,
    rs: Sequence[EpisodeRow],
    norm: TaskNormaliser,
    intervals: Mapping[str, tuple[float, float, float]],
    mean: Mapping[str, float],
    returns: Mapping[str, np.ndarray],
    reps: int,
    seed: int,
) -> str:
    from rliable import metrics

    seeds = sorted({r.training_seed for r in rs if r.training_seed is not None})
    _, low, high = intervals[family]
    text = (
        f"`{family}` (training seeds {', '.join(map(str, seeds))}; {len(rs)} runs): mean return "
        f"{_ci(*intervals[family])}"
    )
    best = norm.best_heuristic
    if best is None:
        return text + "; no heuristic to compare with."
    _, b_low, b_high = intervals[best]
    if low > b_high:
        where = "lies above"
    elif high < b_low:
        where = "lies below"
    else:
        where = "overlaps"
    text += (
        f"; its 95% interval {where} that of the best heuristic `{best}` ({_ci(*intervals[best])})"
    )
    if norm.valid:
        x = np.array([[norm.score(v)] for v in returns[family][:, 0]])
        y = np.array([[norm.score(v)] for v in returns[best][:, 0]])
        point = float(metrics.probability_of_improvement(x, y))
        _, p_low, p_high = bootstrap_interval(
            [x, y], fast_probability_of_improvement, reps=reps, seed=seed
        )
        text += f"; P(improvement over `{best}`) = {_ci(point, p_low, p_high, '.2f')}"
        if norm.has_bound:
            headroom = norm.top_mean - mean[best]
            if headroom > 0:
                closed = (mean[family] - mean[best]) / headroom
                scores = (
                    f"mean normalised score {norm.score(mean[family]):.2f} against "
                    f"{norm.score(mean[best]):.2f}"
                )
                if closed >= 0:
                    text += (
                        f"; on average it closes {closed:.0%} of the headroom between `{best}` "
                        f"and the bound ({scores})"
                    )
                else:
                    text += (
                        f"; on average it closes none of the headroom between `{best}` and the "
                        f"bound: its mean return is {-closed:.2f} headrooms below `{best}`'s "
                        f"({scores})"
                    )
            else:
                text += "; the bound is not above the best heuristic here (no headroom to close)"
        else:
            text += (
                f"; its mean normalised score is {norm.score(mean[family]):.2f} "
                f"(1 = `{best}`: this task has no bound)"
            )
    return text + "."
