"""The ``fl-gym`` command line.

* ``fl-gym list``: the environment ids and the scenario presets.
* ``fl-gym run ENV --policy NAME``: play episodes with a baseline, print a summary table.
* ``fl-gym demo``: the selection baselines and the shipped PPO agent, table and plot.
* ``fl-gym fedavg``: FedAvg on digits round by round, with no RL and no wireless model.
* ``fl-gym train ENV --algo ppo --timesteps N``: train an SB3 agent, save it with its metadata.
* ``fl-gym eval ENV --policy NAME|ppo:PATH``: per-episode metrics of a baseline or agent.
* ``fl-gym bench --envs ... --policies ... --seeds 0-9``: CSV, Markdown leaderboard, plots.
* ``fl-gym uav --controller NAME [--gif PATH]``: a UAV swarm episode, its costs, and a GIF.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["DEMO_AGENT", "main"]

DEMO_AGENT = "ppo:models/ClientSelection-v0_ppo"
"""The shipped agent that ``fl-gym demo`` plays beside the baselines (path from the repository)."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fl-gym",
        description="Federated learning over wireless networks as RL control problems.",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        help="torch intra-op threads of the command's own work, e.g. an RL algorithm's updates "
        "(default 1; the environments' rounds run on their own num_threads=1)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser(
        "list",
        help="every environment (Gymnasium and PettingZoo) with its controls, spaces, presets "
        "and policies; with NAME also its config keys",
    )
    listing.add_argument(
        "name", nargs="?", default=None, help="an environment id or module, e.g. uav_swarm_v0"
    )
    listing.add_argument("--json", action="store_true", help="print the catalogue as JSON")

    run = sub.add_parser("run", help="play episodes of an environment with a baseline policy")
    run.add_argument("env", help="environment id, e.g. fl_gym/ClientSelection-v0")
    run.add_argument("--policy", required=True, help="baseline name (see fl-gym list)")
    _add_episode_arguments(run)

    demo = sub.add_parser("demo", help="compare the selection baselines and the shipped PPO agent")
    _add_episode_arguments(demo, episodes=3, plot="out/demo.png")
    demo.add_argument("--env", default="fl_gym/ClientSelection-v0")
    demo.add_argument(
        "--agents",
        nargs="*",
        default=None,
        metavar="ALGO:PATH",
        help=f"trained agents to play beside the baselines (default {DEMO_AGENT} when it "
        "exists and was trained on --env; none with a bare --agents)",
    )

    fedavg = sub.add_parser(
        "fedavg", help="FedAvg on the bundled digits data, round by round, no RL involved"
    )
    fedavg.add_argument("--rounds", type=_positive_int, default=30)
    fedavg.add_argument("--clients", type=_positive_int, default=10)
    fedavg.add_argument(
        "--partition", choices=("iid", "dirichlet", "shards", "quantity"), default="iid"
    )
    fedavg.add_argument(
        "--alpha", type=float, default=0.1, help="Dirichlet concentration (non-IID split)"
    )
    fedavg.add_argument("--local-steps", type=_positive_int, default=5)
    fedavg.add_argument(
        "--compression",
        default="none",
        help="operator spec for every client, e.g. none, topk:0.1, qsgd:16, sign, dgc:0.01",
    )
    fedavg.add_argument("--aggregator", default="fedavg")
    fedavg.add_argument("--seed", type=int, default=0)

    train = sub.add_parser("train", help="train a Stable-Baselines3 agent on an environment")
    train.add_argument(
        "env",
        help="environment id (e.g. fl_gym/ClientSelection-v0) or a multi-agent env "
        "(vehicular_v0, uav_swarm_v0: one policy shared by all agents)",
    )
    train.add_argument("--algo", default="ppo", help="ppo, a2c, sac, td3 or dqn")
    train.add_argument("--timesteps", type=_positive_int, default=50_000)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--n-envs", type=_positive_int, default=1)
    train.add_argument(
        "--vec",
        default="dummy",
        choices=["dummy", "subproc", "native"],
        help="how the n envs run: SB3 DummyVecEnv, SubprocVecEnv, or fl_gym's batched one",
    )
    train.add_argument(
        "--policy",
        default=None,
        help="device-set (default for the FL envs) or mlp (flattened input; multi-agent envs)",
    )
    train.add_argument("--pooling", default=None, help="device-set pooling: attention|deepsets")
    train.add_argument(
        "--algo-kwargs",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="SB3 algorithm arguments, e.g. n_steps=256 learning_rate=3e-4",
    )
    train.add_argument("--save", default=None, metavar="PATH", help="default out/models/ENV_ALGO")
    train.add_argument("--tensorboard", default=None, metavar="DIR", help="TensorBoard log dir")
    train.add_argument("--preset", default=None, help="scenario preset (see fl-gym list)")
    train.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    evaluate = sub.add_parser("eval", help="evaluate a baseline or a trained agent")
    evaluate.add_argument("env", help="environment id")
    evaluate.add_argument("--policy", required=True, help="baseline name or ALGO:PATH")
    evaluate.add_argument("--seeds", default="0-9", help="e.g. 0-9 or 0,3,7 (default 0-9)")
    evaluate.add_argument("--preset", default=None)
    evaluate.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE")
    evaluate.add_argument("--max-episode-steps", type=_positive_int, default=None)
    _add_progress_argument(evaluate)

    bench = sub.add_parser(
        "bench", help="every policy on every env and seed: CSV, leaderboard, plots"
    )
    bench.add_argument("--envs", nargs="+", default=["fl_gym/ClientSelection-v0"])
    bench.add_argument(
        "--policies",
        nargs="+",
        default=["baselines"],
        help="baseline names, ALGO:PATH agents, or 'baselines' for all that apply",
    )
    bench.add_argument("--seeds", default="0-9")
    bench.add_argument("--preset", default=None)
    bench.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE")
    bench.add_argument("--backend", default="local", choices=["local", "ray"])
    bench.add_argument("--ray-address", default=None, help="running Ray cluster (default: local)")
    bench.add_argument("--out", default="out/bench", help="directory for CSV, Markdown, PNGs")
    bench.add_argument("--title", default="Leaderboard")
    bench.add_argument("--note", default=None, help="paragraph under the title")
    bench.add_argument(
        "--markdown", default=None, metavar="PATH", help="leaderboard path (OUT/leaderboard.md)"
    )
    bench.add_argument("--max-episode-steps", type=_positive_int, default=None)
    _add_progress_argument(bench)

    uav = sub.add_parser("uav", help="fly a UAV swarm with a controller; metrics and a GIF")
    uav.add_argument(
        "--controller", default="straight-line", help="a UAV policy (see fl-gym list uav_swarm_v0)"
    )
    uav.add_argument("--preset", default=None, help="default, swarm-1k or swarm-10k")
    uav.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE")
    uav.add_argument("--seed", type=int, default=0)
    uav.add_argument("--gif", default=None, metavar="PATH", help="write the episode as a GIF")
    uav.add_argument(
        "--training",
        default=None,
        choices=["lookahead", "pde"],
        help="mean-field controllers: how their networks learn (default lookahead)",
    )
    _add_progress_argument(uav)
    return parser


