"""The RL agent commands: ``fl-gym train``, ``fl-gym eval``, ``fl-gym bench``."""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from fl_gym.cli.common import parse_overrides

__all__ = [
    "add_trust_pickle_argument",
    "run_bench",
    "run_eval",
    "run_suite_bench",
    "run_train",
]


def add_trust_pickle_argument(parser: argparse.ArgumentParser) -> None:
    """``--trust-pickle``: the opt-in to load agents saved as SB3 ``.zip`` files."""
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="also load ALGO:PATH agents saved as Stable-Baselines3 .zip files; loading one "
        "unpickles it, which can run any code its author put in it (only for files you trust; "
        "fl-gym train saves .pt weights + .json, which load without this flag)",
    )


def run_train(args: argparse.Namespace) -> int:
    from fl_gym._console import make_console
    from fl_gym.agents import train

    console = make_console()
    save = args.save or f"out/models/{args.env.split('/')[-1]}_{args.algo.lower()}"
    policy_kwargs = (
        {"features_extractor_kwargs": {"pooling": args.pooling}} if args.pooling else None
    )
    start = time.perf_counter()
    agent = train(
        args.env,
        args.algo,
        args.timesteps,
        seed=args.seed,
        n_envs=args.n_envs,
        config=parse_overrides(args.config) or None,
        preset=args.preset,
        policy=args.policy,
        policy_kwargs=policy_kwargs,
        algo_kwargs=parse_overrides(args.algo_kwargs) or None,
        save_path=save,
        progress_bar=not args.no_progress,
        tensorboard_log=args.tensorboard,
        vectorization=args.vec,
        num_threads=args.threads,
    )
    elapsed = time.perf_counter() - start
    console.print(
        f"trained {args.algo} ({agent.metadata['policy']}) on {args.env} for "
        f"{agent.metadata['total_timesteps']:,} steps in {elapsed:.0f} s; saved to "
        f"{agent.path}.pt (+ .json metadata and spec)\n"
        f"evaluate it with: fl-gym eval {args.env} --policy {args.algo.lower()}:{agent.path}"
    )
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from rich.table import Table

    from fl_gym._console import make_console, make_progress, progress_enabled
    from fl_gym.agents import evaluate, parse_seeds

    seeds = parse_seeds(args.seeds)
    config = parse_overrides(args.config) or None
    metrics = []
    # One evaluate() per seed gives the numbers of one call over all seeds (an episode
    # depends on its seed only) and a step for the bar.
    with make_progress(enabled=progress_enabled(args.no_progress), unit="episodes") as progress:
        task = progress.add_task(args.policy, total=len(seeds))
        for seed in seeds:
            progress.update(task, description=f"{args.policy} (seed {seed})")
            metrics += evaluate(
                args.policy,
                args.env,
                [seed],
                config=config,
                preset=args.preset,
                max_episode_steps=args.max_episode_steps,
                trust_pickle=args.trust_pickle,
            )
            progress.advance(task)
    table = Table(title=f"{args.policy} on {args.env}")
    for column in ("seed", "final acc.", "rounds", "to target", "energy J", "time s", "return"):
        table.add_column(column, justify="right")
    for m in metrics:
        table.add_row(
            str(m.seed),
            f"{m.final_accuracy:.3f}",
            str(m.rounds),
            "-" if m.rounds_to_target is None else str(m.rounds_to_target),
            f"{m.energy_j:.3f}",
            f"{m.time_s:.2f}",
            f"{m.episode_return:.2f}",
        )
    returns = [m.episode_return for m in metrics]
    table.add_section()
    table.add_row(
        "mean",
        f"{np.mean([m.final_accuracy for m in metrics]):.3f}",
        f"{np.mean([m.rounds for m in metrics]):.1f}",
        f"{sum(m.rounds_to_target is not None for m in metrics)}/{len(metrics)}",
        f"{np.mean([m.energy_j for m in metrics]):.3f}",
        f"{np.mean([m.time_s for m in metrics]):.2f}",
        f"{np.mean(returns):.2f}",
    )
    make_console().print(table)
    return 0


def run_bench(args: argparse.Namespace) -> int:
    """Run the benchmark; the leaderboard goes to its file and, as plain Markdown, to stdout.

    Image links are relative to where each copy lives: the file's to the file's folder, the
    printed copy's to the current directory (so ``fl-gym bench > board.md`` links right). The
    status line goes to stderr, so that stdout is the document alone.
    """
    from pathlib import Path

    from fl_gym._console import progress_enabled
    from fl_gym.agents import leaderboard_markdown, run_benchmark
    from fl_gym.agents.bench import RayConnectionError

    if args.suite is not None or args.from_results is not None:
        return run_suite_bench(args)
    try:
        result = run_benchmark(
            args.envs,
            args.policies,
            "0-9" if args.seeds is None else args.seeds,
            config=parse_overrides(args.config) or None,
            preset=args.preset,
            backend=args.backend,
            progress=progress_enabled(args.no_progress),
            ray_address=args.ray_address,
            max_episode_steps=args.max_episode_steps,
            trust_pickle=args.trust_pickle,
        )
    except RayConnectionError as exc:
        hint = "start one with ray start --head or omit --ray-address"
        print(f"fl-gym: error: {exc}; {hint}", file=sys.stderr)
        return 2
    except ImportError as exc:
        if args.backend != "ray":
            raise
        print(f"fl-gym: error: {exc}", file=sys.stderr)  # Ray is not installed
        return 2
    out = Path(args.out)
    csv_path = result.write_csv(out / "results.csv")
    plots = result.write_plots(out)
    md_path = Path(args.markdown) if args.markdown else out / "leaderboard.md"
    md_path.parent.mkdir(parents=True, exist_ok=True)
    relative = {env_id: os.path.relpath(path, md_path.parent) for env_id, path in plots.items()}
    markdown = leaderboard_markdown(result, title=args.title, note=args.note, plots=relative)
    md_path.write_text(markdown)
    # Printed as is: rich would read [text] as markup (eating the image line's alt text) and
    # wrap the table rows.
    from_here = {env_id: os.path.relpath(path) for env_id, path in plots.items()}
    printed = leaderboard_markdown(result, title=args.title, note=args.note, plots=from_here)
    sys.stdout.write(printed if printed.endswith("\n") else printed + "\n")
    sys.stdout.flush()
    print(f"wrote {csv_path}, {md_path} and {len(plots)} plot(s) in {out}/", file=sys.stderr)
    return 0


