"""Drawing of the wireless FL environments: the cell and the accuracy curve as an RGB image.

matplotlib is an optional dependency (the ``plot`` extra); it is imported only when a frame is
drawn, through its object-oriented API (a :class:`matplotlib.figure.Figure` on its own Agg
canvas), so that rendering never touches pyplot's global state or the user's backend.

An environment keeps its :class:`CellRenderer` (the figure with its axes, ticks and legends) in
its ``_renderer`` slot between frames and drops it on ``close()``: building the figure costs more
than drawing it, so later frames only move the data of the artists that change.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = ["FRAME_HEIGHT_PX", "FRAME_WIDTH_PX", "SNR_RANGE_DB", "CellRenderer", "render_cell"]

FRAME_WIDTH_PX = 800
"""Width of a rendered frame in pixels."""

FRAME_HEIGHT_PX = 400
"""Height of a rendered frame in pixels."""

SNR_RANGE_DB = (-10.0, 40.0)
"""Colour scale of the devices' SNR at ``p_max``; fixed so that the frames of a video compare."""

_DPI = 100
_MARKER_AREA_RANGE_PT2 = (14.0, 150.0)  # empty to full battery
_COLOUR_DELIVERED = "#1a9850"
_COLOUR_LOST = "#d73027"
_COLOUR_BS = "#222222"
_COLOUR_EXHAUSTED = "#8c8c8c"
_COLOUR_CELL_FACE = "#eef3fa"
_COLOUR_CELL_EDGE = "#7f8fa6"
_COLOUR_CURVE = "#2c7bb6"
_NO_POINTS = np.zeros((0, 2))


class _Matplotlib(NamedTuple):
    """The matplotlib classes a frame is drawn with (imported on first use)."""

    figure: Any
    canvas: Any
    line: Any
    circle: Any
    line_collection: Any


