"""Differential privacy: clipping, noise, DP-SGD and accounting (fl_gym.sim.privacy and
fl_gym.sim.learning.privacy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fl_gym.sim import Federation, FederationConfig, make_federated_dataset, run_rounds
from fl_gym.sim.learning.models import BatchedMLP
from fl_gym.sim.learning.privacy import (
    RDP_ORDERS,
    PrivacyAccountant,
    SampleLevelDP,
    clip_rows,
)
from fl_gym.sim.learning.training import LocalTrainingResult
from fl_gym.sim.privacy import ClientLevelDP
from fl_gym.sim.rounds import RoundStart

dpa = pytest.importorskip("dp_accounting")


def _federation(seed: int, **config: object) -> tuple[Federation, np.random.Generator]:
    rng = np.random.default_rng(seed)
    data = make_federated_dataset("digits", num_clients=8, rng=rng)
    return Federation(data, FederationConfig(**config), rng=rng), rng


def _start(fed: Federation, ids: np.ndarray, seed: int) -> RoundStart:
    plan = fed.plan(selected=ids)
    generator = torch.Generator().manual_seed(seed)
    client_ids = torch.as_tensor(plan.selected_ids)
    return RoundStart(plan, client_ids, torch.ones_like(client_ids), generator)


def test_clip_rows_bounds_norms_and_keeps_small_rows() -> None:
    rows = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    clipped, norms = clip_rows(rows, 1.0)
    torch.testing.assert_close(norms, torch.tensor([5.0, 0.5, 0.0]))
    torch.testing.assert_close(clipped, torch.tensor([[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]]))


@pytest.mark.parametrize("loss", ["cross_entropy", "squared_error"])
def test_per_example_clipping_matches_a_loop_over_examples(loss: str) -> None:
    """Every example's gradient, computed alone with autograd, has the norm the batched pass
    reports, and the clipped mean is the mean of the examples' clipped gradients."""
    torch.manual_seed(0)
    model = BatchedMLP(6, 4, (5, 3), loss=loss)
    gen = torch.Generator().manual_seed(1)
    params = torch.stack([model.init_params(gen) for _ in range(3)])
    x = torch.randn(3, 7, 6, generator=gen) * 3.0
    if loss == "cross_entropy":
        y = torch.randint(0, 4, (3, 7), generator=gen)
    else:
        y = torch.randn(3, 7, 4, generator=gen)
    clip = 0.5
    value, grads, norms = model.layer_loss_and_clipped_grad(model.split(params), x, y, clip)
    batched = model.merge(grads)
    for k in range(3):
        module = model.to_module(params[k])
        clipped_sum = torch.zeros(model.num_params)
        for i in range(7):
            module.zero_grad()
            out = module(x[k, i : i + 1])
            if loss == "cross_entropy":
                torch.nn.functional.cross_entropy(out, y[k, i : i + 1]).backward()
            else:
                (out - y[k, i : i + 1]).pow(2).sum().backward()
            g = torch.cat(
                [
                    part
                    for lin in module
                    if isinstance(lin, torch.nn.Linear)
                    for part in (lin.weight.grad.T.reshape(-1), lin.bias.grad)
                ]
            )
            assert float(norms[k, i]) == pytest.approx(float(g.norm()), rel=1e-5)
            clipped_sum += g * min(1.0, clip / float(g.norm()))
        torch.testing.assert_close(batched[k], clipped_sum / 7, rtol=1e-5, atol=1e-7)
        assert float(batched[k].norm()) <= clip + 1e-6
    plain_loss, _ = model.loss_and_grad(params, x, y)
    torch.testing.assert_close(value, plain_loss)


def test_dp_sgd_without_noise_and_with_a_loose_clip_is_plain_sgd() -> None:
    fed_a, rng_a = _federation(3)
    fed_b, rng_b = _federation(3)
    plan = fed_a.plan(selected="all", local_steps=3)
    run_rounds([fed_a], [plan], [rng_a])
    loose = SampleLevelDP(noise_multiplier=0.0, clip_norm=1e6)
    run_rounds([fed_b], [plan], [rng_b], local_privacy=loose)
    torch.testing.assert_close(fed_a.params, fed_b.params, rtol=1e-5, atol=1e-6)


def test_dp_sgd_rounds_are_deterministic_and_finite() -> None:
    results = []
    for _ in range(2):
        fed, rng = _federation(5)
        dp = SampleLevelDP(noise_multiplier=1.1, clip_norm=0.5)
        reports = [
            run_rounds([fed], [fed.plan(selected="all", local_steps=2)], [rng], local_privacy=dp)[0]
            for _ in range(3)
        ]
        assert all(math.isfinite(r.accuracy) and math.isfinite(r.loss) for r in reports)
        results.append(fed.params.clone())
    assert torch.equal(results[0], results[1])


