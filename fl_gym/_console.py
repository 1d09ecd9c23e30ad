"""Terminal output of the command line: consoles that never wrap, compact spaces, progress bars.

* :func:`make_console`: a rich console that prints tables at their natural width when its
  stream is not a terminal (a pipe, a file, a CI log), instead of rich's default of 80 columns
  that wraps every long row.
* :func:`format_space`: a Gymnasium space on one line, e.g. ``Box(-1.0, 1.0, (10,), float32)``
  or ``MultiDiscrete([6, 10] * 20)``, never numpy's multi-line array repr.
* :func:`progress_enabled` and :func:`make_progress`: progress bars on standard error, shown only
  when standard error is a terminal, so that piped standard output stays clean.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

__all__ = ["PIPE_WIDTH", "format_space", "make_console", "make_progress", "progress_enabled"]

PIPE_WIDTH = 100_000
"""Console width when the output is not a terminal: wide enough that no table or line wraps."""

_LISTED_VALUES = 12  # MultiDiscrete vectors up to this length are listed in full
_MAX_PERIOD = 6  # repeating patterns up to this length are written as [a, b] * n


def make_console(*, stderr: bool = False, file: TextIO | None = None) -> Console:
    """A rich console that prints at natural width when its stream is not a terminal.

    On a terminal the console takes the terminal's width as usual. Anywhere else (a pipe, a
    file, captured output) it is :data:`PIPE_WIDTH` columns wide with soft wrapping, so that a
    table row or a line of text stays on one line whatever its length, and tables are only as
    wide as their content.

    Args:
        stderr: Write to standard error instead of standard output.
        file: Write to this stream instead (``stderr`` is then ignored).

    Returns:
        The console.
    """
    from rich.console import Console

    probe = Console(stderr=stderr, file=file)
    if probe.is_terminal:
        return probe
    return Console(stderr=stderr, file=file, width=PIPE_WIDTH, soft_wrap=True)


def progress_enabled(no_progress: bool = False) -> bool:
    """Whether progress bars are shown: standard error is a terminal and they were not refused.

    Args:
        no_progress: The user asked for no progress (``--no-progress``).

    Returns:
        ``True`` when a bar should be drawn.
    """
    if no_progress:
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def make_progress(*, enabled: bool, unit: str = "") -> Progress:
    """A transient rich progress bar on standard error (description, bar, done/total, times).

    Args:
        enabled: Draw the bar (see :func:`progress_enabled`); a disabled bar accepts every call
            and prints nothing.
        unit: Word after the done/total count, e.g. ``"episodes"``.

    Returns:
        The progress display; use it as a context manager.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns: list[Any] = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
    ]
    if unit:
        columns.append(TextColumn(unit))
    columns += [TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    from rich.console import Console

    return Progress(*columns, console=Console(stderr=True), transient=True, disable=not enabled)


def format_space(space: Any) -> str:
    """A Gymnasium space on one line.

    Box bounds that are equal across entries print as one number (as Gymnasium does); bounds
    that differ print as their range ``[min..max]``. A MultiDiscrete vector prints in full when
    short, as a repeated pattern (``[6, 10] * 20``) when it repeats, else as its first and last
    values and its length. Dict and Tuple spaces print their members the same way. Any other
    space prints as its repr with the whitespace collapsed.

    Args:
        space: A :class:`gymnasium.spaces.Space`.

    Returns:
        One line of text, e.g. ``Box(-1.0, 1.0, (10,), float32)``.
    """
    from gymnasium import spaces

    if isinstance(space, spaces.Box):
        return f"Box({_bound(space.low)}, {_bound(space.high)}, {space.shape}, {space.dtype})"
    if isinstance(space, spaces.Discrete):
        n, start = int(space.n), int(space.start)
        return f"Discrete({n})" if start == 0 else f"Discrete({n}, start={start})"
    if isinstance(space, spaces.MultiDiscrete):
        nvec = np.asarray(space.nvec)
        text = _integers(nvec.ravel())
        if nvec.ndim > 1:
            text += f", shape={nvec.shape}"
        start = np.asarray(getattr(space, "start", np.zeros_like(nvec)))
        if np.any(start != 0):
            text += f", start={_integers(start.ravel())}"
        return f"MultiDiscrete({text})"
    if isinstance(space, spaces.MultiBinary):
        n = space.n
        return f"MultiBinary({n if isinstance(n, int) else tuple(int(v) for v in n)})"
    if isinstance(space, spaces.Dict):
        members = ", ".join(f"{key!r}: {format_space(sub)}" for key, sub in space.spaces.items())
        return f"Dict({members})"
    if isinstance(space, spaces.Tuple):
        return "Tuple(" + ", ".join(format_space(sub) for sub in space.spaces) + ")"
    return " ".join(repr(space).split())


def _bound(values: np.ndarray) -> str:
    """One number when every entry is equal, else ``[min..max]``."""
    flat = np.asarray(values).ravel()
    if flat.size == 0:
        return "[]"
    low, high = flat.min(), flat.max()
    if low == high:
        return str(low.item())
    return f"[{low.item()}..{high.item()}]"


def _integers(values: np.ndarray) -> str:
    """A 1-D integer vector: listed, as a repeated pattern, or first and last values."""
    items = [int(v) for v in values]
    n = len(items)
    for period in range(1, min(_MAX_PERIOD, n // 2) + 1):
        if n % period == 0 and items == items[:period] * (n // period):
            return f"{items[:period]} * {n // period}"
    if n <= _LISTED_VALUES:
        return str(items)
    head = ", ".join(map(str, items[:3]))
    return f"[{head}, ..., {items[-1]}] ({n} values)"
