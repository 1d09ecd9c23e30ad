"""Tests of the UAV controllers (:mod:`fl_gym.baselines.uav`) and of the batched mean-field
networks and their federated averaging (:mod:`fl_gym.baselines.mean_field`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fl_gym.baselines.mean_field import (
    BatchedTanhMLP,
    MeanFieldConfig,
    MeanFieldLearner,
    federated_average,
)
from fl_gym.baselines.uav import (
    CONTROLLERS,
    FullInformationController,
    MeanFieldController,
    StraightLineController,
    make_controller,
    reference_path,
    run_episode,
)
from fl_gym.envs import uav_swarm_v0

# -- federated averaging -----------------------------------------------------------------------


def test_federated_average_preserves_the_weighted_mean_and_leaves_other_rows() -> None:
    gen = torch.Generator().manual_seed(0)
    params = torch.randn(12, 37, generator=gen, dtype=torch.float64)
    rows = torch.tensor([0, 3, 4, 7, 11])
    weights = torch.rand(5, generator=gen, dtype=torch.float64) * 10
    before = (weights[:, None] * params[rows]).sum(0) / weights.sum()
    out = federated_average(params, rows, weights)
    after = (weights[:, None] * out[rows]).sum(0) / weights.sum()
    torch.testing.assert_close(after, before, rtol=0, atol=1e-12)
    for r in rows:
        torch.testing.assert_close(out[r], before, rtol=0, atol=1e-12)
    others = torch.tensor([i for i in range(12) if i not in rows.tolist()])
    assert torch.equal(out[others], params[others])
    assert not torch.equal(out, params)  # the input is not modified in place...
    assert torch.equal(params, params.clone())  # ...and is still what it was


def test_federated_average_leaves_out_a_corrupted_row() -> None:
    params = torch.tensor([[1.0, 2.0], [3.0, 4.0], [float("nan"), 0.0]])
    out = federated_average(params, torch.tensor([0, 1, 2]), torch.tensor([1.0, 3.0, 5.0]))
    torch.testing.assert_close(out, torch.tensor([[2.5, 3.5]] * 3))


@pytest.mark.parametrize("mode", ["both", "hjb", "fpk", "none"])
def test_learner_averages_only_the_networks_its_mode_names(mode: str) -> None:
    learner = MeanFieldLearner(6, 4, MeanFieldConfig(averaging=mode), torch.Generator())
    gen = torch.Generator().manual_seed(1)
    learner.hjb_params = torch.randn(learner.hjb_params.shape, generator=gen)
    learner.fpk_params = torch.randn(learner.fpk_params.shape, generator=gen)
    learner.train_steps = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    hjb, fpk = learner.hjb_params.clone(), learner.fpk_params.clone()
    rows = torch.tensor([1, 2, 5])
    bits = learner.average(rows)
    w = torch.tensor([2.0, 3.0, 6.0])
    for name, old, new, averaged in (
        ("hjb", hjb, learner.hjb_params, mode in ("both", "hjb")),
        ("fpk", fpk, learner.fpk_params, mode in ("both", "fpk")),
    ):
        if averaged:
            mean = (w[:, None] * old[rows]).sum(0) / w.sum()
            torch.testing.assert_close(new[rows], mean.expand(3, -1), msg=name)
            assert torch.equal(new[[0, 3, 4]], old[[0, 3, 4]])
        else:
            assert torch.equal(new, old), name
    params = {
        "both": learner.hjb.num_params + learner.fpk.num_params,
        "hjb": learner.hjb.num_params,
        "fpk": learner.fpk.num_params,
        "none": 0,
    }[mode]
    assert bits == 2 * 32 * params * 3 == learner.bits_exchanged


# -- batched networks --------------------------------------------------------------------------


def test_batched_tanh_mlp_matches_per_model_torch_modules() -> None:
    net = BatchedTanhMLP((5, 7, 3))
    params = torch.randn(4, net.num_params, generator=torch.Generator().manual_seed(0))
    x = torch.randn(4, 6, 5, generator=torch.Generator().manual_seed(1))
    out = net.forward(params, x)
    for k in range(4):
        w1 = params[k, :35].reshape(5, 7)
        b1 = params[k, 35:42]
        w2 = params[k, 42:63].reshape(7, 3)
        b2 = params[k, 63:66]
        ref = torch.tanh(x[k] @ w1 + b1) @ w2 + b2
        torch.testing.assert_close(out[k], ref)
    assert net.num_params == 66


def test_batched_training_equals_training_each_uav_alone() -> None:
    def learner() -> MeanFieldLearner:
        return MeanFieldLearner(5, 4, MeanFieldConfig(), torch.Generator().manual_seed(3))

    gen = torch.Generator().manual_seed(4)
    points = torch.rand(5, 9, 3, generator=gen)
    target = torch.rand(5, 9, generator=gen)
    together = learner()
    together.train_fpk(torch.arange(5), points, target)
    alone = learner()
    for i in range(5):
        alone.train_fpk(torch.tensor([i]), points[i : i + 1], target[i : i + 1])
    torch.testing.assert_close(together.fpk_params, alone.fpk_params, rtol=1e-6, atol=1e-7)
    assert not torch.equal(together.fpk_params[0], together.fpk_params[1])


def test_fpk_training_fits_a_density_and_touches_only_its_rows() -> None:
    cfg = MeanFieldConfig()
    learner = MeanFieldLearner(3, 4, cfg, torch.Generator().manual_seed(0))
    untouched = learner.fpk_params[2].clone()
    gen = torch.Generator().manual_seed(5)
    points = torch.rand(2, 9, 3, generator=gen)
    target = 0.5 + points[..., 0]  # a density rising along x
    losses = [learner.train_fpk(torch.tensor([0, 1]), points, target) for _ in range(300)]
    assert losses[-1] < 0.1 * losses[0]
    assert torch.equal(learner.fpk_params[2], untouched)
    assert torch.equal(learner.train_steps, torch.tensor([300.0, 300.0, 0.0]))


def test_hjb_training_steers_away_from_predicted_density() -> None:
    cfg = MeanFieldConfig(training="lookahead", deviation_weight=0.001)
    learner = MeanFieldLearner(1, 4, cfg, torch.Generator().manual_seed(0))
    rows = torch.tensor([0])
    # Teach the FPK network a density that rises with x, then let the HJB network react.
    gen = torch.Generator().manual_seed(6)
    for _ in range(300):
        points = torch.rand(1, 9, 3, generator=gen) * 4 - 2
        learner.train_fpk(rows, points, 1.0 + 0.5 * points[..., 0])
    features = torch.zeros(1, 4)
    for _ in range(50):
        learner.train_hjb(rows, features, torch.zeros(1, 2), 0.5, torch.zeros(1))
    delta = learner.correction(rows, features)[0]
    assert delta[0] < -0.2  # towards lower density
    assert abs(float(delta[1])) < abs(float(delta[0]))


def test_mean_field_config_validation() -> None:
    with pytest.raises(ValueError, match="averaging"):
        MeanFieldConfig(averaging="all")
    with pytest.raises(ValueError, match="average_every_steps"):
        MeanFieldConfig(average_every_steps=0)
    with pytest.raises(ValueError, match=r"hjb_learning_rate.*-1"):
        MeanFieldConfig(hjb_learning_rate=-1.0)


# -- controllers -------------------------------------------------------------------------------


def test_straight_line_accelerates_towards_the_destination() -> None:
    env = uav_swarm_v0.parallel_env(config={"num_uavs": 8, "wind_std_mps_per_sqrt_s": 0.0})
    obs, _ = env.reset(seed=0)
    ctrl = StraightLineController(env.config, cruise_speed_mps=1.5)  # 3 m/s^2: not clipped
    actions, _ = ctrl.predict(obs)
    assert list(actions) == env.agents
    goal = np.asarray(env.config.swarm.destination_center_m) - env.swarm.positions_m
    for i, agent in enumerate(env.agents):
        a = actions[agent]
        assert a.dtype == np.float32 and np.all(np.abs(a) <= 1)
        cos = a @ goal[i] / (np.linalg.norm(a) * np.linalg.norm(goal[i]))
        assert cos > 1 - 1e-6
        assert np.linalg.norm(a) * env.config.swarm.max_accel_mps2 == pytest.approx(3.0, rel=1e-6)
    assert ctrl.bits_exchanged == 0


def test_full_information_repels_close_pairs_and_counts_broadcast_bits() -> None:
    env = uav_swarm_v0.parallel_env(config={"num_uavs": 3, "wind_std_mps_per_sqrt_s": 0.0})
    env.reset(seed=0)
    env.swarm.positions_m[:] = [[0.0, 0.0], [0.0, 1.0], [0.0, 30.0]]
    obs, *_ = env.step({})
    full = FullInformationController(env.config)
    plain = StraightLineController(env.config)
    a, b = full.predict(obs)[0], plain.predict(obs)[0]
    # UAV 0 is pushed away from UAV 1 (towards -y), UAV 1 towards +y; UAV 2 is alone.
    assert a["uav_0"][1] < b["uav_0"][1] and a["uav_1"][1] > b["uav_1"][1]
    np.testing.assert_array_equal(a["uav_2"], b["uav_2"])
    assert full.bits_exchanged == 3 * 2 * 64
    full.predict({k: obs[k] for k in ("uav_0", "uav_1")})
    assert full.bits_exchanged == 3 * 2 * 64 + 2 * 1 * 64


def test_mean_field_controller_counts_averaging_bits_and_is_deterministic() -> None:
    env = uav_swarm_v0.parallel_env(config={"num_uavs": 10, "max_steps": 25})
    runs = []
    for _ in range(2):
        ctrl = make_controller("mfgfl-hf", env.config, average_every_steps=10)
        assert isinstance(ctrl, MeanFieldController) and ctrl.name == "mfgfl-hf"
        metrics = run_episode(env, ctrl, seed=2)
        runs.append((metrics, ctrl.learner.hjb_params.clone()))
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])
    learner = ctrl.learner
    per_round = 2 * 32 * (learner.hjb.num_params + learner.fpk.num_params) * 10
    assert runs[0][0].bits_per_episode == 2 * per_round  # steps 10 and 20, all 10 flying
    # Right after an averaging round all flying UAVs share one HJB model.
    assert make_controller("mfg-local", env.config).name == "mfg-local"


def test_make_controller_names() -> None:
    cfg = uav_swarm_v0.parallel_env(config={"num_uavs": 4}).config.swarm
    assert [make_controller(name, cfg).name for name in CONTROLLERS] == list(CONTROLLERS)
    with pytest.raises(ValueError, match="teleport"):
        make_controller("teleport", cfg)
    # An unknown option is named with the allowed ones; the name fixes the averaging mode.
    with pytest.raises(TypeError, match=r"'straight-line' has no option\(s\) \['bogus'\]; allowed"):
        make_controller("straight-line", cfg, bogus=1)
    with pytest.raises(TypeError, match=r"no option\(s\) \['averaging'\]"):
        make_controller("mfgfl-hf", cfg, averaging="none")


def test_run_episode_metrics_and_coordination_reduces_collisions() -> None:
    env = uav_swarm_v0.parallel_env()
    straight = run_episode(env, StraightLineController(env.config), seed=0)
    full = run_episode(env, FullInformationController(env.config), seed=0)
    for m in (straight, full):
        assert m.arrived_fraction == 1.0
        # Everyone flies at least the gap between the discs and not much more.
        gap = env.config.swarm.source_to_destination_m - env.config.swarm.destination_radius_m
        assert gap - env.config.swarm.source_radius_m < m.travel_distance_m < gap + 15
        assert m.motion_energy_m2_s3 > 0
    assert straight.bits_per_episode == 0 and full.bits_per_step > 100 * 99 * 64 * 0.5
    assert full.collision_probability < 0.5 * straight.collision_probability


# -- frames of the PDE networks ----------------------------------------------------------------


def test_reference_path_matches_a_fine_integration_of_the_bounded_nominal_law() -> None:
    cruise, gain, accel = 8.0, 2.0, 4.0
    times = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 6.0], dtype=torch.float64)
    distance, speed = reference_path(times, cruise, gain, accel)
    dt, v, x, t, k = 1e-4, 0.0, 0.0, 0.0, 0
    for target in times.tolist():
        while t < target - 1e-12:
            a = min(gain * (cruise - v), accel)
            x += v * dt + 0.5 * a * dt * dt
            v += a * dt
            t += dt
        assert float(distance[k]) == pytest.approx(x, abs=2e-3)
        assert float(speed[k]) == pytest.approx(v, abs=2e-3)
        k += 1
    # Saturated until t1 = (8 - 4/2) / 4 = 1.5 s: x = a t^2 / 2 there.
    assert float(distance[3]) == pytest.approx(0.5 * 4.0 * 1.5**2, rel=1e-12)
    # Without saturation (k v_cruise <= a_max) it is the exponential approach from rest.
    d, s = reference_path(torch.tensor([2.0], dtype=torch.float64), 1.0, 2.0, 4.0)
    assert float(s[0]) == pytest.approx(1.0 - math.exp(-4.0), rel=1e-12)
    assert float(d[0]) == pytest.approx(2.0 - (1.0 - math.exp(-4.0)) / 2.0, rel=1e-12)


@pytest.mark.parametrize("frame", ["uav", "swarm", "global"])
def test_frame_origins_and_velocities(frame: str) -> None:
    env = uav_swarm_v0.parallel_env(config={"num_uavs": 4, "destination_center_m": (30.0, 40.0)})
    ctrl = make_controller("mfgfl-hf", env.config, training="pde", frame=frame)
    pos = torch.tensor([[1.0, 2.0], [-3.0, 0.5]], dtype=torch.float64)
    times = torch.tensor([[0.3, 0.8, 2.5], [0.3, 0.8, 2.5]], dtype=torch.float64)
    origin, velocity = ctrl._frame_origin(pos, times)
    assert origin.shape == velocity.shape == (2, 3, 2)
    if frame == "uav":
        torch.testing.assert_close(origin, pos[:, None].expand(2, 3, 2))
        assert torch.all(velocity == 0)
    elif frame == "global":
        assert torch.all(origin == 0) and torch.all(velocity == 0)
    else:
        # Shared by all UAVs, on the source-destination line, moving at its own derivative.
        torch.testing.assert_close(origin[0], origin[1])
        unit = torch.tensor([0.6, 0.8], dtype=torch.float64)
        along = origin @ unit
        torch.testing.assert_close(origin, along[..., None] * unit)
        h = 1e-6
        ahead, _ = ctrl._frame_origin(pos, times + h)
        torch.testing.assert_close((ahead - origin) / h, velocity, rtol=1e-5, atol=1e-5)
        assert torch.all(velocity @ unit > 0)


def test_shared_frame_controller_averages_one_model_that_steers_each_uav_its_own_way() -> None:
    env = uav_swarm_v0.parallel_env(config={"num_uavs": 10, "max_steps": 20})
    ctrl = make_controller("mfgfl-hf", env.config, training="pde", frame="swarm")
    again = make_controller("mfgfl-hf", env.config, training="pde", frame="swarm")
    assert run_episode(env, ctrl, seed=4) == run_episode(env, again, seed=4)
    # Step 20 was an averaging round: every UAV holds the same two networks.
    hjb, fpk = ctrl.learner.hjb_params, ctrl.learner.fpk_params
    assert torch.equal(hjb, hjb[:1].expand_as(hjb)) and torch.equal(fpk, fpk[:1].expand_as(fpk))
    # That one value function, read at each UAV's own state, asks for different deviations.
    obs, _ = env.reset(seed=4)
    names = list(obs)
    state = np.stack([obs[name] for name in names])
    index = np.arange(len(names))
    straight = StraightLineController(env.config).act_batch(state, index)
    actions = ctrl.act_batch(state, index)
    deviation = actions - straight
    assert np.ptp(deviation[:, 1]) > 1e-3
