"""The batched aggregation stage (fl_gym.sim.rounds.aggregate_rounds) against every round's own
aggregate_round, bit for bit, on mixed batches."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

from fl_gym.sim import Federation, FederationConfig, make_federated_dataset, rounds
from fl_gym.sim.learning.aggregation import get_aggregator
from fl_gym.sim.plan import RoundPlan
from fl_gym.sim.rounds import (
    _BATCHED_FEDAVG_MAX_ROWS,
    Delivery,
    PendingUpdates,
    aggregate_round,
    aggregate_rounds,
)

NUM_CLIENTS = 12


@pytest.fixture
def batched_rounds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of rounds each call of the batched FedAvg computation took (a test that never
    reaches it would compare aggregate_round with itself)."""
    calls: list[int] = []
    original = rounds._fedavg_steps

    def spy(feds: Any, pendings: Any, uses: Any, groups: list[list[int]]) -> Any:
        calls.append(sum(len(group) for group in groups))
        return original(feds, pendings, uses, groups)

    monkeypatch.setattr(rounds, "_fedavg_steps", spy)
    return calls


@pytest.fixture(scope="module")
def bases() -> dict[str, Federation]:
    """Two federations to copy from: an MLP (d = 4810, the default) and a logistic regression."""
    rng = np.random.default_rng(0)
    data = make_federated_dataset("digits", num_clients=NUM_CLIENTS, rng=rng)
    return {
        "mlp": Federation(data, FederationConfig(), rng=rng),
        "logreg": Federation(data, FederationConfig(model="logreg"), rng=rng),
    }


def _variant(bases: dict[str, Federation], kind: str, rng: np.random.Generator) -> Federation:
    fed = copy.deepcopy(bases["mlp" if rng.random() < 0.6 else "logreg"])
    fed.params = fed.params + torch.from_numpy(rng.standard_normal(fed.num_params) * 0.1).float()
    if kind == "median":  # a rule set on the federation, as the Byzantine environment does
        fed.aggregator = get_aggregator("median")
    elif kind == "stale":
        fed.config = dataclasses.replace(fed.config, stragglers="stale")
    elif kind == "uniform":
        fed.client_weights = torch.ones(NUM_CLIENTS)
    elif kind == "slow_server":
        fed.config = dataclasses.replace(fed.config, server_learning_rate=0.37)
    return fed


def _round(
    fed: Federation, kind: str, block: torch.Tensor, begin: int, rng: np.random.Generator
) -> tuple[PendingUpdates, Delivery]:
    """A round's pending updates (rows ``begin:`` of ``block``, as the compression stage hands
    them over) and its delivery: a random number of used rows, some diverged."""
    k = NUM_CLIENTS
    num_selected = int(rng.integers(0, k + 1))
    selected = np.zeros(k, dtype=bool)
    selected[rng.choice(k, num_selected, replace=False)] = True
    ids = np.flatnonzero(selected)
    d = fed.num_params
    updates = block[begin : begin + num_selected, :d]
    scale = 10.0 ** rng.uniform(-6, 2)
    updates.copy_(torch.from_numpy(rng.standard_normal((num_selected, d)) * scale))
    finite = rng.random(num_selected) > 0.15
    updates[torch.from_numpy(~finite)] = 0.0
    if kind == "overflow" and finite.any():  # finite rows whose sum overflows: fedavg answers
        updates[int(np.flatnonzero(finite)[0])] = 3e37
    if kind == "huge":  # every finite row at the float32 maximum: FedAvg's weighted sum may
        # round past it, and fedavg answers with its rescaled float64 sum
        updates[torch.from_numpy(finite)] = torch.finfo(torch.float32).max
    train_loss = np.where(finite, rng.uniform(0.1, 3.0, num_selected), np.inf)
    plan = RoundPlan(selected, rng.integers(1, 5, k), rng.integers(0, 4, k), None)
    pending = PendingUpdates(
        plan=plan,
        client_ids=ids,
        updates=updates,
        finite=finite,
        bits=rng.integers(1, 10**6, num_selected),
        train_loss=train_loss,
    )
    arrived = rng.random(num_selected) < 0.8
    aggregate = None
    if kind == "analog":
        aggregate = torch.from_numpy(rng.standard_normal(d) * scale).float()
    late = rng.integers(0, 3, num_selected) * ~arrived if kind == "stale" else None
    delivery = Delivery(
        arrived=arrived,
        energy_compute_j=rng.random(k),
        energy_transmit_j=rng.random(k),
        latency_s=rng.random(k),
        packet_error=rng.random(k),
        straggler=rng.random(k) < 0.2,
        packet_lost=rng.random(k) < 0.1,
        round_time_s=float(rng.random()),
        channel_uses=float(rng.integers(1, 1000)),
        aggregate=aggregate,
        aggregation_mse=0.5 if kind == "analog" else None,
        late_rounds=late,
    )
    return pending, delivery


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b) and np.asarray(a).dtype == np.asarray(b).dtype
    return type(a) is type(b) and a == b


