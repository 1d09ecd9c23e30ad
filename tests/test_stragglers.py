"""Stragglers: late updates with staleness weights, and coded federated learning (CodedFedL)."""

from __future__ import annotations

import dataclasses
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import fl_gym  # noqa: F401  (registers the environments)
from fl_gym.sim import rounds
from fl_gym.sim.learning.coded import (
    CodedClients,
    code_length,
    coded_gradient,
    encode,
    least_squares_gradient,
    staleness_weight,
    stand_in_updates,
)
from fl_gym.sim.learning.data import make_federated_dataset
from fl_gym.sim.learning.federation import Federation, FederationConfig
from fl_gym.sim.radio.cell import WirelessCell, WirelessConfig
from fl_gym.sim.stages import _ideal_delivery
from fl_gym.sim.transports.digital import _coded_setup, coded_upload_bits

# A narrow uplink with a short deadline and large batteries: stragglers every few rounds.
TIGHT = WirelessConfig(
    num_subchannels=10, bandwidth_hz=2e5, deadline_s=0.2, battery_min_j=50.0, battery_max_j=60.0
)
LOOSE = WirelessConfig(num_subchannels=10, battery_min_j=50.0, battery_max_j=60.0)


def _federation(stragglers: str, wireless: WirelessConfig = TIGHT, seed: int = 0, **learning):
    rng = np.random.default_rng(seed)
    data = make_federated_dataset("digits", 10, rng=rng)
    config = FederationConfig(model="logreg", stragglers=stragglers, **learning)
    fed = Federation(data, config, cell=WirelessCell(wireless, 10), rng=rng)
    return fed, rng


def _run(fed: Federation, rng: np.random.Generator, num_rounds: int) -> list:
    return [fed.run_round(fed.plan(selected="all", local_steps=2), rng) for _ in range(num_rounds)]


# -- staleness weight ------------------------------------------------------------------------------


@pytest.mark.parametrize("exponent", [0.0, 0.5, 2.0])
def test_staleness_weight_closed_form(exponent: float) -> None:
    tau = np.arange(6)
    expected = np.array([(1.0 + t) ** -exponent for t in range(6)])
    np.testing.assert_allclose(staleness_weight(tau, exponent), expected, rtol=1e-15)
    assert staleness_weight(0, exponent) == 1.0


def test_staleness_weight_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="staleness"):
        staleness_weight(np.array([-1]), 0.5)
    with pytest.raises(ValueError, match="exponent"):
        staleness_weight(1, -0.5)


# -- coded gradient --------------------------------------------------------------------------------


def _regression(n: int = 12, d: int = 3, c: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, c, generator=g, dtype=torch.float64)
    theta = torch.randn(d, c, generator=g, dtype=torch.float64)
    return x, y, theta


def test_coded_gradient_is_unbiased() -> None:
    """E[G^T G] = c I: the mean over many codes is the raw data's gradient (weighted by W^2)."""
    x, y, theta = _regression()
    weights = torch.linspace(0.2, 1.0, x.shape[0], dtype=torch.float64)
    expected = least_squares_gradient(theta, weights[:, None] * x, weights[:, None] * y)
    g = torch.Generator().manual_seed(1)
    draws = torch.stack([coded_gradient(theta, encode(x, y, 4, g, weights)) for _ in range(8000)])
    mean = draws.mean(dim=0)
    # The mean's standard error, from the draws themselves: the bias must be within 5 of them.
    stderr = draws.std(dim=0) / math.sqrt(draws.shape[0])
    assert torch.all((mean - expected).abs() < 5 * stderr)
    # ... and a wrong scaling (1 / n instead of 1 / c) is far outside.
    assert torch.any((mean * 4 / x.shape[0] - expected).abs() > 50 * stderr)


def test_coded_gradient_converges_with_code_length() -> None:
    x, y, theta = _regression()
    exact = least_squares_gradient(theta, x, y)
    g = torch.Generator().manual_seed(2)
    errors = []
    for length in (10, 1000, 100000):
        coded = coded_gradient(theta, encode(x, y, length, g))
        errors.append(float((coded - exact).norm() / exact.norm()))
    assert errors[-1] < 0.02
    assert errors[0] > errors[-1]


def test_code_length_and_summed_parity() -> None:
    assert code_length(70, 0.1) == 7
    assert code_length(3, 0.1) == 1
    assert code_length(10, 1.0) == 10
    x, y, _ = _regression()
    g = torch.Generator().manual_seed(0)
    a, b = encode(x, y, 5, g), encode(x, y, 5, g)
    total = a + b
    torch.testing.assert_close(total.x, a.x + b.x)
    with pytest.raises(ValueError, match="code lengths"):
        _ = a + encode(x, y, 6, g)