def _import_matplotlib() -> _Matplotlib:
    """matplotlib's classes, or an ImportError that names the extra to install."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.collections import LineCollection
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
        from matplotlib.patches import Circle
    except ImportError as exc:
        raise ImportError(
            "rendering fl_gym environments needs matplotlib, which is not installed; "
            'install it with: pip install "fl-gym[plot]"'
        ) from exc
    return _Matplotlib(Figure, FigureCanvasAgg, Line2D, Circle, LineCollection)


def render_cell(env: Any) -> np.ndarray:
    """Draw the cell and the episode's accuracy curve of a wireless FL environment.

    Left panel: the base station at the centre of the cell disc and every device at its
    position, coloured by its SNR at ``p_max`` on the current channel (colour scale
    :data:`SNR_RANGE_DB`), its marker area growing with the share of its battery left. Devices
    selected in the last round are ringed in black and joined to the base station by a line,
    solid green where their update was aggregated, dashed red where it was lost (straggler,
    packet error, battery run out); exhausted devices are grey crosses. Right panel: the test
    accuracy after reset and after every round so far, with the target accuracy dashed.

    The figure is built on the first call and kept in the environment's ``_renderer`` slot
    (rebuilt when the environment's configuration changes; ``close()`` drops it).

    Args:
        env: A :class:`~fl_gym.envs.wireless_fl.env.WirelessFLEnv`, possibly wrapped, after
            ``reset()``.

    Returns:
        ``(FRAME_HEIGHT_PX, FRAME_WIDTH_PX, 3)`` uint8 RGB image.

    Raises:
        ImportError: matplotlib is not installed.
        RuntimeError: The environment has not been reset yet.
    """
    base = getattr(env, "unwrapped", env)
    federation = getattr(base, "federation", None)
    if federation is None or federation.cell is None:
        raise RuntimeError("call reset() before rendering the environment")
    renderer = getattr(base, "_renderer", None)
    if not isinstance(renderer, CellRenderer) or not renderer.matches(base.config):
        renderer = CellRenderer(base.config)
        base._renderer = renderer
    return renderer.draw(base)


class CellRenderer:
    """One figure of a wireless FL environment, redrawn frame after frame.

    Args:
        config: The environment's :class:`~fl_gym.envs.wireless_fl.config.WirelessFLConfig`; the
        cell
            geometry, target accuracy and episode length shape the static parts of the figure.

    Attributes:
        config: The configuration the figure was built for.
        figure: The :class:`matplotlib.figure.Figure` (800 x 400 px, on an Agg canvas).
        cell_axes: The cell's axes, in metres with the base station at the origin.
        curve_axes: The accuracy curve's axes (round, test accuracy).

    Raises:
        ImportError: matplotlib is not installed.
    """

    def __init__(self, config: Any) -> None:
        mpl = _import_matplotlib()
        self.config = config
        wireless = config.wireless
        radius_m = wireless.cell_radius_m
        # Markers shrink with the crowd so that a large cell stays legible (1 up to 20 devices).
        self._marker_scale = min(1.0, float(np.sqrt(20.0 / config.num_devices)))

        figure = mpl.figure(figsize=(FRAME_WIDTH_PX / _DPI, FRAME_HEIGHT_PX / _DPI), dpi=_DPI)
        self.figure = figure
        self._canvas = mpl.canvas(figure)
        # Fixed axes rectangles rather than a layout engine: no layout solve per frame, and
        # the panels never jump between the frames of a video. The cell's box is square in
        # pixels (0.37 * 800 = 0.74 * 400).
        cell_ax = self.cell_axes = figure.add_axes((0.035, 0.15, 0.37, 0.74))
        colour_ax = figure.add_axes((0.43, 0.15, 0.012, 0.74))
        curve_ax = self.curve_axes = figure.add_axes((0.605, 0.15, 0.375, 0.74))
        self._title = figure.text(0.5, 0.975, "", ha="center", va="top", fontsize=10)

        # -- the cell --
        cell_ax.add_patch(
            mpl.circle(
                (0.0, 0.0),
                radius_m,
                facecolor=_COLOUR_CELL_FACE,
                edgecolor=_COLOUR_CELL_EDGE,
                lw=1.0,
                zorder=0,
            )
        )
        if wireless.edge_fraction > 0:
            # The outer ring that an edge-heavy deployment fills.
            cell_ax.add_patch(
                mpl.circle(
                    (0.0, 0.0),
                    wireless.edge_inner_radius_m,
                    fill=False,
                    ls=":",
                    ec=_COLOUR_CELL_EDGE,
                    lw=0.8,
                    zorder=0,
                )
            )
        # One collection per uplink outcome: an artist per device would cost O(K) per frame.
        self._delivered_links = mpl.line_collection(
            [], colors=_COLOUR_DELIVERED, linestyles="-", linewidths=1.0
        )
        self._lost_links = mpl.line_collection(
            [], colors=_COLOUR_LOST, linestyles="--", linewidths=1.0
        )
        cell_ax.add_collection(self._delivered_links, autolim=False)
        cell_ax.add_collection(self._lost_links, autolim=False)
        self._devices = cell_ax.scatter(
            _NO_POINTS[:, 0],
            _NO_POINTS[:, 1],
            c=np.zeros(0),
            cmap="viridis",
            vmin=SNR_RANGE_DB[0],
            vmax=SNR_RANGE_DB[1],
            clip_on=False,  # a device on the cell's rim keeps its whole marker
        )
        self._exhausted = cell_ax.scatter(
            _NO_POINTS[:, 0],
            _NO_POINTS[:, 1],
            s=30.0 * self._marker_scale,
            marker="x",
            c=_COLOUR_EXHAUSTED,
            lw=1.2,
            clip_on=False,
        )
        base_station = cell_ax.scatter([0.0], [0.0], s=130.0, marker="^", c=_COLOUR_BS)
        margin_m = 0.03 * radius_m
        cell_ax.set_xlim(-radius_m - margin_m, radius_m + margin_m)
        cell_ax.set_ylim(-radius_m - margin_m, radius_m + margin_m)
        cell_ax.set_aspect("equal")
        cell_ax.set_axis_off()
        cell_ax.text(
            0.0,
            1.0,
            f"cell radius\n{radius_m:g} m",
            transform=cell_ax.transAxes,
            ha="left",
            va="top",
            fontsize=7,
            color="#5f6f86",
        )
        # Column-major order of a 3-column legend: each column pairs two related entries.
        legend_handles = [
            mpl.line([], [], marker="^", ls="", color=_COLOUR_BS, label="base station"),
            mpl.line([], [], color=_COLOUR_DELIVERED, label="update delivered"),
            mpl.line([], [], marker="o", ls="", mfc="none", mec="black", mew=1.6, label="selected"),
            mpl.line([], [], color=_COLOUR_LOST, ls="--", label="update lost"),
            mpl.line([], [], marker="x", ls="", color=_COLOUR_EXHAUSTED, label="battery empty"),
            mpl.line([], [], marker="o", ls="", color="#5ec962", ms=7, label="size: battery left"),
        ]
        cell_ax.legend(
            handles=legend_handles,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.01),
            ncol=3,
            fontsize=6.5,
            frameon=False,
            handlelength=1.5,
            columnspacing=1.0,
            borderaxespad=0.0,
            labelspacing=0.35,
        )
        colourbar = figure.colorbar(self._devices, cax=colour_ax, extend="both")
        colourbar.set_label("SNR at p_max (dB)", fontsize=8)
        colourbar.ax.tick_params(labelsize=7)

        # -- the accuracy curve --
        curve_ax.axhline(config.target_accuracy, color=_COLOUR_LOST, ls="--", lw=1.0)
        (self._curve,) = curve_ax.plot([], [], color=_COLOUR_CURVE, lw=1.6, marker="o", ms=2.5)
        curve_ax.set_ylim(0.0, 1.0)
        # The axis spans the episode, so the curve grows into a fixed frame.
        self._curve_rounds = config.max_rounds
        curve_ax.set_xlim(0, self._curve_rounds)
        curve_ax.set_xlabel("round", fontsize=8)
        curve_ax.set_ylabel("test accuracy", fontsize=8)
        curve_ax.tick_params(labelsize=7)
        curve_ax.grid(True, color="#e0e0e0", lw=0.6)
        curve_ax.legend(
            handles=[
                mpl.line([], [], color=_COLOUR_CURVE, marker="o", ms=2.5, label="test accuracy"),
                mpl.line([], [], color=_COLOUR_LOST, ls="--", label="target"),
            ],
            loc="lower right",
            fontsize=7,
            frameon=False,
        )

        # Blitting: everything else is drawn once into a background; a frame restores it and
        # draws only these, in this order (links under the devices, the base station on top).
        self._dynamic = (
            self._delivered_links,
            self._lost_links,
            self._devices,
            self._exhausted,
            base_station,
            self._curve,
            self._title,
        )
        for artist in self._dynamic:
            artist.set_animated(True)
        self._background: Any = None

    def __getstate__(self) -> dict[str, Any]:
        # Canvas, renderer and background buffer do not pickle; a copy of an environment
        # (pickle, deepcopy) rebuilds its figure from the configuration instead.
        return {"config": self.config}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"])  # type: ignore[misc]

    def matches(self, config: Any) -> bool:
        """Whether this figure was built for ``config`` (else a new one is needed)."""
        return config is self.config

    def draw(self, env: Any) -> np.ndarray:
        """Draw the current state of ``env`` (an unwrapped, reset environment).

        Args:
            env: The :class:`~fl_gym.envs.wireless_fl.env.WirelessFLEnv` to draw.

        Returns:
            ``(FRAME_HEIGHT_PX, FRAME_WIDTH_PX, 3)`` uint8 RGB image.
        """
        federation = env.federation
        cell = federation.cell
        wireless = self.config.wireless
        report = env._last_report
        k = cell.num_devices

        positions_m = np.asarray(cell.positions_m)
        snr = wireless.p_max_w * cell.channel_gain / wireless.noise_power_w
        with np.errstate(divide="ignore"):
            snr_db = 10.0 * np.log10(snr)
        battery_share = np.clip(cell.battery_j / cell.battery_capacity_j, 0.0, 1.0)
        low, high = _MARKER_AREA_RANGE_PT2
        area_pt2 = (low + (high - low) * battery_share) * self._marker_scale
        available = np.asarray(cell.available)
        selected = np.zeros(k, dtype=bool) if report is None else np.asarray(report.selected)
        delivered = np.zeros(k, dtype=bool) if report is None else np.asarray(report.delivered)

        ringed = selected[available]
        self._devices.set_offsets(positions_m[available])
        self._devices.set_array(snr_db[available])
        self._devices.set_sizes(area_pt2[available])
        # A (n, 4) colour array, not a list of names: one array op, whatever K.
        edge_rgba = np.where(ringed[:, None], (0.0, 0.0, 0.0, 1.0), (1.0, 1.0, 1.0, 1.0))
        self._devices.set_edgecolors(edge_rgba if ringed.size else "white")
        self._devices.set_linewidths(np.where(ringed, 1.8, 0.5) if ringed.size else 0.5)
        exhausted = positions_m[~available]
        self._exhausted.set_offsets(exhausted if exhausted.size else _NO_POINTS)
        self._delivered_links.set_segments(_links(positions_m[selected & delivered]))
        self._lost_links.set_segments(_links(positions_m[selected & ~delivered]))

        history = env.accuracy_history
        self._curve.set_data(np.arange(len(history)), history)
        if len(history) - 1 > self._curve_rounds:
            # The raw environment does not truncate: let the axis follow a longer episode.
            self._curve_rounds = 2 * (len(history) - 1)
            self.curve_axes.set_xlim(0, self._curve_rounds)
            self._background = None

        spent_j = float(env._energy_spent_j)
        capacity_j = float(cell.battery_capacity_j.sum())
        self._title.set_text(
            f"round {federation.round_index}   accuracy {federation.accuracy:.3f}   "
            f"energy spent {spent_j:.2f} of {capacity_j:.2f} J   "
            f"devices with energy {int(available.sum())}/{k}"
        )
        if self._background is None:
            self._canvas.draw()  # the static parts; animated artists are left out
            self._background = self._canvas.copy_from_bbox(self.figure.bbox)
        else:
            self._canvas.restore_region(self._background)
        for artist in self._dynamic:
            self.figure.draw_artist(artist)
        return np.asarray(self._canvas.buffer_rgba())[:, :, :3].copy()


def _links(ends_m: np.ndarray) -> np.ndarray:
    """``(n, 2, 2)`` segments from the base station at the origin to each of ``ends_m``."""
    return np.stack([np.zeros_like(ends_m), ends_m], axis=1)