KINDS = (
    "fedavg",
    "fedavg",
    "fedavg",
    "fedavg",
    "fedavg",
    "uniform",
    "slow_server",
    "median",
    "stale",
    "analog",
    "overflow",
    "huge",
)


@pytest.mark.parametrize("seed", range(3))
def test_batched_stage_equals_each_round_alone(
    bases: dict[str, Federation], seed: int, batched_rounds: list[int]
) -> None:
    """Mixed batches over four rounds: FedAvg rounds of every row count (the batched ones and
    those over the batched limit), empty rounds, diverged rows, robust rules, stale stragglers,
    analog aggregates and rounds that FedAvg hands to its checked form; params, fields and
    client state equal what aggregate_round gives each round alone."""
    rng = np.random.default_rng(seed)
    kinds = [KINDS[i] for i in rng.integers(0, len(KINDS), 16)]
    batched = [_variant(bases, kind, rng) for kind in kinds]
    alone = copy.deepcopy(batched)
    for _ in range(4):
        width = max(fed.num_params for fed in batched)
        block = torch.zeros(NUM_CLIENTS * len(batched), width)
        rounds, begin = [], 0
        for fed, kind in zip(batched, kinds, strict=True):
            rounds.append(_round(fed, kind, block, begin, rng))
            begin += rounds[-1][0].client_ids.shape[0]
        # The pending rows are row blocks of one tensor only where the models agree in size.
        pendings = [
            p
            if p.updates.shape[1] == width
            else dataclasses.replace(p, updates=p.updates.contiguous())
            for p, _ in rounds
        ]
        deliveries = [d for _, d in rounds]
        got = aggregate_rounds(batched, pendings, deliveries)
        want = [
            aggregate_round(fed, p, d)
            for fed, p, d in zip(alone, pendings, deliveries, strict=True)
        ]
        for e, (g, w) in enumerate(zip(got, want, strict=True)):
            assert g.keys() == w.keys(), e
            for name in w:
                assert _same(g[name], w[name]), (e, kinds[e], name)
        for e, (fb, fa) in enumerate(zip(batched, alone, strict=True)):
            assert torch.equal(fb.params, fa.params), (e, kinds[e])
            assert fb.params._base is None  # a tensor of its own, not a row of a batch
            for name in ("participation_count", "last_delivered_round", "late_due_round"):
                assert np.array_equal(getattr(fb, name), getattr(fa, name)), (e, name)
            fb.round_index += 1
            fa.round_index += 1
    pointers = {fed.params.untyped_storage().data_ptr() for fed in batched}
    assert len(pointers) == len(batched)
    assert sum(batched_rounds) >= 8  # most plain FedAvg rounds took the batched path


def _plain_rounds(
    feds: list[Federation], num_used: int, rng: np.random.Generator, fill: float | None = None
) -> tuple[list[PendingUpdates], list[Delivery]]:
    """Rounds where every selected client's update arrives, ``num_used`` each, their rows
    blocks of one tensor at a random first offset (random values, or ``fill`` in the first
    column and zeros)."""
    width = max(fed.num_params for fed in feds)
    block = torch.zeros(NUM_CLIENTS * len(feds) + 3, width)
    pendings, deliveries = [], []
    begin = int(rng.integers(0, 4))
    k = NUM_CLIENTS
    zeros, flags = np.zeros(k), np.zeros(k, dtype=bool)
    for fed in feds:
        ids = np.sort(rng.choice(k, num_used, replace=False))
        selected = np.zeros(k, dtype=bool)
        selected[ids] = True
        updates = block[begin : begin + num_used, : fed.num_params]
        if fed.num_params != width:
            updates = updates.contiguous()
        if fill is None:
            updates.copy_(torch.randn(num_used, fed.num_params) * 10.0 ** rng.uniform(-8, 3))
        else:
            updates.zero_()
            updates[:, 0] = fill
        begin += num_used
        pendings.append(
            PendingUpdates(
                RoundPlan(selected, 1, 0, None),
                ids,
                updates,
                np.ones(num_used, dtype=bool),
                np.zeros(num_used, dtype=np.int64),
                np.zeros(num_used),
            )
        )
        arrived = np.ones(num_used, dtype=bool)
        deliveries.append(Delivery(arrived, zeros, zeros, zeros, zeros, flags, flags, 0.0, 0.0))
    return pendings, deliveries


