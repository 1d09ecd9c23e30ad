"""The wireless FL commands: ``fl-gym run`` on an FL env, ``fl-gym demo``, ``fl-gym fedavg``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from fl_gym.cli.common import parse_overrides

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["DEMO_AGENT", "run_demo", "run_episodes", "run_fedavg"]

DEMO_AGENT = "ppo:models/ClientSelection-v0_ppo"
"""The shipped agent that ``fl-gym demo`` plays beside the baselines (path from the repository)."""


def _play(
    env_id: str, policy_names: Sequence[str], args: argparse.Namespace
) -> dict[str, list[Any]]:
    """Every policy on the same seeds (common random numbers), with a progress bar.

    A name is a baseline or ``ALGO:PATH`` of a trained agent.
    """
    import gymnasium as gym

    from fl_gym._console import make_progress, progress_enabled
    from fl_gym.baselines import make_policy
    from fl_gym.envs.rollout import rollout

    overrides = parse_overrides(args.config)
    env = gym.make(env_id, config=overrides or None, preset=args.preset)
    results: dict[str, list[Any]] = {}
    seeds = [args.seed + i for i in range(args.episodes)]
    with make_progress(enabled=progress_enabled(args.no_progress), unit="episodes") as progress:
        task = progress.add_task("episodes", total=len(policy_names) * len(seeds))
        for name in policy_names:
            if ":" in name:
                from fl_gym.agents import resolve_policy

                policy = resolve_policy(
                    name, env, trust_pickle=getattr(args, "trust_pickle", False)
                )
            else:
                policy = make_policy(name, env)
            results[name] = []
            for seed in seeds:
                progress.update(task, description=f"{name} (seed {seed})")
                results[name].append(rollout(env, policy, seed=seed))
                progress.advance(task)
    env.close()
    return results


def _summary_table(results: dict[str, list[Any]], title: str) -> Table:
    from rich.table import Table

    table = Table(title=title)
    columns = ("policy", "final acc.", "rounds", "energy J", "time s", "return", "± std")
    for column in columns:
        table.add_column(column, justify="left" if column == "policy" else "right", no_wrap=True)
    for name, episodes in results.items():
        returns = [e.episode_return for e in episodes]
        table.add_row(
            name,
            f"{np.mean([e.final_accuracy for e in episodes]):.3f}",
            f"{np.mean([e.rounds for e in episodes]):.1f}",
            f"{np.mean([e.total_energy_j for e in episodes]):.3f}",
            f"{np.mean([e.total_time_s for e in episodes]):.2f}",
            f"{np.mean(returns):.2f}",
            f"{np.std(returns):.2f}",
        )
    return table


def run_episodes(args: argparse.Namespace, env_id: str, policies: Sequence[str]) -> int:
    from fl_gym._console import make_console

    console = make_console()
    results = _play(env_id, policies, args)
    n = args.episodes
    console.print(
        _summary_table(results, f"{env_id}: means over {n} episode(s) from seed {args.seed}")
    )
    if args.save_plot:
        from fl_gym.envs.plotting import plot_episodes

        seeds = f"seed {args.seed}" if n == 1 else f"seeds {args.seed}-{args.seed + n - 1}"
        path = plot_episodes(results, args.save_plot, title=f"{env_id}, {seeds}")
        console.print(f"plot written to {path}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    import gymnasium as gym

    from fl_gym.baselines import baselines_for

    env = gym.make(args.env)
    names = baselines_for(env)
    env.close()
    agents = args.agents if args.agents is not None else _default_demo_agents(args.env)
    return run_episodes(args, args.env, [*names, *agents])


def _default_demo_agents(env_id: str) -> list[str]:
    """The shipped agent when it is there (a source checkout) and plays ``env_id``."""
    import json
    from pathlib import Path

    stem = Path(DEMO_AGENT.partition(":")[2])
    meta = stem.with_suffix(".json")
    if not (meta.is_file() and stem.with_suffix(".pt").is_file()):
        print(
            f"fl-gym demo: {DEMO_AGENT} not found from {Path.cwd()}; playing the baselines only",
            file=sys.stderr,
        )
        return []
    if json.loads(meta.read_text()).get("env_id") != env_id:
        return []
    return [DEMO_AGENT]


def run_fedavg(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from fl_gym._console import make_console
    from fl_gym.sim import Federation, FederationConfig, make_federated_dataset

    # The bar shares this console with the round lines (rich keeps it below them); on a pipe
    # rich draws no bar at all.
    console = make_console()
    rng = np.random.default_rng(args.seed)
    kwargs = {"alpha": args.alpha} if args.partition == "dirichlet" else {}
    data = make_federated_dataset(
        "digits", args.clients, partition=args.partition, rng=rng, **kwargs
    )
    config = FederationConfig(
        aggregator=args.aggregator,
        compression_levels=tuple(dict.fromkeys(("none", args.compression))),
    )
    fed = Federation(data, config, rng=rng)
    level = config.compression_levels.index(args.compression)
    console.print(
        f"[bold]FedAvg on digits[/bold]: {args.clients} clients ({args.partition}), "
        f"{fed.model!r}, local steps {args.local_steps}, compression {args.compression!r}, "
        f"aggregator {args.aggregator!r}"
    )
    console.print(f"round  0: accuracy {fed.accuracy:.3f}  loss {fed.loss:.3f} (initial model)")
    history = []
    bits = 0
    start = time.perf_counter()
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("training", total=args.rounds)
        for _ in range(args.rounds):
            plan = fed.plan(selected="all", local_steps=args.local_steps, compression=level)
            report = fed.run_round(plan, rng)
            history.append(report)
            bits += int(report.bits_up.sum())
            console.print(
                f"round {report.round_index + 1:2d}: accuracy {report.accuracy:.3f}  "
                f"loss {report.loss:.3f}  uploaded {report.bits_up.sum() / 8e3:8.1f} kB"
            )
            progress.update(task, advance=1, description=f"accuracy {report.accuracy:.3f}")
    elapsed = time.perf_counter() - start

    table = Table(title="Summary")
    table.add_column("metric")
    table.add_column("value", justify="right")
    accuracies = np.array([r.accuracy for r in history])
    table.add_row("final test accuracy", f"{accuracies[-1]:.3f}")
    table.add_row("best test accuracy", f"{accuracies.max():.3f}")
    reached = np.flatnonzero(accuracies >= 0.9)
    table.add_row("rounds to 0.90", str(int(reached[0]) + 1) if reached.size else "not reached")
    table.add_row("total uploaded", f"{bits / 8e6:.2f} MB")
    table.add_row("wall time", f"{elapsed:.2f} s ({elapsed / args.rounds * 1e3:.1f} ms/round)")
    console.print(table)
    return 0
