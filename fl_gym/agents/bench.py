"""Benchmark harness: every (environment, policy, seed) job, a CSV, a leaderboard and plots.

Every policy plays the same seeds of an environment (common random numbers), so differences
between policies are not differences between the cells they happened to meet. The leaderboard
reports, per metric, the mean with a 95% percentile-bootstrap confidence interval and the
interquartile mean (IQM, the mean of the middle 50% of episodes; robust to a few outliers), as
recommended by Agarwal et al., "Deep Reinforcement Learning at the Edge of the Statistical
Precipice" (NeurIPS 2021). Jobs run in this process or, with ``backend="ray"``, as Ray tasks.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from fl_gym.agents.agent_files import AgentFiles
from fl_gym.agents.evaluation import EpisodeMetrics, evaluate_episodes, parse_seeds
from fl_gym.envs.rollout import EpisodeResult

__all__ = [
    "BACKENDS",
    "BenchmarkResult",
    "RayConnectionError",
    "bootstrap_ci",
    "connect_ray",
    "interquartile_mean",
    "leaderboard_markdown",
    "run_benchmark",
]

BACKENDS = ("local", "ray")

LEADERBOARD_METRICS = (
    ("episode_return", "return", "{:.2f}"),
    ("final_accuracy", "final accuracy", "{:.3f}"),
    ("energy_j", "energy (J)", "{:.3f}"),
    ("rounds", "rounds", "{:.1f}"),
)


def bootstrap_ci(
    values: Sequence[float], *, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean.

    Args:
        values: The sample (one value per episode).
        confidence: Coverage of the interval.
        resamples: Bootstrap resamples.
        seed: Seed of the resampling (the interval is reproducible).

    Returns:
        ``(low, high)``; both equal the value for a sample of one.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError(f"values must be a non-empty 1-D sequence of finite numbers, got {x}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def interquartile_mean(values: Sequence[float]) -> float:
    """Mean of the values between the 25th and 75th percentiles (25% trimmed each side)."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"values must be a non-empty 1-D sequence, got {x}")
    return float(stats.trim_mean(x, 0.25))


