"""Federated localisation: the generated RSS data, the GP maps and their fits, the DNN task."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import scipy.stats
import torch

import fl_gym  # noqa: F401  (registers the environments)
from fl_gym.sim.learning.federation import Federation, FederationConfig
from fl_gym.sim.learning.models import BatchedMLP
from fl_gym.sim.localization.gp import (
    GPMap,
    fit_admm,
    fit_centralized,
    fit_federated,
    gp_log_marginal_likelihood,
    localize,
    position_grid,
)
from fl_gym.sim.localization.scenario import (
    LOCALIZATION_PRESETS,
    LocalizationConfig,
    LocalizationScenario,
    gaussian_random_field,
    make_localization_data,
)

# -- the shadowing field --------------------------------------------------------------------------


def test_shadowing_field_has_the_configured_std_and_gudmundson_correlation() -> None:
    std, d_corr, spacing, g = 6.0, 5.0, 0.5, 48
    rng = np.random.default_rng(0)
    fields = gaussian_random_field(400, g, spacing, std, d_corr, rng)  # 400 independent fields
    assert fields.shape == (400, g, g)
    np.testing.assert_allclose(fields.std(), std, rtol=0.02)
    # Every node has the configured variance (not only the pooled one): corner and centre.
    for i, j in [(0, 0), (g // 2, g // 2), (g - 1, 0)]:
        assert abs(fields[:, i, j].std() / std - 1) < 0.12
    for lag_m in (0.5, 2.0, 5.0, 10.0):
        lag = round(lag_m / spacing)
        along_x = np.mean(fields[:, lag:, :] * fields[:, :-lag, :])
        along_y = np.mean(fields[:, :, lag:] * fields[:, :, :-lag])
        diagonal = np.mean(fields[:, lag:, lag:] * fields[:, :-lag, :-lag])
        assert abs((along_x + along_y) / 2 / std**2 - math.exp(-lag_m / d_corr)) < 0.03
        # Isotropic: the correlation depends on the Euclidean distance only.
        assert abs(diagonal / std**2 - math.exp(-lag_m * math.sqrt(2) / d_corr)) < 0.03


def test_scenario_rss_is_path_loss_plus_shadowing_plus_noise() -> None:
    cfg = LocalizationConfig(noise_std_db=3.0, shadowing_std_db=5.0)
    scenario = LocalizationScenario(cfg, np.random.default_rng(1))
    nodes = position_grid(cfg.area_m, cfg.field_grid_points).reshape(
        cfg.field_grid_points, cfg.field_grid_points, 2
    )
    # On grid nodes the interpolated shadowing is the field itself.
    np.testing.assert_allclose(
        scenario.shadowing_at(nodes), np.moveaxis(scenario.shadowing_db, 0, -1), atol=1e-9
    )
    d = np.linalg.norm(nodes[3, 7] - scenario.ap_positions, axis=1)
    expected = cfg.tx_power_dbm - (
        cfg.path_loss_intercept_db + cfg.path_loss_slope_db * np.log10(np.maximum(d, 1) / 1000)
    )
    np.testing.assert_allclose(scenario.mean_rss_dbm(nodes[3, 7]), expected)
    points = np.random.default_rng(2).uniform(0, cfg.area_m, (4000, 2))
    noise = scenario.rss_dbm(points, np.random.default_rng(3)) - scenario.rss_dbm(points, None)
    np.testing.assert_allclose(noise.std(), cfg.noise_std_db, rtol=0.03)


def test_random_waypoint_walks_at_speed_inside_the_area() -> None:
    cfg = LOCALIZATION_PRESETS["outdoor"]
    scenario = LocalizationScenario(cfg, np.random.default_rng(4))
    path = scenario.random_waypoint(50, 60, np.random.default_rng(5))
    assert path.shape == (50, 60, 2)
    assert (path >= 0).all() and (path <= cfg.area_m).all()
    steps = np.linalg.norm(np.diff(path, axis=1), axis=2)
    # A straight step is exactly speed x interval; a step that turns at a waypoint is shorter.
    assert steps.max() <= cfg.speed_mps * cfg.sample_interval_s + 1e-9
    assert np.median(steps) == pytest.approx(cfg.speed_mps * cfg.sample_interval_s)
    # Spatially non-IID: a client's samples spread over less than the area (whose uniform
    # spread per axis is area / sqrt(12)); 60 samples walk 1.2 area sides (measured: 0.53).
    spread = path.std(axis=1).mean()
    assert spread < 0.65 * cfg.area_m / math.sqrt(12)


def test_same_seed_same_data_bit_for_bit() -> None:
    a = make_localization_data("indoor", 5, 30, 50, np.random.default_rng(7))
    b = make_localization_data("indoor", 5, 30, 50, np.random.default_rng(7))
    c = make_localization_data("indoor", 5, 30, 50, np.random.default_rng(8))
    for name in ("train_positions", "train_rss", "test_positions", "test_rss"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(a.scenario.shadowing_db, b.scenario.shadowing_db)
    assert not np.array_equal(a.train_rss, c.train_rss)
    data = a.federated_dataset()
    assert data.task == "regression" and data.num_clients == 5 and data.num_features == 8
    np.testing.assert_allclose(a.positions(data.y_test), a.test_positions, atol=1e-4)


# -- ML positioning -------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["indoor", "outdoor"])
def test_noise_free_rss_and_true_path_loss_recover_positions_to_grid_resolution(
    preset: str,
) -> None:
    cfg = LocalizationConfig(
        **{
            **LOCALIZATION_PRESETS[preset].__dict__,
            "shadowing_std_db": 0.0,
            "noise_std_db": 0.0,
        }
    )
    scenario = LocalizationScenario(cfg, np.random.default_rng(9))
    points = 41
    grid = position_grid(cfg.area_m, points)
    spacing = cfg.area_m / (points - 1)
    truth = np.random.default_rng(10).uniform(0, cfg.area_m, (200, 2))
    rss = scenario.rss_dbm(truth, None)
    power = cfg.tx_power_dbm - cfg.path_loss_intercept_db + 3 * cfg.path_loss_slope_db
    theta = torch.tensor([power, cfg.path_loss_slope_db, 0.0, 0.0, 0.0], dtype=torch.float64)
    rss_map = GPMap.path_loss(theta, grid, scenario.ap_positions, min_distance_m=cfg.min_distance_m)
    estimate = localize(rss, rss_map)
    error = np.linalg.norm(estimate - truth, axis=1)
    # The nearest node is at most half a diagonal away; ML picks it up to the map's curvature.
    assert error.max() <= spacing * math.sqrt(2)
    assert np.median(error) <= spacing * math.sqrt(2) / 2
    on_grid = localize(scenario.rss_dbm(grid[::37], None), rss_map)
    np.testing.assert_array_equal(on_grid, grid[::37])


# -- the GP likelihood ----------------------------------------------------------------------------


def _small_problem(seed: int = 0, k: int = 2, n: int = 6, a: int = 3):
    rng = np.random.default_rng(seed)
    positions = rng.uniform(0, 20, (k, n, 2))
    aps = rng.uniform(0, 20, (a, 2))
    rss = rng.normal(-60, 5, (k, n, a))
    theta = torch.tensor(
        [-30.0, 25.0, math.log(3.0), math.log(4.0), math.log(1.5)], dtype=torch.float64
    )
    return positions, rss, aps, theta


def _direct(theta: np.ndarray, pos: np.ndarray, rss: np.ndarray, aps: np.ndarray):
    """Log marginal likelihood and its gradient of one client by the textbook formulas."""
    power, slope, log_sf, log_l, log_sn = theta
    sf2, length, sn2 = math.exp(2 * log_sf), math.exp(log_l), math.exp(2 * log_sn)
    dist = np.linalg.norm(pos[:, None] - pos[None], axis=2)
    base = np.exp(-dist / length)
    cov = sf2 * base + sn2 * np.eye(len(pos))
    log_d = np.log10(np.maximum(np.linalg.norm(pos[:, None] - aps[None], axis=2), 1.0))
    mean = power - slope * log_d
    inv = np.linalg.inv(cov)
    value, grad = 0.0, np.zeros(5)
    d_cov = [2 * sf2 * base, sf2 * base * dist / length, 2 * sn2 * np.eye(len(pos))]
    for j in range(aps.shape[0]):
        r = rss[:, j] - mean[:, j]
        value += scipy.stats.multivariate_normal(mean[:, j], cov).logpdf(rss[:, j])
        alpha = inv @ r
        # d/d mean: alpha . d mean; mean = power - slope log_d.
        grad[0] += alpha.sum()
        grad[1] += -(alpha * log_d[:, j]).sum()
        for i, dk in enumerate(d_cov):
            grad[2 + i] += 0.5 * np.trace((np.outer(alpha, alpha) - inv) @ dk)
    return value, grad


def test_gp_log_marginal_likelihood_and_gradient_match_the_direct_computation() -> None:
    positions, rss, aps, theta = _small_problem()
    t = theta.clone().requires_grad_(True)
    values = gp_log_marginal_likelihood(t, positions, rss, aps)
    assert values.shape == (2,) and values.dtype == torch.float64
    for k in range(2):
        (grad,) = torch.autograd.grad(values[k], t, retain_graph=True)
        value, expected = _direct(theta.numpy(), positions[k], rss[k], aps)
        assert float(values[k].detach()) == pytest.approx(value, rel=1e-10)
        np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-8, atol=1e-10)


def test_gp_log_marginal_likelihood_passes_gradcheck() -> None:
    positions, rss, aps, theta = _small_problem(seed=1, k=3, n=4, a=2)
    counts = torch.tensor([4, 2, 3])

    def f(t: torch.Tensor) -> torch.Tensor:
        return gp_log_marginal_likelihood(t, positions, rss, aps, counts=counts)

    assert torch.autograd.gradcheck(f, (theta.clone().requires_grad_(True),), eps=1e-6, atol=1e-6)


def test_padding_rows_add_nothing_to_the_likelihood() -> None:
    positions, rss, aps, theta = _small_problem(seed=2, k=2, n=5)
    padded = gp_log_marginal_likelihood(theta, positions, rss, aps, counts=np.array([5, 3]))
    alone = gp_log_marginal_likelihood(theta, positions[1:, :3], rss[1:, :3], aps)
    assert float(padded[1]) == pytest.approx(float(alone[0]), rel=1e-12)


# -- federated and centralised fits ---------------------------------------------------------------


@pytest.fixture(scope="module")
def hall():
    return make_localization_data("indoor", 4, 40, 200, np.random.default_rng(11))


def test_federated_objective_with_one_client_is_the_centralised_one(hall) -> None:
    pooled = hall.pooled()
    pos, rss = pooled.train_positions[:, :50], pooled.train_rss[:, :50]
    aps, area = hall.scenario.ap_positions, hall.scenario.config.area_m
    central = fit_centralized(pos, rss, aps, area_m=area, max_iterations=1)
    federated = fit_federated(pos, rss, aps, area_m=area, rounds=1)
    # Both start from the same federated least-squares mean, and one client's per-sample
    # likelihood is the pooled one's.
    torch.testing.assert_close(federated.thetas[0], central.thetas[0], rtol=0, atol=0)
    direct = gp_log_marginal_likelihood(federated.thetas[0], pos, rss, aps)[0] / (50 * 8)
    assert federated.objective[0] == pytest.approx(float(direct), rel=1e-12)


@pytest.mark.slow
def test_federated_fit_with_one_client_equals_the_centralised_ml_fit(hall) -> None:
    pooled = hall.pooled()
    # One client holding 60 of the samples: federated Adam rounds against L-BFGS on the same
    # exact likelihood.
    pos, rss = pooled.train_positions[:, :60], pooled.train_rss[:, :60]
    aps, area = hall.scenario.ap_positions, hall.scenario.config.area_m
    central = fit_centralized(pos, rss, aps, area_m=area)
    federated = fit_federated(pos, rss, aps, area_m=area, rounds=1500, learning_rate=0.02)
    np.testing.assert_allclose(federated.theta.numpy(), central.theta.numpy(), atol=2e-3)
    assert federated.objective[-1] == pytest.approx(central.objective[-1], abs=1e-6)


def test_federated_gradient_is_the_sample_weighted_average_of_local_gradients(hall) -> None:
    aps, area = hall.scenario.ap_positions, hall.scenario.config.area_m
    pos, rss = hall.train_positions, hall.train_rss
    counts = np.array([40, 10, 25, 40])
    one = fit_federated(pos, rss, aps, area_m=area, rounds=1, learning_rate=0.1, counts=counts)
    # Adam's first step moves every coordinate by lr g / (|g| + 1e-8).
    theta0 = one.thetas[0].clone().requires_grad_(True)
    total = 0.0
    for k in range(4):
        n = counts[k]
        local = gp_log_marginal_likelihood(theta0, pos[k : k + 1, :n], rss[k : k + 1, :n], aps)
        total = total + local[0] / (n * aps.shape[0]) * n / counts.sum()
    (grad,) = torch.autograd.grad(total, theta0)
    g = grad.numpy()
    np.testing.assert_allclose(
        (one.theta - one.thetas[0]).numpy(), 0.1 * g / (np.abs(g) + 1e-8), rtol=1e-9
    )
    assert one.objective[0] == pytest.approx(float(total.detach()), rel=1e-12)


def test_per_client_hyperparameters_give_each_clients_own_likelihood(hall) -> None:
    aps = hall.scenario.ap_positions
    pos, rss = hall.train_positions, hall.train_rss
    base = fit_federated(pos, rss, aps, area_m=50.0, rounds=0).theta
    thetas = torch.stack([base + 0.1 * k for k in range(4)])
    together = gp_log_marginal_likelihood(thetas, pos, rss, aps)
    for k in range(4):
        alone = gp_log_marginal_likelihood(thetas[k], pos[k : k + 1], rss[k : k + 1], aps)[0]
        assert float(together[k]) == pytest.approx(float(alone), rel=1e-12)


def test_admm_reaches_the_stationary_point_of_the_pooled_likelihood(hall) -> None:
    """Consensus ADMM and gradient averaging seek the same point: the pooled (block-diagonal)
    likelihood's stationary point; at ADMM's consensus its gradient vanishes."""
    aps, area = hall.scenario.ap_positions, hall.scenario.config.area_m
    pos, rss = hall.train_positions[:, :25], hall.train_rss[:, :25]
    admm = fit_admm(pos, rss, aps, area_m=area, rounds=100, local_steps=10, learning_rate=0.05)

    def pooled_gradient(theta: torch.Tensor) -> torch.Tensor:
        t = theta.clone().requires_grad_(True)
        total = gp_log_marginal_likelihood(t, pos, rss, aps).sum() / (4 * 25 * 8)
        return torch.autograd.grad(total, t)[0]

    start = float(torch.linalg.vector_norm(pooled_gradient(admm.thetas[0])))
    end = float(torch.linalg.vector_norm(pooled_gradient(admm.theta)))
    assert end < 0.01 * start
    assert admm.objective[-1] > admm.objective[0]
    averaged = fit_federated(pos, rss, aps, area_m=area, rounds=1500, learning_rate=0.02)
    assert float(torch.linalg.vector_norm(pooled_gradient(averaged.theta))) < 1e-9
    # The same optimum: the kernel's hyperparameters agree closely; the mean's power and slope
    # lie on a nearly flat ridge of the likelihood (they trade off), so compare the likelihood.
    np.testing.assert_allclose(admm.theta[2:].numpy(), averaged.theta[2:].numpy(), atol=0.02)
    assert admm.objective[-1] == pytest.approx(averaged.objective[-1], abs=1e-5)
    with pytest.raises(ValueError, match="penalty"):
        fit_admm(pos, rss, aps, area_m=area, penalty=0.0)


def test_learned_gp_map_localises_better_than_the_path_loss_alone(hall) -> None:
    cfg = hall.scenario.config
    aps = hall.scenario.ap_positions
    fit = fit_federated(hall.train_positions, hall.train_rss, aps, area_m=cfg.area_m, rounds=150)
    hp = fit.hyperparameters
    # The true shadowing std and decorrelation distance, within what 160 samples can tell.
    assert 2.0 < hp.signal_std_db < 7.0 and 2.0 < hp.length_m < 12.0
    grid = position_grid(cfg.area_m, 26)
    fused = GPMap.fit(fit.theta, hall.train_positions, hall.train_rss, aps, grid)
    plain = GPMap.path_loss(fit.theta, grid, aps, variance_db2=hp.signal_std_db**2)
    # Near the walked paths the posterior map knows the shadowing the mean does not.
    near = hall.train_positions[:, ::5].reshape(-1, 2)
    rss_near = hall.scenario.rss_dbm(near, np.random.default_rng(12))
    err_gp = np.linalg.norm(localize(rss_near, fused) - near, axis=1)
    err_pl = np.linalg.norm(localize(rss_near, plain) - near, axis=1)
    assert np.sqrt(np.mean(err_gp**2)) < 0.8 * np.sqrt(np.mean(err_pl**2))


# -- the DNN task in the federation and the environment ------------------------------------------


def test_squared_error_gradient_matches_autograd() -> None:
    model = BatchedMLP(5, 2, (7,), loss="squared_error")
    gen = torch.Generator().manual_seed(0)
    params = torch.stack([model.init_params(gen, dtype=torch.float64) for _ in range(3)])
    x = torch.randn(3, 4, 5, generator=gen, dtype=torch.float64)
    y = torch.randn(3, 4, 2, generator=gen, dtype=torch.float64)
    loss, grad = model.loss_and_grad(params, x, y)
    p = params.clone().requires_grad_(True)
    expected = (model.logits(p, x) - y).pow(2).sum(2).mean(1)
    (auto,) = torch.autograd.grad(expected.sum(), p)
    torch.testing.assert_close(loss, expected.detach())
    torch.testing.assert_close(grad, auto)


def test_regression_accuracy_is_the_clipped_coefficient_of_determination(hall) -> None:
    data = hall.federated_dataset()
    fed = Federation(data, FederationConfig(hidden_units=(32,)), rng=np.random.default_rng(0))
    for _ in range(20):
        fed.run_round(fed.plan(local_steps=5), np.random.default_rng(1))
    out = fed.model.logits(fed.params[None], fed.x_test[None])[0].detach().numpy()
    y = data.y_test
    mse = np.mean(np.sum((out - y) ** 2, axis=1))
    score = 1 - mse / np.mean(np.sum((y - y.mean(0)) ** 2, axis=1))
    assert fed.loss == pytest.approx(mse, rel=1e-5)
    assert fed.accuracy == pytest.approx(max(score, 0.0), abs=1e-5)
    assert 0.3 < fed.accuracy < 1.0  # it learns from 20 rounds, not perfectly


def test_localization_env_reports_errors_in_metres() -> None:
    env = gym.make("fl_gym/FederatedLocalization-v0", preset="few-aps")
    obs, info = env.reset(seed=3)
    raw = env.unwrapped
    assert raw.federation.model.num_features == 3
    area = LOCALIZATION_PRESETS["few-aps"].area_m
    for _ in range(3):
        obs, reward, *_, info = env.step(env.action_space.sample())
        assert np.isfinite(reward)
    assert info["rmse_m"] == pytest.approx(math.sqrt(info["loss"]) * area, rel=1e-4)
    assert info["error_p50_m"] <= info["error_p90_m"] <= info["rmse_m"] * 3
    assert obs["server"][1] == pytest.approx(info["accuracy"])
    with pytest.raises(ValueError, match="localization_scenario"):
        gym.make("fl_gym/FederatedLocalization-v0", config={"localization_scenario": "moon"})


def test_batched_rounds_of_regression_federations_equal_each_alone(hall) -> None:
    from fl_gym.sim.rounds import run_rounds

    data = hall.federated_dataset()
    cfg = FederationConfig(hidden_units=(16,))

    def make(seed: int) -> Federation:
        return Federation(data, cfg, rng=np.random.default_rng(seed))

    together = [make(0), make(1)]
    alone = [make(0), make(1)]
    plans = [f.plan(local_steps=3) for f in together]
    reports = run_rounds(together, plans, [np.random.default_rng(5), np.random.default_rng(6)])
    for fed, plan, rng_seed, report in zip(alone, plans, (5, 6), reports, strict=True):
        single = fed.run_round(plan, np.random.default_rng(rng_seed))
        assert single.loss == report.loss and single.accuracy == report.accuracy
    for a, b in zip(together, alone, strict=True):
        torch.testing.assert_close(a.params, b.params, rtol=0, atol=0)