def test_stand_in_is_local_gradient_descent_on_coded_data() -> None:
    x, y, _ = _regression(n=30, d=4, c=3)
    g = torch.Generator().manual_seed(3)
    code = encode(torch.cat([x, torch.ones(30, 1, dtype=x.dtype)], dim=1), y, 10, g)
    params = torch.randn(5 * 3, generator=g, dtype=torch.float64)
    coded = CodedClients((code,), np.array([True]))
    lr = 1e-3  # below 1 / lambda_max: the step is the learning rate itself
    out = stand_in_updates(params, 3, coded, np.array([0]), np.array([30]), np.array([2]), lr)
    theta = params.view(5, 3)
    first = theta - lr / 30 * coded_gradient(theta, code)
    second = first - lr / 30 * coded_gradient(first, code)
    torch.testing.assert_close(out[0], (second - theta).reshape(-1))


# -- the pipeline ----------------------------------------------------------------------------------


def test_no_stragglers_means_todays_trajectory() -> None:
    """On a cell where nobody straggles, "stale" is "drop" bit for bit; "coded" learns the same
    models and only adds its one-off upload to the first round's energy and time."""
    drop_fed, drop_rng = _federation("drop", LOOSE)
    drop = _run(drop_fed, drop_rng, 6)
    assert not any(r.straggler.any() for r in drop)
    stale_fed, stale_rng = _federation("stale", LOOSE)
    assert _run(stale_fed, stale_rng, 6) == drop
    coded_fed, coded_rng = _federation("coded", LOOSE)
    coded = _run(coded_fed, coded_rng, 6)
    assert [r.accuracy for r in coded] == [r.accuracy for r in drop]
    torch.testing.assert_close(coded_fed.params, drop_fed.params, rtol=0, atol=0)
    extra = coded[0].energy_transmit_j - drop[0].energy_transmit_j
    assert np.all(extra > 0)
    np.testing.assert_array_equal(coded[1].energy_transmit_j, drop[1].energy_transmit_j)


def test_coded_upload_matches_the_cell_closed_form() -> None:
    """The one-off upload of the devices selected for the first time: bits = c (F + 1 + C) 32,
    time = bits / (B_m log2(1 + p g / (B_m N0))), energy = p_max time, drained from the
    batteries; the uploads run in parallel; a device uploads once."""
    wireless = WirelessConfig(
        num_subchannels=4, bandwidth_hz=1e6, battery_min_j=50.0, battery_max_j=60.0
    )
    fed, rng = _federation("coded", wireless)
    cell = fed.cell
    cfg = cell.config
    first = np.array([0, 2, 5, 7])
    start = rounds.DigitalUplink().start(fed, fed.plan(selected=first), rng, False)
    battery_before = cell.battery_j.copy()
    n = fed.data.client_sizes
    bits = np.array([math.ceil(0.1 * int(k) - 1e-9) for k in n]) * (64 + 1 + 10) * 32.0
    b_m = cfg.bandwidth_hz / cfg.num_subchannels
    rate = b_m * np.log2(1 + cfg.p_max_w * cell.channel_gain / (b_m * cfg.noise_psd_w_per_hz))
    time_s = bits / rate
    expected = np.zeros(10)
    expected[first] = cfg.p_max_w * time_s[first]
    spent, duration = _coded_setup(fed, start)
    np.testing.assert_allclose(coded_upload_bits(fed), bits)
    np.testing.assert_allclose(spent, expected, rtol=1e-12)
    np.testing.assert_allclose(battery_before - cell.battery_j, expected, rtol=1e-9, atol=1e-15)
    assert duration == pytest.approx(time_s[first].max(), rel=1e-12)
    np.testing.assert_allclose(fed.coded_upload_time_s[first], time_s[first], rtol=1e-12)
    np.testing.assert_array_equal(np.flatnonzero(fed.coded.available), first)
    assert [c.code_length for c in fed.coded.codes] == [math.ceil(0.1 * int(k) - 1e-9) for k in n]
    # Selected again: nothing more to upload; a newcomer uploads its own only.
    start = rounds.DigitalUplink().start(fed, fed.plan(selected=[0, 1]), rng, False)
    spent, duration = _coded_setup(fed, start)
    assert spent[0] == 0.0 and spent[1] == pytest.approx(cfg.p_max_w * time_s[1], rel=1e-12)
    assert np.count_nonzero(spent) == 1


def test_coded_stands_in_for_missing_updates() -> None:
    fed, rng = _federation("coded")
    calls = []
    aggregator = fed.aggregator

    def spy(updates, weights):
        calls.append(updates.shape[0])
        return aggregator(updates, weights)

    fed.aggregator = spy
    reports = _run(fed, rng, 12)
    missing = [int((r.selected & ~r.delivered).sum()) for r in reports]
    assert sum(missing) > 0
    # Every selected device contributes a row: its own update or the server's stand-in.
    assert calls == [int(r.selected.sum()) for r in reports]
    assert all(np.isfinite(r.loss) for r in reports)


