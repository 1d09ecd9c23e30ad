"""render_mode="human": a matplotlib window of the env's own frames, or a clear error without a
display (instead of Gymnasium's pygame wrapper failing at the first reset)."""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import matplotlib
import numpy as np
import pytest

import fl_gym
from fl_gym.envs import human, uav_swarm_v0, vehicular_v1

UAV_SMALL = {"config": {"num_uavs": 6}}


def _builders() -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = [
        (env_id, lambda env_id=env_id, **kw: gym.make(env_id, **kw)) for env_id in fl_gym.ENV_IDS
    ]
    out.append(("uav_swarm_v0", lambda **kw: uav_swarm_v0.parallel_env(**UAV_SMALL, **kw)))
    out.append(("vehicular_v1", lambda **kw: vehicular_v1.parallel_env(**kw)))
    return out


def _first_step(name: str, env: Any, twin: Any) -> None:
    if name == "uav_swarm_v0":
        space = env.action_space(env.agents[0])
        actions = {a: np.zeros(space.shape, np.float32) for a in env.agents}
        env.step(actions)
        twin.step(actions)
    elif name == "vehicular_v1":
        actions = {a: np.array([1, 0]) for a in env.agents}
        env.step(actions)
        twin.step(actions)
    else:
        env.action_space.seed(0)
        action = env.action_space.sample()
        env.step(action)
        twin.step(action)


def _window(env: Any) -> human.HumanWindow:
    return env.unwrapped._window if hasattr(env, "unwrapped") else env._window


@pytest.mark.parametrize(("name", "build"), _builders(), ids=[n for n, _ in _builders()])
def test_without_a_display_the_frames_are_kept_and_one_warning_says_so(
    name: str, build: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not Gymnasium's pygame wrapper failing at the first reset: the env works, names the
    missing display once, and keeps the frame it would show."""
    assert matplotlib.get_backend().lower() == "agg"  # the test machine has no display
    monkeypatch.setattr(human, "_WARNED", False)
    env, twin = build(render_mode="human"), build(render_mode="rgb_array")
    with pytest.warns(UserWarning, match=r"render_mode='human' .* no display .*'agg'"):
        env.reset(seed=0)
    twin.reset(seed=0)
    assert np.array_equal(_window(env).frame, twin.render())
    with warnings.catch_warnings(record=True) as later:
        warnings.simplefilter("always")
        _first_step(name, env, twin)
    assert not [w for w in later if "render_mode='human'" in str(w.message)]  # warned once
    assert np.array_equal(_window(env).frame, twin.render())
    assert env.render() is None
    env.close()
    twin.close()


@pytest.mark.parametrize(("name", "build"), _builders(), ids=[n for n, _ in _builders()])
def test_human_mode_shows_the_rgb_array_frames(
    name: str, build: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a display (simulated: the check passes, the window draws on Agg), every reset and
    step shows the frame the rgb_array mode returns, in one window, and render() returns None."""
    monkeypatch.setattr(human, "display_problem", lambda: None)
    shown: list[np.ndarray] = []
    monkeypatch.setattr("matplotlib.pyplot.pause", lambda _s: None)
    original = human.HumanWindow.show

    def record(self: human.HumanWindow, frame: np.ndarray) -> None:
        shown.append(frame.copy())
        original(self, frame)

    monkeypatch.setattr(human.HumanWindow, "show", record)
    env, twin = build(render_mode="human"), build(render_mode="rgb_array")
    env.reset(seed=0)
    twin.reset(seed=0)
    _first_step(name, env, twin)
    assert len(shown) == 2  # after reset and after step
    assert np.array_equal(shown[-1], twin.render())
    assert env.render() is None
    window = _window(env)
    assert np.array_equal(window.frame, shown[-1])
    env.close()
    assert window.frame is None
    twin.close()
