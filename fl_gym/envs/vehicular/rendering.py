"""Drawing of the vehicular URLLC environment: the road map from above, as an RGB image.

matplotlib is imported only when a frame is drawn, through its object-oriented API (a
:class:`matplotlib.figure.Figure` on its own Agg canvas), so that drawing never touches
pyplot's global state or the user's backend. The environment keeps its
:class:`RoadMapRenderer` between frames (building the figure costs more than drawing it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["FREEWAY_FRAME_PX", "MANHATTAN_FRAME_PX", "RoadMapRenderer", "render_road_map"]

MANHATTAN_FRAME_PX = (640, 640)
"""``(height, width)`` of a frame of the Manhattan grid."""

FREEWAY_FRAME_PX = (360, 800)
"""``(height, width)`` of a frame of the freeway."""

_DPI = 100
_COLOUR_STREET = "#c8c8c8"
_COLOUR_GROUND = "#f4f4f0"
_COLOUR_BELOW = "#1a9850"
_COLOUR_ABOVE = "#d73027"
_COLOUR_RECEIVER = "#2c7bb6"
_COLOUR_LINK = "#555555"


def render_road_map(env: Any) -> np.ndarray:
    """Draw the road map of a vehicular environment (possibly wrapped) after ``reset()``.

    Streets (or lanes) are grey bands; each transmitter is a triangle, green while its queue is
    at most ``q0`` and red above it; its receiver is a blue circle joined to it by a line (the
    V2V link, the short way round the torus). The title gives the slot, the queues above
    ``q0`` and the last slot's mean transmit power. The figure is built on the first call and
    kept on the environment (its ``_road_renderer`` slot; rebuilt when the configuration
    changes).

    Args:
        env: A :class:`~fl_gym.envs.vehicular.env.VehicularURLLCEnv` or a
            :class:`~fl_gym.envs.vehicular.parallel.VehicularEnv` (anything with a ``game``).

    Returns:
        ``(H, W, 3)`` uint8 RGB image, :data:`MANHATTAN_FRAME_PX` or :data:`FREEWAY_FRAME_PX`.

    Raises:
        RuntimeError: The environment has not been reset.
        ImportError: matplotlib is not installed.
    """
    base = getattr(env, "unwrapped", env)
    game = getattr(base, "game", None)
    if game is None:
        raise RuntimeError("call reset() before render()")
    renderer = getattr(base, "_road_renderer", None)
    if not isinstance(renderer, RoadMapRenderer) or renderer.config is not game.config:
        renderer = RoadMapRenderer(game.config)
        base._road_renderer = renderer
    return renderer.draw(game)


class RoadMapRenderer:
    """One figure of the road map, redrawn frame after frame at a fixed size and layout.

    Args:
        config: The environment's :class:`~fl_gym.envs.vehicular.env.VehicularURLLCConfig`.

    Attributes:
        config: The configuration the figure was built for.
        figure: The :class:`matplotlib.figure.Figure` (on an Agg canvas).
        axes: The map's axes, in metres.
        legend: The legend (streets, transmitters below and above ``q0``, receivers, links).
        title: The title text.

    Raises:
        ImportError: matplotlib is not installed.
    """

    def __init__(self, config: Any) -> None:
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.collections import LineCollection
            from matplotlib.figure import Figure
            from matplotlib.lines import Line2D
            from matplotlib.patches import Patch, Rectangle
        except ImportError as exc:
            raise ImportError(
                "rendering the vehicular environment needs matplotlib, which is not installed; "
                'install it with: pip install "fl-gym[plot]"'
            ) from exc
        self.config = config
        system = config.system
        self._manhattan = system.layout == "manhattan"
        height_px, width_px = MANHATTAN_FRAME_PX if self._manhattan else FREEWAY_FRAME_PX
        fig = self.figure = Figure(
            figsize=(width_px / _DPI, height_px / _DPI), dpi=_DPI, layout="constrained"
        )
        self._canvas = FigureCanvasAgg(fig)
        ax = self.axes = fig.add_subplot()
        ax.set_facecolor(_COLOUR_GROUND)
        if self._manhattan:
            side_m = system.area_side_m
            half = system.street_width_m / 2
            # The last street is the first one again (the map is a torus): drawn at both edges.
            for offset in np.arange(system.num_streets + 1) * system.block_size_m:
                for xy, w, h in (
                    ((-half, offset - half), side_m + 2 * half, 2 * half),
                    ((offset - half, -half), 2 * half, side_m + 2 * half),
                ):
                    ax.add_patch(Rectangle(xy, w, h, color=_COLOUR_STREET, lw=0, zorder=0))
            margin = 0.03 * side_m
            ax.set_xlim(-margin, side_m + margin)
            ax.set_ylim(-margin, side_m + margin)
            ax.set_aspect("equal")
            ax.set_ylabel("y (m)")
            self._period = np.array([side_m, side_m])
        else:
            lanes, width = system.freeway_lanes, system.lane_width_m
            ax.add_patch(
                Rectangle(
                    (0.0, -width / 2),
                    system.freeway_length_m,
                    lanes * width,
                    color=_COLOUR_STREET,
                    lw=0,
                    zorder=0,
                )
            )
            ax.set_xlim(0.0, system.freeway_length_m)
            ax.set_ylim(-width, lanes * width)
            ax.set_ylabel("across the road (m)")
            self._period = np.array([system.freeway_length_m, np.inf])
        ax.set_xlabel("x (m)")
        ax.tick_params(labelsize=8)
        q0 = system.queue_threshold_bits
        self._links = LineCollection([], colors=_COLOUR_LINK, linewidths=0.9, zorder=2)
        ax.add_collection(self._links, autolim=False)
        self._receivers = ax.scatter(
            [], [], s=18, marker="o", facecolors="white", edgecolors=_COLOUR_RECEIVER, zorder=3
        )
        self._transmitters = ax.scatter([], [], s=42, marker="^", linewidths=0, zorder=4)
        self.legend = fig.legend(
            handles=[
                Patch(color=_COLOUR_STREET, label="street" if self._manhattan else "road"),
                Line2D(
                    [],
                    [],
                    marker="^",
                    ls="",
                    color=_COLOUR_BELOW,
                    label="transmitter, queue ≤ q0",
                ),
                Line2D(
                    [], [], marker="^", ls="", color=_COLOUR_ABOVE, label="transmitter, queue > q0"
                ),
                Line2D(
                    [],
                    [],
                    marker="o",
                    ls="",
                    mfc="white",
                    mec=_COLOUR_RECEIVER,
                    label="receiver",
                ),
                Line2D([], [], color=_COLOUR_LINK, lw=0.9, label="V2V link"),
            ],
            loc="outside lower center",
            ncols=3 if self._manhattan else 5,
            fontsize=8,
            frameon=False,
            title=f"q0 = {q0:,.0f} bits",
            title_fontsize=8,
        )
        self.title = ax.set_title("slot 0", fontsize=10)
        self._canvas.draw()  # solves the layout once ...
        fig.set_layout_engine("none")  # ... and keeps it for every frame

    def __getstate__(self) -> dict[str, Any]:
        # The canvas does not pickle; a copy of an environment rebuilds the figure.
        return {"config": self.config}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"])  # type: ignore[misc]

    def draw(self, game: Any) -> np.ndarray:
        """Draw the current slot of ``game``, a reset
        :class:`~fl_gym.envs.vehicular.env.VehicularGame`.

        Returns:
            ``(H, W, 3)`` uint8 RGB image.
        """
        system = game.system
        config = self.config.system
        tx = np.asarray(system.tx_m, dtype=np.float64)
        rx = np.asarray(system.rx_m, dtype=np.float64)
        # The link the short way round the torus (it may leave the map at an edge).
        link = rx - tx
        finite = np.isfinite(self._period)
        link[:, finite] -= self._period[finite] * np.round(link[:, finite] / self._period[finite])
        above = np.asarray(system.queue_bits) > config.queue_threshold_bits
        self._links.set_segments(np.stack([tx, tx + link], axis=1))
        self._receivers.set_offsets(tx + link)
        self._transmitters.set_offsets(tx)
        self._transmitters.set_color(
            np.where(above[:, None], _rgb(_COLOUR_ABOVE), _rgb(_COLOUR_BELOW))
        )
        report = game.last_report
        power = (
            "" if report is None else f", mean power {1e3 * float(np.mean(report.power_w)):.1f} mW"
        )
        self.title.set_text(
            f"slot {system.slot}: {int(above.sum())} of {above.size} queues above q0{power}"
        )
        self._canvas.draw()
        return np.asarray(self._canvas.buffer_rgba())[:, :, :3].copy()


def _rgb(colour: str) -> np.ndarray:
    from matplotlib.colors import to_rgb

    return np.array(to_rgb(colour))
