"""The ``fl-gym`` command line.

``fl-gym demo`` trains the digits classifier with FedAvg round by round and prints a summary.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np

__all__ = ["main"]


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
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="FedAvg on the bundled digits data, round by round, no RL involved"
    )
    demo.add_argument("--rounds", type=_positive_int, default=30)
    demo.add_argument("--clients", type=_positive_int, default=10)
    demo.add_argument(
        "--partition", choices=("iid", "dirichlet", "shards", "quantity"), default="iid"
    )
    demo.add_argument(
        "--alpha", type=float, default=0.1, help="Dirichlet concentration (non-IID split)"
    )
    demo.add_argument("--local-steps", type=_positive_int, default=5)
    demo.add_argument(
        "--compression",
        default="none",
        help="operator spec for every client, e.g. none, topk:0.1, qsgd:16, sign, dgc:0.01",
    )
    demo.add_argument("--aggregator", default="fedavg")
    demo.add_argument("--seed", type=int, default=0)
    return parser


def _run_demo(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from fl_gym.sim import Federation, FederationConfig, make_federated_dataset

    console = Console()
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fl-gym`` command."""
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            return _run_demo(args)
    except ValueError as exc:
        print(f"fl-gym: error: {exc}", file=sys.stderr)
        return 2
    raise AssertionError(f"unhandled command {args.command!r}")


if __name__ == "__main__":
    raise SystemExit(main())