def test_every_row_count_and_model_size_batches_exactly(
    bases: dict[str, Federation], batched_rounds: list[int]
) -> None:
    """Every row count up to the batched limit and beyond, in groups of 2..16 plain FedAvg
    rounds of both model sizes, rows at every offset of one block: bit for bit as alone."""
    rng = np.random.default_rng(7)
    for num_used in range(1, _BATCHED_FEDAVG_MAX_ROWS + 3):
        batched = [_variant(bases, "fedavg", rng) for _ in range(int(rng.integers(2, 17)))]
        alone = copy.deepcopy(batched)
        pendings, deliveries = _plain_rounds(batched, num_used, rng)
        batched_rounds.clear()
        got = aggregate_rounds(batched, pendings, deliveries)
        # Up to the limit every round is batched; beyond it none is.
        expected = len(batched) if num_used <= _BATCHED_FEDAVG_MAX_ROWS else 0
        assert sum(batched_rounds) == expected, num_used
        for fb, fa, p, d, g in zip(batched, alone, pendings, deliveries, got, strict=True):
            w = aggregate_round(fa, p, d)
            assert torch.equal(fb.params, fa.params), num_used
            assert g["update_norm"] == w["update_norm"] > 0.0, num_used


def test_an_overflowing_weighted_sum_is_fedavgs(bases: dict[str, Federation]) -> None:
    """Rows whose first entry is the float32 maximum (finite row sums): where the weighted sum
    rounds past it, the round gets fedavg's rescaled float64 mean (a finite model), as alone."""
    rng = np.random.default_rng(11)
    batched = [_variant(bases, "fedavg", rng) for _ in range(16)]
    for fed in batched:
        fed.client_weights = torch.from_numpy(rng.integers(1, 600, NUM_CLIENTS).astype("f4"))
    alone = copy.deepcopy(batched)
    pendings, deliveries = _plain_rounds(batched, 4, rng, fill=torch.finfo(torch.float32).max)
    overflowed = 0
    for fed, p in zip(batched, pendings, strict=True):
        w = fed.client_weights[torch.from_numpy(p.client_ids)]
        w = w / w.max()
        overflowed += not bool(torch.isfinite((w / w.sum()) @ p.updates).all())
    assert overflowed  # the case under test happens in this batch
    got = aggregate_rounds(batched, pendings, deliveries)
    for fb, fa, p, d, g in zip(batched, alone, pendings, deliveries, got, strict=True):
        w = aggregate_round(fa, p, d)
        assert torch.equal(fb.params, fa.params)
        assert bool(torch.isfinite(fb.params).all())
        assert g["update_norm"] == w["update_norm"]


def test_batch_of_one_and_repeated_federation_keep_their_order(
    bases: dict[str, Federation],
) -> None:
    """A federation listed twice aggregates its two rounds in order (the second from the model
    the first made), as two calls of aggregate_round do."""
    rng = np.random.default_rng(3)
    fed = _variant(bases, "fedavg", rng)
    twin = copy.deepcopy(fed)
    block = torch.zeros(2 * NUM_CLIENTS, fed.num_params)
    first = _round(fed, "fedavg", block, 0, rng)
    second = _round(fed, "fedavg", block, NUM_CLIENTS, rng)
    got = aggregate_rounds([fed, fed], [first[0], second[0]], [first[1], second[1]])
    want = [aggregate_round(twin, *first), aggregate_round(twin, *second)]
    assert torch.equal(fed.params, twin.params)
    assert [g["update_norm"] for g in got] == [w["update_norm"] for w in want]
    with pytest.raises(ValueError, match="one entry each"):
        aggregate_rounds([fed], [first[0]], [])
