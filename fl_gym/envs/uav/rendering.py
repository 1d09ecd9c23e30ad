"""Drawing of the UAV swarm (positions over their density) and GIF writing.

matplotlib is an optional dependency (the ``plot`` extra). It is imported only when a frame is
drawn or a GIF written, through its object-oriented API (a :class:`matplotlib.figure.Figure` on
its own Agg canvas), so drawing never touches pyplot's global state or the user's backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fl_gym.sim.uav.swarm import UAVSwarmConfig

__all__ = [
    "FRAME_HEIGHT_PX",
    "FRAME_WIDTH_PX",
    "SwarmRenderer",
    "render_env",
    "render_swarm",
    "write_gif",
]

FRAME_WIDTH_PX = 640
"""Width of a rendered frame in pixels."""

FRAME_HEIGHT_PX = 480
"""Height of a rendered frame in pixels."""

_DPI = 80
_DENSITY_BINS = 48
_COLOUR_SOURCE = "#1a9850"
_COLOUR_DESTINATION = "#d73027"
_COLOUR_UAV = "#222222"


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


def _extent(
    config: UAVSwarmConfig, aspect: float = FRAME_WIDTH_PX / FRAME_HEIGHT_PX
) -> tuple[float, float, float, float]:
    """A fixed view holding both discs, ``aspect`` times as wide as tall (metres alike)."""
    sx, sy = config.source_center_m
    dx, dy = config.destination_center_m
    margin = max(config.source_radius_m, config.destination_radius_m) * 1.5
    x0, x1 = min(sx, dx) - margin, max(sx, dx) + margin
    y0, y1 = min(sy, dy) - margin, max(sy, dy) + margin
    # Same scale on both axes: the view takes the aspect ratio of the box it is drawn in.
    width, height = x1 - x0, y1 - y0
    if width / height < aspect:
        grow = (height * aspect - width) / 2
        x0, x1 = x0 - grow, x1 + grow
    else:
        grow = (width / aspect - height) / 2
        y0, y1 = y0 - grow, y1 + grow
    return x0, x1, y0, y1


def render_swarm(
    positions_m: np.ndarray,
    flying: np.ndarray,
    config: UAVSwarmConfig,
    *,
    step: int = 0,
    collisions: int | None = None,
    controller: str | None = None,
) -> np.ndarray:
    """Draw the flying UAVs over a histogram of their density, with source and destination.

    Builds a :class:`SwarmRenderer` for this one frame; to draw many frames of one environment,
    :func:`render_env` keeps the renderer on the environment and is faster.

    Args:
        positions_m: ``(N, 2)`` positions.
        flying: ``(N,)`` bool, the UAVs still flying (the others are not drawn).
        config: The swarm configuration (regions and the view).
        step: The step number shown in the title.
        collisions: Colliding pairs shown in the title, if given.
        controller: The controller's name shown in the title, if given.

    Returns:
        ``(FRAME_HEIGHT_PX, FRAME_WIDTH_PX, 3)`` uint8 RGB image.

    Raises:
        ImportError: If matplotlib is missing (names the ``plot`` extra).
    """
    renderer = SwarmRenderer(config)
    return renderer.draw(
        positions_m, flying, step=step, collisions=collisions, controller=controller
    )


def render_env(env: Any, *, controller: str | None = None) -> np.ndarray:
    """Draw the current state of a UAV swarm environment, naming its controller in the title.

    The figure is built on the first call and kept on the environment (in its
    ``_swarm_renderer`` slot, rebuilt when the configuration changes), so the frames of an
    episode cost a redraw each, not a new figure.

    Args:
        env: A :class:`~fl_gym.envs.uav_swarm_v0.UAVSwarmEnv` (possibly wrapped) after
            ``reset()``.
        controller: The controller's name shown in the title, if given.

    Returns:
        ``(FRAME_HEIGHT_PX, FRAME_WIDTH_PX, 3)`` uint8 RGB image.

    Raises:
        ImportError: If matplotlib is missing (names the ``plot`` extra).
    """
    base = getattr(env, "unwrapped", env)
    renderer = getattr(base, "_swarm_renderer", None)
    if not isinstance(renderer, SwarmRenderer) or renderer.config != base.swarm.config:
        renderer = SwarmRenderer(base.swarm.config)
        base._swarm_renderer = renderer
    last = base.last_step
    return renderer.draw(
        base.swarm.positions_m,
        base.swarm.flying,
        step=base.swarm.steps,
        collisions=None if last is None else last.num_collision_pairs,
        controller=controller,
    )


class SwarmRenderer:
    """One figure of a UAV swarm, redrawn frame after frame at a fixed size and layout.

    The layout (constrained: no label is clipped) is solved once, when the figure is built,
    and then frozen, so that every frame has the same size and the axes never move between
    the frames of a GIF.

    Args:
        config: The swarm configuration (regions and the view).

    Attributes:
        config: The configuration the figure was built for.
        figure: The :class:`matplotlib.figure.Figure` (640 x 480 px, on an Agg canvas).
        axes: The swarm's axes, in metres.
        legend: The legend of the regions and the UAVs.
        title: The title text (controller, step, UAVs flying, colliding pairs).
        density_max: UAVs per density cell at the top of the colour scale (twice the starting
            lattice's density; fixed for the figure's life).

    Raises:
        ImportError: If matplotlib is missing (names the ``plot`` extra).
    """

    def __init__(self, config: UAVSwarmConfig) -> None:
        _, figure_cls, canvas_cls = _require_matplotlib()
        from matplotlib.lines import Line2D
        from matplotlib.patches import Circle

        self.config = config
        fig = self.figure = figure_cls(
            figsize=(FRAME_WIDTH_PX / _DPI, FRAME_HEIGHT_PX / _DPI), dpi=_DPI, layout="constrained"
        )
        self._canvas = canvas_cls(fig)
        ax = self.axes = fig.add_subplot()
        x0, x1, y0, y1 = _extent(config)  # refined once the layout has sized the axes
        self._density = ax.imshow(
            np.zeros((_DENSITY_BINS, _DENSITY_BINS)),
            origin="lower",
            extent=(x0, x1, y0, y1),
            cmap="Blues",
            aspect="auto",
            vmin=0,
            vmax=1.0,
            interpolation="nearest",
        )
        regions = (
            (config.source_center_m, config.source_radius_m, _COLOUR_SOURCE),
            (config.destination_center_m, config.destination_radius_m, _COLOUR_DESTINATION),
        )
        circles = [
            ax.add_patch(Circle(centre, radius, fill=False, color=colour, linewidth=1.5))
            for centre, radius, colour in regions
        ]
        self._size = 6.0 if config.num_uavs <= 1_000 else 1.0
        self._uavs = ax.scatter([], [], s=self._size, c=_COLOUR_UAV, linewidths=0)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_xlabel("x (m)")
        ax.set_ylabel("y (m)")
        ax.tick_params(labelsize=8)
        self.legend = ax.legend(
            handles=[
                Line2D([], [], color=_COLOUR_SOURCE, lw=1.5, label="source region"),
                Line2D([], [], color=_COLOUR_DESTINATION, lw=1.5, label="destination region"),
                Line2D([], [], marker="o", ls="", ms=4, color=_COLOUR_UAV, label="flying UAV"),
            ],
            loc="upper left",
            fontsize=8,
            framealpha=0.85,
        )
        colourbar = fig.colorbar(self._density, ax=ax, fraction=0.04, pad=0.01, extend="max")
        colourbar.set_label("UAVs per 0.0 m x 0.0 m cell", fontsize=8)
        colourbar.ax.tick_params(labelsize=7)
        self._colourbar = colourbar
        self.title = ax.set_title("controller: step 0", fontsize=10)
        self._canvas.draw()  # solves the layout once ...
        fig.set_layout_engine("none")  # ... and keeps it for every frame
        # A metre spans as many pixels across as up: fit the view to the box the layout gave.
        box = ax.get_window_extent()
        x0, x1, y0, y1 = self._extent = _extent(config, box.width / box.height)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        self._density.set_extent((x0, x1, y0, y1))
        cell_w, cell_h = (x1 - x0) / _DENSITY_BINS, (y1 - y0) / _DENSITY_BINS
        colourbar.set_label(f"UAVs per {cell_w:.1f} m x {cell_h:.1f} m cell", fontsize=8)
        # One colour scale for the whole episode, so that the frames of a GIF compare: up to
        # twice the density of the starting lattice, denser cells saturate.
        self.density_max = max(
            1.0, float(np.ceil(2.0 * cell_w * cell_h / config.initial_spacing_m**2))
        )
        self._density.set_clim(0.0, self.density_max)
        # Blitting: ticks, labels and colour bar are drawn once into a background; a frame
        # restores it and draws what lies in the axes, in this order.
        self._dynamic = (self._density, *circles, self._uavs, self.legend, self.title)
        for artist in self._dynamic:
            artist.set_animated(True)
        self._canvas.draw()
        self._background = self._canvas.copy_from_bbox(fig.bbox)

    def __getstate__(self) -> dict[str, Any]:
        # The canvas does not pickle; a copy of an environment rebuilds the figure.
        return {"config": self.config}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"])  # type: ignore[misc]

    def draw(
        self,
        positions_m: np.ndarray,
        flying: np.ndarray,
        *,
        step: int = 0,
        collisions: int | None = None,
        controller: str | None = None,
    ) -> np.ndarray:
        """Draw one frame (see :func:`render_swarm` for the arguments).

        Returns:
            ``(FRAME_HEIGHT_PX, FRAME_WIDTH_PX, 3)`` uint8 RGB image.
        """
        x0, x1, y0, y1 = self._extent
        pos = np.asarray(positions_m)[np.asarray(flying, dtype=bool)]
        hist, _, _ = np.histogram2d(
            pos[:, 0], pos[:, 1], bins=_DENSITY_BINS, range=((x0, x1), (y0, y1))
        )
        self._density.set_data(hist.T)
        self._uavs.set_offsets(pos if pos.size else np.zeros((0, 2)))
        title = f"step {step}: {pos.shape[0]} of {self.config.num_uavs} UAVs flying"
        if collisions is not None:
            title += f", {collisions} colliding pairs"
        if controller:
            title = f"{controller} | {title}"
        self.title.set_text(title)
        self._canvas.restore_region(self._background)
        for artist in self._dynamic:
            self.figure.draw_artist(artist)
        return np.asarray(self._canvas.buffer_rgba())[:, :, :3].copy()


def write_gif(
    frames: Sequence[np.ndarray],
    path: str | Path,
    fps: int = 10,
    *,
    on_frame: Callable[[], None] | None = None,
) -> Path:
    """Write RGB frames (as returned by ``env.render()``) to an animated GIF that loops.

    Each frame is reduced to its own 256-colour palette (Pillow's adaptive palette), as
    matplotlib's Pillow writer does, without drawing it on a figure again.

    Args:
        frames: Non-empty sequence of ``(H, W, 3)`` uint8 images of one size.
        path: Where to write the GIF (its folder must exist).
        fps: Frames per second, >= 1.
        on_frame: Called once after each frame is converted (e.g. to advance a progress bar).

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
    _require_matplotlib()  # Pillow comes with matplotlib: one extra to name
    from PIL import Image

    images = []
    for frame in frames:
        rgb = Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8))
        images.append(rgb.convert("P", palette=Image.Palette.ADAPTIVE))
        if on_frame is not None:
            on_frame()
    out = Path(path)
    images[0].save(
        out,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=round(1000 / fps),
        loop=0,
    )
    return out
