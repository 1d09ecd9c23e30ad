"""The adversary stage: each attack's closed form, the Byzantine set, determinism, no effect
when off, and the monitor's features."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fl_gym.sim.learning.adversary import (
    ATTACKS,
    AdversaryConfig,
    ByzantineTransform,
    UpdateMonitor,
    alie_z,
)
from fl_gym.sim.learning.data import make_federated_dataset
from fl_gym.sim.learning.federation import Federation, FederationConfig
from fl_gym.sim.rounds import DigitalUplink, RoundPipeline, train_rounds

K = 10


def federation(seed: int = 0, aggregator: str = "fedavg") -> tuple[Federation, np.random.Generator]:
    rng = np.random.default_rng(seed)
    data = make_federated_dataset("digits", num_clients=K, rng=rng)
    return Federation(data, FederationConfig(aggregator=aggregator), rng=rng), rng


def trained_round(config: AdversaryConfig, seed: int = 0):
    """A started, trained round, and the transform's view of it (honest and attacked)."""
    fed, rng = federation(seed)
    start = DigitalUplink().start(fed, fed.plan(selected="all", local_steps=3), rng, False)
    honest = train_rounds([fed], [start])
    transform = ByzantineTransform(config)
    attacked = transform.apply([fed], [start], list(honest))
    return fed, start, honest[0], attacked[0], transform.last_attackers[0]


def test_sign_flip_scales_and_flips_the_honest_update():
    fed, _, honest, attacked, bad = trained_round(
        AdversaryConfig(attack="sign_flip", devices=(1, 4), scale=3.0)
    )
    assert bad.tolist() == [k in (1, 4) for k in range(K)]
    u = honest.params - fed.params
    sent = attacked.params - fed.params
    torch.testing.assert_close(sent[[1, 4]], -3.0 * u[[1, 4]])
    keep = [k for k in range(K) if k not in (1, 4)]
    assert torch.equal(attacked.params[keep], honest.params[keep])


def test_alie_sends_mean_minus_z_std_and_z_follows_the_paper():
    # Baruch et al. 2019: n = 50, f = 24 -> s = 2, z = Phi^-1(48 / 50).
    assert alie_z(50, 24) == pytest.approx(1.7507, abs=1e-4)
    assert alie_z(1, 1) >= 0 and math.isfinite(alie_z(1, 1))
    fed, _, honest, attacked, _ = trained_round(AdversaryConfig(attack="alie", devices=(0, 2, 3)))
    u = (honest.params - fed.params).double()
    z = alie_z(K, 3)
    expected = u.mean(dim=0) - z * u.std(dim=0, unbiased=False)
    sent = (attacked.params - fed.params).double()
    for k in (0, 2, 3):
        torch.testing.assert_close(sent[k], expected, rtol=1e-5, atol=1e-6)


def test_ipm_sends_minus_epsilon_times_the_honest_mean():
    fed, _, honest, attacked, _ = trained_round(
        AdversaryConfig(attack="ipm", devices=(5,), scale=0.5)
    )
    u = honest.params - fed.params
    honest_mean = u[[k for k in range(K) if k != 5]].mean(dim=0)
    torch.testing.assert_close(attacked.params[5] - fed.params, -0.5 * honest_mean)


def test_large_norm_gaussian_nan_inf():
    fed, _, _, attacked, _ = trained_round(
        AdversaryConfig(attack="large_norm", devices=(2,), scale=1e20)
    )
    np.testing.assert_allclose((attacked.params[2] - fed.params).numpy(), 1e20, rtol=1e-6)
    fed, _, _, attacked, _ = trained_round(
        AdversaryConfig(attack="gaussian", devices=tuple(range(K)), scale=2.0)
    )
    noise = (attacked.params - fed.params).double()
    # K x P draws of N(0, 4): the sample standard deviation is 2 to within a few per cent.
    assert float(noise.std()) == pytest.approx(2.0, rel=0.02)
    assert abs(float(noise.mean())) < 0.02
    for attack, check in (("nan", torch.isnan), ("inf", torch.isposinf)):
        fed, _, _, attacked, _ = trained_round(AdversaryConfig(attack=attack, devices=(7,)))
        assert bool(check(attacked.params[7]).all())


def test_label_flip_retrains_the_byzantine_devices_on_flipped_labels():
    fed, _, honest, attacked, _ = trained_round(
        AdversaryConfig(attack="label_flip", devices=(0, 1))
    )
    assert not torch.equal(attacked.params[:2], honest.params[:2])
    assert torch.equal(attacked.params[2:], honest.params[2:])
    # The poisoned model predicts the flipped class on the device's own data more often.
    x, y = fed.clients.x, fed.clients.y
    flipped_hits = fed.model.logits(attacked.params[0:1], x.unsqueeze(0)).argmax(-1) == 9 - y
    honest_hits = fed.model.logits(honest.params[0:1], x.unsqueeze(0)).argmax(-1) == 9 - y
    assert int(flipped_hits.sum()) > int(honest_hits.sum())


