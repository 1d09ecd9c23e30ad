"""The CS over-the-air transport: the noiseless aggregate is the weighted mean of the devices'
top-k updates, what top-k dropped stays in each device's residual, the weakest device inverts at
the budget, and the round is seeded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fl_gym.sim import CSOverTheAir, Federation, FederationConfig, make_federated_dataset
from fl_gym.sim.radio.cell import WirelessCell, WirelessConfig
from fl_gym.sim.radio.over_the_air import top_k_sparsify
from fl_gym.sim.rounds import DigitalUplink, train_rounds

K = 6


def _federation(seed: int, **wireless: float) -> tuple[Federation, np.random.Generator]:
    rng = np.random.default_rng(seed)
    data = make_federated_dataset("digits", K, rng=rng)
    config = WirelessConfig(num_antennas=2, battery_min_j=1e3, battery_max_j=1e3, **wireless)
    # Logistic regression (d = 650) keeps the (s, d) measurement matrix small.
    fed = Federation(data, FederationConfig(model="logreg"), cell=WirelessCell(config, K), rng=rng)
    return fed, rng


def test_sizes_follow_the_ratios() -> None:
    t = CSOverTheAir(density=0.01, measurement_ratio=0.5, recovery_fraction=0.2)
    assert t.sizes(4810) == (48, 2405, 481)
    assert CSOverTheAir(density=1.0, measurement_ratio=1.0, recovery_fraction=1.0).sizes(7) == (
        7,
        7,
        7,
    )
    assert CSOverTheAir(density=1e-6, measurement_ratio=1e-6).sizes(100) == (1, 1, 1)


def test_noiseless_round_moves_the_model_by_the_weighted_mean_of_the_top_k_updates() -> None:
    # Receiver noise far below any signal and a sparse sum (K x 6 entries) well inside what
    # s = d / 2 = 325 measurements and 65 recovered entries resolve: NIHT recovers it.
    fed, rng = _federation(3, noise_psd_dbm_per_hz=-250.0)
    twin, twin_rng = _federation(3, noise_psd_dbm_per_hz=-250.0)
    transport = CSOverTheAir(power_scale=1.0, num_iterations=200)
    plan = fed.plan(selected="all", local_steps=2)
    before = fed.params.clone()
    report = fed.run_round(plan, rng, transport=transport)
    # The same local training, done again on the twin (same seed: same generator draws).
    start = DigitalUplink().start(twin, twin.plan(selected="all", local_steps=2), twin_rng, False)
    updates = train_rounds([twin], [start])[0].params - twin.params
    keep = transport.sizes(fed.num_params)[0]
    sparse = top_k_sparsify(updates, keep).double()
    share = torch.as_tensor(fed.data.client_sizes / fed.data.client_sizes.sum())
    expected = share @ sparse
    step = (fed.params - before).double()
    assert torch.linalg.vector_norm(step - expected) <= 1e-4 * torch.linalg.vector_norm(expected)
    assert report.delivered.all() and report.channel_uses == transport.sizes(fed.num_params)[1]
    assert report.aggregation_mse < 1e-8 * float(expected.pow(2).mean())
    # Error accumulation: each device keeps what its top-k dropped.
    assert fed.residual is not None
    torch.testing.assert_close(
        fed.residual.double(),
        updates.double() - top_k_sparsify(updates, keep).double(),
        rtol=0,
        atol=1e-7,
    )


def test_weakest_device_inverts_at_the_budget_and_airtime_is_s_over_b() -> None:
    fed, rng = _federation(5)
    transport = CSOverTheAir(power_scale=0.5)
    cfg = fed.cell.config  # type: ignore[union-attr]
    selected = np.array([True, True, False, True, True, False])
    report = fed.run_round(fed.plan(selected=selected, local_steps=1), rng, transport=transport)
    airtime = transport.sizes(fed.num_params)[1] / cfg.bandwidth_hz
    energy = report.energy_transmit_j
    assert energy[~selected].max() == 0.0
    # The weakest sender transmits at the budget P0 = 0.5 p_max, the others below it.
    assert energy[selected].max() == pytest.approx(0.5 * cfg.p_max_w * airtime, rel=1e-9)
    assert (energy[selected] > 0).all()
    compute_s, _ = fed.cell.compute_cost(  # type: ignore[union-attr]
        np.where(selected, 1, 0), fed.config.batch_size
    )
    assert report.round_time_s == pytest.approx(float((compute_s + airtime)[selected].max()))
    assert fed.residual is not None and not fed.residual[~selected].any()


def test_same_seed_same_rounds() -> None:
    params = []
    for _ in range(2):
        fed, rng = _federation(8)
        transport = CSOverTheAir()
        for _ in range(3):
            fed.run_round(fed.plan(selected="all", local_steps=2), rng, transport=transport)
        params.append(fed.params.clone())
    assert torch.equal(params[0], params[1])


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"density": 0.0}, "density"),
        ({"measurement_ratio": 1.5}, "measurement_ratio"),
        ({"recovery_fraction": -0.1}, "recovery_fraction"),
        ({"num_iterations": 0}, "num_iterations"),
        ({"power_scale": 2.0}, "power_scale"),
    ],
)
def test_bad_settings_are_clear_errors(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        CSOverTheAir(**kwargs)
