"""Rendering of the wireless FL environments: what the frame shows, blitting, the missing extra."""

from __future__ import annotations

import importlib.util
import pickle
import sys

import gymnasium as gym
import numpy as np
import pytest

import fl_gym  # noqa: F401  (registers the environments)
from fl_gym.envs.wireless_fl.rendering import (
    FRAME_HEIGHT_PX,
    FRAME_WIDTH_PX,
    SNR_RANGE_DB,
    CellRenderer,
    render_cell,
)

needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="needs the plot extra (matplotlib)"
)

ENV_ID = "fl_gym/WirelessFL-v0"


def _env(seed: int = 0, **overrides) -> gym.Env:
    env = gym.make(ENV_ID, render_mode="rgb_array", config=overrides or None)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    return env


def _pixel(axes, x: float, y: float) -> tuple[int, int]:
    """(row, column) of the data point (x, y) of ``axes`` in the frame."""
    px, py = axes.transData.transform((x, y))
    return FRAME_HEIGHT_PX - 1 - round(py - 0.5), round(px - 0.5)


def _snr_db(env: gym.Env) -> np.ndarray:
    base = env.unwrapped
    cell, wireless = base.federation.cell, base.config.wireless
    return 10.0 * np.log10(wireless.p_max_w * cell.channel_gain / wireless.noise_power_w)


def _colour_at(frame: np.ndarray, row: int, col: int) -> np.ndarray:
    return frame[row, col].astype(np.float64) / 255.0


def _rgb(name: str) -> np.ndarray:
    from matplotlib.colors import to_rgb

    return np.array(to_rgb(name))


@needs_matplotlib
def test_frame_is_a_full_size_rgb_image_with_content() -> None:
    env = _env()
    frame = env.render()
    assert frame.shape == (FRAME_HEIGHT_PX, FRAME_WIDTH_PX, 3)
    assert frame.dtype == np.uint8
    colours = np.unique(frame.reshape(-1, 3), axis=0)
    assert len(colours) > 50  # cell face, markers from a colour map, text, curve
    # Mostly a white page, but far from blank.
    white = np.all(frame == 255, axis=2).mean()
    assert 0.3 < white < 0.95
    assert render_cell(env).shape == frame.shape  # wrapped envs are accepted


@needs_matplotlib
def test_frame_changes_after_a_step_and_tracks_the_state() -> None:
    env = _env()
    before = env.render()
    env.step(env.action_space.sample())
    after = env.render()
    assert not np.array_equal(before, after)
    # Blitting onto a cached background draws exactly what a fresh figure draws.
    env.unwrapped._renderer = None
    fresh = env.render()
    np.testing.assert_array_equal(after, fresh)


@needs_matplotlib
def test_same_seed_and_actions_give_identical_frames() -> None:
    frames = []
    for _ in range(2):
        env = _env(seed=3)
        for _ in range(3):
            env.step(env.action_space.sample())
        frames.append(env.render())
    np.testing.assert_array_equal(frames[0], frames[1])


@needs_matplotlib
def test_a_device_is_coloured_by_its_snr_at_p_max() -> None:
    # One device far enough from the base station that no other marker covers its centre.
    env = _env(seed=0, num_devices=1)
    frame = env.render()
    renderer = env.unwrapped._renderer
    position = env.unwrapped.federation.cell.positions_m[0]
    assert np.hypot(*position) > 0.2 * env.unwrapped.config.wireless.cell_radius_m
    low, high = SNR_RANGE_DB
    share = float(np.clip((_snr_db(env)[0] - low) / (high - low), 0.0, 1.0))
    from matplotlib import colormaps

    expected = np.array(colormaps["viridis"](share)[:3])
    row, col = _pixel(renderer.cell_axes, *position)
    np.testing.assert_allclose(_colour_at(frame, row, col), expected, atol=2.5 / 255)


@needs_matplotlib
def test_marker_area_grows_linearly_with_the_battery_left() -> None:
    env = _env(seed=4)
    ones = np.ones(env.action_space.shape, dtype=np.float32)  # everyone, full power
    for _ in range(3):
        env.step(ones)
    env.render()
    cell = env.unwrapped.federation.cell
    share = (cell.battery_j / cell.battery_capacity_j)[cell.available]
    assert np.ptp(share) > 0.05  # the devices have drained unequally
    sizes = env.unwrapped._renderer._devices.get_sizes()
    slope, intercept = np.polyfit(share, sizes, 1)
    assert slope > 0 and intercept > 0  # an empty battery still leaves a visible marker
    np.testing.assert_allclose(sizes, slope * share + intercept, rtol=1e-9)


