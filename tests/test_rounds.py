"""The round pipeline's stages, each alone, and the batch as a whole (fl_gym.sim.rounds)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch

from fl_gym.sim import (
    Federation,
    FederationConfig,
    OverTheAir,
    RoundPipeline,
    UpdateTransform,
    make_federated_dataset,
    run_rounds,
)
from fl_gym.sim.learning.training import LocalTrainingResult
from fl_gym.sim.radio.cell import WirelessCell, WirelessConfig
from fl_gym.sim.rounds import (
    DigitalUplink,
    EvaluationCache,
    RoundStart,
    aggregate_round,
    compress_rounds,
    evaluate_models,
    train_rounds,
)


def _federation(
    seed: int, *, cell: bool = True, **config: object
) -> tuple[Federation, np.random.Generator]:
    rng = np.random.default_rng(seed)
    data = make_federated_dataset("digits", num_clients=8, rng=rng)
    wireless = (
        WirelessCell(WirelessConfig(num_subchannels=4, bandwidth_hz=4e6), 8) if cell else None
    )
    return Federation(data, FederationConfig(**config), cell=wireless, rng=rng), rng


def _report_arrays(report: object) -> dict[str, np.ndarray]:
    from dataclasses import fields

    return {f.name: np.asarray(getattr(report, f.name)) for f in fields(report)}


def test_a_federation_does_not_depend_on_its_batch() -> None:
    """Three federations with different settings in one run_rounds = each run alone."""
    settings = [{}, {"hidden_units": (32, 16)}, {"model": "logreg", "learning_rate": 0.05}]
    batched = [_federation(s, **c) for s, c in enumerate(settings)]
    alone = [_federation(s, **c) for s, c in enumerate(settings)]
    for round_index in range(4):
        plans = []
        for e, (fed, _) in enumerate(batched):
            pick = np.random.default_rng(10 * round_index + e)
            selected = np.zeros(8, dtype=bool)
            selected[pick.choice(8, 4, replace=False)] = True
            plans.append(
                fed.plan(
                    selected=selected,
                    local_steps=int(pick.integers(1, 4)),
                    compression=pick.integers(0, 4, 8),
                )
            )
        got = run_rounds([f for f, _ in batched], plans, [r for _, r in batched])
        for (fed, rng), plan, report in zip(alone, plans, got, strict=True):
            want = fed.run_round(plan, rng)
            for name, value in _report_arrays(want).items():
                assert np.array_equal(_report_arrays(report)[name], value), (round_index, name)
        for (fb, _), (fa, _) in zip(batched, alone, strict=True):
            assert torch.equal(fb.params, fa.params)


def test_evaluation_stage_equals_the_model_alone_and_reuses_its_buffers() -> None:
    """Batched, row-aligned evaluation = BatchedMLP.evaluate of each model, over repeated calls
    with reused work buffers (a deep model catches two layers sharing a buffer)."""
    feds = [_federation(s, cell=False, hidden_units=(64, 64))[0] for s in range(3)]
    cache = EvaluationCache()
    for step in range(3):
        for fed in feds:
            fed.params = fed.params + 0.01 * (step + 1)
        got = evaluate_models(feds, cache)
        for fed, (loss, accuracy) in zip(feds, got, strict=True):
            want_loss, want_acc = fed.model.evaluate(fed.params, fed.x_test, fed.y_test)
            assert (loss, accuracy) == (float(want_loss), float(want_acc))


def test_evaluation_cache_copies_only_the_test_sets_that_changed() -> None:
    """A reset federation brings a new test set: the cached stack takes its rows in place (the
    same buffer) and then equals a fresh stack; a test set of another shape restacks."""
    feds = [_federation(s, cell=False)[0] for s in range(3)]
    cache = EvaluationCache()
    x, y = cache.get(feds)
    other = _federation(11, cell=False)[0]
    assert other.x_test.shape == feds[1].x_test.shape
    assert not torch.equal(other.x_test, feds[1].x_test)
    feds[1] = other
    x2, y2 = cache.get(feds)
    assert x2 is x and y2 is y
    assert torch.equal(x2, torch.stack([f.x_test for f in feds]))
    assert torch.equal(y2, torch.stack([f.y_test for f in feds]))
    got = evaluate_models(feds, cache)
    for fed, (loss, accuracy) in zip(feds, got, strict=True):
        want_loss, want_acc = fed.model.evaluate(fed.params, fed.x_test, fed.y_test)
        assert (loss, accuracy) == (float(want_loss), float(want_acc))
    feds[2].x_test = feds[2].x_test[:-1]
    feds[2].y_test = feds[2].y_test[:-1]
    x3, _ = cache.get([feds[2], feds[2], feds[2]])
    assert x3 is not x and x3.shape[1] == x.shape[1] - 1
    # Another group of the same length and shape in another dtype (a setting of its own):
    # restacked in its dtype, never cast into the cached buffer.
    wide = _federation(12, cell=False)[0]
    wide.x_test = wide.x_test[:-1].double()
    wide.y_test = wide.y_test[:-1]
    x4, _ = cache.get([wide, wide, wide])
    assert x4 is not x3 and x4.dtype == torch.float64
    assert torch.equal(x4[0], wide.x_test)


def test_aggregation_stage_is_the_weighted_mean_of_what_arrived() -> None:
    fed, rng = _federation(0, cell=False)
    plan = fed.plan(selected=[1, 3, 4, 6], local_steps=2)
    transport = DigitalUplink()
    start = transport.start(fed, plan, rng, False)
    (trained,) = train_rounds([fed], [start])
    (pending,) = compress_rounds([fed], [start], [trained])
    (delivery,) = transport.deliver([fed], [start], [pending], [rng])
    assert delivery.arrived.all()  # no cell: an ideal channel
    before = fed.params.clone()
    fields = aggregate_round(fed, pending, delivery)
    sizes = torch.as_tensor(fed.data.client_sizes[[1, 3, 4, 6]], dtype=torch.float64)
    expected = (sizes / sizes.sum()) @ pending.updates.double()
    assert torch.allclose(fed.params.double() - before.double(), expected, atol=1e-6)
    assert fields["delivered"].tolist() == [False, True, False, True, True, False, True, False]
    assert fed.participation_count.tolist() == [0, 1, 0, 1, 1, 0, 1, 0]


class _DropUpdates(UpdateTransform):
    """Every client sends back the global model: the update is zero."""

    name = "drop"

    def apply(
        self,
        feds: Sequence[Federation],
        starts: Sequence[RoundStart],
        trained: list[LocalTrainingResult],
    ) -> list[LocalTrainingResult]:
        return [
            LocalTrainingResult(fed.params.expand_as(t.params).clone(), t.train_loss)
            for fed, t in zip(feds, trained, strict=True)
        ]


def test_an_update_transform_is_one_class() -> None:
    fed, rng = _federation(0)
    before = fed.params.clone()
    pipeline = RoundPipeline(transforms=[_DropUpdates()])
    (report,) = pipeline.run([fed], [fed.plan(selected=[0, 1], local_steps=3)], [rng])
    assert torch.equal(fed.params, before)
    assert report.update_norm == 0.0 and report.delivered.any()
    with pytest.raises(TypeError, match="UpdateTransform"):
        RoundPipeline(transforms=[object()])  # type: ignore[list-item]


def test_over_the_air_transport_batched_equals_alone() -> None:
    batched = [_federation(s) for s in range(3)]
    alone = [_federation(s) for s in range(3)]
    transport = OverTheAir(power_scale=0.5)
    for _ in range(3):
        plans = [fed.plan(selected="all", local_steps=2) for fed, _ in batched]
        got = run_rounds(
            [f for f, _ in batched], plans, [r for _, r in batched], transport=transport
        )
        for (fed, rng), plan, report in zip(alone, plans, got, strict=True):
            want = fed.run_round(plan, rng, transport=transport)
            assert report.aggregation_mse == want.aggregation_mse > 0
            assert report.accuracy == want.accuracy
            assert np.array_equal(report.energy_transmit_j, want.energy_transmit_j)
    with pytest.raises(ValueError, match=r"power_scale must be in \(0, 1\]"):
        OverTheAir(power_scale=1.5)
