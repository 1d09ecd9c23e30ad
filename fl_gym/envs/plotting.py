"""Plots of episode results (matplotlib, imported only when a plot is made)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType

import numpy as np

from fl_gym.envs.rollout import EpisodeResult

__all__ = ["plot_episodes", "require_matplotlib"]


def require_matplotlib() -> ModuleType:
    """Import matplotlib with the Agg backend, or explain which extra to install."""
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - exercised by monkeypatching in tests
        raise ImportError(
            'plotting needs matplotlib: pip install "fl-gym[plot]" (or pip install matplotlib)'
        ) from exc
    return matplotlib


def plot_episodes(
    results: Mapping[str, Sequence[EpisodeResult]], path: str | Path, *, title: str = ""
) -> Path:
    """Accuracy against round and against cumulative energy, one line per policy.

    Each policy's line is the mean over its episodes (episodes that ended early hold their last
    value); the shaded band spans the episodes' minimum to maximum.

    Args:
        results: Policy name -> its episodes.
        path: Where to write the PNG.
        title: Figure title.

    Returns:
        The path written.
    """
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax_round, ax_energy = fig.subplots(1, 2)
    for name, episodes in results.items():
        length = max(len(e.accuracy) for e in episodes)
        acc = np.array([_pad(e.accuracy, length) for e in episodes])
        energy = np.array(
            [_pad(np.concatenate([[0.0], np.cumsum(e.energy_j)]), length) for e in episodes]
        )
        rounds = np.arange(length)
        (line,) = ax_round.plot(rounds, acc.mean(axis=0), label=name, lw=1.8)
        ax_round.fill_between(
            rounds, acc.min(axis=0), acc.max(axis=0), color=line.get_color(), alpha=0.15
        )
        ax_energy.plot(
            energy.mean(axis=0), acc.mean(axis=0), label=name, lw=1.8, color=line.get_color()
        )
    ax_round.set(xlabel="round", ylabel="test accuracy", title="accuracy per round")
    ax_energy.set(
        xlabel="cumulative energy of all devices (J)",
        ylabel="test accuracy",
        title="accuracy against energy spent",
    )
    for ax in (ax_round, ax_energy):
        ax.grid(alpha=0.3)
    ax_round.legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def _pad(values: Sequence[float] | np.ndarray, length: int) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    return np.concatenate([arr, np.full(length - arr.size, arr[-1])])