def test_fraction_draws_the_rounded_count_fixed_per_episode_or_redrawn():
    assert AdversaryConfig(attack="nan", fraction=0.25).num_byzantine(10) == 3
    assert AdversaryConfig(attack="nan", fraction=0.24).num_byzantine(10) == 2
    for redraw in (False, True):
        fed, rng = federation(3)
        transform = ByzantineTransform(
            AdversaryConfig(attack="sign_flip", fraction=0.3, redraw=redraw)
        )
        pipeline = RoundPipeline(transforms=[transform])
        sets = []
        for _ in range(6):
            pipeline.run([fed], [fed.plan(selected="all")], [rng])
            sets.append(transform.last_attackers[0].copy())
        assert all(int(s.sum()) == 3 for s in sets)
        distinct = {tuple(s) for s in sets}
        assert (len(distinct) > 1) == redraw


@pytest.mark.parametrize("attack", [a for a in ATTACKS if a != "none"])
def test_same_seed_same_round_and_off_means_untouched(attack: str):
    reports = []
    for _ in range(2):
        fed, rng = federation(4, aggregator="geometric_median")
        pipeline = RoundPipeline(
            transforms=[ByzantineTransform(AdversaryConfig(attack=attack, fraction=0.3))]
        )
        reports.append([pipeline.run([fed], [fed.plan()], [rng])[0] for _ in range(3)])
        reports[-1].append(fed.params.clone())
    assert reports[0][:3] == reports[1][:3]
    assert torch.equal(reports[0][3], reports[1][3])


def test_round_report_names_the_attackers_of_each_federation():
    transform = ByzantineTransform(AdversaryConfig(attack="sign_flip", devices=(1, 4, 7)))
    pipeline = RoundPipeline(transforms=[transform])
    (fed_a, rng_a), (fed_b, rng_b) = federation(0), federation(1)
    # Device 4 is not selected in the first federation: it cannot attack there.
    plan_a = fed_a.plan(selected=np.isin(np.arange(K), [0, 1, 2, 3, 7]))
    plan_b = fed_b.plan(selected="all")
    report_a, report_b = pipeline.run([fed_a, fed_b], [plan_a, plan_b], [rng_a, rng_b])
    assert np.flatnonzero(report_a.byzantine).tolist() == [1, 7]
    assert np.flatnonzero(report_b.byzantine).tolist() == [1, 4, 7]
    assert not report_a.byzantine.flags.writeable
    fed, rng = federation(0)
    assert RoundPipeline().run([fed], [fed.plan()], [rng])[0].byzantine is None


def test_inactive_adversary_changes_nothing():
    runs = []
    for transforms in ((), (ByzantineTransform(AdversaryConfig(attack="sign_flip")),)):
        fed, rng = federation(5)
        pipeline = RoundPipeline(transforms=transforms)
        runs.append([pipeline.run([fed], [fed.plan()], [rng])[0] for _ in range(3)])
    assert runs[0] == runs[1]


def test_bad_adversary_config_is_a_clear_error():
    with pytest.raises(ValueError, match=r"attack.*'bogus'"):
        AdversaryConfig(attack="bogus")
    with pytest.raises(ValueError, match=r"fraction.*1.5"):
        AdversaryConfig(attack="nan", fraction=1.5)
    with pytest.raises(ValueError, match=r"scale.*inf"):
        AdversaryConfig(attack="nan", scale=math.inf)
    fed, rng = federation(0)
    pipeline = RoundPipeline(
        transforms=[ByzantineTransform(AdversaryConfig(attack="nan", devices=(12,)))]
    )
    with pytest.raises(ValueError, match=r"adversary devices \[12\] out of range.*0\.\.9"):
        pipeline.run([fed], [fed.plan()], [rng])


def test_monitor_measures_norms_and_cosines():
    fed, rng = federation(6)
    monitor = UpdateMonitor()
    pipeline = RoundPipeline(
        transforms=[
            ByzantineTransform(AdversaryConfig(attack="sign_flip", devices=(3,), scale=1.0)),
            monitor,
        ]
    )
    before = fed.params.clone()
    pipeline.run([fed], [fed.plan()], [rng])
    assert np.all(monitor.cosines[0] == 0)  # no previous step in the first round
    step = (fed.params - before).double()
    before = fed.params.clone()
    start = DigitalUplink().start(fed, fed.plan(), np.random.default_rng(9), False)
    trained = train_rounds([fed], [start])
    monitor.apply([fed], [start], trained)
    u = (trained[0].params - before).double()
    torch.testing.assert_close(torch.from_numpy(monitor.norms[0]), u.norm(dim=1))
    expected = (u @ step) / (u.norm(dim=1) * step.norm())
    torch.testing.assert_close(torch.from_numpy(monitor.cosines[0]), expected)
