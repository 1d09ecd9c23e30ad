"""``render_mode="human"`` for fl_gym's environments: their RGB frame shown in a matplotlib window.

Gymnasium would otherwise wrap an environment that lacks a human mode in its pygame window,
which needs pygame and fails at the first reset when it is missing. Here "human" is a mode of
its own: the environment draws its ``rgb_array`` frame and shows it in one matplotlib figure
that is updated in place, after every ``reset`` and ``step``. In a process without a display
(matplotlib's non-interactive backends, e.g. a server or CI) nothing can be shown: the frames
are kept off-screen (:attr:`HumanWindow.frame`) and the first one warns once, naming the
backend, so environment checkers that build every declared render mode still pass.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from gymnasium import logger

__all__ = ["HumanWindow", "check_render_mode", "display_problem", "ready_to_render"]

NON_INTERACTIVE_BACKENDS = frozenset({"agg", "cairo", "pdf", "pgf", "ps", "svg", "template"})
"""matplotlib backends that cannot show a window."""


def check_render_mode(render_mode: str | None, metadata: dict[str, Any]) -> str | None:
    """``render_mode`` if it is ``None`` or one of ``metadata["render_modes"]``, else the
    ``ValueError`` every fl_gym environment gives for it."""
    if render_mode is not None and render_mode not in metadata["render_modes"]:
        raise ValueError(
            f"render_mode must be None or one of {metadata['render_modes']}, got {render_mode!r}"
        )
    return render_mode


def ready_to_render(render_mode: str | None, started: bool) -> bool:
    """What every fl_gym environment's ``render()`` checks first: without a render mode it warns
    and should return ``None`` (``False``); before the first ``reset()`` it raises.

    Raises:
        RuntimeError: ``"call reset() before render()"`` when not ``started``.
    """
    if render_mode is None:
        logger.warn("render() called without a render_mode; pass render_mode='rgb_array'")
        return False
    if not started:
        raise RuntimeError("call reset() before render()")
    return True


def display_problem() -> str | None:
    """Why matplotlib cannot show a window in this process, or ``None`` if it can."""
    import matplotlib

    backend = str(matplotlib.get_backend()).lower()
    if backend in NON_INTERACTIVE_BACKENDS:
        return (
            "render_mode='human' shows the frames in a matplotlib window, but this process has "
            f"no display (matplotlib backend {backend!r}): the frames are not shown; use "
            "render_mode='rgb_array' to get them (or set an interactive backend, e.g. "
            "MPLBACKEND=TkAgg)"
        )
    return None


_WARNED = False


class HumanWindow:
    """One matplotlib figure that shows an environment's frames as they come.

    Args:
        title: The window's title.
        fps: Frames per second (the pause after each frame is ``1 / fps``).
    """

    def __init__(self, title: str, fps: float) -> None:
        self.title = title
        self.pause_s = 1.0 / max(float(fps), 1e-3)
        self._figure: Any = None
        self._image: Any = None
        self._offscreen: np.ndarray | None = None

    def show(self, frame: np.ndarray) -> None:
        """Show ``frame`` (``(H, W, 3)`` uint8), in the same window as the previous ones."""
        global _WARNED
        problem = display_problem()
        if problem is not None:
            self._offscreen = frame
            if not _WARNED:
                _WARNED = True
                warnings.warn(problem, UserWarning, stacklevel=3)
            return
        import matplotlib.pyplot as plt

        if self._figure is None or not plt.fignum_exists(self._figure.number):
            height, width = frame.shape[:2]
            self._figure = plt.figure(self.title, figsize=(width / 100.0, height / 100.0))
            axes = self._figure.add_axes((0.0, 0.0, 1.0, 1.0))
            axes.set_axis_off()
            self._image = axes.imshow(frame)
            plt.ion()
            plt.show(block=False)
        else:
            self._image.set_data(frame)
        self._figure.canvas.draw_idle()
        plt.pause(self.pause_s)

    @property
    def frame(self) -> np.ndarray | None:
        """The frame on display (``None`` before the first)."""
        if self._image is None:
            return self._offscreen
        return np.asarray(self._image.get_array())

    def close(self) -> None:
        """Close the window (a later frame opens a new one)."""
        if self._figure is not None:
            import matplotlib.pyplot as plt

            plt.close(self._figure)
        self._figure = self._image = self._offscreen = None

    def deliver(self, frame: np.ndarray, render_mode: str | None) -> np.ndarray | None:
        """What an environment's ``render()`` returns for ``frame``: the frame itself in
        ``rgb_array`` mode; in ``human`` mode the frame goes to this window and ``None``
        comes back."""
        if render_mode == "human":
            self.show(frame)
            return None
        return frame
