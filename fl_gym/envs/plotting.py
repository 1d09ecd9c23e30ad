"""Plots of episode results (matplotlib, imported only when a plot is made).

:func:`episode_figure` draws, for every policy, the test accuracy and the cumulative energy of
all devices against the round, and the accuracy against the energy; :func:`plot_episodes` writes
it as a PNG (``fl-gym run``, ``fl-gym demo``, ``fl-gym bench``). Heuristics that select alike
reach the same accuracy, so their accuracy curves lie on top of each other: every policy has its
own line style and marker, trained agents (``ALGO:PATH``) are drawn thick and black, and a
caption written from the numbers (:func:`describe_differences`) says where the policies differ.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from fl_gym.envs.rollout import EpisodeResult

__all__ = [
    "ENERGY_LABEL",
    "describe_differences",
    "episode_figure",
    "plot_episodes",
    "require_matplotlib",
]

ENERGY_LABEL = "cumulative energy of all devices (J)"
"""Label of the energy axes (the energy panel's y axis, the trade-off panel's x axis)."""

_COLOURS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
)
_LINE_STYLES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
_MARKERS_PER_LINE = 8
_AGENT_COLOUR = "black"
_CAPTION_CHARS = 190  # a 16-inch figure holds about this many 9-point characters per line


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
    """Write :func:`episode_figure` of ``results`` as a PNG.

    Args:
        results: Policy name -> its episodes.
        path: Where to write the PNG (missing folders are created).
        title: Figure title.

    Returns:
        The path written.
    """
    fig = episode_figure(results, title=title)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def episode_figure(
    results: Mapping[str, Sequence[EpisodeResult]], *, title: str = "", caption: str | None = None
) -> Any:
    """Accuracy and cumulative energy against round, and accuracy against energy, per policy.

    Each policy's line is the mean over its episodes (an episode that ended early holds its
    last value); the shaded band spans the episodes' minimum to maximum. Policies are told
    apart by colour, line style and marker; trained agents (names ``ALGO:PATH``) are drawn
    thick and black. One legend for the three panels sits right of them, the caption under
    them.

    Args:
        results: Policy name -> its episodes (at least one policy, each with an episode).
        title: Figure title.
        caption: Text under the panels; ``None`` writes :func:`describe_differences`.

    Returns:
        The :class:`matplotlib.figure.Figure` (on an Agg canvas; pyplot is not used). Its axes
        are, in order, accuracy per round, cumulative energy per round, accuracy against energy.

    Raises:
        ValueError: No policy, or a policy without episodes.
    """
    _check_results(results)
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(16, 5.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax_acc, ax_energy, ax_tradeoff = fig.subplots(1, 3)
    handles = []
    agents = 0
    for index, (name, episodes) in enumerate(results.items()):
        acc, energy = _curves(episodes)
        rounds = np.arange(acc.shape[1])
        style = _style(index, rounds.size)
        if _is_agent(name):
            style.update(color=_AGENT_COLOUR, ls=_LINE_STYLES[agents % len(_LINE_STYLES)])
            style.update(lw=2.6, marker="*", ms=9, zorder=5)
            agents += 1
        (line,) = ax_acc.plot(rounds, acc.mean(axis=0), label=name, **style)
        colour = line.get_color()
        ax_acc.fill_between(rounds, acc.min(axis=0), acc.max(axis=0), color=colour, alpha=0.1)
        ax_energy.plot(rounds, energy.mean(axis=0), **style)
        ax_energy.fill_between(
            rounds, energy.min(axis=0), energy.max(axis=0), color=colour, alpha=0.1
        )
        ax_tradeoff.plot(energy.mean(axis=0), acc.mean(axis=0), **style)
        handles.append(line)
    ax_acc.set(xlabel="round", ylabel="test accuracy", title="(a) test accuracy per round")
    ax_energy.set(xlabel="round", ylabel=ENERGY_LABEL, title="(b) energy spent per round")
    ax_tradeoff.set(
        xlabel=ENERGY_LABEL, ylabel="test accuracy", title="(c) accuracy against energy spent"
    )
    for ax in (ax_acc, ax_energy, ax_tradeoff):
        ax.grid(alpha=0.3)
        ax.margins(x=0.01)
    if title:
        fig.suptitle(title, fontsize=13)
    # The legend right of the panels, the title above and the caption at the foot: the layout
    # engine makes room for each on its own side, so they never meet.
    fig.legend(
        handles=handles,
        loc="outside right upper",
        title="policy",
        fontsize=9,
        frameon=False,
        handlelength=3.0,
    )
    text = describe_differences(results) if caption is None else caption
    if text:
        wrapped = "\n".join(textwrap.fill(part, _CAPTION_CHARS) for part in text.splitlines())
        fig.supxlabel(wrapped, fontsize=9, color="#333333")
    return fig


def describe_differences(results: Mapping[str, Sequence[EpisodeResult]]) -> str:
    """A caption that says where the policies differ, from the episodes' means.

    For the final accuracy, the total energy and the rounds played it gives the lowest and the
    highest policy mean (with the policies), and it names the quantity whose spread relative
    to its largest value is widest.

    Args:
        results: Policy name -> its episodes.

    Returns:
        One or two lines of text.
    """
    _check_results(results)
    episodes_per_policy = {len(e) for e in results.values()}
    count = episodes_per_policy.pop() if len(episodes_per_policy) == 1 else None
    if count is None:
        means = "means over each policy's episodes"
    else:
        means = f"means over {count} episode{'s' if count > 1 else ''} per policy"
    quantities = {
        "final accuracy": (
            "{:.3f}",
            {n: float(np.mean([e.final_accuracy for e in eps])) for n, eps in results.items()},
        ),
        "energy": (
            "{:.3g} J",
            {n: float(np.mean([e.total_energy_j for e in eps])) for n, eps in results.items()},
        ),
        "rounds": (
            "{:.1f}",
            {n: float(np.mean([e.rounds for e in eps])) for n, eps in results.items()},
        ),
    }
    if len(results) == 1:
        (name,) = results
        parts = [f"{q} {fmt.format(v[name])}" for q, (fmt, v) in quantities.items()]
        return f"{name}: " + ", ".join(parts) + f" ({means}; band: min to max)"
    parts = []
    spreads = {}
    for quantity, (fmt, values) in quantities.items():
        low_name = min(values, key=values.__getitem__)
        high_name = max(values, key=values.__getitem__)
        low, high = values[low_name], values[high_name]
        spreads[quantity] = (high - low) / abs(high) if high != 0 else 0.0
        parts.append(
            f"{quantity} {fmt.format(low)} ({low_name}) to {fmt.format(high)} ({high_name})"
        )
    widest = max(spreads, key=spreads.__getitem__)
    return (
        f"Policies differ most in {widest}: the lowest policy mean is {spreads[widest]:.0%} "
        f"below the highest. " + _first_upper("; ".join(parts)) + "."
        f"\n{_first_upper(means)}; bands span the episodes' min to max."
    )


def _first_upper(text: str) -> str:
    return text[:1].upper() + text[1:]


def _check_results(results: Mapping[str, Sequence[EpisodeResult]]) -> None:
    if not results:
        raise ValueError("results must hold at least one policy, got none")
    empty = [name for name, episodes in results.items() if len(episodes) == 0]
    if empty:
        raise ValueError(f"every policy needs at least one episode; none for {empty}")


def _curves(episodes: Sequence[EpisodeResult]) -> tuple[np.ndarray, np.ndarray]:
    """``(episodes, rounds + 1)`` accuracy and cumulative energy, padded to the longest."""
    length = max(len(e.accuracy) for e in episodes)
    acc = np.array([_pad(e.accuracy, length) for e in episodes])
    energy = np.array(
        [_pad(np.concatenate([[0.0], np.cumsum(e.energy_j)]), length) for e in episodes]
    )
    return acc, energy


def _is_agent(name: str) -> bool:
    """Whether a policy name is a trained agent's ``ALGO:PATH`` (baseline names have no colon)."""
    _, sep, rest = name.partition(":")
    return bool(sep and rest) and "=" not in rest


def _style(index: int, points: int) -> dict[str, Any]:
    """Line style of the ``index``-th policy: colour, dashes and a marker, offset per policy."""
    every = max(1, points // _MARKERS_PER_LINE)
    # Offsetting each policy's markers keeps coinciding curves' markers apart.
    start = (index * max(1, every // 3)) % every
    return {
        "color": _COLOURS[index % len(_COLOURS)],
        "ls": _LINE_STYLES[index % len(_LINE_STYLES)],
        "marker": _MARKERS[index % len(_MARKERS)],
        "markevery": (start, every),
        "ms": 5,
        "lw": 1.6,
    }


def _pad(values: Sequence[float] | np.ndarray, length: int) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    return np.concatenate([arr, np.full(length - arr.size, arr[-1])])