def _add_progress_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="hide the progress bar (it goes to stderr, and only when stderr is a terminal)",
    )


def _add_episode_arguments(
    parser: argparse.ArgumentParser, *, episodes: int = 1, plot: str | None = None
) -> None:
    parser.add_argument("--episodes", type=_positive_int, default=episodes)
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    parser.add_argument("--preset", default=None, help="scenario preset (see fl-gym list)")
    parser.add_argument(
        "--config",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides, e.g. deadline_s=0.5 partition=dirichlet",
    )
    parser.add_argument("--save-plot", default=plot, metavar="PATH", help="write a PNG plot")
    _add_progress_argument(parser)


def _parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--config expects KEY=VALUE, got {item!r}")
        try:
            overrides[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            overrides[key] = text  # a bare word such as dirichlet is a string
    return overrides


def _run_list(args: argparse.Namespace) -> int:
    import json

    from rich.table import Table

    from fl_gym import catalogue
    from fl_gym._catalogue import preset_summary
    from fl_gym._console import make_console

    entries = catalogue()
    if args.name is not None:
        wanted = args.name.removeprefix("fl_gym.envs.")
        chosen = [e for e in entries if wanted in (e.name, e.name.removeprefix("fl_gym.envs."))]
        if not chosen:
            names = [e.name for e in entries]
            raise ValueError(f"unknown environment {args.name!r}; allowed: {names}")
        entries = tuple(chosen)
    if args.json:
        print(json.dumps([_entry_json(e) for e in entries], indent=2, default=repr))
        return 0
    console = make_console()
    overview = Table(title="Environments (after import fl_gym; fl-gym list NAME: config keys)")
    for column in ("environment", "api", "controls", "action space", "observation space"):
        overview.add_column(column, overflow="fold")
    for e in entries:
        agents = f" ({e.agents}, per agent)" if e.agents else ""
        overview.add_row(
            e.name, e.api + agents, ", ".join(e.controls), e.action_space, e.observation_space
        )
    console.print(overview)
    families: dict[str, list[Any]] = {}
    for e in entries:
        families.setdefault(e.family, []).append(e)
    presets = Table(title="Scenario presets (preset=NAME, --preset NAME)")
    for column in ("preset", "environments", "overrides of the defaults"):
        presets.add_column(column, overflow="fold")
    for family, members in families.items():
        where = (
            f"{family} ({len(members)})" if len(members) > 2 else ", ".join(e.name for e in members)
        )
        for name, overrides in members[0].presets.items():
            presets.add_row(name, where, preset_summary(overrides))
    console.print(presets)
    policies = Table(title="Heuristic policies (--policy NAME, --controller NAME for the UAVs)")
    policies.add_column("environment")
    policies.add_column("policies", overflow="fold")
    for e in entries:
        policies.add_row(e.name, ", ".join(e.policies))
    console.print(policies)
    if args.name is not None:
        for e in entries:
            keys = Table(title=f"{e.name}: config keys (config={{KEY: VALUE}}, --config KEY=VALUE)")
            for column in ("key", "default", "unit", "meaning"):
                keys.add_column(column, overflow="fold")
            for key in e.config_keys:
                keys.add_row(key.name, repr(key.default), key.unit or "", key.doc)
            console.print(keys)
            console.print(f"build it with: {e.make}")
    return 0


def _entry_json(entry: Any) -> dict[str, Any]:
    import dataclasses

    out = dataclasses.asdict(entry)
    out["config_keys"] = [dataclasses.asdict(k) for k in entry.config_keys]
    return out


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

    overrides = _parse_overrides(args.config)
    env = gym.make(env_id, config=overrides or None, preset=args.preset)
    results: dict[str, list[Any]] = {}
    seeds = [args.seed + i for i in range(args.episodes)]
    with make_progress(enabled=progress_enabled(args.no_progress), unit="episodes") as progress:
        task = progress.add_task("episodes", total=len(policy_names) * len(seeds))
        for name in policy_names:
            if ":" in name:
                from fl_gym.agents import resolve_policy

                policy = resolve_policy(name, env)
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


def _run_episodes(args: argparse.Namespace, env_id: str, policies: Sequence[str]) -> int:
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


def _run_vehicular(args: argparse.Namespace) -> int:
    """Episodes of a vehicular environment (Gymnasium or PettingZoo) with a vehicular policy."""
    from rich.table import Table

    from fl_gym._console import make_console, make_progress, progress_enabled
    from fl_gym.baselines import make_policy
    from fl_gym.envs.rollout import rollout

    env = _make_env(args.env, _parse_overrides(args.config) or None, args.preset)
    policy = make_policy(args.policy, env)
    table = Table(title=f"{args.policy} on {args.env}")
    for column in ("seed", "slots", "mean power mW", "queues > q0", "values exchanged", "return"):
        table.add_column(column, justify="right")
    with make_progress(enabled=progress_enabled(args.no_progress), unit="episodes") as progress:
        task = progress.add_task(args.policy, total=args.episodes)
        for seed in range(args.seed, args.seed + args.episodes):
            progress.update(task, description=f"{args.policy} (seed {seed})")
            episode = rollout(env, policy, seed=seed)
            table.add_row(
                str(seed),
                str(episode.slots),
                f"{1e3 * np.mean(episode.mean_power_w):.3f}",
                f"{np.mean(episode.share_above_q0):.2%}",
                str(episode.values_exchanged),
                f"{episode.episode_return:.2f}",
            )
            progress.advance(task)
    env.close()
    make_console().print(table)
    return 0


def _make_env(name: str, config: dict[str, Any] | None, preset: str | None) -> Any:
    """A Gymnasium environment by id or a PettingZoo parallel environment by module name."""
    import importlib

    import gymnasium as gym

    module = name.removeprefix("fl_gym.envs.")
    if "/" not in module:
        from fl_gym.envs.rollout import family_of_id

        family_of_id(module)  # an unknown name is an error that lists the allowed ones
        return importlib.import_module(f"fl_gym.envs.{module}").parallel_env(
            config=config, preset=preset
        )
    return gym.make(name, config=config, preset=preset)


def _run_demo(args: argparse.Namespace) -> int:
    import gymnasium as gym

    from fl_gym.baselines import baselines_for

    env = gym.make(args.env)
    names = baselines_for(env)
    env.close()
    agents = args.agents if args.agents is not None else _default_demo_agents(args.env)
    return _run_episodes(args, args.env, [*names, *agents])


def _default_demo_agents(env_id: str) -> list[str]:
    """The shipped agent when it is there (a source checkout) and plays ``env_id``."""
    import json
    from pathlib import Path

    stem = Path(DEMO_AGENT.partition(":")[2])
    meta = stem.with_suffix(".json")
    if not (meta.is_file() and stem.with_suffix(".zip").is_file()):
        print(
            f"fl-gym demo: {DEMO_AGENT} not found from {Path.cwd()}; playing the baselines only",
            file=sys.stderr,
        )
        return []
    if json.loads(meta.read_text()).get("env_id") != env_id:
        return []
    return [DEMO_AGENT]


def _run_fedavg(args: argparse.Namespace) -> int:
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


def _run_train(args: argparse.Namespace) -> int:
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
        config=_parse_overrides(args.config) or None,
        preset=args.preset,
        policy=args.policy,
        policy_kwargs=policy_kwargs,
        algo_kwargs=_parse_overrides(args.algo_kwargs) or None,
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
        f"{agent.path}.zip (+ .json metadata)\n"
        f"evaluate it with: fl-gym eval {args.env} --policy {args.algo.lower()}:{agent.path}"
    )
    return 0


