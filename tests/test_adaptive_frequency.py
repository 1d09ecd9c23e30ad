"""The adaptive aggregation-frequency controller of Wang et al. (IEEE JSAC 2019): its bound in
closed form, its estimates against a per-client reference, its budget, and its accuracy against
fixed periods under the same budget."""

from __future__ import annotations

import itertools
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import fl_gym  # noqa: F401  (registers the environments)
from fl_gym.baselines import AdaptiveFrequency, make_baseline
from fl_gym.baselines.adaptive_frequency import LossConstants, estimate_loss_constants, wang_bound

ENV_ID = "fl_gym/AggregationFrequency-v0"
FIXED_PERIODS = (1, 2, 5, 10, 20)


def _bound_by_hand(tau: int, k: LossConstants, eta: float, r: float, c: float, b: float, phi):
    """G(tau) transcribed term by term, one scalar at a time (the authors' form)."""
    h = k.delta / k.beta * ((eta * k.beta + 1.0) ** tau - 1.0) - k.delta * eta * tau
    h = max(0.0, h)
    t = r * tau / (c * tau + b)
    gap = (1.0 + math.sqrt(1.0 + 4.0 * t * t * phi * k.rho * eta * h / tau)) / (2.0 * t * eta * phi)
    return gap + k.rho * h


def _adaptive_episode(seed: int, **options) -> tuple[AdaptiveFrequency, list[int], float]:
    """One episode played until the controller's budget is spent (or the episode ends)."""
    env = gym.make(ENV_ID)
    policy = make_baseline("adaptive-frequency", env, **options)
    choices = env.unwrapped.config.local_step_choices
    obs, info = env.reset(seed=seed)
    periods: list[int] = []
    start = True
    while True:
        action, _ = policy.predict(obs, episode_start=start)
        start = False
        if policy.exhausted():
            break
        periods.append(choices[int(action)])
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    return policy, periods, float(info["accuracy"])


def _fixed_episode(seed: int, tau: int, budget: float, c: float = 1.0, b: float = 10.0) -> float:
    """Final accuracy of a fixed period played while the same budget pays for its rounds."""
    env = gym.make(ENV_ID)
    policy = make_baseline("fixed-steps", env, steps=tau)
    obs, info = env.reset(seed=seed)
    spent = 0.0
    while spent + c * tau + b <= budget:
        spent += c * tau + b
        action, _ = policy.predict(obs)
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    return float(info["accuracy"])


# -- the bound ----------------------------------------------------------------------------------


def test_bound_without_divergence_is_the_budget_closed_form():
    # delta = 0 makes h = 0, so G = 1 / (T eta phi) = (c tau + b) / (R tau eta phi): the longest
    # period affords the most local steps and wins.
    taus = np.arange(1, 31)
    constants = LossConstants(beta=0.5, rho=0.2, delta=0.0)
    bound = wang_bound(
        taus,
        constants,
        learning_rate=0.1,
        budget=200.0,
        cost_per_step=1.0,
        cost_per_aggregation=10.0,
        phi=0.025,
    )
    np.testing.assert_allclose(bound, (taus + 10.0) / (200.0 * taus * 0.1 * 0.025), rtol=1e-12)
    assert int(taus[np.argmin(bound)]) == 30


@pytest.mark.parametrize("delta", [0.01, 0.3, 5.0])
def test_bound_matches_scalar_transcription_and_divergence_shortens_period(delta):
    constants = LossConstants(beta=0.8, rho=0.3, delta=delta)
    kwargs = dict(budget=150.0, cost_per_step=0.5, cost_per_aggregation=8.0, phi=0.05)
    taus = np.arange(1, 101)
    bound = wang_bound(taus, constants, learning_rate=0.1, **kwargs)
    expected = [
        _bound_by_hand(int(t), constants, 0.1, 150.0, 0.5, 8.0, 0.05) for t in taus.tolist()
    ]
    np.testing.assert_allclose(bound, expected, rtol=1e-10)


def test_larger_divergence_never_lengthens_the_best_period():
    taus = np.arange(1, 101)
    best = []
    for delta in (0.0, 0.01, 0.1, 1.0, 10.0):
        bound = wang_bound(
            taus,
            LossConstants(beta=0.8, rho=0.3, delta=delta),
            learning_rate=0.1,
            budget=200.0,
            cost_per_step=1.0,
            cost_per_aggregation=10.0,
            phi=0.025,
        )
        best.append(int(taus[np.argmin(bound)]))
    assert best == sorted(best, reverse=True)
    assert best[0] == 100 and best[-1] < 10


# -- the estimates ------------------------------------------------------------------------------


