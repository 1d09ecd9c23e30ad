"""Rendering of the wireless FL environments: what the frame shows, blitting, the missing extra."""

from __future__ import annotations

import importlib.util
import pickle
import sys

import gymnasium as gym
import numpy as np
import pytest

import fl_gym  # noqa: F401  (registers the environments)
from fl_gym.envs.rendering import (
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
