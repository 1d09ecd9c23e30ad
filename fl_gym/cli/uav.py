"""``fl-gym uav``: fly a UAV swarm with a controller, its costs and a GIF."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import numpy as np

from fl_gym.cli.common import parse_overrides

__all__ = ["run_uav", "run_uav_episodes"]


def run_uav(args: argparse.Namespace) -> int:
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
        config=parse_overrides(args.config) or None,
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


def run_uav_episodes(args: argparse.Namespace) -> int:
    """``fl-gym run uav_swarm_v0 --policy NAME``: episodes from consecutive seeds, one row each."""
    from rich.table import Table

    from fl_gym._console import make_console, make_progress, progress_enabled
    from fl_gym.baselines import make_policy
    from fl_gym.cli.common import make_env
    from fl_gym.envs.rollout import rollout

    env = make_env(args.env, parse_overrides(args.config) or None, args.preset)
    policy = make_policy(args.policy, env)
    columns = {
        "steps": "steps",
        "arrived": "arrived_fraction",
        "collision prob.": "collision_probability",
        "motion energy m2/s3": "motion_energy_m2_s3",
        "bits": "bits_per_episode",
        "mean return": "mean_return",
    }
    table = Table(title=f"{args.policy} on {args.env}")
    for column in ("seed", *columns):
        table.add_column(column, justify="right")
    with make_progress(enabled=progress_enabled(args.no_progress), unit="episodes") as progress:
        task = progress.add_task(args.policy, total=args.episodes)
        for seed in range(args.seed, args.seed + args.episodes):
            progress.update(task, description=f"{args.policy} (seed {seed})")
            episode = rollout(env, policy, seed=seed, num_threads=None)
            table.add_row(str(seed), *(f"{getattr(episode, f):.4g}" for f in columns.values()))
            progress.advance(task)
    env.close()
    make_console().print(table)
    return 0