@dataclass
class BenchmarkResult:
    """Everything a benchmark run produced.

    Attributes:
        metrics: One row per (environment, policy, seed).
        episodes: ``{env_id: {policy: [EpisodeResult, ...]}}``, round by round (for plots).
        seeds: The seeds every policy played.
    """

    metrics: list[EpisodeMetrics] = field(default_factory=list)
    episodes: dict[str, dict[str, list[EpisodeResult]]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)

    def write_csv(self, path: str | Path) -> Path:
        """One row per episode; columns are :class:`EpisodeMetrics`' fields."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        rows = [m.as_row() for m in self.metrics]
        with out.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(EpisodeMetrics.__dataclass_fields__))
            writer.writeheader()
            writer.writerows(rows)
        return out

    def write_plots(self, directory: str | Path) -> dict[str, Path]:
        """Accuracy and cumulative energy per round, and accuracy against energy: a PNG per env.

        See :func:`fl_gym.envs.plotting.episode_figure` (a caption says where policies differ).
        """
        from fl_gym.envs.plotting import plot_episodes

        paths = {}
        for env_id, by_policy in self.episodes.items():
            name = env_id.replace("/", "_").replace(":", "_")
            path = Path(directory) / f"{name}.png"
            paths[env_id] = plot_episodes(by_policy, path, title=env_id)
        return paths


def _load_agent_files(
    files: AgentFiles, env_id: str, config: dict[str, Any] | None, preset: str | None
) -> Any:
    """The agent, loaded from memory onto the spaces of ``env_id`` (as ``load_agent``).

    A device-set policy has no weight that depends on the number of devices, so it loads onto
    the evaluation environment's spaces, exactly as ``load_agent(path, env)`` does.
    """
    if files.metadata.get("policy") != "device-set":
        return files.load()
    import gymnasium as gym

    kwargs: dict[str, Any] = {"config": config} if config else {}
    if preset is not None:
        kwargs["preset"] = preset
    env = gym.make(env_id, **kwargs)
    try:
        return files.load(env)
    finally:
        env.close()


def _job(
    env_id: str,
    policy: str,
    seed: int,
    config: dict[str, Any] | None,
    preset: str | None,
    max_episode_steps: int | None,
    agent_files: AgentFiles | None = None,
) -> tuple[list[EpisodeMetrics], list[EpisodeResult]]:
    player = (
        policy if agent_files is None else _load_agent_files(agent_files, env_id, config, preset)
    )
    metrics, episodes = evaluate_episodes(
        player, env_id, [seed], config=config, preset=preset, max_episode_steps=max_episode_steps
    )
    # Rows name the policy as the user did (an agent loaded from bytes would name its path).
    return [dataclasses.replace(m, policy=policy) for m in metrics], episodes


def _agent_path(policy: str) -> str | None:
    """The path of a trained agent named ``ALGO:PATH``; ``None`` for a baseline."""
    from fl_gym.agents.training import ALGORITHMS

    head, _, path = policy.partition(":")
    return path if head.lower() in ALGORITHMS and path else None


def _policies_for(env_id: str, policies: Sequence[str], config: Any, preset: Any) -> list[str]:
    """Expand ``"baselines"`` into every baseline that applies to the environment."""
    if "baselines" not in policies:
        return list(policies)
    import gymnasium as gym

    from fl_gym.baselines import baselines_for

    kwargs: dict[str, Any] = {"config": config} if config else {}
    if preset is not None:
        kwargs["preset"] = preset
    env = gym.make(env_id, **kwargs)
    names = baselines_for(env)
    env.close()
    out: list[str] = []
    for p in policies:
        out.extend(names if p == "baselines" else [p])
    return list(dict.fromkeys(out))


def run_benchmark(
    env_ids: Sequence[str],
    policies: Sequence[str],
    seeds: Sequence[int] | str = "0-9",
    *,
    config: dict[str, Any] | None = None,
    preset: str | None = None,
    backend: str = "local",
    progress: bool = False,
    ray_address: str | None = None,
    max_episode_steps: int | None = None,
    trust_pickle: bool = False,
) -> BenchmarkResult:
    """Evaluate every policy on every environment and seed.

    Args:
        env_ids: Environment ids.
        policies: Policy names (see :func:`~fl_gym.agents.resolve_policy`); ``"baselines"``
            stands for every baseline that applies to the environment. A trained agent
            (``ALGO:PATH``) only plays the environment it was trained on.
        seeds: Seeds every policy plays.
        config: Config overrides of every environment.
        preset: Scenario preset of every environment.
        backend: ``"local"`` (this process) or ``"ray"`` (one Ray task per job).
        progress: Show a progress bar (local backend).
        ray_address: Address of a running Ray cluster (``"auto"``, ``"HOST:PORT"``,
            ``"ray://HOST:PORT"``); ``None`` starts a local one. Trained agents are read here
            and sent to the workers as bytes, so their paths need not exist on the cluster.
        max_episode_steps: Episode length instead of the registered one.
        trust_pickle: Load trained agents saved as SB3 ``.zip`` files, which are unpickled (only
            for files from a source you trust; see :func:`~fl_gym.agents.load_agent`).

    Returns:
        The metrics, the episode records and the seeds.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    seed_list = parse_seeds(seeds)
    # Each agent's files are read once, here: the jobs load the agent from memory (on a Ray
    # cluster a path relative to this folder, or a file on this machine only, would not exist).
    agents: dict[str, AgentFiles] = {}
    for policy in dict.fromkeys(policies):
        path = _agent_path(policy)
        if path is not None:
            agents[policy] = AgentFiles.read(path, trust_pickle=trust_pickle)
    jobs: list[tuple[str, str, int]] = []
    for env_id in env_ids:
        for policy in _policies_for(env_id, policies, config, preset):
            if policy in agents and agents[policy].metadata.get("env_id") not in (None, env_id):
                continue  # an agent plays the environment it was trained on only
            jobs.extend((env_id, policy, seed) for seed in seed_list)
    if not jobs:
        raise ValueError(f"no (environment, policy) pair to run for {env_ids} x {policies}")
    if backend == "ray":
        outputs = _run_ray(jobs, (config, preset, max_episode_steps), agents, ray_address)
    else:
        outputs = _run_local(jobs, (config, preset, max_episode_steps), agents, progress)
    result = BenchmarkResult(seeds=seed_list)
    for (env_id, policy, _), (metrics, episodes) in zip(jobs, outputs, strict=True):
        result.metrics.extend(metrics)
        result.episodes.setdefault(env_id, {}).setdefault(policy, []).extend(episodes)
    return result