def _run_eval(args: argparse.Namespace) -> int:
    from rich.table import Table

    from fl_gym._console import make_console, make_progress, progress_enabled
    from fl_gym.agents import evaluate, parse_seeds

    seeds = parse_seeds(args.seeds)
    config = _parse_overrides(args.config) or None
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


def _run_bench(args: argparse.Namespace) -> int:
    """Run the benchmark; the leaderboard goes to its file and, as plain Markdown, to stdout.

    Image links are relative to where each copy lives: the file's to the file's folder, the
    printed copy's to the current directory (so ``fl-gym bench > board.md`` links right). The
    status line goes to stderr, so that stdout is the document alone.
    """
    from pathlib import Path

    from fl_gym._console import progress_enabled
    from fl_gym.agents import leaderboard_markdown, run_benchmark
    from fl_gym.agents.bench import RayConnectionError

    try:
        result = run_benchmark(
            args.envs,
            args.policies,
            args.seeds,
            config=_parse_overrides(args.config) or None,
            preset=args.preset,
            backend=args.backend,
            progress=progress_enabled(args.no_progress),
            ray_address=args.ray_address,
            max_episode_steps=args.max_episode_steps,
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


def _run_uav(args: argparse.Namespace) -> int:
    from rich.table import Table

    from fl_gym._console import make_console, make_progress, progress_enabled
    from fl_gym.baselines import make_policy
    from fl_gym.baselines.registry import canonical_policy_name
    from fl_gym.baselines.uav import CONTROLLERS
    from fl_gym.envs import uav_swarm_v0
    from fl_gym.envs.rollout import rollout
    from fl_gym.envs.uav.rendering import write_gif

    console = make_console()
    env = uav_swarm_v0.parallel_env(
        config=_parse_overrides(args.config) or None,
        preset=args.preset,
        render_mode="rgb_array" if args.gif else None,
    )
    mean_field = [name for name in CONTROLLERS if name.startswith("mfg")]
    if args.training and canonical_policy_name(args.controller) not in mean_field:
        raise ValueError(
            f"--training applies to the mean-field controllers {mean_field}, "
            f"not {args.controller!r}"
        )
    options = {"training": args.training} if args.training else {}
    controller = make_policy(args.controller, env, **options)
    frames: list[np.ndarray] | None = [] if args.gif else None
    path = None
    with make_progress(enabled=progress_enabled(args.no_progress), unit="steps") as progress:
        steps = progress.add_task(f"{args.controller}: steps", total=env.config.swarm.max_steps)
        watched = _WatchedSwarm(env, lambda: progress.advance(steps), args.controller)
        metrics = rollout(watched, controller, seed=args.seed, frames=frames, num_threads=None)
        progress.update(steps, total=metrics.steps, completed=metrics.steps)
        if frames is not None:
            gif = progress.add_task("GIF frames", total=len(frames))
            path = write_gif(
                frames,
                args.gif,
                fps=env.metadata["render_fps"],
                on_frame=lambda: progress.advance(gif),
            )
    table = Table(title=f"{args.controller}: {env.config.swarm.num_uavs} UAVs, seed {args.seed}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in vars(metrics).items():
        table.add_row(name, value if isinstance(value, str) else f"{value:.4g}")
    console.print(table)
    if frames is not None:
        console.print(f"{len(frames)} frames written to {path}")
    env.close()
    return 0


class _WatchedSwarm:
    """A UAV swarm environment as the rollout loop sees it from the command line.

    Every step calls ``on_step`` (a progress bar advances) and every frame is drawn by
    :func:`~fl_gym.envs.uav.rendering.render_env`, whose title names the controller; all else
    is the environment's own.
    """

    def __init__(self, env: Any, on_step: Callable[[], None], controller: str) -> None:
        self._env = env
        self._on_step = on_step
        self._controller = controller

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)

    def step(self, actions: Any) -> Any:
        result = self._env.step(actions)
        self._on_step()
        return result

    def render(self) -> np.ndarray | None:
        if self._env.render_mode is None:
            return None
        from fl_gym.envs.uav.rendering import render_env

        return render_env(self._env, controller=self._controller)


def gym_errors() -> type[Exception]:
    """Gymnasium's error base class (an unknown environment id is one)."""
    from gymnasium import error

    return error.Error


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fl-gym`` command."""
    args = _build_parser().parse_args(argv)
    from fl_gym.sim.threads import torch_threads

    # The models are small: one thread is faster than several, and far faster when the cores
    # are shared with other work (oversubscribed OpenMP threads spin).
    with torch_threads(args.threads):
        return _dispatch(args)


def _dispatch(args: argparse.Namespace) -> int:
    try:
        if args.command == "list":
            return _run_list(args)
        if args.command == "run":
            from fl_gym.envs.rollout import family_of_id

            family = family_of_id(args.env)
            if family == "vehicular":
                return _run_vehicular(args)
            if family == "uav":
                raise ValueError(
                    f"fl-gym run plays one-agent-per-env episodes; fly {args.env} with "
                    "fl-gym uav --controller NAME"
                )
            return _run_episodes(args, args.env, [args.policy])
        if args.command == "demo":
            return _run_demo(args)
        if args.command == "fedavg":
            return _run_fedavg(args)
        if args.command == "train":
            return _run_train(args)
        if args.command == "eval":
            return _run_eval(args)
        if args.command == "bench":
            return _run_bench(args)
        if args.command == "uav":
            return _run_uav(args)
    except (ValueError, TypeError, FileNotFoundError, gym_errors()) as exc:
        print(f"fl-gym: error: {exc}", file=sys.stderr)
        return 2
    raise AssertionError(f"unhandled command {args.command!r}")


if __name__ == "__main__":
    raise SystemExit(main())
