"""Hyperparameters that ship with fl_gym for other tools (rl-zoo3).

``ppo.yml`` holds rl-zoo3's PPO hyperparameters for every registered Gymnasium environment
(:data:`fl_gym.ENV_IDS`). rl-zoo3 reads it by path or as the module ``fl_gym.hyperparams.ppo``
(which loads the same file), so an installed package needs no path::

    python -m rl_zoo3.train --algo ppo --env fl_gym/ClientSelection-v0 --gym-packages fl_gym \\
        --conf-file fl_gym.hyperparams.ppo
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["ALGOS", "config_path", "load"]

ALGOS = ("ppo",)
"""Algorithms with a shipped hyperparameter file."""


def config_path(algo: str = "ppo") -> Path:
    """The path of the shipped rl-zoo3 hyperparameter file of ``algo``."""
    if algo not in ALGOS:
        raise ValueError(f"no shipped hyperparameters for algo {algo!r}; allowed: {list(ALGOS)}")
    return Path(str(resources.files(__name__) / f"{algo}.yml"))


def load(algo: str = "ppo") -> dict[str, Any]:
    """The hyperparameters of ``algo``, ``{env_id: {name: value}}`` (needs PyYAML)."""
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError(
            "reading the hyperparameter files needs PyYAML: pip install 'fl-gym[zoo]'"
        ) from exc
    with open(config_path(algo)) as f:
        return yaml.safe_load(f)