def _machine() -> str:
    """The machine in words, CPU model first: episodes replay bit for bit only on the same CPU
    model and builds (another one's vector units round the batched products differently)."""
    import platform

    import torch

    from fl_gym._platform import cpu_model

    return (
        f"{cpu_model()}, {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, torch {torch.__version__}"
    )


def _suite_command(args: argparse.Namespace, seeds: str) -> str:
    """The command line that plays these episodes, written in the leaderboard's header."""
    parts = ["fl-gym bench", f"--suite {args.suite}"]
    if args.tasks:
        parts.append("--tasks " + " ".join(args.tasks))
    parts.append(f"--seeds {seeds}")
    if args.agents:
        parts.append(f"--agents {args.agents}")
    if args.jobs > 1:
        parts.append(f"--jobs {args.jobs}")
    return " ".join(parts)


def run_suite_bench(args: argparse.Namespace) -> int:
    """``fl-gym bench --suite NAME`` / ``--from-results CSV``: the suite leaderboard.

    Plays every controller of the suite's tasks (or reads the rows of an earlier run), writes
    the rows (CSV, with the run's description beside it as JSON), the Markdown leaderboard and
    its plot, and prints the leaderboard.
    """
    import datetime
    from pathlib import Path

    from fl_gym._console import progress_enabled
    from fl_gym.agents.suite_report import (
        RunInfo,
        agent_budgets,
        require_rliable,
        suite_markdown,
    )

    try:
        require_rliable()
    except ImportError as exc:
        print(f"fl-gym: error: {exc}", file=sys.stderr)
        return 2
    from fl_gym.agents.evaluation import parse_seeds
    from fl_gym.agents.suite_bench import (
        BoundViolation,
        check_bound,
        find_agents,
        read_rows,
        run_suite,
        write_rows,
    )
    from fl_gym.benchmark import get_suite

    out = Path(args.out)
    md_path = Path(args.markdown) if args.markdown else out / "leaderboard.md"
    if args.from_results is not None:
        if args.suite is not None:
            raise ValueError("give either --suite (play the episodes) or --from-results, not both")
        results = Path(args.from_results)
        rows = read_rows(results)
        meta = results.with_suffix(".json")
        if meta.is_file():
            info = RunInfo.read(meta)
        else:
            seeds = sorted({r.eval_seed for r in rows})
            info = RunInfo(f"(rows of {results})", "unknown date", "unknown machine", "?", seeds)
    else:
        tasks = get_suite(args.suite)
        if args.tasks:
            names = [t.name for t in tasks]
            unknown = [n for n in args.tasks if n not in names]
            if unknown:
                raise ValueError(f"unknown task(s) {unknown} of {args.suite}; allowed: {names}")
            tasks = tuple(t for t in tasks if t.name in args.tasks)
        seed_text = "100-104" if args.seeds is None else args.seeds
        seeds = parse_seeds(seed_text)
        agents = find_agents(args.agents, tasks) if args.agents else {}
        rows = run_suite(
            tasks,
            seeds,
            agents=agents,
            jobs=args.jobs,
            progress=progress_enabled(args.no_progress),
            check=False,  # the rows are written first, so that a violation can be looked at
        )
        info = RunInfo(
            command=_suite_command(args, seed_text),
            date=datetime.date.today().isoformat(),
            machine=_machine(),
            suite=args.suite,
            seeds=seeds,
            tasks=[
                {
                    "name": t.name,
                    "env_id": t.env_id,
                    "metric": t.metric,
                    "description": t.description,
                    "max_episode_steps": t.max_episode_steps,
                    "config": dict(t.config),
                }
                for t in tasks
            ],
            agents=args.agents,
            budgets=agent_budgets(agents),
        )
        results = Path(args.results) if args.results else out / "results.csv"
        write_rows(rows, results)
        info.write(results.with_suffix(".json"))
        try:
            check_bound(rows)
        except BoundViolation as exc:
            print(f"fl-gym: error: {exc} (every episode is in {results})", file=sys.stderr)
            return 1
        # The page is made from the files, as --from-results makes it.
        rows, info = read_rows(results), RunInfo.read(results.with_suffix(".json"))
    markdown = suite_markdown(
        rows, info, out_dir=out, markdown_path=md_path, results_path=results, reps=args.reps
    )
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(markdown if markdown.endswith("\n") else markdown + "\n")
    sys.stdout.write(markdown if markdown.endswith("\n") else markdown + "\n")
    sys.stdout.flush()
    made = f"from {results}" if args.from_results is not None else f"and {results}"
    print(f"wrote {md_path} {made}; the plot in {out}/", file=sys.stderr)
    return 0