@needs_matplotlib
def test_an_exhausted_device_is_a_grey_cross_and_the_title_counts_it() -> None:
    # A battery far below one round's energy at full power empties in the first round.
    wireless = gym.make(ENV_ID).unwrapped.config.wireless
    tiny_j = 10 * wireless.battery_floor_j
    env = _env(seed=1, num_devices=1, battery_min_j=tiny_j, battery_max_j=tiny_j)
    _, _, terminated, _, info = env.step(np.ones(env.action_space.shape, dtype=np.float32))
    assert terminated and not env.unwrapped.federation.cell.available.any()
    assert info["selected"][0] and not info["delivered"][0]
    frame = env.render()
    renderer = env.unwrapped._renderer
    row, col = _pixel(renderer.cell_axes, *env.unwrapped.federation.cell.positions_m[0])
    np.testing.assert_allclose(_colour_at(frame, row, col), _rgb("#8c8c8c"), atol=0.06)
    assert "devices with energy 0/1" in renderer._title.get_text()


@needs_matplotlib
def test_accuracy_curve_follows_the_history() -> None:
    env = _env(seed=2)
    infos = [env.unwrapped.federation.accuracy]
    for _ in range(4):
        infos.append(env.step(env.action_space.sample())[4]["accuracy"])
    assert env.unwrapped.accuracy_history == tuple(infos)
    frame = env.render()
    renderer = env.unwrapped._renderer
    xs, ys = renderer._curve.get_data()
    np.testing.assert_array_equal(xs, np.arange(5))
    np.testing.assert_array_equal(ys, infos)
    # The last point's marker is drawn in the curve's colour where the accuracy says.
    row, col = _pixel(renderer.curve_axes, 4, infos[-1])
    np.testing.assert_allclose(_colour_at(frame, row, col), _rgb("#2c7bb6"), atol=0.08)


@needs_matplotlib
def test_long_raw_episode_extends_the_round_axis() -> None:
    max_rounds = 3
    env = _env(seed=0, max_rounds=max_rounds)
    env.render()
    renderer = env.unwrapped._renderer
    assert renderer.curve_axes.get_xlim() == (0.0, float(max_rounds))
    raw = env.unwrapped  # no TimeLimit: the episode may outlast max_rounds
    for _ in range(max_rounds + 2):
        raw.step(raw.action_space.sample())
    frame = raw.render()
    assert renderer.curve_axes.get_xlim()[1] >= max_rounds + 2
    raw._renderer = None
    np.testing.assert_array_equal(frame, raw.render())


@needs_matplotlib
def test_new_configuration_rebuilds_the_figure_and_close_drops_it() -> None:
    env = _env(seed=0)
    env.render()
    first = env.unwrapped._renderer
    assert isinstance(first, CellRenderer) and first.matches(env.unwrapped.config)
    env.render()
    assert env.unwrapped._renderer is first
    target = env.unwrapped.config.target_accuracy / 2
    env.reset(seed=0, options={"config": {"target_accuracy": target}})
    env.render()
    second = env.unwrapped._renderer
    assert second is not first and second.config.target_accuracy == target
    env.close()
    assert env.unwrapped._renderer is None


@needs_matplotlib
def test_environment_with_a_figure_pickles() -> None:
    env = _env(seed=0)
    env.step(env.action_space.sample())
    frame = env.render()
    copy = pickle.loads(pickle.dumps(env.unwrapped))
    np.testing.assert_array_equal(copy.render(), frame)


def test_render_before_reset_is_an_error() -> None:
    env = gym.make(ENV_ID, render_mode="rgb_array")
    with pytest.raises(RuntimeError, match="reset"):
        render_cell(env)


def test_missing_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    env = _env(seed=0)
    with pytest.raises(ImportError, match=r'pip install "fl-gym\[plot\]"'):
        env.render()


# -- the vehicular road map ----------------------------------------------------------------------