def test_estimates_match_a_per_client_reference_and_leave_the_federation_alone():
    env = gym.make(ENV_ID)
    env.reset(seed=3)
    fed = env.unwrapped.federation
    previous = fed.params.clone()
    env.step(2)
    env.step(3)
    before = fed.params.clone()
    estimate = estimate_loss_constants(fed, previous)
    assert torch.equal(fed.params, before)

    # Reference: one client at a time, through the model's own batched loss and gradient.
    current = fed.params
    sizes = np.asarray(fed.data.client_sizes, dtype=np.float64)
    losses, grads = [], []
    for point in (current, previous):
        point_losses, point_grads = [], []
        for i in range(fed.num_clients):
            offset, count = int(fed.clients.offsets[i]), int(fed.clients.counts[i])
            x = fed.clients.x[offset : offset + count].unsqueeze(0)
            y = fed.clients.y[offset : offset + count].unsqueeze(0)
            loss, grad = fed.model.loss_and_grad(point.unsqueeze(0), x, y)
            point_losses.append(float(loss[0]))
            point_grads.append(grad[0].double().numpy())
        losses.append(np.array(point_losses))
        grads.append(np.stack(point_grads))
    movement = float(np.linalg.norm((current - previous).double().numpy()))
    w = sizes / sizes.sum()
    beta = w @ (np.linalg.norm(grads[0] - grads[1], axis=1) / movement)
    rho = w @ (np.abs(losses[0] - losses[1]) / movement)
    delta = w @ np.linalg.norm(grads[0] - w @ grads[0], axis=1)
    assert estimate is not None
    np.testing.assert_allclose(
        [estimate.beta, estimate.rho, estimate.delta], [beta, rho, delta], rtol=2e-4
    )
    assert estimate.beta > 0 and estimate.rho > 0 and estimate.delta > 0
    # A model that has not moved gives no secant.
    assert estimate_loss_constants(fed, fed.params.clone()) is None


# -- the controller in the environment ----------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"budget": 57.0},
        {"budget": 90.0, "cost_per_step": 2.5, "cost_per_aggregation": 3.0, "phi": 1.0},
        {"budget": 120.0, "tau_max": 10, "smoothing": 0.5},
    ],
)
def test_controller_stays_within_budget_and_plays_allowed_periods(options):
    policy, periods, _ = _adaptive_episode(0, **options)
    budget = options.get("budget", 200.0)
    c = options.get("cost_per_step", 1.0)
    b = options.get("cost_per_aggregation", 10.0)
    choices = gym.make(ENV_ID).unwrapped.config.local_step_choices
    costs = [c * tau + b for tau in periods]
    assert periods and sum(costs) <= budget + 1e-9
    assert policy.resource_spent() == pytest.approx(sum(costs))
    # It stops only when not even the smallest period fits in what is left.
    assert policy.exhausted()
    assert budget - sum(costs) < c * min(choices) + b
    assert set(periods) <= set(choices)
    assert max(periods) <= options.get("tau_max", max(choices))
    # The paper starts from tau = 1 and lets the period grow at most tenfold per round.
    assert periods[0] == 1
    assert all(now <= 10 * before for before, now in itertools.pairwise(periods))


def test_exhausted_controller_plays_the_smallest_period_and_spends_nothing():
    env = gym.make(ENV_ID)
    policy = AdaptiveFrequency(env, budget=25.0)  # pays for (1 + 10) + one more round at most
    obs, _ = env.reset(seed=1)
    spent = []
    for _ in range(5):
        action, _ = policy.predict(obs)
        spent.append(policy.resource_spent())
        obs, *_ = env.step(action)
    assert policy.exhausted()
    assert int(action) == 0  # the index of the smallest choice, 1
    assert spent[-1] == spent[-2] <= 25.0


def test_same_seed_same_periods():
    _, first, acc_first = _adaptive_episode(4, budget=150.0)
    _, second, acc_second = _adaptive_episode(4, budget=150.0)
    assert first == second and acc_first == acc_second


def test_no_worse_than_the_median_fixed_period_under_the_same_budget():
    # Measured with the defaults (R = 200, c = 1, b = 10): the controller reaches 0.93-0.94
    # against medians of 0.88-0.92 (the fixed period 5).
    for seed in range(3):
        _, periods, adaptive = _adaptive_episode(seed, budget=200.0)
        fixed = [_fixed_episode(seed, tau, 200.0) for tau in FIXED_PERIODS]
        assert adaptive >= float(np.median(fixed)), (seed, periods, adaptive, fixed)


def test_observation_from_another_environment_is_refused():
    env, other = gym.make(ENV_ID), gym.make(ENV_ID)
    policy = AdaptiveFrequency(env)
    env.reset(seed=0)
    obs, _ = other.reset(seed=0)
    other.step(0)
    obs, *_ = other.step(0)
    with pytest.raises(RuntimeError, match="one 'adaptive-frequency' policy per environment"):
        policy.predict(obs)


# -- options ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"budget": 0.0}, ValueError, "budget must be a finite number > 0"),
        ({"budget": float("nan")}, ValueError, "budget must be a finite number > 0"),
        ({"budget": "100"}, TypeError, "budget must be a number"),
        ({"cost_per_step": -1.0}, ValueError, "cost_per_step must be a finite number > 0"),
        ({"cost_per_aggregation": -0.5}, ValueError, "cost_per_aggregation must be .* >= 0"),
        ({"phi": 0}, ValueError, "phi must be a finite number > 0"),
        ({"phi": True}, TypeError, "phi must be a number"),
        ({"tau_max": 0}, ValueError, "tau_max must be at least the smallest local step"),
        ({"tau_max": 2.5}, TypeError, "tau_max must be None or an int"),
        ({"smoothing": 1.0}, ValueError, r"smoothing must be in \[0, 1\)"),
        ({"smoothing": None}, TypeError, "smoothing must be a number"),
        ({"horizon": 3}, TypeError, "has no option"),
    ],
)
def test_bad_options_are_named(options, error, match):
    with pytest.raises(error, match=match):
        make_baseline("adaptive-frequency", gym.make(ENV_ID), **options)


def test_refuses_an_environment_without_the_frequency_knob():
    with pytest.raises(ValueError, match="does not control"):
        AdaptiveFrequency(gym.make("fl_gym/ClientSelection-v0"))
