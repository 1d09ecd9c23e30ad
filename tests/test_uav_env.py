"""Tests of the PettingZoo environment ``uav_swarm_v0``: the PettingZoo API and seed tests,
bit-identical trajectories under a seed, observations and rewards against the simulator's
state, termination and truncation, bad actions and configurations, rendering."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence
from pettingzoo.test import parallel_api_test, parallel_seed_test

from fl_gym.envs import uav_swarm_v0
from fl_gym.envs.uav_swarm_v0 import OBS_BOUND, REWARD_TERMS, UAVSwarmEnv
from fl_gym.sim.uav.swarm import UAVSwarmConfig

SMALL = {"num_uavs": 12, "max_steps": 40}
# A close destination: a straight-line controller brings UAVs there within a few dozen steps.
NEAR = {"num_uavs": 12, "destination_center_m": (25.0, 0.0), "max_steps": 200}


def _toward_goal(env: UAVSwarmEnv, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A straight-line PD controller written against the documented observation layout."""
    cfg = env.config.swarm
    o = np.stack([obs[a] for a in env.agents])
    goal = o[:, 4:6] * cfg.source_to_destination_m
    vel = o[:, 2:4] * cfg.max_speed_mps
    u = np.clip((0.8 * goal - 2.0 * vel) / cfg.max_accel_mps2, -1, 1).astype(np.float32)
    return dict(zip(env.agents, u, strict=True))


def test_module_exposes_the_pettingzoo_entry_points() -> None:
    par = uav_swarm_v0.parallel_env(config=SMALL)
    assert isinstance(par, UAVSwarmEnv) and uav_swarm_v0.raw_env is UAVSwarmEnv
    assert par.metadata["name"] == "uav_swarm_v0"
    aec = uav_swarm_v0.env(config=SMALL)
    aec.reset(seed=0)
    assert aec.agents == par.possible_agents
    agent = aec.agent_selection
    assert aec.observation_space(agent).shape == (16,)


def test_parallel_api_test() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the API test warns about live/dead agents mismatches
        # ... and resets with options={"options": 1}, which the env warns of and ignores.
        warnings.filterwarnings("ignore", "unknown reset option", UserWarning)
        parallel_api_test(uav_swarm_v0.parallel_env(config=SMALL), num_cycles=60)
        parallel_api_test(uav_swarm_v0.parallel_env(config=NEAR), num_cycles=300)


def test_parallel_seed_test() -> None:
    parallel_seed_test(lambda: uav_swarm_v0.parallel_env(config=SMALL))


def _trajectory(seed: int, config: dict) -> list:
    env = uav_swarm_v0.parallel_env(config=config)
    obs, _ = env.reset(seed=seed)
    out = [obs]
    while env.agents:
        result = env.step(_toward_goal(env, obs))
        obs = result[0]
        out.append((result, env.state()))
    return out


def test_same_seed_and_actions_give_bit_identical_trajectories() -> None:
    a = _trajectory(3, NEAR)
    b = _trajectory(3, NEAR)
    c = _trajectory(4, NEAR)
    assert len(a) == len(b) and data_equivalence(a, b)
    assert not data_equivalence(a[1], c[1])