def test_stale_update_applied_exactly_once(monkeypatch: pytest.MonkeyPatch) -> None:
    fed, rng = _federation("stale", staleness_exponent=0.7)
    stored: list[tuple[int, int, int, torch.Tensor]] = []
    store = rounds._store_late

    def record(fed_, pending, late_rounds):
        for row in np.flatnonzero(late_rounds > 0):
            client = int(pending.client_ids[row])
            stored.append(
                (client, fed_.round_index, int(late_rounds[row]), pending.updates[row].clone())
            )
        store(fed_, pending, late_rounds)

    monkeypatch.setattr(rounds, "_store_late", record)
    calls: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    aggregator = fed.aggregator

    def spy(updates, weights):
        calls.append((fed.round_index, updates.clone(), weights.clone()))
        return aggregator(updates, weights)

    fed.aggregator = spy
    num_rounds = 20
    _run(fed, rng, num_rounds)
    assert stored, "the scenario must produce late updates"
    arrived = 0
    for client, origin, tau, row in stored:
        due = origin + tau
        hits = [(r, w[i]) for r, u, w in calls for i in range(u.shape[0]) if torch.equal(u[i], row)]
        if due >= num_rounds:
            assert hits == []
            continue
        # Replaced by a newer late update of the same client before it arrived?
        if any(c == client and origin < o < due for c, o, _, _ in stored):
            continue
        assert len(hits) == 1, (client, origin, tau)
        assert hits[0][0] == due
        n = float(fed.data.client_sizes[client])
        assert float(hits[0][1]) == pytest.approx(n * (1 + tau) ** -0.7, rel=1e-6)
        arrived += 1
    assert arrived >= 1
    assert int(fed.num_late_applied.sum()) == arrived


def test_stale_step_is_discounted_not_normalised() -> None:
    """A round whose only arrival is one late update moves the model by s(tau) times it."""
    fed, _ = _federation("stale")
    before = fed.params.clone()
    update = torch.full((fed.num_params,), 0.01)
    fed.late_updates = torch.zeros(fed.num_clients, fed.num_params)
    fed.late_updates[3] = update
    fed.round_index = 5
    fed.late_origin_round[3] = 2
    fed.late_due_round[3] = 5
    pending = rounds.PendingUpdates(
        plan=fed.plan(selected=[0]),
        client_ids=np.array([0]),
        updates=torch.zeros(1, fed.num_params),
        finite=np.array([True]),
        bits=np.array([0]),
        train_loss=np.array([0.0]),
    )
    delivery = _ideal_delivery(1, fed.num_clients)
    delivery = dataclasses.replace(delivery, arrived=np.array([False]))
    rounds.aggregate_round(fed, pending, delivery)
    torch.testing.assert_close(fed.params - before, update * (1 + 3) ** -0.5)
    assert fed.late_origin_round[3] == -1 and fed.num_late_applied[3] == 1
    # Not again.
    rounds.aggregate_round(fed, pending, delivery)
    torch.testing.assert_close(fed.params - before, update * (1 + 3) ** -0.5)


@pytest.mark.parametrize("mode", ["stale", "coded"])
def test_same_seed_same_trajectory(mode: str) -> None:
    a = _run(*_federation(mode), 8)
    b = _run(*_federation(mode), 8)
    assert a == b


def test_config_errors_name_the_value() -> None:
    with pytest.raises(ValueError, match="stragglers"):
        FederationConfig(stragglers="late")
    with pytest.raises(ValueError, match="logreg"):
        FederationConfig(model="mlp", stragglers="coded")
    with pytest.raises(ValueError, match="max_staleness"):
        FederationConfig(max_staleness=0)


@pytest.mark.parametrize("preset", ["stragglers", "coded"])
def test_presets_deterministic_and_finite(preset: str) -> None:
    def episode() -> list[tuple[np.ndarray, float]]:
        env = gym.make("fl_gym/WirelessFL-v0", preset=preset, obs_mode="flat")
        obs, _ = env.reset(seed=3)
        env.action_space.seed(3)
        out = [(obs, 0.0)]
        for _ in range(8):
            obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            out.append((obs, reward))
            if terminated or truncated:
                break
        return out

    a, b = episode(), episode()
    assert len(a) == len(b)
    for (oa, ra), (ob, rb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(oa, ob)
        assert ra == rb
        assert np.all(np.isfinite(oa)) and np.isfinite(ra)


@pytest.mark.parametrize("preset", ["stragglers", "coded"])
def test_snapshot_replays_late_and_coded_state(preset: str) -> None:
    """A snapshot holds the late updates in flight and the coded data: replay is identical."""
    env = gym.make("fl_gym/WirelessFL-v0", preset=preset, obs_mode="flat")
    env.reset(seed=5)
    env.action_space.seed(5)
    actions = [env.action_space.sample() for _ in range(6)]
    for action in actions[:2]:
        env.step(action)
    snap = env.unwrapped.snapshot()

    def play() -> list[tuple[np.ndarray, float]]:
        out = []
        for action in actions[2:]:
            obs, reward, terminated, truncated, _ = env.step(action)
            out.append((obs, reward))
            if terminated or truncated:
                break
        return out

    first = play()
    env.unwrapped.restore(snap)
    second = play()
    assert len(first) == len(second)
    for (oa, ra), (ob, rb) in zip(first, second, strict=True):
        np.testing.assert_array_equal(oa, ob)
        assert ra == rb
