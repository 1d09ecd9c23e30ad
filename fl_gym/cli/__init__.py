"""The ``fl-gym`` command line: the parser and ``main``; each family's commands in their module.

* ``fl-gym list``: the environment ids and the scenario presets (:mod:`.catalogue`).
* ``fl-gym run ENV --policy NAME``: play episodes with a heuristic policy, print a summary table
  (dispatched on the env's family: :mod:`.wireless_fl`, :mod:`.vehicular`, :mod:`.uav`).
* ``fl-gym demo``: the selection baselines and the shipped PPO agent, table and plot.
* ``fl-gym fedavg``: FedAvg on digits round by round, with no RL and no wireless model.
* ``fl-gym train ENV --algo ppo --timesteps N``: train an SB3 agent, save it with its metadata
  (:mod:`.agents`).
* ``fl-gym eval ENV --policy NAME|ppo:PATH``: per-episode metrics of a baseline or agent.
* ``fl-gym bench --envs ... --policies ... --seeds 0-9``: CSV, Markdown leaderboard, plots.
* ``fl-gym uav --controller NAME [--gif PATH]``: a UAV swarm episode, its costs, and a GIF.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from fl_gym.cli import agents, catalogue, uav, vehicular, wireless_fl
from fl_gym.cli.common import add_episode_arguments, add_progress_argument, positive_int
from fl_gym.cli.wireless_fl import DEMO_AGENT

__all__ = ["DEMO_AGENT", "main"]


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fl-gym",
        description="Federated learning over wireless networks as RL control problems.",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
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
    add_episode_arguments(run)

    demo = sub.add_parser("demo", help="compare the selection baselines and the shipped PPO agent")
    add_episode_arguments(demo, episodes=3, plot="out/demo.png")
    demo.add_argument("--env", default="fl_gym/ClientSelection-v0")
    demo.add_argument(
        "--agents",
        nargs="*",
        default=None,
        metavar="ALGO:PATH",
        help=f"trained agents to play beside the baselines (default {DEMO_AGENT} when it "
        "exists and was trained on --env; none with a bare --agents)",
    )
    agents.add_trust_pickle_argument(demo)

    fedavg = sub.add_parser(
        "fedavg", help="FedAvg on the bundled digits data, round by round, no RL involved"
    )
    fedavg.add_argument("--rounds", type=positive_int, default=30)
    fedavg.add_argument("--clients", type=positive_int, default=10)
    fedavg.add_argument(
        "--partition", choices=("iid", "dirichlet", "shards", "quantity"), default="iid"
    )
    fedavg.add_argument(
        "--alpha", type=float, default=0.1, help="Dirichlet concentration (non-IID split)"
    )
    fedavg.add_argument("--local-steps", type=positive_int, default=5)
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
        "(vehicular_v1, uav_swarm_v0: one policy shared by all agents)",
    )
    train.add_argument("--algo", default="ppo", help="ppo, a2c, sac, td3 or dqn")
    train.add_argument("--timesteps", type=positive_int, default=50_000)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--n-envs", type=positive_int, default=1)
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
    evaluate.add_argument(
        "--seeds", default="0-9", help="e.g. 0-9 or 0,3,7 (default 0-9; at most 100,000 seeds)"
    )
    evaluate.add_argument("--preset", default=None)
    evaluate.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE")
    evaluate.add_argument("--max-episode-steps", type=positive_int, default=None)
    add_progress_argument(evaluate)
    agents.add_trust_pickle_argument(evaluate)

    bench = sub.add_parser(
        "bench",
        help="every policy on every env and seed: CSV, leaderboard, plots; with --suite, a "
        "benchmark suite's leaderboard (rliable)",
    )
    bench.add_argument("--envs", nargs="+", default=["fl_gym/ClientSelection-v0"])
    bench.add_argument(
        "--policies",
        nargs="+",
        default=["baselines"],
        help="baseline names, ALGO:PATH agents, or 'baselines' for all that apply",
    )
    bench.add_argument(
        "--seeds",
        default=None,
        help="evaluation seeds, e.g. 0-9 or 0,3,7 (default 0-9, with --suite 100-104; at most "
        "100,000 seeds)",
    )
    bench.add_argument(
        "--suite",
        default=None,
        metavar="NAME",
        help="play a benchmark suite (e.g. FLW-7-v0): random actions, every heuristic, MPC, "
        "the clairvoyant bound and the shipped agents per task; normalised scores, IQM, "
        'probability of improvement, performance profiles (needs "fl-gym[bench]")',
    )
    bench.add_argument("--tasks", nargs="+", default=None, help="--suite: only these tasks")
    bench.add_argument(
        "--agents",
        default=None,
        metavar="DIR",
        help="--suite: trained agents as DIR/<task>/<algo>-<policy>-s<seed>.pt + .json",
    )
    bench.add_argument(
        "--results",
        default=None,
        metavar="CSV",
        help="--suite: per-episode rows (default OUT/results.csv; run info beside it as .json)",
    )
    bench.add_argument(
        "--from-results",
        default=None,
        metavar="CSV",
        help="make the suite leaderboard from a results CSV without playing any episode",
    )
    bench.add_argument(
        "--jobs", type=positive_int, default=1, help="--suite: processes (results do not change)"
    )
    bench.add_argument(
        "--reps", type=positive_int, default=2000, help="--suite: bootstrap resamples"
    )
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
    bench.add_argument("--max-episode-steps", type=positive_int, default=None)
    add_progress_argument(bench)
    agents.add_trust_pickle_argument(bench)

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
    add_progress_argument(uav)
    return parser


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


RUN_BY_FAMILY: dict[str, Callable[[argparse.Namespace], int]] = {
    "wireless-fl": lambda args: wireless_fl.run_episodes(args, args.env, [args.policy]),
    "vehicular": vehicular.run_vehicular,
    "uav": uav.run_uav_episodes,
}
"""``fl-gym run``'s runner of each environment family (:func:`fl_gym.envs.rollout.family_of_id`)."""

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "list": catalogue.run_list,
    "run": lambda args: _run(args),
    "demo": wireless_fl.run_demo,
    "fedavg": wireless_fl.run_fedavg,
    "train": agents.run_train,
    "eval": agents.run_eval,
    "bench": agents.run_bench,
    "uav": uav.run_uav,
}
"""Every subcommand's function."""


def _run(args: argparse.Namespace) -> int:
    from fl_gym.envs.rollout import family_of_id

    return RUN_BY_FAMILY[family_of_id(args.env)](args)


def _dispatch(args: argparse.Namespace) -> int:
    try:
        return COMMANDS[args.command](args)
    except (ValueError, TypeError, FileNotFoundError, gym_errors()) as exc:
        print(f"fl-gym: error: {exc}", file=sys.stderr)
        return 2
