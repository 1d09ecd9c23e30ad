"""Drawing of the UAV swarm (positions over their density) and GIF writing.

matplotlib is an optional dependency (the ``plot`` extra). It is imported only when a frame is
drawn or a GIF written, through its object-oriented API (a :class:`matplotlib.figure.Figure` on
its own Agg canvas), so drawing never touches pyplot's global state or the user's backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fl_gym.sim.uav import UAVSwarmConfig

__all__ = ["FRAME_HEIGHT_PX", "FRAME_WIDTH_PX", "render_swarm", "write_gif"]

FRAME_WIDTH_PX = 640
"""Width of a rendered frame in pixels."""

FRAME_HEIGHT_PX = 480
"""Height of a rendered frame in pixels."""

_DPI = 80
_DENSITY_BINS = 48


def _require_matplotlib() -> Any:
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            "drawing the UAV swarm needs matplotlib, which is not installed; install the plot "
            "extra: pip install 'fl-gym[plot]'"
        ) from exc
    return matplotlib, Figure, FigureCanvasAgg


def _extent(config: UAVSwarmConfig) -> tuple[float, float, float, float]:
    """A fixed view holding both discs, so that the frames of a video line up."""
    sx, sy = config.source_center_m
    dx, dy = config.destination_center_m
    margin = max(config.source_radius_m, config.destination_radius_m) * 1.5
    x0, x1 = min(sx, dx) - margin, max(sx, dx) + margin
    y0, y1 = min(sy, dy) - margin, max(sy, dy) + margin
    # Same scale on both axes, with the frame's aspect ratio.
    width, height = x1 - x0, y1 - y0
    target = FRAME_WIDTH_PX / FRAME_HEIGHT_PX
    if width / height < target:
        grow = (height * target - width) / 2
        x0, x1 = x0 - grow, x1 + grow
    else:
        grow = (width / target - height) / 2
        y0, y1 = y0 - grow, y1 + grow
    return x0, x1, y0, y1


def render_swarm(
    positions_m: np.ndarray,
    flying: np.ndarray,
    config: UAVSwarmConfig,
    *,
    step: int = 0,
    collisions: int | None = None,
) -> np.ndarray:
    """Draw the flying UAVs over a histogram of their density, with source and destination.

    Args:
        positions_m: ``(N, 2)`` positions.
        flying: ``(N,)`` bool, the UAVs still flying (the others are not drawn).
        config: The swarm configuration (regions and the view).
        step: The step number shown in the title.
        collisions: Colliding pairs shown in the title, if given.

    Returns:
        ``(FRAME_HEIGHT_PX, FRAME_WIDTH_PX, 3)`` uint8 RGB image.

    Raises:
        ImportError: If matplotlib is missing (names the ``plot`` extra).
    """
    _, figure_cls, canvas_cls = _require_matplotlib()
    from matplotlib.patches import Circle

    fig = figure_cls(figsize=(FRAME_WIDTH_PX / _DPI, FRAME_HEIGHT_PX / _DPI), dpi=_DPI)
    canvas = canvas_cls(fig)
    ax = fig.add_axes((0.06, 0.07, 0.92, 0.86))
    x0, x1, y0, y1 = _extent(config)
    pos = np.asarray(positions_m)[np.asarray(flying, dtype=bool)]
    hist, _, _ = np.histogram2d(
        pos[:, 0], pos[:, 1], bins=_DENSITY_BINS, range=((x0, x1), (y0, y1))
    )
    ax.imshow(
        hist.T,
        origin="lower",
        extent=(x0, x1, y0, y1),
        cmap="Blues",
        aspect="auto",
        vmin=0,
        vmax=max(1.0, float(hist.max())),
        interpolation="nearest",
    )
    for centre, radius, colour in (
        (config.source_center_m, config.source_radius_m, "#1a9850"),
        (config.destination_center_m, config.destination_radius_m, "#d73027"),
    ):
        ax.add_patch(Circle(centre, radius, fill=False, color=colour, linewidth=1.5))
    size = 6.0 if pos.shape[0] <= 1_000 else 1.0
    ax.scatter(pos[:, 0], pos[:, 1], s=size, c="#222222", linewidths=0)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    title = f"step {step}: {pos.shape[0]} of {config.num_uavs} UAVs flying"
    if collisions is not None:
        title += f", {collisions} colliding pairs"
    ax.set_title(title, fontsize=10)
    canvas.draw()
    frame = np.asarray(canvas.buffer_rgba())[:, :, :3].copy()
    fig.clear()
    return frame


def write_gif(frames: Sequence[np.ndarray], path: str | Path, fps: int = 10) -> Path:
    """Write RGB frames (as returned by ``env.render()``) to an animated GIF.

    Args:
        frames: Non-empty sequence of ``(H, W, 3)`` uint8 images of one size.
        path: Where to write the GIF (its folder must exist).
        fps: Frames per second, >= 1.

    Returns:
        The path written.

    Raises:
        ValueError: If there are no frames, they differ in shape, or ``fps`` < 1.
        ImportError: If matplotlib (or Pillow) is missing (names the ``plot`` extra).
    """
    if len(frames) == 0:
        raise ValueError("write_gif needs at least one frame, got none")
    shape = np.shape(frames[0])
    if len(shape) != 3 or shape[2] != 3:
        raise ValueError(f"frames must be (H, W, 3) RGB images, got shape {shape}")
    bad = next((i for i, f in enumerate(frames) if np.shape(f) != shape), None)
    if bad is not None:
        raise ValueError(
            f"all frames must have the shape of the first, {shape}; frame {bad} has "
            f"{np.shape(frames[bad])}"
        )
    if not isinstance(fps, int) or isinstance(fps, bool) or fps < 1:
        raise ValueError(f"fps must be an integer >= 1, got {fps!r}")
    _, figure_cls, canvas_cls = _require_matplotlib()
    from matplotlib.animation import PillowWriter

    height, width = shape[0], shape[1]
    fig = figure_cls(figsize=(width / _DPI, height / _DPI), dpi=_DPI)
    canvas_cls(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_axis_off()
    image = ax.imshow(frames[0], interpolation="nearest")
    out = Path(path)
    writer = PillowWriter(fps=fps)
    with writer.saving(fig, str(out), dpi=_DPI):
        for frame in frames:
            image.set_data(frame)
            writer.grab_frame()
    fig.clear()
    return out