VEHICULAR_ID = "fl_gym/VehicularURLLC-v1"


def _vehicular(seed: int = 0, preset: str | None = None, **overrides) -> gym.Env:
    env = gym.make(VEHICULAR_ID, render_mode="rgb_array", preset=preset, config=overrides or None)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    return env


@needs_matplotlib
@pytest.mark.parametrize(("preset", "road"), [(None, "street"), ("freeway", "road")])
def test_road_map_has_a_title_a_legend_and_metre_axes(preset: str | None, road: str) -> None:
    from fl_gym.envs.vehicular.rendering import FREEWAY_FRAME_PX, MANHATTAN_FRAME_PX

    env = _vehicular(preset=preset)
    frames = [env.render()]
    for _ in range(3):
        env.step(env.action_space.sample())
        frames.append(env.render())
    height, width = MANHATTAN_FRAME_PX if preset is None else FREEWAY_FRAME_PX
    assert {f.shape for f in frames} == {(height, width, 3)}
    assert all(f.dtype == np.uint8 for f in frames)
    renderer = env.unwrapped._road_renderer
    assert [t.get_text() for t in renderer.legend.get_texts()] == [
        road,
        "transmitter, queue ≤ q0",
        "transmitter, queue > q0",
        "receiver",
        "V2V link",
    ]
    q0 = env.unwrapped.config.system.queue_threshold_bits
    assert renderer.legend.get_title().get_text() == f"q0 = {q0:,.0f} bits"
    assert renderer.axes.get_xlabel() == "x (m)" and renderer.axes.get_ylabel().endswith("(m)")
    queues = env.unwrapped.game.system.queue_bits
    assert renderer.title.get_text().startswith(
        f"slot 3: {int((queues > q0).sum())} of {queues.size} queues above q0, mean power "
    )


@needs_matplotlib
def test_road_map_colours_a_transmitter_by_its_queue_and_joins_its_receiver() -> None:
    env = _vehicular(seed=1, **{"system.num_pairs": 1})
    base = env.unwrapped
    system = base.game.system
    q0 = base.config.system.queue_threshold_bits
    for queue_bits, colour, above in ((0.0, "#1a9850", 0), (2.0 * q0, "#d73027", 1)):
        system.queue_bits[:] = queue_bits
        frame = env.render()
        renderer = base._road_renderer
        px, py = renderer.axes.transData.transform(system.tx_m[0])
        row, col = frame.shape[0] - 1 - round(py - 0.5), round(px - 0.5)
        np.testing.assert_allclose(_colour_at(frame, row, col), _rgb(colour), atol=2.5 / 255)
        assert renderer.title.get_text().startswith(f"slot 0: {above} of 1 queues above q0")
    # The receiver sits the pair's headway from its transmitter, the link joins the two.
    tx = renderer._transmitters.get_offsets()
    rx = renderer._receivers.get_offsets()
    np.testing.assert_allclose(np.hypot(*(rx - tx).T), system.headway_m, rtol=1e-12)
    np.testing.assert_allclose(renderer._links.get_segments()[0], np.vstack([tx, rx]))


@needs_matplotlib
def test_parallel_vehicular_env_draws_the_gymnasium_envs_road_map() -> None:
    """vehicular_v1's rgb_array frames are the Gymnasium env's for the same seed and actions
    (one renderer for both), full-size images with content that change from slot to slot."""
    from fl_gym.envs import vehicular_v1
    from fl_gym.envs.vehicular.rendering import MANHATTAN_FRAME_PX

    penv = vehicular_v1.parallel_env(render_mode="rgb_array")
    genv = _vehicular(seed=3)
    penv.reset(seed=3)
    frames = [penv.render()]
    np.testing.assert_array_equal(frames[0], genv.render())
    for _ in range(2):
        action = genv.action_space.sample()
        levels, blocks = penv.codec.decode(action)
        genv.step(action)
        penv.step(penv.codec.encode_agents(levels, blocks, penv.agents))
        frames.append(penv.render())
        np.testing.assert_array_equal(frames[-1], genv.render())
    assert {f.shape for f in frames} == {(*MANHATTAN_FRAME_PX, 3)}
    assert all(f.dtype == np.uint8 for f in frames)
    assert len(np.unique(frames[0].reshape(-1, 3), axis=0)) > 10  # not a blank frame
    assert not np.array_equal(frames[0], frames[1]) and not np.array_equal(frames[1], frames[2])
    assert penv.unwrapped._road_renderer.title.get_text().startswith("slot 2: ")


