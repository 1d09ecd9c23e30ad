"""Headroom of a benchmark suite: random, every heuristic, MPC and the clairvoyant bound per task.

For every single-agent task of the suite (:mod:`fl_gym.benchmark`; the planners play no
multi-agent task) and every evaluation seed, plays uniformly
random actions, every heuristic that applies (:func:`fl_gym.baselines.baselines_for`), the
model-predictive planner and the clairvoyant planner (:mod:`fl_gym.baselines.planning`) with
:func:`fl_gym.agents.suite_bench.run_suite` (the episodes of ``fl-gym bench --suite``, without
agents), and writes a Markdown table: mean return (and its standard error) and the task's metric
per controller, the headroom (clairvoyant bound minus the best heuristic) and each controller's
normalised score ``(return - random) / (bound - random)``. The clairvoyant planner is never
below the controllers it simulates on a seed (it keeps the best sequence it has simulated), so
the bound is a lower estimate of what any controller could reach; ``run_suite`` checks it.

Run: ``python benchmarks/headroom.py [--suite FLW-7-v0] [--seeds 100-102] [--tasks NAME ...]
[--out benchmarks/headroom.md]``. Costs: the clairvoyant planner simulates every base heuristic
to the end of the episode at every round (rounds x bases x remaining rounds); keep episodes
short with ``--max-steps``. ``fl-gym bench --suite`` plays the same episodes (and the shipped
agents) and reports them with rliable's interval estimates.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import fl_gym  # noqa: E402, F401
from fl_gym.agents.evaluation import parse_seeds  # noqa: E402
from fl_gym.agents.suite_bench import EpisodeRow, has_planners, run_suite  # noqa: E402
from fl_gym.benchmark import Task, get_suite  # noqa: E402


def run_task(task: Task, seeds: list[int], max_steps: int | None) -> dict[str, dict[str, list]]:
    """Every controller's returns, metrics and CPU seconds on ``task`` (checked against the
    bound by :func:`fl_gym.agents.suite_bench.run_suite`)."""
    if max_steps is not None:
        task = dataclasses.replace(task, max_episode_steps=max_steps)
    rows: list[EpisodeRow] = run_suite([task], seeds)
    table: dict[str, dict[str, list]] = {}
    for r in rows:
        row = table.setdefault(r.controller, {"return": [], "metric": [], "cpu_s": []})
        row["return"].append(r.episode_return)
        row["metric"].append(r.metric)
        row["cpu_s"].append(r.cpu_s)
    return table


def format_task(task: Task, table: dict[str, dict[str, list]]) -> list[str]:
    mean = {name: float(np.mean(row["return"])) for name, row in table.items()}
    heuristics = [n for n in table if n not in ("random-actions", "mpc", "clairvoyant")]
    best = max(heuristics, key=lambda n: mean[n])
    low, bound = mean["random-actions"], mean["clairvoyant"]
    span = bound - low
    lines = [
        f"### {task.name} (`{task.env_id}`, {task.metric})",
        "",
        f"{task.description} Headroom (bound - best heuristic, {best}): "
        f"{bound - mean[best]:.3f} ({(bound - mean[best]) / span:.0%} of bound - random)."
        if span > 0
        else f"{task.description} The bound does not exceed random play here.",
        "",
        "| controller | return (mean +- s.e.) | normalised | "
        f"{task.metric} (mean over seeds that reached it) | CPU s / episode |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, row in sorted(table.items(), key=lambda kv: -mean[kv[0]]):
        returns = np.asarray(row["return"])
        sem = returns.std(ddof=1) / np.sqrt(len(returns)) if len(returns) > 1 else 0.0
        values = np.asarray(row["metric"], dtype=float)
        reached = values[~np.isnan(values)]
        shown = f"{reached.mean():.3g} ({reached.size}/{values.size})" if reached.size else "-"
        score = (mean[name] - low) / span if span > 0 else float("nan")
        lines.append(
            f"| {name} | {mean[name]:.3f} +- {sem:.3f} | {score:.2f} | {shown} | "
            f"{np.mean(row['cpu_s']):.1f} |"
        )
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="FLW-7-v0")
    parser.add_argument("--seeds", default="100-102", help="evaluation seeds, e.g. 100-102")
    parser.add_argument("--tasks", nargs="*", default=None)
    parser.add_argument("--max-steps", type=int, default=None, help="shorter episodes")
    parser.add_argument("--out", default="benchmarks/headroom.md")
    args = parser.parse_args()
    seeds = parse_seeds(args.seeds)
    tasks = [
        t
        for t in get_suite(args.suite)
        if has_planners(t) and (args.tasks is None or t.name in args.tasks)
    ]
    header = [
        f"# Headroom of `{args.suite}`",
        "",
        f"Made by `python benchmarks/headroom.py --suite {args.suite} --seeds {args.seeds}"
        + (f" --max-steps {args.max_steps}" if args.max_steps else "")
        + f"` on {time.strftime('%Y-%m-%d')} ({platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; re-make it by running that command again); "
        f"evaluation seeds {seeds}. Returns are the tasks' "
        "own rewards; `normalised` is (return - random actions) / (clairvoyant - random "
        "actions). MPC: horizon 3, one fresh scenario, one random candidate per round; "
        "clairvoyant: fortified rollout over the same base heuristics and one random candidate, "
        "seeded with every other controller's whole episode (so no row is above it on a seed; "
        "the script checks).",
        "",
    ]
    body: list[str] = []
    for task in tasks:
        start = time.time()
        body += format_task(task, run_task(task, seeds, args.max_steps))
        print(f"{task.name}: {time.time() - start:.0f} s", flush=True)
        with open(args.out, "w") as f:
            f.write("\n".join(header + body))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