def test_dp_sgd_noise_has_the_stated_std() -> None:
    """A step from a model whose gradients vanish (clip -> 0) moves each parameter by the noise
    alone: lr * z * C / B."""
    fed, _ = _federation(7, batch_size=16)
    # The clipped gradients are at most 1e-9 in norm; the noise is 2000 times the clip.
    dp = SampleLevelDP(noise_multiplier=2000.0, clip_norm=1e-9)
    before = fed.params.clone()
    from fl_gym.sim.learning.training import local_sgd

    ids = torch.arange(8)
    result = local_sgd(
        fed.model,
        before,
        fed.clients,
        ids,
        torch.ones(8, dtype=torch.int64),
        batch_size=16,
        learning_rate=1e4,
        generator=torch.Generator().manual_seed(0),
        privacy=dp,
    )
    moved = (result.params - before).double() / 1e4
    expected = 2000.0 * 1e-9 / 16
    assert float(moved.std()) == pytest.approx(expected, rel=0.03)


def test_server_noise_std_is_z_c_over_n() -> None:
    """Central DP-FedAvg noise on the global model: std = z C / n (uniform weights), measured
    over many draws."""
    fed, _ = _federation(11, weighting="uniform")
    z, c, n = 1.3, 0.7, 5
    dp = ClientLevelDP(noise_multiplier=z, clip_norm=c)
    delivered = np.zeros(8, dtype=bool)
    delivered[:n] = True
    draws = []
    for seed in range(40):
        start = _start(fed, np.arange(n), seed)
        before = fed.params.clone()
        dp._pending = [{"norms": np.zeros(n), "device_std": 0.0}]
        dp.after_aggregate([fed], [start], [None], [{"delivered": delivered}])  # type: ignore[list-item]
        draws.append((fed.params - before).double())
        fed.params = before
    noise = torch.cat(draws)
    assert float(noise.std()) == pytest.approx(z * c / n, rel=0.02)
    assert abs(float(noise.mean())) < 4 * z * c / n / math.sqrt(noise.numel())
    assert dp.last[0].noise_multiplier == pytest.approx(z)
    assert dp.last[0].sensitivity == pytest.approx(c / n)


def test_device_noise_averages_to_the_central_std() -> None:
    """Distributed noise: each device's row carries z C / sqrt(n); the uniform average z C / n."""
    fed, _ = _federation(12, weighting="uniform")
    z, c, n = 0.9, 2.0, 4
    dp = ClientLevelDP(noise_multiplier=z, clip_norm=c, noise_at="device")
    rows, means = [], []
    for seed in range(30):
        start = _start(fed, np.arange(n), seed)
        trained = [LocalTrainingResult(fed.params.expand(n, -1).clone(), torch.zeros(n))]
        out = dp.apply([fed], [start], trained)[0]
        noise = (out.params - fed.params).double()
        rows.append(noise)
        means.append(noise.mean(dim=0))
    assert float(torch.cat(rows).std()) == pytest.approx(z * c / math.sqrt(n), rel=0.02)
    assert float(torch.cat(means).std()) == pytest.approx(z * c / n, rel=0.03)


def test_client_dp_round_clips_and_stays_deterministic() -> None:
    finals = []
    for _ in range(2):
        fed, rng = _federation(13, weighting="uniform")
        dp = ClientLevelDP(noise_multiplier=0.5, clip_norm=0.05)
        for _ in range(3):
            report = run_rounds(
                [fed], [fed.plan(selected="all", local_steps=2)], [rng], transforms=[dp]
            )[0]
            assert math.isfinite(report.accuracy)
        # Without noise the step of a uniform average of clipped updates is within C.
        assert dp.last[0].clipped.any()
        finals.append(fed.params.clone())
    assert torch.equal(finals[0], finals[1])
    fed, rng = _federation(13, weighting="uniform")
    quiet = ClientLevelDP(noise_multiplier=0.0, clip_norm=0.05)
    report = run_rounds(
        [fed], [fed.plan(selected="all", local_steps=2)], [rng], transforms=[quiet]
    )[0]
    assert report.update_norm <= 0.05 + 1e-6


def test_client_dp_refuses_robust_aggregators() -> None:
    fed, rng = _federation(14, aggregator="median")
    with pytest.raises(ValueError, match="fedavg"):
        run_rounds([fed], [fed.plan()], [rng], transforms=[ClientLevelDP()])