def test_parallel_vehicular_env_render_errors() -> None:
    from fl_gym.envs import vehicular_v1

    with pytest.raises(ValueError, match=r"render_mode must be None or one of \['rgb_array', "):
        vehicular_v1.parallel_env(render_mode="rgb")
    with pytest.raises(RuntimeError, match=r"call reset\(\) before render\(\)"):
        vehicular_v1.parallel_env(render_mode="rgb_array").render()


# -- the UAV swarm and its GIF -------------------------------------------------------------------


def _swarm_episode(num_uavs: int = 12, max_steps: int = 8) -> tuple[object, list[np.ndarray]]:
    """Fly a small swarm with the straight-line controller; frames drawn by render_env."""
    from fl_gym.baselines.uav import make_controller
    from fl_gym.envs import uav_swarm_v0
    from fl_gym.envs.uav.rendering import render_env

    config = {"num_uavs": num_uavs, "max_steps": max_steps}
    env = uav_swarm_v0.parallel_env(config=config, render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    controller = make_controller("straight-line", env.config)
    controller.reset(0)
    frames = [render_env(env, controller="straight-line")]
    while env.agents:
        live = obs if len(obs) == len(env.agents) else {a: obs[a] for a in env.agents}
        obs, *_ = env.step(controller.predict(live)[0])
        frames.append(render_env(env, controller="straight-line"))
    return env, frames


@needs_matplotlib
def test_uav_frames_keep_their_size_legend_and_labels_inside_the_figure() -> None:
    from fl_gym.envs.uav.rendering import FRAME_HEIGHT_PX as UAV_H
    from fl_gym.envs.uav.rendering import FRAME_WIDTH_PX as UAV_W
    from fl_gym.envs.uav.rendering import render_env

    env, frames = _swarm_episode()
    assert len(frames) == env.swarm.steps + 1
    assert {f.shape for f in frames} == {(UAV_H, UAV_W, 3)}
    renderer = env._swarm_renderer
    assert [t.get_text() for t in renderer.legend.get_texts()] == [
        "source region",
        "destination region",
        "flying UAV",
    ]
    flying = int(env.swarm.flying.sum())
    assert renderer.title.get_text().startswith(
        f"straight-line | step {env.swarm.steps}: {flying} of 12 UAVs flying"
    )
    # No label is clipped: every text lies inside the figure.
    canvas_renderer = renderer.figure.canvas.get_renderer()
    figure_box = renderer.figure.bbox
    labels = (
        renderer.axes.xaxis.label,
        renderer.axes.yaxis.label,
        renderer.title,
        renderer._colourbar.ax.yaxis.label,
    )
    for text in labels:
        box = text.get_window_extent(renderer=canvas_renderer)
        assert figure_box.x0 <= box.x0 and box.x1 <= figure_box.x1, text.get_text()
        assert figure_box.y0 <= box.y0 and box.y1 <= figure_box.y1, text.get_text()
    # One metre spans as many pixels across as up.
    scale = renderer.axes.transData.transform([[0.0, 0.0], [1.0, 1.0]])
    dx, dy = scale[1] - scale[0]
    assert dx == pytest.approx(dy, rel=1e-6)
    # Blitting onto the cached background draws what a fresh figure draws.
    env._swarm_renderer = None
    np.testing.assert_array_equal(render_env(env, controller="straight-line"), frames[-1])


@needs_matplotlib
def test_gif_holds_every_frame_exactly_at_the_given_rate(tmp_path) -> None:
    from PIL import Image

    from fl_gym.envs.uav.rendering import write_gif

    rows = np.arange(30, dtype=np.uint8)[:, None, None]
    frames = [np.broadcast_to(rows * k, (30, 40, 3)).copy() for k in (1, 3, 5)]
    calls: list[int] = []
    path = write_gif(frames, tmp_path / "f.gif", fps=4, on_frame=lambda: calls.append(1))
    assert len(calls) == len(frames)
    with Image.open(path) as gif:
        assert gif.n_frames == len(frames) and gif.size == (40, 30)
        assert gif.info["duration"] == 250 and gif.info["loop"] == 0
        for i, frame in enumerate(frames):
            gif.seek(i)
            np.testing.assert_array_equal(np.asarray(gif.convert("RGB")), frame)


# -- the episode plot (fl-gym demo, run, bench) --------------------------------------------------


def _episode(seed: int, accuracy: list[float], energy_j: list[float]):
    from fl_gym.envs.rollout import EpisodeResult

    rounds = len(energy_j)
    return EpisodeResult(
        seed=seed,
        accuracy=accuracy,
        energy_j=energy_j,
        round_time_s=[0.1] * rounds,
        rewards=[1.0] * rounds,
    )


AGENT = "ppo:models/agent"
PLOT_RESULTS = {
    "round-robin": [
        _episode(0, [0.1, 0.5, 0.8], [0.2, 0.2]),
        _episode(1, [0.1, 0.6, 0.9, 0.9], [0.1, 0.3, 0.2]),
    ],
    "best-channel": [
        _episode(0, [0.1, 0.5, 0.8], [0.2, 0.2]),
        _episode(1, [0.1, 0.6, 0.9, 0.9], [0.1, 0.2, 0.2]),
    ],
    AGENT: [
        _episode(0, [0.1, 0.3, 0.7, 0.8], [0.01, 0.02, 0.01]),
        _episode(1, [0.1, 0.4, 0.8, 0.85], [0.02, 0.02, 0.01]),
    ],
}


@needs_matplotlib
def test_episode_plot_has_an_energy_panel_the_agent_and_distinct_styles() -> None:
    from fl_gym.envs.plotting import ENERGY_LABEL, episode_figure

    fig = episode_figure(PLOT_RESULTS, title="ClientSelection")
    ax_acc, ax_energy, ax_tradeoff = fig.axes
    assert (ax_energy.get_xlabel(), ax_energy.get_ylabel()) == ("round", ENERGY_LABEL)
    assert ax_tradeoff.get_xlabel() == ENERGY_LABEL and ax_acc.get_ylabel() == "test accuracy"
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == list(PLOT_RESULTS)
    # Cumulative energy, averaged over the episodes, an ended episode holding its total.
    expected = np.mean([[0.0, 0.2, 0.4, 0.4], [0.0, 0.1, 0.4, 0.6]], axis=0)
    np.testing.assert_allclose(ax_energy.get_lines()[0].get_ydata(), expected)
    np.testing.assert_allclose(ax_tradeoff.get_lines()[0].get_xdata(), expected)
    # Identical curves (round-robin and best-channel share their accuracy) stay apart by style.
    lines = ax_acc.get_lines()
    np.testing.assert_array_equal(lines[0].get_ydata(), lines[1].get_ydata())
    styles = {(ln.get_color(), ln.get_linestyle(), ln.get_marker()) for ln in lines}
    assert len(styles) == len(lines)
    agent = lines[2]
    assert agent.get_color() == "black" and agent.get_linewidth() > lines[0].get_linewidth()
    assert fig._suptitle.get_text() == "ClientSelection"


def test_caption_names_the_quantity_that_differs_most() -> None:
    from fl_gym.envs.plotting import describe_differences

    caption = describe_differences(PLOT_RESULTS)
    # Energy totals: round-robin 0.5 J, best-channel 0.45 J, the agent 0.045 J (91% below).
    assert caption.startswith(
        "Policies differ most in energy: the lowest policy mean is 91% below the highest."
    )
    assert f"energy 0.045 J ({AGENT}) to 0.5 J (round-robin)" in caption
    assert "Final accuracy 0.825 (ppo:models/agent) to 0.850 (round-robin)" in caption
    assert "rounds 2.5 (round-robin) to 3.0 (ppo:models/agent)" in caption
    assert "Means over 2 episodes per policy" in caption


@needs_matplotlib
def test_plot_episodes_writes_the_figure(tmp_path) -> None:
    from PIL import Image

    from fl_gym.envs.plotting import plot_episodes

    path = plot_episodes(PLOT_RESULTS, tmp_path / "sub" / "demo.png", title="t")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (1600, 540)
    with pytest.raises(ValueError, match="at least one episode"):
        plot_episodes({"random": []}, tmp_path / "x.png")
