"""fl_gym/PrivateFL-v0: the privacy knobs, the accounting and the budget."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

import fl_gym.sim.learning.privacy
from fl_gym.envs.wireless_fl.private import PrivateFLConfig

dpa = pytest.importorskip("dp_accounting")
ENV_ID = "fl_gym/PrivateFL-v0"


def _action(env: gym.Env, z_value: float, c_value: float) -> np.ndarray:
    k = env.unwrapped.num_devices
    action = np.ones(k + 2, dtype=np.float32)
    action[k], action[k + 1] = z_value, c_value
    return action


def test_actions_map_geometrically_onto_the_ranges() -> None:
    env = gym.make(ENV_ID)
    env.reset(seed=0)
    cfg = env.unwrapped.config
    for value, z, c in ((-1.0, 1.0, 0.02), (1.0, 8.0, 2.0), (0.0, math.sqrt(8.0), 0.2)):
        info = env.step(_action(env, value, value))[4]
        assert info["noise_multiplier"] == pytest.approx(z)
        assert info["clip_norm"] == pytest.approx(c)
    assert cfg.noise_multiplier_min == 1.0


def test_epsilon_is_the_libraries_for_the_rounds_played() -> None:
    """Client level, rate 1: epsilon after T rounds of effective multipliers z_t is the RDP
    composition of T Gaussian mechanisms, as the library computes it directly."""
    env = gym.make(ENV_ID)
    env.reset(seed=1)
    direct = dpa.rdp.RdpAccountant(list(fl_gym.sim.learning.privacy.RDP_ORDERS))
    for t, value in enumerate((0.0, 0.5, -0.3, 1.0)):
        info = env.step(_action(env, value, 0.0))[4]
        z_eff = info["effective_noise_multiplier"]
        # Central noise on every aggregated update: the effective multiplier is the action's.
        assert z_eff == pytest.approx(info["noise_multiplier"], rel=1e-9)
        direct.compose(dpa.GaussianDpEvent(z_eff))
        assert info["epsilon"] == pytest.approx(direct.get_epsilon(1e-5), rel=1e-9), t
        assert info["delta"] == 1e-5
        assert info["noise_std"] == pytest.approx(
            z_eff * info["clip_norm"] / info["delivered"].sum(), rel=1e-9
        )


def test_the_budget_ends_the_episode() -> None:
    env = gym.make(ENV_ID, config={"epsilon_budget": 5.0, "target_accuracy": 1.0})
    env.reset(seed=2)
    for _ in range(100):
        _, reward, terminated, _, info = env.step(_action(env, -1.0, 0.0))
        assert math.isfinite(reward)
        if terminated:
            break
    assert info["privacy_budget_spent"] and info["epsilon"] >= 5.0
    assert info["round"] < 10
    previous = info["epsilon"] - info["epsilon_round"]
    assert previous < 5.0  # the round that crossed the budget ended it


def test_poisson_sampling_assumption_amplifies() -> None:
    eps = {}
    for sampling in ("none", "poisson"):
        env = gym.make(ENV_ID, config={"client_sampling": sampling})
        env.reset(seed=3)
        for _ in range(3):
            info = env.step(_action(env, 0.0, 0.0))[4]
        eps[sampling] = info["epsilon"]
    assert 0.0 < eps["poisson"] < eps["none"]


def test_over_the_air_receiver_noise_counts_toward_the_noise() -> None:
    """The server tops the channel's noise up to z x sensitivity; a noisy channel (a large cell,
    a 30 dB noise figure) gives more than that for free (Liu and Simeone 2021)."""
    for overrides, channel_dominates in (
        ({}, False),
        ({"wireless.noise_figure_db": 30.0, "wireless.cell_radius_m": 2000.0}, True),
    ):
        env = gym.make(ENV_ID, preset="over-the-air", config=overrides)
        env.reset(seed=4)
        info = env.step(_action(env, -1.0, -1.0))[4]
        last = env.unwrapped.pipeline.transforms[0].last[0]
        target = info["noise_multiplier"] * last.sensitivity
        assert last.channel_noise_std > 0.0
        assert (last.channel_noise_std > target) == channel_dominates
        assert last.noise_std == pytest.approx(max(target, last.channel_noise_std), rel=1e-9)
        assert info["effective_noise_multiplier"] == pytest.approx(
            last.noise_std / last.sensitivity, rel=1e-9
        )
        if channel_dominates:
            assert info["effective_noise_multiplier"] > 5.0 * info["noise_multiplier"]


@pytest.mark.parametrize("preset", ["central", "distributed", "over-the-air", "sample-level"])
def test_presets_are_deterministic_and_finite(preset: str) -> None:
    runs = []
    for _ in range(2):
        env = gym.make(ENV_ID, preset=preset)
        obs, _ = env.reset(seed=5)
        env.action_space.seed(5)
        trace = []
        for _ in range(3):
            obs, reward, *_, info = env.step(env.action_space.sample())
            assert np.all(np.isfinite(obs["server"])) and math.isfinite(reward)
            trace.append((reward, info["epsilon"], obs["server"].copy()))
        runs.append(trace)
    for a, b in zip(*runs, strict=True):
        assert a[0] == b[0] and a[1] == b[1] and np.array_equal(a[2], b[2])


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="noise_multiplier_min"):
        PrivateFLConfig(noise_multiplier_min=9.0, noise_multiplier_max=8.0)
    with pytest.raises(ValueError, match="aggregator"):
        gym.make(ENV_ID, config={"learning.aggregator": "median"})
    with pytest.raises(ValueError, match="unknown preset"):
        gym.make(ENV_ID, preset="nowhere")


def test_reset_without_dp_accounting_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "dp_accounting", None)  # as if not installed
    env = gym.make(ENV_ID)
    with pytest.raises(ImportError, match=r"pip install 'dp-accounting"):
        env.reset(seed=0)


@pytest.mark.parametrize("preset", ["central", "distributed", "over-the-air", "sample-level"])
@pytest.mark.parametrize("corner", ["low", "high", "alternating"])
def test_extreme_actions_keep_observations_and_rewards_finite(preset: str, corner: str) -> None:
    """The corners of the action box: the smallest and largest noise multiplier and clip norm,
    every device at the lowest or highest power and compression, with a learning rate (1e30)
    at which local training blows up (training losses near 1e29, updates that overflow and
    must be dropped). No NaN or inf may reach what the agent sees."""
    config = {"learning.learning_rate": 1e30}
    env = gym.make(ENV_ID, preset=preset, config=config, max_episode_steps=6)
    low, high = env.action_space.low, env.action_space.high
    if corner == "low":
        act = low
    elif corner == "high":
        act = high
    else:
        act = np.where(np.arange(low.size) % 2 == 0, low, high).astype(np.float32)
    obs, _ = env.reset(seed=3)
    for _ in range(6):
        obs, reward, terminated, truncated, info = env.step(act)
        assert env.observation_space.contains(obs)
        assert all(np.all(np.isfinite(v)) for v in obs.values())
        assert math.isfinite(reward)
        assert not math.isnan(info["epsilon"])
        if terminated or truncated:
            break


def test_a_reset_that_would_change_the_transport_is_refused_and_changes_nothing() -> None:
    """``over_the_air`` chooses the transport, which the pipeline (and a native vector env's)
    keeps from construction: a reset that would switch it raises, and the environment plays on
    as before."""
    env = gym.make(ENV_ID)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"must keep the transport.*DigitalUplink.*OverTheAir"):
        env.reset(seed=1, options={"config": {"over_the_air": True}})
    assert not env.unwrapped.config.over_the_air
    assert type(env.unwrapped.pipeline.transport).__name__ == "DigitalUplink"
    # Settings that keep the transport are accepted.
    env.reset(seed=1, options={"config": {"default_clip_norm": 2.0}})
    assert env.unwrapped.config.default_clip_norm == 2.0
    vec = gym.make_vec(ENV_ID, num_envs=2)
    vec.reset(seed=0)
    with pytest.raises(ValueError, match="must keep the transport"):
        vec.reset(seed=0, options={"config": {"over_the_air": True}})
    vec.close()
    env.close()
