"""The federation end to end: FedAvg accuracy, plans, state, determinism and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fl_gym.sim import Federation, FederationConfig, RoundPlan, make_federated_dataset
from fl_gym.sim.learning.training import local_sgd


def _digits_federation(
    partition: str = "iid", seed: int = 0, **config
) -> tuple[Federation, np.random.Generator]:
    rng = np.random.default_rng(seed)
    kwargs = {"alpha": 0.1} if partition == "dirichlet" else {}
    data = make_federated_dataset("digits", 10, partition=partition, rng=rng, **kwargs)
    return Federation(data, FederationConfig(**config), rng=rng), rng


def _train(fed: Federation, rng: np.random.Generator, rounds: int, **plan) -> list:
    return [fed.run_round(fed.plan(selected="all", **plan), rng) for _ in range(rounds)]


SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def learning_curves() -> dict[str, np.ndarray]:
    """Test accuracy per round, (seeds, 30), of FedAvg with full participation.

    20 local steps of batch 16 are about 2.5 local epochs of an IID client's 135 samples: enough
    local work for label skew to make clients drift apart.
    """
    out = {}
    for partition in ("iid", "dirichlet"):
        curves = []
        for seed in SEEDS:
            fed, rng = _digits_federation(partition, seed=seed)
            curves.append([r.accuracy for r in _train(fed, rng, 30, local_steps=20)])
        out[partition] = np.array(curves)
    return out


def test_fedavg_digits_iid_reaches_90_percent(learning_curves) -> None:
    iid = learning_curves["iid"]
    assert iid[0].max() >= 0.90  # seed 0, as the issue asks: within 30 rounds
    assert (iid[:, -1] >= 0.90).all()


def test_dirichlet_label_skew_is_measurably_worse(learning_curves) -> None:
    # Measured (seeds 0-2): mean accuracy over the 30 rounds 0.943/0.940/0.939 IID against
    # 0.933/0.915/0.916 with Dirichlet(0.1). The final accuracies end up close (0.97 vs 0.96):
    # with full participation, sample weighting and a problem this small, FedAvg recovers from
    # the skew, so the gap shows in how fast the model learns, not where it ends.
    iid_auc = learning_curves["iid"].mean(axis=1)
    skew_auc = learning_curves["dirichlet"].mean(axis=1)
    assert (skew_auc < iid_auc - 0.005).all()
    assert skew_auc.mean() < iid_auc.mean() - 0.015


def test_single_client_round_equals_its_local_model() -> None:
    fed, _ = _digits_federation(compression_levels=("none",))
    before = fed.params.clone()
    round_rng = np.random.default_rng(123)
    replay_rng = np.random.default_rng(123)
    report = fed.run_round(fed.plan(selected=[3], local_steps=4), round_rng)
    gen = torch.Generator().manual_seed(int(replay_rng.integers(0, 2**63 - 1)))
    local = local_sgd(
        fed.model,
        before,
        fed.clients,
        torch.tensor([3]),
        torch.tensor([4]),
        batch_size=fed.config.batch_size,
        learning_rate=fed.config.learning_rate,
        generator=gen,
    )
    torch.testing.assert_close(fed.params, local.params[0])
    assert report.delivered.tolist() == [k == 3 for k in range(10)]
    assert report.bits_up[3] == 32 * fed.num_params and report.bits_up.sum() == report.bits_up[3]
    assert report.update_norm == pytest.approx(float((local.params[0] - before).norm()), rel=1e-5)


def test_fedavg_is_the_sample_weighted_mean_of_local_models() -> None:
    fed, _ = _digits_federation(compression_levels=("none",))
    before = fed.params.clone()
    ids = [0, 4, 7]
    fed.run_round(fed.plan(selected=ids, local_steps=2), np.random.default_rng(5))
    replay = np.random.default_rng(5)
    gen = torch.Generator().manual_seed(int(replay.integers(0, 2**63 - 1)))
    local = local_sgd(
        fed.model,
        before,
        fed.clients,
        torch.tensor(ids),
        torch.tensor([2, 2, 2]),
        batch_size=fed.config.batch_size,
        learning_rate=fed.config.learning_rate,
        generator=gen,
    )
    n = torch.as_tensor(fed.data.client_sizes[ids], dtype=torch.float32)
    expected = (local.params * n[:, None]).sum(0) / n.sum()
    torch.testing.assert_close(fed.params, expected)


def test_idle_round_changes_nothing() -> None:
    fed, rng = _digits_federation()
    before = fed.params.clone()
    plan = RoundPlan(np.zeros(10, dtype=bool))
    report = fed.run_round(plan, rng, allow_empty=True)
    assert torch.equal(fed.params, before)
    assert report.bits_up.sum() == 0 and not report.delivered.any()
    assert report.update_norm == 0.0 and fed.round_index == 1


def test_same_seed_same_trajectory_bit_for_bit() -> None:
    runs = []
    for _ in range(2):
        fed, rng = _digits_federation(seed=7)
        levels = np.array([0, 1, 2, 3, 1, 2, 3, 0, 1, 2])
        reports = [
            fed.run_round(
                fed.plan(selected=[1, 2, 4, 5, 6, 8], local_steps=3, compression=levels), rng
            )
            for _ in range(4)
        ]
        runs.append((reports, fed.params.clone(), fed.residual.clone()))
    assert all(a == b for a, b in zip(runs[0][0], runs[1][0], strict=True))
    assert torch.equal(runs[0][1], runs[1][1]) and torch.equal(runs[0][2], runs[1][2])
    fed, rng = _digits_federation(seed=8)
    other = fed.run_round(fed.plan(selected=[1, 2, 4, 5, 6, 8], local_steps=3), rng)
    assert other != runs[0][0][0]


def test_no_global_rng_state_is_touched() -> None:
    np_state = np.random.get_state()  # noqa: NPY002 (checking the legacy global state)
    torch_state = torch.random.get_rng_state()
    fed, rng = _digits_federation(compression_levels=("none", "qsgd:4", "randk:0.1"))
    fed.run_round(fed.plan(selected="all", local_steps=2, compression=[0, 1, 2] * 3 + [1]), rng)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    new_state = np.random.get_state()  # noqa: NPY002
    assert np.array_equal(np_state[1], new_state[1]) and np_state[2] == new_state[2]


def test_error_feedback_state_is_per_client_and_kept_for_absent_clients() -> None:
    fed, rng = _digits_federation(compression_levels=("none", "topk:0.01"))
    fed.run_round(fed.plan(selected=[0, 1, 2], local_steps=2, compression=1), rng)
    assert fed.residual[[0, 1, 2]].abs().sum() > 0
    assert fed.residual[3:].abs().sum() == 0
    kept = fed.residual[1].clone()
    fed.run_round(fed.plan(selected=[0, 2], local_steps=2, compression=1), rng)
    assert torch.equal(fed.residual[1], kept)
    assert fed.rounds_since_delivery().tolist() == [1, 2, 1] + [3] * 7


def test_diverged_clients_are_rejected_and_counted() -> None:
    fed, rng = _digits_federation(learning_rate=1e38)
    before = fed.params.clone()
    report = fed.run_round(fed.plan(selected="all", local_steps=3), rng)
    assert report.num_rejected == 10 and not report.delivered.any()
    assert torch.equal(fed.params, before)
    # A diverged client's training loss is reported as infinite, never as a good value (0).
    assert np.isposinf(report.train_loss).all() and np.isfinite(report.loss)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"selected": []}, ValueError, "plan selects no client"),
        ({"selected": "all", "local_steps": 0}, ValueError, "local_steps must be >= 1"),
        ({"selected": "all", "local_steps": -2}, ValueError, "local_steps must be >= 1"),
        ({"selected": "all", "local_steps": 1.5}, ValueError, "whole numbers"),
        ({"selected": "all", "local_steps": [1, 2]}, ValueError, r"shape \(10,\)"),
        ({"selected": [11]}, ValueError, r"out of range; allowed 0..9"),
        ({"selected": [1, 1]}, ValueError, "distinct"),
        ({"selected": "all", "compression": 9}, ValueError, r"compression level 9 out of range"),
        ({"selected": "all", "compression": "zip"}, ValueError, "not one of this federation"),
        ({"selected": "some"}, ValueError, "selected must be 'all'"),
    ],
)
def test_bad_plans_raise_clear_errors(kwargs, error, match) -> None:
    fed, rng = _digits_federation()
    before = fed.params.clone()
    with pytest.raises(error, match=match):
        fed.run_round(fed.plan(**kwargs), rng)
    assert torch.equal(fed.params, before) and fed.round_index == 0
    fed.run_round(fed.plan(selected=[0]), rng)  # still usable
    assert fed.round_index == 1


def test_bad_plan_objects() -> None:
    with pytest.raises(TypeError, match="boolean mask"):
        RoundPlan(np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="power_w must be finite"):
        RoundPlan(np.ones(3, dtype=bool), power_w=[0.1, np.nan, 0.2])
    fed, rng = _digits_federation()
    with pytest.raises(ValueError, match="plan is for 3 clients, this federation has 10"):
        fed.run_round(RoundPlan(np.ones(3, dtype=bool)), rng)
    with pytest.raises(TypeError, match=r"numpy\.random\.Generator"):
        fed.run_round(fed.plan(), 0)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"model": "cnn"}, "model must be one of"),
        ({"learning_rate": 0.0}, r"learning_rate must be a finite number in \(0, 1e\+38\]"),
        ({"learning_rate": float("nan")}, r"learning_rate must be a finite number in \(0, "),
        ({"batch_size": 0}, r"batch_size must be an integer in \[1, 65536\]"),
        ({"aggregator": "mean"}, "aggregator must be one of"),
        ({"compression_levels": ("none", "gzip")}, "gzip"),
        ({"compression_levels": ()}, "at least one operator"),
        ({"trim_ratio": 0.5}, r"trim_ratio must be a finite number in \[0, 0.5\)"),
        ({"hidden_units": "abc"}, r"hidden_units must be a tuple of integers >= 1"),
        ({"hidden_units": (64, 0)}, r"hidden_units must be a tuple of integers >= 1"),
    ],
)
def test_bad_configs(override, match) -> None:
    with pytest.raises(ValueError, match=match):
        FederationConfig(**override)


def test_deep_gradient_compression_trains_digits() -> None:
    """DGC against uncompressed FedAvg after the same 30 rounds (10 IID clients, 5 steps).

    Measured gap at 0.1% density (seeds 0-2): 3.6, 4.7 and 5.1 points after 30 rounds, 4.2, 4.2
    and 2.9 after 60. Why it exceeds 3 points here: 0.1% of this 4,810-parameter MLP is k = 5
    values per client and round, against 25,000 for the 25M-parameter networks of the DGC paper,
    so the model receives about 1/700 of the uncompressed information per round and needs more
    rounds. At 1% density (k = 49) DGC is within 3 points. Momentum correction is what makes
    0.1% work at all: plain top-k with error feedback at the same density is far behind.
    """
    accuracy, bits = {}, {}
    for spec in ("none", "dgc:0.001", "dgc:0.01", "topk:0.001"):
        fed, rng = _digits_federation(compression_levels=(spec,))
        reports = _train(fed, rng, 30, local_steps=5)
        accuracy[spec] = reports[-1].accuracy
        bits[spec] = sum(int(r.bits_up.sum()) for r in reports)
    assert accuracy["none"] - accuracy["dgc:0.001"] <= 0.06
    assert accuracy["none"] - accuracy["dgc:0.01"] <= 0.03
    assert accuracy["dgc:0.001"] >= accuracy["topk:0.001"] + 0.10
    # Warm-up densities 25%, 6.25%, 1.5625%, 0.39% keep 1203, 301, 76, 19 values, then 5 per
    # round; each value costs 32 bits plus its index, min(k * ceil(log2 4810) = 13k, 4810).
    per_client = sum(32 * k + min(13 * k, 4810) for k in (1203, 301, 76, 19)) + 26 * 5 * 45
    assert bits["dgc:0.001"] == 10 * per_client
    assert bits["none"] == 30 * 10 * 4810 * 32


def test_dgc_warmup_counts_each_clients_own_participations() -> None:
    # Client 3 first takes part in round 5, after the federation's four warm-up rounds: it
    # still starts at 25 % density, then 6.25 %; the others are past their warm-up.
    fed, rng = _digits_federation(compression_levels=("dgc:0.001",))
    d = fed.num_params
    others = np.arange(10) != 3
    for _ in range(5):
        fed.run_round(fed.plan(selected=others), rng)
    kept = {}
    for r in range(2):
        report = fed.run_round(fed.plan(selected="all"), rng)
        kept[r] = report.bits_up
    per_value = 32 + 13  # ceil(log2 4810) = 13 index bits, explicit indices while shorter
    assert kept[0][3] == 32 * 1203 + min(13 * 1203, d)
    assert kept[1][3] == 32 * 301 + min(13 * 301, d)
    assert np.all(kept[0][others] == 5 * per_value)
    assert np.all(fed.participation_count == [7, 7, 7, 2, 7, 7, 7, 7, 7, 7])


def test_layerwise_terngrad_gets_the_models_tensors() -> None:
    fed, rng = _digits_federation(compression_levels=("terngrad:layerwise=true,clip_sigmas=2.5",))
    sizes = fed.model.tensor_sizes
    assert sum(sizes) == fed.num_params and len(sizes) == 2 * (len(fed.model.hidden_units) + 1)
    report = fed.run_round(fed.plan(selected="all"), rng)
    assert np.all(report.bits_up == 2 * fed.num_params + 32 * len(sizes))


def test_sparse_quantised_uploads_train_digits() -> None:
    # Feeding the quantisation error back as well made this diverge (QSGD with 4 levels over
    # 481 kept values is not a contraction); with the sparsification error only it trains.
    fed, rng = _digits_federation(compression_levels=("topk_qsgd:0.1,levels=4",))
    reports = _train(fed, rng, 20, local_steps=5)
    assert reports[-1].accuracy >= 0.85
    assert reports[-1].bits_up.sum() == 10 * (32 + 481 * 4 + min(481 * 13, 4810))


def test_an_mlp_without_hidden_layers_is_refused_when_configured() -> None:
    """Refused by the config (so at gym.make), not at the first reset by the model."""
    import gymnasium as gym

    import fl_gym  # noqa: F401

    with pytest.raises(ValueError, match=r"hidden_units must hold at least one width.*\(\)"):
        FederationConfig(hidden_units=())
    with pytest.raises(ValueError, match="hidden_units"):
        gym.make("fl_gym/ClientSelection-v0", config={"learning.hidden_units": ()})
    assert FederationConfig(model="logreg", hidden_units=()).hidden_units == ()


def test_client_state_is_one_object_that_a_copy_carries_whole() -> None:
    """The per-client state of a round is ``client_state``; the federation's attributes of the
    same names are that object's fields, and a deep copy (an environment's snapshot) carries all
    of it independently of the original."""
    import copy

    from fl_gym.sim import ClientState

    rng = np.random.default_rng(4)
    data = make_federated_dataset("digits", num_clients=5, rng=rng)
    fed = Federation(data, FederationConfig(compression_levels=("topk:0.1",)), rng=rng)
    assert isinstance(fed.client_state, ClientState)
    assert fed.residual is fed.client_state.residual and fed.momentum is None
    fed.run_round(fed.plan(selected=np.array([1, 1, 0, 0, 1], dtype=bool)), rng)
    assert fed.client_state.participation_count.tolist() == [1, 1, 0, 0, 1]
    assert fed.residual[[0, 1, 4]].abs().sum() > 0 and not fed.residual[[2, 3]].any()
    twin = copy.deepcopy(fed)
    fed.run_round(fed.plan(selected="all"), rng)
    assert twin.client_state.participation_count.tolist() == [1, 1, 0, 0, 1]
    assert not twin.residual[[2, 3]].any() and fed.residual[[2, 3]].abs().sum() > 0
    fed.late_due_round = np.full(5, 7)  # attribute writes land in the state object
    assert fed.client_state.late_due_round.tolist() == [7] * 5
