"""Tests of the PDE-residual training of the mean-field networks
(:mod:`fl_gym.baselines.mean_field`):
the HJB and FPK residuals on closed-form solutions, the autograd derivatives, one training step,
batching over UAVs and averaging."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from fl_gym.baselines.mean_field import (
    MeanFieldConfig,
    MeanFieldLearner,
    PDEScales,
    federated_average,
    fpk_residual,
    hjb_residual,
    input_derivatives,
)
from fl_gym.baselines.uav import make_controller, run_episode
from fl_gym.envs import uav_swarm_v0

torch.set_default_dtype(torch.float32)

# -- HJB residual on a closed-form value function ----------------------------------------------

ENERGY_WEIGHT = 0.7
STATE_WEIGHT = 1.3
SIGMA = 0.4
BETA = 0.5


def _lq_value() -> tuple[np.ndarray, float]:
    """Discounted LQ problem ``dx = v dt, dv = u dt + sigma dW``, cost ``q |x|^2 + r |u|^2``:
    ``W = s' P s + k`` with ``P`` from the Riccati equation of ``A - beta I / 2`` and
    ``beta k = sigma^2 tr(P_vv)``."""
    a = np.zeros((4, 4))
    a[0, 2] = a[1, 3] = 1.0
    b = np.zeros((4, 2))
    b[2, 0] = b[3, 1] = 1.0
    q = np.diag([STATE_WEIGHT, STATE_WEIGHT, 0.0, 0.0])
    p = scipy.linalg.solve_continuous_are(
        a - 0.5 * BETA * np.eye(4), b, q, ENERGY_WEIGHT * np.eye(2)
    )
    k = SIGMA**2 * np.trace(p[2:, 2:]) / BETA
    return p, float(k)


def _lq_residual(scale_p: float = 1.0, offset: float = 0.0) -> torch.Tensor:
    p, k = _lq_value()
    pt = torch.tensor(p * scale_p, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(3, 50, 5, generator=gen, dtype=torch.float64)  # (x1, x2, v1, v2, t)

    def value(points: torch.Tensor) -> torch.Tensor:
        s = points[..., 0:4]
        return torch.einsum("...i,ij,...j->...", s, pt, s) + k + offset

    w, grad, second = input_derivatives(value, z, (2, 3))
    residual, delta = hjb_residual(
        w,
        grad,
        second.sum(-1),
        velocity_mps=z[..., 2:4],
        nominal_accel_mps2=torch.zeros_like(z[..., 2:4]),
        state_cost=STATE_WEIGHT * (z[..., 0:2] ** 2).sum(-1),
        energy_weight=ENERGY_WEIGHT,
        max_correction_mps2=1e9,
        wind_std=SIGMA,
        discount_per_s=BETA,
    )
    # The optimal control of LQ is the linear feedback -R^-1 B' P s.
    expected = -(z[..., 0:4] @ pt[:, 2:4]) / ENERGY_WEIGHT
    if scale_p == 1.0:
        torch.testing.assert_close(delta, expected)
    return residual


def test_hjb_residual_of_the_closed_form_lq_value_is_zero() -> None:
    assert _lq_residual().abs().max() < 1e-9


@pytest.mark.parametrize(("scale_p", "offset"), [(1.1, 0.0), (1.0, 0.3), (0.9, 0.0)])
def test_hjb_residual_of_a_perturbed_value_is_not_zero(scale_p: float, offset: float) -> None:
    assert _lq_residual(scale_p, offset).abs().mean() > 1e-2


def test_hjb_deviation_minimises_the_hamiltonian_within_its_bound() -> None:
    gen = torch.Generator().manual_seed(1)
    grad = torch.randn(40, 5, generator=gen) * 3
    zeros = torch.zeros(40)
    residual, delta = hjb_residual(
        zeros,
        grad,
        zeros,
        velocity_mps=torch.zeros(40, 2),
        nominal_accel_mps2=torch.zeros(40, 2),
        state_cost=zeros,
        energy_weight=0.5,
        max_correction_mps2=2.0,
        wind_std=0.0,
        discount_per_s=0.0,
    )
    assert delta.abs().max() <= 2.0
    grid = torch.linspace(-2.0, 2.0, 81)
    d1, d2 = torch.meshgrid(grid, grid, indexing="ij")
    cand = torch.stack([d1.ravel(), d2.ravel()], dim=1)  # (G, 2)
    hamiltonian = cand @ grad[:, 2:4].T + 0.5 * (cand**2).sum(1, keepdim=True)  # (G, 40)
    best = hamiltonian.min(dim=0).values + grad[:, 4]
    assert torch.all(residual <= best + 1e-5)  # no candidate on the grid does better
    assert torch.all(residual >= best - 0.05)  # and the grid's best comes close to it


# -- FPK residual on a transported, diffusing density ------------------------------------------


def _gaussian_residual(velocity: tuple[float, float], diffusion: float) -> torch.Tensor:
    flow = torch.tensor([1.5, -0.5], dtype=torch.float64)
    d_true, t0 = 0.3, 0.5

    def density(points: torch.Tensor) -> torch.Tensor:
        x, t = points[..., 0:2], points[..., 2] + t0
        var = 2.0 * d_true * t
        r2 = ((x - flow * points[..., 2:3]) ** 2).sum(-1)
        return torch.exp(-r2 / (2.0 * var)) / (2.0 * torch.pi * var)

    gen = torch.Generator().manual_seed(2)
    z = torch.randn(2, 64, 3, generator=gen, dtype=torch.float64)
    z[..., 2] = z[..., 2].abs()
    m, grad, second = input_derivatives(density, z, (0, 1))
    return fpk_residual(
        m,
        grad,
        second.sum(-1),
        flow_mps=torch.tensor(velocity, dtype=torch.float64).expand(2, 64, 2),
        flow_divergence_per_s=0.0,
        diffusion_m2_s=diffusion,
    )


def test_fpk_residual_of_a_transported_heat_kernel_is_zero() -> None:
    assert _gaussian_residual((1.5, -0.5), 0.3).abs().max() < 1e-10


@pytest.mark.parametrize(("velocity", "diffusion"), [((1.0, -0.5), 0.3), ((1.5, -0.5), 0.1)])
def test_fpk_residual_of_a_wrong_flow_or_diffusion_is_not_zero(
    velocity: tuple[float, float], diffusion: float
) -> None:
    assert _gaussian_residual(velocity, diffusion).abs().max() > 1e-2


def test_fpk_residual_counts_the_divergence_of_the_flow() -> None:
    # m = exp(t) / (1 + x_1^2) under w = (x_1, 0): dm/dt + div(m w) = m + w . grad m + m div w.
    z = torch.tensor([[[0.3, 0.1, 0.2], [-1.2, 0.4, 0.7]]], dtype=torch.float64)

    def density(points: torch.Tensor) -> torch.Tensor:
        return torch.exp(points[..., 2]) / (1.0 + points[..., 0] ** 2)

    m, grad, second = input_derivatives(density, z, (0, 1))
    flow = torch.stack([z[..., 0], torch.zeros_like(z[..., 0])], dim=-1)
    residual = fpk_residual(
        m, grad, second.sum(-1), flow_mps=flow, flow_divergence_per_s=1.0, diffusion_m2_s=0.0
    )
    x = z[..., 0]
    expected = m + x * m * (-2 * x / (1 + x**2)) + m
    torch.testing.assert_close(residual, expected)


# -- derivatives of the networks ---------------------------------------------------------------


def test_input_derivatives_of_the_batched_network_match_finite_differences() -> None:
    learner = MeanFieldLearner(
        3, 4, MeanFieldConfig(training="pde"), torch.Generator().manual_seed(0)
    )
    params = torch.randn(learner.hjb_params.shape, generator=torch.Generator().manual_seed(1))
    params = params.double()

    def value(z: torch.Tensor) -> torch.Tensor:
        return learner.hjb.forward(params, z)[..., 0]

    z = torch.randn(3, 7, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    w, grad, second = input_derivatives(value, z, (2, 3), create_graph=False)
    h = 1e-4
    for j in range(5):
        e = torch.zeros(5, dtype=torch.float64)
        e[j] = h
        fd = (value(z + e) - value(z - e)) / (2 * h)
        torch.testing.assert_close(grad[..., j], fd, rtol=1e-6, atol=1e-7)
        if j in (2, 3):
            fd2 = (value(z + e) - 2 * w + value(z - e)) / h**2
            torch.testing.assert_close(second[..., j - 2], fd2, rtol=1e-4, atol=1e-4)


# -- training ----------------------------------------------------------------------------------

SCALES = PDEScales(length_m=10.0, speed_mps=10.0, time_s=1.0)


def _batch(n: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "data": torch.rand(n, 9, 3, generator=gen) * 0.8 - 0.4,
        "target": torch.rand(n, 9, generator=gen) * 2,
        "fpk_points": torch.rand(n, 16, 3, generator=gen),
        "flow": torch.randn(n, 16, 2, generator=gen) * 3,
        "hjb_points": torch.rand(n, 16, 5, generator=gen),
        "nominal": torch.randn(n, 16, 2, generator=gen),
    }


def _losses(learner: MeanFieldLearner, rows: torch.Tensor, b: dict) -> tuple[torch.Tensor, ...]:
    misfit, fpk = learner.fpk_losses(
        learner.fpk_params[rows], b["data"], b["target"], b["fpk_points"], b["flow"], SCALES
    )
    hjb = learner.hjb_losses(
        learner.hjb_params[rows], rows, b["hjb_points"], b["nominal"], SCALES, 4.0, 0.5
    )
    return misfit + learner.config.fpk_residual_weight * fpk, hjb


def test_one_training_step_lowers_each_uavs_residual_on_a_fixed_batch() -> None:
    cfg = MeanFieldConfig(training="pde", hjb_pde_learning_rate=0.002, fpk_pde_learning_rate=0.05)
    learner = MeanFieldLearner(4, 4, cfg, torch.Generator().manual_seed(0))
    rows = torch.arange(4)
    b = _batch(4, 3)
    # Give the HJB networks a non-trivial start (the default starts at W = 0).
    learner.hjb_params = (
        torch.randn(learner.hjb_params.shape, generator=torch.Generator().manual_seed(9)) * 0.3
    )
    fpk_before, _ = (x.detach() for x in _losses(learner, rows, b))
    learner.train_fpk_pde(rows, b["data"], b["target"], b["fpk_points"], b["flow"], SCALES)
    fpk_after, hjb_before = (x.detach() for x in _losses(learner, rows, b))
    assert torch.all(fpk_after < fpk_before)
    learner.train_hjb_pde(rows, b["hjb_points"], b["nominal"], SCALES, 4.0, 0.5)
    _, hjb_after = (x.detach() for x in _losses(learner, rows, b))
    assert torch.all(hjb_after < hjb_before)


def test_hjb_training_converges_to_the_value_of_a_constant_cost() -> None:
    # With a constant density m and the nominal law holding v still, W = c m / beta exactly.
    cfg = MeanFieldConfig(
        training="pde", hjb_pde_learning_rate=0.05, collision_weight=2.0, discount_per_s=1.0
    )
    learner = MeanFieldLearner(1, 4, cfg, torch.Generator().manual_seed(0))
    rows = torch.tensor([0])
    gen = torch.Generator().manual_seed(4)
    for _ in range(200):
        points = torch.rand(1, 9, 3, generator=gen) - 0.5
        learner.train_fpk(rows, points, torch.full((1, 9), 0.75))
    losses = []
    for _ in range(400):
        hjb_points = torch.rand(1, 16, 5, generator=gen) - 0.5
        losses.append(
            learner.train_hjb_pde(rows, hjb_points, torch.zeros(1, 16, 2), SCALES, 4.0, 0.0)
        )
    assert losses[-1] < 0.05 * losses[0]
    w = learner.hjb.forward(learner.hjb_params, torch.zeros(1, 1, 5))[0, 0, 0]
    assert float(w) == pytest.approx(2.0 * 0.75 / 1.0, rel=0.1)


def test_pde_training_of_a_batch_equals_training_each_uav_alone() -> None:
    def learner() -> MeanFieldLearner:
        return MeanFieldLearner(
            3, 4, MeanFieldConfig(training="pde"), torch.Generator().manual_seed(3)
        )

    b = _batch(3, 5)
    together = learner()
    together.hjb_params += 0.1
    together.train_fpk_pde(
        torch.arange(3), b["data"], b["target"], b["fpk_points"], b["flow"], SCALES
    )
    together.train_hjb_pde(torch.arange(3), b["hjb_points"], b["nominal"], SCALES, 4.0, 0.5)
    alone = learner()
    alone.hjb_params += 0.1
    for i in range(3):
        r, s = torch.tensor([i]), slice(i, i + 1)
        alone.train_fpk_pde(
            r, b["data"][s], b["target"][s], b["fpk_points"][s], b["flow"][s], SCALES
        )
        alone.train_hjb_pde(r, b["hjb_points"][s], b["nominal"][s], SCALES, 4.0, 0.5)
    torch.testing.assert_close(together.fpk_params, alone.fpk_params, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(together.hjb_params, alone.hjb_params, rtol=1e-5, atol=1e-6)
    assert not torch.equal(together.hjb_params[0], together.hjb_params[1])


def test_averaging_the_pde_networks_preserves_the_weighted_mean_and_counts_bits() -> None:
    learner = MeanFieldLearner(
        5, 4, MeanFieldConfig(training="pde"), torch.Generator().manual_seed(0)
    )
    assert learner.hjb.widths == (5, 16, 1)
    gen = torch.Generator().manual_seed(6)
    learner.hjb_params = torch.randn(learner.hjb_params.shape, generator=gen, dtype=torch.float64)
    learner.fpk_params = torch.randn(learner.fpk_params.shape, generator=gen, dtype=torch.float64)
    learner.train_steps = torch.tensor([3.0, 1.0, 4.0, 1.0, 5.0], dtype=torch.float64)
    rows = torch.tensor([0, 2, 4])
    w = learner.train_steps[rows]
    means = [
        (w[:, None] * p[rows]).sum(0) / w.sum() for p in (learner.hjb_params, learner.fpk_params)
    ]
    bits = learner.average(rows)
    for mean, params in zip(means, (learner.hjb_params, learner.fpk_params), strict=True):
        after = (w[:, None] * params[rows]).sum(0) / w.sum()
        torch.testing.assert_close(after, mean, rtol=0, atol=1e-12)
        torch.testing.assert_close(params[rows], mean.expand(3, -1), rtol=0, atol=1e-12)
    assert bits == 2 * 32 * (learner.hjb.num_params + learner.fpk.num_params) * 3


def test_pde_controller_is_deterministic_and_deviates_from_the_straight_line() -> None:
    env = uav_swarm_v0.parallel_env(config={"num_uavs": 12, "max_steps": 30})
    ctrl = [make_controller("mfg-local", env.config, training="pde") for _ in range(2)]
    runs = [run_episode(env, c, seed=3) for c in ctrl]
    assert runs[0] == runs[1]
    assert ctrl[0].learner.hjb.widths == (5, 16, 1)  # the value network, not the look-ahead one
    straight = run_episode(env, make_controller("straight-line", env.config), seed=3)
    assert runs[0].motion_energy_m2_s3 != straight.motion_energy_m2_s3


def test_training_mode_is_validated() -> None:
    with pytest.raises(ValueError, match=r"training.*'pinn'"):
        MeanFieldConfig(training="pinn")
    with pytest.raises(ValueError, match="pde_iterations"):
        MeanFieldConfig(pde_iterations=0)
    with pytest.raises(ValueError, match=r"frame must be one of \['uav', 'swarm', 'global'\]"):
        MeanFieldConfig(frame="body")


# -- frames and federated averaging ------------------------------------------------------------


def test_averaging_identical_models_leaves_them_unchanged() -> None:
    learner = MeanFieldLearner(4, 4, MeanFieldConfig(training="pde"), torch.Generator())
    gen = torch.Generator().manual_seed(2)
    learner.hjb_params = torch.randn(learner.hjb.num_params, generator=gen).expand(4, -1).clone()
    learner.fpk_params = torch.randn(learner.fpk.num_params, generator=gen).expand(4, -1).clone()
    learner.train_steps = torch.tensor([1.0, 7.0, 2.0, 5.0])
    hjb, fpk = learner.hjb_params.clone(), learner.fpk_params.clone()
    learner.average(torch.arange(4))
    torch.testing.assert_close(learner.hjb_params, hjb, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(learner.fpk_params, fpk, rtol=1e-6, atol=1e-7)


def _federated_lq_fit(frame: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Two UAVs at (0, +-5 m) from a target fit the closed-form LQ value of reaching it
    (:func:`_lq_value`, cost ``q |x - target|^2``) on points around themselves, by local Adam
    steps with a FedAvg round every 5 steps. Positions are relative to the target (a frame both
    share) or to each UAV (its own frame). Returns the deviations ``delta*`` of the averaged
    model at each UAV and the exact LQ feedback there."""
    p, _ = _lq_value()
    pt = torch.tensor(p, dtype=torch.float32)
    learner = MeanFieldLearner(
        2, 4, MeanFieldConfig(training="pde", energy_weight=ENERGY_WEIGHT), torch.Generator()
    )
    rows = torch.arange(2)
    at = torch.tensor([[0.0, 5.0], [0.0, -5.0]])
    origin = at if frame == "uav" else torch.zeros(2, 2)
    gen = torch.Generator().manual_seed(1)
    params = learner.hjb_params.clone().requires_grad_(True)
    opt = torch.optim.Adam([params], lr=0.01)
    value_unit = 100.0  # the network holds W / 100
    for step in range(500):
        if step % 5 == 4:
            with torch.no_grad():
                params.copy_(federated_average(params.detach(), rows, torch.ones(2)))
        state = torch.cat(
            [
                at[:, None] + 2.0 * torch.randn(2, 64, 2, generator=gen),
                torch.randn(2, 64, 2, generator=gen),
            ],
            dim=-1,
        )
        z = torch.zeros(2, 64, 5)
        z[..., 0:2] = (state[..., 0:2] - origin[:, None]) / SCALES.length_m
        z[..., 2:4] = state[..., 2:4] / SCALES.speed_mps
        exact = torch.einsum("...i,ij,...j->...", state, pt, state) / value_unit
        loss = ((learner.hjb.forward(params, z)[..., 0] - exact) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    learner.hjb_params = federated_average(params.detach(), rows, torch.ones(2))
    state = torch.zeros(2, 5)
    state[:, 0:2] = (at - origin) / SCALES.length_m
    delta = value_unit * learner.optimal_deviation(rows, state, SCALES, 1e9)
    exact = -(at @ pt[0:2, 2:4]) / ENERGY_WEIGHT
    return delta, exact


def test_in_a_shared_frame_averaged_models_steer_symmetric_uavs_to_the_target() -> None:
    delta, exact = _federated_lq_fit("global")
    assert exact[0, 1] < -4 and exact[1, 1] > 4  # the LQ law pulls each back to y = 0
    # One averaged model serves both: each is steered towards the target, near the exact law.
    assert delta[0, 1] < 0 < delta[1, 1]
    torch.testing.assert_close(delta[:, 1], exact[:, 1], rtol=0.3, atol=0.0)


def test_in_their_own_frames_averaged_models_of_symmetric_uavs_steer_nowhere() -> None:
    # In their own frames the two UAVs fit different functions (the target lies on opposite
    # sides), and the average of models that disagree cannot steer both back.
    delta_own, exact = _federated_lq_fit("uav")
    torch.testing.assert_close(delta_own[0], delta_own[1])
    assert abs(float(delta_own[0, 1])) < 0.3 * abs(float(exact[0, 1]))