def test_spaces_are_identical_for_all_agents_and_observations_match_the_swarm() -> None:
    env = uav_swarm_v0.parallel_env(config={"num_uavs": 30})
    obs, _ = env.reset(seed=1)
    spaces_ = {id(env.observation_space(a)) for a in env.possible_agents}
    assert len(spaces_) == 1 and len({id(env.action_space(a)) for a in env.agents}) == 1
    box = env.observation_space("uav_0")
    assert box.dtype == np.float32 and box.shape == (len(env.feature_names),) == (16,)
    for _ in range(5):
        obs, *_ = env.step({a: np.array([0.5, -0.25], np.float32) for a in env.agents})
    cfg = env.config.swarm
    swarm = env.swarm
    scale = cfg.source_to_destination_m
    o = np.stack([obs[a] for a in env.agents])
    assert all(box.contains(v) for v in obs.values())
    np.testing.assert_allclose(o[:, 0:2], swarm.positions_m / scale, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(o[:, 2:4], swarm.velocities_mps / cfg.max_speed_mps, atol=1e-6)
    goal = np.asarray(cfg.destination_center_m) - swarm.positions_m
    np.testing.assert_allclose(o[:, 4:6], goal / scale, rtol=1e-6)
    np.testing.assert_allclose(o[:, 6:15], swarm.local_density() / cfg.lattice_cell_count)
    np.testing.assert_allclose(o[:, 15], 5 / cfg.max_steps)
    state = env.state()
    assert env.state_space.contains(state) and state.shape == (5 * 30 + 1,)
    np.testing.assert_allclose(state[1:3], o[0, 0:2])


def test_rewards_are_the_sum_of_their_documented_terms() -> None:
    env = uav_swarm_v0.parallel_env(config={"num_uavs": 20, "wind_std_mps_per_sqrt_s": 0.0})
    env.reset(seed=0)
    cfg, weights = env.config.swarm, env.config
    action = np.array([0.5, -1.0], np.float32)
    before = env.swarm.distance_to_destination_m()
    _, rewards, _, _, infos = env.step(dict.fromkeys(env.agents, action))
    after = env.swarm.distance_to_destination_m()
    u = action.astype(np.float64) * cfg.max_accel_mps2
    for i, agent in enumerate(env.possible_agents):
        terms = infos[agent]["reward_terms"]
        assert tuple(terms) == REWARD_TERMS
        assert rewards[agent] == pytest.approx(sum(terms.values()), abs=1e-12)
        energy = -weights.energy_weight_per_m2_s3 * (u @ u) * cfg.time_step_s
        assert terms["energy"] == pytest.approx(energy)
        assert terms["time"] == pytest.approx(-weights.time_cost_per_s * cfg.time_step_s)
        assert terms["progress"] == pytest.approx(
            weights.progress_reward_per_m * (before[i] - after[i])
        )
        assert terms["collision"] == 0.0  # the start is collision-free and UAVs move alike
        assert terms["flocking"] == pytest.approx(0.0, abs=1e-20)  # all share one velocity


def test_collisions_are_penalised_per_neighbour() -> None:
    env = uav_swarm_v0.parallel_env(config={"num_uavs": 3, "wind_std_mps_per_sqrt_s": 0.0})
    env.reset(seed=0)
    env.swarm.positions_m[:] = [[0.0, 0.0], [0.6, 0.0], [0.0, 0.9]]  # 1-2: 1.08 m
    _, _, _, _, infos = env.step({})
    got = [infos[a]["reward_terms"]["collision"] for a in env.possible_agents]
    assert got == [-2.0, -1.0, -1.0]
    assert env.last_step is not None and env.last_step.num_collision_pairs == 2


def test_arrived_agents_terminate_and_are_removed_then_the_rest_truncate() -> None:
    env = uav_swarm_v0.parallel_env(config={**NEAR, "max_steps": 60})
    obs, _ = env.reset(seed=2)
    finished: set[str] = set()
    steps = 0
    while env.agents:
        acting = list(env.agents)
        actions = _toward_goal(env, obs)
        obs, rewards, terms, truncs, infos = env.step(actions)
        steps += 1
        assert set(obs) == set(rewards) == set(terms) == set(truncs) == set(infos) == set(acting)
        for agent in acting:
            if terms[agent]:
                assert agent not in env.agents
                i = env._agent_index[agent]
                assert not env.swarm.flying[i]
                assert (
                    env.swarm.distance_to_destination_m()[i]
                    <= env.config.swarm.destination_radius_m
                )
        finished |= {a for a in acting if terms[a]}
        assert finished.isdisjoint(env.agents)
    assert steps == 60 or not env.swarm.flying.any()
    assert len(finished) > 0
    with pytest.raises(ValueError, match="reset"):
        env.step({})


def test_truncation_after_max_steps() -> None:
    env = uav_swarm_v0.parallel_env(config={"num_uavs": 5, "max_steps": 3})
    env.reset(seed=0)
    for _ in range(2):
        _, _, terms, truncs, _ = env.step({})
        assert not any(truncs.values()) and len(env.agents) == 5
    _, _, terms, truncs, _ = env.step({})
    assert all(truncs.values()) and not any(terms.values()) and env.agents == []


@pytest.mark.parametrize(
    ("actions", "error", "match"),
    [
        ({"uav_0": np.zeros(3)}, ValueError, r"uav_0.*shape \(2,\).*\(3,\)"),
        ({"uav_0": np.zeros((1, 2))}, ValueError, r"shape \(2,\)"),
        ({"uav_1": np.zeros(2), "uav_2": np.zeros(1)}, ValueError, r"uav_2"),
        ({"uav_0": np.array([np.nan, 0.0])}, ValueError, r"uav_0.*finite"),
        ({"uav_0": np.array([0.0, np.inf])}, ValueError, r"finite"),
        ({"drone_7": np.zeros(2)}, ValueError, r"drone_7.*not an agent"),
        ({"uav_99": np.zeros(2)}, ValueError, r"uav_99"),
        # One input policy (fl_gym.envs.actions): what is not numbers is a TypeError.
        ({"uav_0": "up"}, TypeError, r"uav_0.*shape \(2,\).*'up'"),
        ({"uav_0": ["a", "b"]}, TypeError, r"uav_0.*numbers"),
        ([np.zeros(2)], ValueError, r"dict"),
    ],
)
def test_bad_actions_raise_and_leave_the_env_usable(
    actions: object, error: type[Exception], match: str
) -> None:
    env = uav_swarm_v0.parallel_env(config=SMALL)
    reference = uav_swarm_v0.parallel_env(config=SMALL)
    env.reset(seed=9)
    reference.reset(seed=9)
    with pytest.raises(error, match=match):
        env.step(actions)  # type: ignore[arg-type]
    good = {a: np.array([0.3, 0.1], np.float32) for a in env.agents}
    assert data_equivalence(env.step(good), reference.step(good))


def test_an_action_for_an_arrived_agent_is_rejected() -> None:
    env = uav_swarm_v0.parallel_env(config={"num_uavs": 2, "wind_std_mps_per_sqrt_s": 0.0})
    env.reset(seed=0)
    env.swarm.positions_m[1] = env.config.swarm.destination_center_m
    _, _, terms, _, _ = env.step({})
    assert terms == {"uav_0": False, "uav_1": True} and env.agents == ["uav_0"]
    with pytest.raises(ValueError, match=r"uav_1.*not flying"):
        env.step({"uav_1": np.zeros(2)})
    env.step({"uav_0": np.ones(2)})


def test_out_of_range_actions_are_clipped() -> None:
    env = uav_swarm_v0.parallel_env(config={"num_uavs": 2, "wind_std_mps_per_sqrt_s": 0.0})
    env.reset(seed=0)
    env.step({"uav_0": np.array([5.0, -5.0]), "uav_1": np.array([1.0, -1.0])})
    np.testing.assert_array_equal(env.swarm.velocities_mps[0], env.swarm.velocities_mps[1])


def test_bad_configs_name_the_key_and_value() -> None:
    with pytest.raises(ValueError, match="speed_limit"):
        uav_swarm_v0.parallel_env(config={"speed_limit": 3})
    with pytest.raises(ValueError, match=r"max_accel_mps2.*-2"):
        uav_swarm_v0.parallel_env(config={"max_accel_mps2": -2})
    with pytest.raises(ValueError, match="swarm_3k"):
        uav_swarm_v0.parallel_env(preset="swarm_3k")
    with pytest.raises(ValueError, match="render_mode"):
        uav_swarm_v0.parallel_env(render_mode="ansi")
    env = uav_swarm_v0.parallel_env(preset="swarm-1k", config={"max_steps": 9})
    assert env.config.swarm.num_uavs == 1_000 and env.config.swarm.max_steps == 9
    assert uav_swarm_v0.parallel_env(config=UAVSwarmConfig(num_uavs=7)).max_num_agents == 7


def test_reset_options_change_the_config_but_not_the_spaces() -> None:
    env = uav_swarm_v0.parallel_env(config=SMALL)
    env.reset(seed=0, options={"config": {"max_steps": 2}})
    env.step({})
    env.step({})
    assert env.agents == []
    with pytest.raises(ValueError, match="num_uavs"):
        env.reset(options={"config": {"num_uavs": 13}})
    with pytest.raises(ValueError, match="bogus"):
        env.reset(options={"config": {"bogus": 1}})
    env.reset(seed=0)
    assert env.config.swarm.max_steps == 2 and len(env.agents) == 12


def test_observations_stay_in_bounds_far_away() -> None:
    env = uav_swarm_v0.parallel_env(config=SMALL)
    env.reset(seed=0)
    env.swarm.positions_m[:] = 1e7
    obs, *_ = env.step({})
    assert all(np.all(np.abs(o) <= OBS_BOUND) for o in obs.values())
    assert env.state_space.contains(env.state())


def test_render_rgb_array_and_gif(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    from fl_gym.envs.uav.rendering import FRAME_HEIGHT_PX, FRAME_WIDTH_PX, write_gif

    env = uav_swarm_v0.parallel_env(config=SMALL, render_mode="rgb_array")
    env.reset(seed=0)
    frames = [env.render()]
    env.step({})
    frames.append(env.render())
    assert frames[0].shape == (FRAME_HEIGHT_PX, FRAME_WIDTH_PX, 3)
    assert frames[0].dtype == np.uint8 and frames[0].std() > 0
    path = write_gif(frames, tmp_path / "swarm.gif", fps=5)
    assert path.read_bytes()[:6] in (b"GIF89a", b"GIF87a")
    with pytest.raises(ValueError, match="frame"):
        write_gif([], tmp_path / "none.gif")
    assert uav_swarm_v0.parallel_env(config=SMALL).render() is None


def test_rendering_without_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from fl_gym.envs.uav import rendering as uav_rendering

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    env = uav_swarm_v0.parallel_env(config=SMALL, render_mode="rgb_array")
    env.reset(seed=0)
    with pytest.raises(ImportError, match=r"fl-gym\[plot\]"):
        env.render()
    with pytest.raises(ImportError, match="plot"):
        uav_rendering.write_gif([np.zeros((4, 4, 3), np.uint8)], "x.gif")