def test_accountant_matches_the_library() -> None:
    acc = PrivacyAccountant(delta=1e-5)
    for _ in range(50):
        acc.record(1.1, 0.1)
    direct = dpa.rdp.RdpAccountant(list(RDP_ORDERS))
    event = dpa.PoissonSampledDpEvent(0.1, dpa.GaussianDpEvent(1.1))
    direct.compose(dpa.SelfComposedDpEvent(event, 50))
    assert acc.epsilon() == pytest.approx(direct.get_epsilon(1e-5), rel=1e-9)
    # Abadi et al.'s moments accountant regime: z = 4, q = 0.01, 10,000 steps is eps ~ 1.2 at
    # delta 1e-5 in RDP, within the 1.26 the paper gets with its moments accountant (Sec. 3.1).
    long = PrivacyAccountant(1e-5)
    long.record(4.0, 0.01, steps=10_000)
    assert 0.9 < long.epsilon() <= 1.26
    # q = 1: the plain Gaussian mechanism; its epsilon decreases with the noise.
    strong, weak = PrivacyAccountant(1e-5), PrivacyAccountant(1e-5)
    strong.record(4.0, 1.0, steps=10)
    weak.record(1.0, 1.0, steps=10)
    assert 0.0 < strong.epsilon() < weak.epsilon()
    zero = PrivacyAccountant(1e-5)
    zero.record(0.0, 1.0)
    assert zero.epsilon() == math.inf


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="clip_norm"):
        SampleLevelDP(clip_norm=0.0)
    with pytest.raises(ValueError, match="noise_at"):
        ClientLevelDP(noise_at="cloud")
    fed, rng = _federation(15)
    bad = ClientLevelDP(noise_multiplier=-1.0)
    with pytest.raises(ValueError, match="noise_multiplier"):
        run_rounds([fed], [fed.plan()], [rng], transforms=[bad])
    with pytest.raises(ValueError, match="delta"):
        PrivacyAccountant(delta=1.5)


def test_a_private_federation_does_not_depend_on_its_batch() -> None:
    """Two federations in one run_rounds, with DP-SGD and client-level DP: each row is what
    the federation computes alone (noise from its own round generator)."""
    dp_sgd = SampleLevelDP(noise_multiplier=1.0, clip_norm=0.5)
    batched = [_federation(s, weighting="uniform") for s in (21, 22)]
    alone = [_federation(s, weighting="uniform") for s in (21, 22)]
    for _ in range(2):
        run_rounds(
            [f for f, _ in batched],
            [f.plan(selected="all", local_steps=2) for f, _ in batched],
            [r for _, r in batched],
            transforms=[ClientLevelDP(0.7, 0.1)],
            local_privacy=dp_sgd,
        )
        for fed, rng in alone:
            run_rounds(
                [fed],
                [fed.plan(selected="all", local_steps=2)],
                [rng],
                transforms=[ClientLevelDP(0.7, 0.1)],
                local_privacy=dp_sgd,
            )
    for (a, _), (b, _) in zip(batched, alone, strict=True):
        assert torch.equal(a.params, b.params)


def test_per_federation_dp_sgd_settings_train_each_federation_as_alone() -> None:
    """A list of settings gives each federation its own DP-SGD (or none): with and without
    DP-SGD side by side, every federation ends where it ends alone with its setting, and the
    settings really differ (DP-SGD moves a federation elsewhere than plain SGD)."""
    settings = [None, SampleLevelDP(noise_multiplier=1.0, clip_norm=0.5), None]
    batched = [_federation(s) for s in (31, 32, 33)]
    alone = [_federation(s) for s in (31, 32, 33)]
    plain = _federation(32)
    for _ in range(2):
        run_rounds(
            [f for f, _ in batched],
            [f.plan(selected="all", local_steps=2) for f, _ in batched],
            [r for _, r in batched],
            local_privacy=settings,
        )
        for (fed, rng), setting in zip(alone, settings, strict=True):
            run_rounds(
                [fed], [fed.plan(selected="all", local_steps=2)], [rng], local_privacy=setting
            )
        run_rounds([plain[0]], [plain[0].plan(selected="all", local_steps=2)], [plain[1]])
    for (a, _), (b, _) in zip(batched, alone, strict=True):
        assert torch.equal(a.params, b.params)
    assert not torch.equal(batched[1][0].params, plain[0].params)
    with pytest.raises(ValueError, match="one setting per federation"):
        fed, rng = _federation(1)
        run_rounds([fed], [fed.plan()], [rng], local_privacy=[None, None])
    with pytest.raises(TypeError, match="local_privacy"):
        run_rounds([fed], [fed.plan()], [rng], local_privacy=["dp"])
