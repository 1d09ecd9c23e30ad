"""Helpers every ``fl-gym`` command shares: argument types, options and building an env."""

from __future__ import annotations

import argparse
import ast
from collections.abc import Sequence
from typing import Any

__all__ = [
    "add_episode_arguments",
    "add_progress_argument",
    "make_env",
    "parse_overrides",
    "positive_int",
]


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="hide the progress bar (it goes to stderr, and only when stderr is a terminal)",
    )


def add_episode_arguments(
    parser: argparse.ArgumentParser, *, episodes: int = 1, plot: str | None = None
) -> None:
    parser.add_argument("--episodes", type=positive_int, default=episodes)
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
    add_progress_argument(parser)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
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


def make_env(name: str, config: dict[str, Any] | None, preset: str | None) -> Any:
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