def _run_local(
    jobs: list[tuple[str, str, int]],
    options: tuple[Any, Any, Any],
    agents: dict[str, AgentFiles],
    progress: bool,
) -> list[tuple[list[EpisodeMetrics], list[EpisodeResult]]]:
    from fl_gym._console import make_progress

    outputs = []
    with make_progress(enabled=progress, unit="episodes") as bar:  # on stderr
        task = bar.add_task("benchmark", total=len(jobs))
        for env_id, policy, seed in jobs:
            bar.update(task, description=f"{env_id} {policy} seed {seed}")
            outputs.append(_job(env_id, policy, seed, *options, agents.get(policy)))
            bar.advance(task)
    return outputs


class RayConnectionError(ConnectionError):
    """Ray could not reach a cluster at the address given (none running, a wrong address)."""


def connect_ray(address: str | None = None, **init_kwargs: Any) -> bool:
    """Join the Ray cluster at ``address``, or start a local one, unless Ray is already up.

    Args:
        address: ``"auto"`` (the cluster ``ray start --head`` started on this machine),
            ``"HOST:PORT"``, ``"ray://HOST:PORT"`` (Ray Client), or ``None`` to start a local
            instance (or join the one ``RAY_ADDRESS`` names).
        **init_kwargs: Passed to ``ray.init`` (e.g. ``num_cpus`` for a local instance).

    Returns:
        ``True`` when this call initialised Ray (the caller shuts it down when done),
        ``False`` when Ray was already initialised.

    Raises:
        ImportError: If Ray is not installed.
        RayConnectionError: If no cluster answers at ``address``; the message names the
            address and Ray's reason in one line.
    """
    try:
        import ray
    except ImportError as exc:
        raise ImportError('the ray backend needs Ray: pip install "fl-gym[ray]"') from exc
    if ray.is_initialized():
        return False
    init_kwargs = {"include_dashboard": False, "log_to_driver": False, **init_kwargs}
    try:
        # Ray retries a closed GCS port for minutes; a refused TCP connection is known at once.
        _probe(address)
        ray.init(address=address, **init_kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or os.environ.get("RAY_ADDRESS") or "auto"
        reason = " ".join(str(exc).split()).rstrip(".") or type(exc).__name__
        raise RayConnectionError(
            f"could not connect to a Ray cluster at {where}: {reason}"
        ) from exc
    return True


def _probe(address: str | None, timeout_s: float = 5.0) -> None:
    """Raise ``ConnectionError`` if nothing listens at a ``HOST:PORT`` address."""
    if address is None or address in ("auto", "local") or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(
            f"an address looks like HOST:PORT, auto or ray://HOST:PORT; got {address!r}"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {host}:{port} ({exc})") from exc


def _run_ray(
    jobs: list[tuple[str, str, int]],
    options: tuple[Any, Any, Any],
    agents: dict[str, AgentFiles],
    address: str | None,
) -> list[tuple[list[EpisodeMetrics], list[EpisodeResult]]]:
    started = connect_ray(address)
    import ray

    try:
        # The agents' files go to the object store once; the workers load them from memory.
        refs_of = {policy: ray.put(files) for policy, files in agents.items()}
        remote_job = ray.remote(num_cpus=1)(_job)
        refs = [remote_job.remote(e, p, s, *options, refs_of.get(p)) for e, p, s in jobs]
        return list(ray.get(refs))
    finally:
        if started:
            ray.shutdown()


def _interval(values: Sequence[float], fmt: str) -> str:
    low, high = bootstrap_ci(values)
    return f"{fmt.format(float(np.mean(values)))} [{fmt.format(low)}, {fmt.format(high)}]"


def leaderboard_markdown(
    result: BenchmarkResult,
    *,
    title: str = "Leaderboard",
    note: str | None = None,
    plots: dict[str, str] | None = None,
) -> str:
    """A Markdown leaderboard per environment, policies ranked by mean return.

    Each cell is ``mean [95% bootstrap CI]``; IQM columns follow for the return and the final
    accuracy; ``to target`` counts the episodes that reached the target accuracy.

    Args:
        result: A benchmark result.
        title: Heading of the document.
        note: A paragraph under the heading (e.g. how the agents were trained).
        plots: ``{env_id: image path}`` shown under each environment's table, relative to
            where the Markdown will be read from (the link is written as given, with forward
            slashes).

    Returns:
        The Markdown text.
    """
    lines = [
        f"# {title}",
        "",
        f"Generated by `fl-gym bench` on {datetime.date.today()}; seeds "
        f"{_seed_text(result.seeds)} for every policy (common random numbers). Cells: mean "
        "[95% percentile-bootstrap CI of the mean]; IQM = interquartile mean.",
        "",
    ]
    if note:
        lines += [note, ""]
    by_env: dict[str, dict[str, list[EpisodeMetrics]]] = {}
    for m in result.metrics:
        by_env.setdefault(m.env_id, {}).setdefault(m.policy, []).append(m)
    for env_id, by_policy in by_env.items():
        ranked = sorted(
            by_policy.items(), key=lambda item: -float(np.mean([m.episode_return for m in item[1]]))
        )
        header = ["rank", "policy", *(label for _, label, _ in LEADERBOARD_METRICS)]
        header += ["IQM return", "IQM accuracy", "to target"]
        lines += [f"## {env_id}", "", "| " + " | ".join(header) + " |"]
        lines.append("| ---: | --- |" + " ---: |" * (len(header) - 2))
        for rank, (policy, rows) in enumerate(ranked, start=1):
            cells = [str(rank), f"`{policy}`"]
            for attr, _, fmt in LEADERBOARD_METRICS:
                cells.append(_interval([float(getattr(m, attr)) for m in rows], fmt))
            cells.append(f"{interquartile_mean([m.episode_return for m in rows]):.2f}")
            cells.append(f"{interquartile_mean([m.final_accuracy for m in rows]):.3f}")
            reached = sum(m.rounds_to_target is not None for m in rows)
            cells.append(f"{reached}/{len(rows)}")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines += _agent_standing(ranked)
        if plots and env_id in plots:
            alt = f"accuracy and cumulative energy per round on {env_id}"
            lines += [f"![{alt}]({_link_target(plots[env_id])})", ""]
    return "\n".join(lines)


def _link_target(path: str | Path) -> str:
    """A Markdown link target: forward slashes, in ``<...>`` when it has spaces or parentheses."""
    text = str(path).replace("\\", "/")
    return f"<{text}>" if any(c in text for c in " ()") else text


def _agent_standing(ranked: list[tuple[str, list[EpisodeMetrics]]]) -> list[str]:
    """Where each trained agent (``ALGO:PATH``) stands against the heuristics, by return CI."""
    from fl_gym.agents.training import ALGORITHMS

    intervals = {p: bootstrap_ci([m.episode_return for m in rows]) for p, rows in ranked}
    heuristics = [p for p, _ in ranked if p.partition(":")[0].lower() not in ALGORITHMS]
    lines = []
    for rank, (policy, _) in enumerate(ranked, start=1):
        if policy in heuristics:
            continue
        low, high = intervals[policy]
        below = [h for h in heuristics if intervals[h][1] < low]
        above = [h for h in heuristics if intervals[h][0] > high]
        overlap = [h for h in heuristics if h not in below and h not in above]
        text = f"`{policy}` ranks {rank} of {len(ranked)} by mean return. "
        text += (
            "Its 95% interval lies above those of " + ", ".join(f"`{h}`" for h in below) + "; "
            if below
            else "Its 95% interval lies above no heuristic's; "
        )
        text += (
            "it overlaps " + ", ".join(f"`{h}`" for h in overlap) + " (no clear difference)"
            if overlap
            else "it overlaps no heuristic"
        )
        text += "; it lies below " + ", ".join(f"`{h}`" for h in above) + "." if above else "."
        lines += [text, ""]
    return lines


def _seed_text(seeds: Sequence[int]) -> str:
    s = list(seeds)
    if s and s == list(range(s[0], s[0] + len(s))):
        return f"{s[0]}-{s[-1]}" if len(s) > 1 else str(s[0])
    return ", ".join(map(str, s))
