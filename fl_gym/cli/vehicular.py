"""``fl-gym run`` on a vehicular env (the Gymnasium one or the PettingZoo module)."""

from __future__ import annotations

import argparse

import numpy as np

from fl_gym.cli.common import make_env, parse_overrides

__all__ = ["run_vehicular"]


def run_vehicular(args: argparse.Namespace) -> int:
    """Episodes of a vehicular environment (Gymnasium or PettingZoo) with a vehicular policy."""
    from rich.table import Table

    from fl_gym._console import make_console, make_progress, progress_enabled
    from fl_gym.baselines import make_policy
    from fl_gym.envs.rollout import rollout

    env = make_env(args.env, parse_overrides(args.config) or None, args.preset)
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
