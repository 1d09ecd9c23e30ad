"""The round pipeline: E federations' rounds as one computation of named stages.

Every FL round in fl_gym, a single environment's (a batch of one) or a vector environment's (a
batch of E), runs through :func:`run_rounds`::

    start      Transport.start         validate the plan, seed the round's torch generator
    train      train_rounds            all federations' selected clients' local SGD, batched
                                       (DP-SGD with the pipeline's ``local_privacy``)
    transform  UpdateTransform.apply   hooks on the trained models (none by default)
    compress   compress_rounds         each update through its level's operator (bits counted)
    transport  Transport.deliver       what reaches the server: the orthogonal digital uplink
                                       (DigitalUplink) or over-the-air analog aggregation
                                       (OverTheAir, BroadbandAnalog, CSOverTheAir; all in
                                       fl_gym.sim.transports), with energy, latency and
                                       losses; then the cell's model broadcast
                                       (with_downlink), where it is on
    aggregate  aggregate_rounds        the server's rule over the updates that arrived (or the
                                       aggregate the channel already formed) moves the model
                                       (plain FedAvg rounds batched, the rest through
                                       aggregate_round); then UpdateTransform.after_aggregate
                                       (server-side noise)
    evaluate   evaluate_models         all new global models on their test sets, batched
    conclude   conclude_round          the round's RoundReport; the channel moves on

A stage is a function of the federations (and their starts / results) or an object behind a
small protocol (:class:`~fl_gym.sim.stages.Transport`,
:class:`~fl_gym.sim.stages.UpdateTransform`; they and the records passed between stages are in
:mod:`fl_gym.sim.stages`): adding a transport (a module of :mod:`fl_gym.sim.transports`) or a
transform is one new class, with no change to the environments or the vector environment.

Batched stages are exact: a federation's row of a batched computation is what it computes alone
(the products are laid out so that every row goes through the same kernel as alone), so one
federation's trajectory does not depend on the others in its batch.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fl_gym.sim.learning.aggregation import fedavg_trusted
from fl_gym.sim.learning.coded import staleness_weight, stand_in_updates
from fl_gym.sim.learning.compression import (
    FLOAT_BITS,
    QSGD,
    NoCompression,
    SignSGD,
    TopK,
    uniform_draws,
)
from fl_gym.sim.learning.privacy import SampleLevelDP
from fl_gym.sim.learning.training import LocalTrainingResult, local_sgd, local_sgd_groups
from fl_gym.sim.plan import RoundPlan, RoundReport
from fl_gym.sim.stages import (
    Delivery,
    PendingUpdates,
    RoundStart,
    Transport,
    UpdateTransform,
    start_round,
)
from fl_gym.sim.transports import DigitalUplink, OverTheAir, with_downlink

if TYPE_CHECKING:
    from fl_gym.sim.learning.federation import Federation

__all__ = [
    "Delivery",
    "DigitalUplink",
    "OverTheAir",
    "PendingUpdates",
    "RoundPipeline",
    "RoundStart",
    "Transport",
    "UpdateTransform",
    "aggregate_round",
    "aggregate_rounds",
    "compress_rounds",
    "evaluate_models",
    "run_rounds",
    "start_round",
    "train_rounds",
    "with_downlink",
]


# -- train ----------------------------------------------------------------------------------------


def train_rounds(
    feds: Sequence[Federation],
    starts: Sequence[RoundStart],
    privacy: SampleLevelDP | Sequence[SampleLevelDP | None] | None = None,
) -> list[LocalTrainingResult]:
    """Local SGD of every started round's clients: one batched call per learning setting.

    Federations that share the model's architecture and the optimiser's settings train in one
    :func:`~fl_gym.sim.learning.training.local_sgd_groups` call, each from its own global model
    on its own minibatches (drawn from its own round generator). With ``privacy`` (DP-SGD; one
    setting for all, or one per federation, ``None`` where it trains without) each federation
    under DP-SGD trains in its own batched call, its noise drawn from its own round generator.
    """
    if isinstance(privacy, Sequence):
        if len(privacy) != len(feds):
            raise ValueError(
                f"privacy must hold one setting per federation ({len(feds)}), got {len(privacy)}"
            )
        out: list[LocalTrainingResult | None] = [None] * len(feds)
        plain = [e for e, p in enumerate(privacy) if p is None]
        if plain:
            results = train_rounds([feds[e] for e in plain], [starts[e] for e in plain])
            for e, result in zip(plain, results, strict=True):
                out[e] = result
        for e, setting in enumerate(privacy):
            if setting is not None:
                out[e] = train_rounds([feds[e]], [starts[e]], setting)[0]
        return out  # type: ignore[return-value]
    if len(feds) == 1 or privacy is not None:  # each federation's local SGD, nothing to group
        return [
            local_sgd(
                fed.model,
                fed.params,
                fed.clients,
                start.client_ids,
                start.local_steps,
                batch_size=fed.config.batch_size,
                learning_rate=fed.config.learning_rate,
                generator=start.generator,
                weight_decay=fed.config.weight_decay,
                privacy=privacy,
            )
            for fed, start in zip(feds, starts, strict=True)
        ]
    grouped: list[LocalTrainingResult | None] = [None] * len(feds)
    for members in _by_setting(feds, _training_setting):
        groups = [feds[e].training_group(starts[e]) for e in members]
        cfg = feds[members[0]].config
        results = local_sgd_groups(
            feds[members[0]].model,
            groups,
            learning_rate=cfg.learning_rate,
            weight_decay=cfg.weight_decay,
        )
        for e, result in zip(members, results, strict=True):
            grouped[e] = result
    return grouped  # type: ignore[return-value]


def _by_setting(
    feds: Sequence[Federation], setting: Callable[[Federation], tuple[Any, ...]]
) -> list[list[int]]:
    """The federations' indices grouped by ``setting`` (a batch of one is its own group)."""
    if len(feds) == 1:
        return [[0]]
    groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for e, fed in enumerate(feds):
        groups[setting(fed)].append(e)
    return list(groups.values())


def _training_setting(fed: Federation) -> tuple[Any, ...]:
    model, cfg = fed.model, fed.config
    return (
        model.num_features,
        model.num_classes,
        model.hidden_units,
        model.loss,
        cfg.learning_rate,
        cfg.weight_decay,
        fed.device,
    )


def _evaluation_setting(fed: Federation) -> tuple[Any, ...]:
    model = fed.model
    return (
        model.num_features,
        model.num_classes,
        model.hidden_units,
        model.loss,
        tuple(fed.x_test.shape),
        fed.params.dtype,
        fed.device,
    )


# -- compress -------------------------------------------------------------------------------------

_BATCHED_OPERATORS = (NoCompression, TopK, SignSGD, QSGD)
"""Operators that compress row by row, with no state but error feedback and no randomness but
uniform draws of the rows' shape (QSGD): the rows of many federations go through one call, each
federation's draws made from its own generator, and each row's result is the one it gets alone."""


def finite_rows(x: torch.Tensor) -> torch.Tensor:
    """``torch.isfinite(x).all(dim=1)``, through the row sums where they are all finite (a row
    with a NaN or an infinity has a non-finite sum), which is several times faster."""
    if bool(torch.isfinite(x.sum(dim=1)).all()):
        return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    return torch.isfinite(x).all(dim=1)


def _updates(
    feds: Sequence[Federation],
    starts: Sequence[RoundStart],
    trained: Sequence[LocalTrainingResult],
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, list[int]]:
    """All rounds' updates (local - global) stacked, non-finite rows zeroed."""
    if len(feds) == 1:  # a batch of one: the same element-wise difference, without the copies
        offsets = [0, int(starts[0].client_ids.shape[0])]
        updates = trained[0].params - feds[0].params
    else:
        sizes = [start.client_ids.shape[0] for start in starts]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64).tolist()
        local = torch.cat([t.params for t in trained])
        global_rows = torch.cat(
            [fed.params.unsqueeze(0).expand(n, -1) for fed, n in zip(feds, sizes, strict=True)]
        )
        updates = local - global_rows
    finite = finite_rows(updates)
    finite_np = finite.cpu().numpy()
    if not finite_np.all():
        # A diverged client sends nothing usable; zero its row so that neither the compressor
        # nor its error-feedback state ever sees a NaN.
        updates = torch.where(finite.unsqueeze(1), updates, torch.zeros_like(updates))
    return updates, finite, finite_np, offsets


def _pendings(
    starts: Sequence[RoundStart],
    trained: Sequence[LocalTrainingResult],
    updates: torch.Tensor,
    finite: torch.Tensor,
    finite_np: np.ndarray,
    bits: np.ndarray,
    offsets: list[int],
) -> list[PendingUpdates]:
    loss = (
        trained[0].train_loss if len(trained) == 1 else torch.cat([t.train_loss for t in trained])
    )
    usable = finite & torch.isfinite(loss)
    loss_np = torch.where(usable, loss, math.inf).cpu().numpy().astype(np.float64)
    return [
        PendingUpdates(
            plan=start.plan,
            client_ids=start.plan.selected_ids,
            updates=updates[offsets[e] : offsets[e + 1]],
            finite=finite_np[offsets[e] : offsets[e + 1]],
            bits=bits[offsets[e] : offsets[e + 1]],
            train_loss=loss_np[offsets[e] : offsets[e + 1]],
        )
        for e, start in enumerate(starts)
    ]


def uncompressed_rounds(
    feds: Sequence[Federation],
    starts: Sequence[RoundStart],
    trained: Sequence[LocalTrainingResult],
) -> list[PendingUpdates]:
    """The raw updates of every round, for transports that send them as they are (no bits)."""
    updates, finite, finite_np, offsets = _updates(feds, starts, trained)
    bits = np.zeros(updates.shape[0], dtype=np.int64)
    return _pendings(starts, trained, updates, finite, finite_np, bits, offsets)


def compress_rounds(
    feds: Sequence[Federation],
    starts: Sequence[RoundStart],
    trained: Sequence[LocalTrainingResult],
) -> list[PendingUpdates]:
    """The compression stage: every round's updates through the operators of their levels.

    The updates of all rounds are formed and checked in one pass; every compression level whose
    operator is row-wise (none, top-k, sign, QSGD) and the same in every federation compresses
    the rows of all federations in one call. Levels run in ascending order, so every round's
    generator is drawn in the same order whatever the batch (a stochastic level draws each
    federation's uniforms from its own generator); other operators (DGC, TernGrad, ...) run per
    federation through :meth:`Federation.compress_rows`, which keeps the clients' error-feedback
    and momentum rows.
    """
    if not feds:
        return []
    first = feds[0]
    if any(
        fed.num_params != first.num_params
        or fed.params.dtype != first.params.dtype
        or fed.device != first.device
        for fed in feds
    ):
        out: list[PendingUpdates] = []
        for fed, s, t in zip(feds, starts, trained, strict=True):
            out += compress_rounds([fed], [s], [t])
        return out
    device = first.device
    updates, finite, finite_np, offsets = _updates(feds, starts, trained)
    sizes = [offsets[e + 1] - offsets[e] for e in range(len(feds))]
    reconstructed = torch.zeros_like(updates)
    bits = torch.zeros(updates.shape[0], dtype=torch.int64, device=device)
    if len(feds) == 1:
        # A batch of one has nothing to gather across federations: its federation compresses
        # its own rows, level by level in ascending order (the same operator calls and draws
        # as the batched levels below; taking the general path instead costs a single
        # WirelessFL-v0 step 2.1% more instructions).
        start = starts[0]
        levels_one = start.plan.compression[start.plan.selected_ids]
        for level in np.unique(levels_one).tolist():
            rows_np = np.flatnonzero((levels_one == level) & finite_np)
            if rows_np.size:
                first.compress_rows(
                    level,
                    rows_np,
                    start.client_ids,
                    updates,
                    reconstructed,
                    bits,
                    start.generator,
                )
        return _pendings(
            starts, trained, reconstructed, finite, finite_np, bits.cpu().numpy(), offsets
        )
    levels = np.concatenate(
        [start.plan.compression[start.plan.selected_ids] for start in starts]
    ).astype(np.int64)
    owner = np.repeat(np.arange(len(feds)), sizes)
    for level in np.unique(levels).tolist():
        at_level = levels == level
        involved = np.unique(owner[at_level]).tolist()
        op = feds[involved[0]].compressors[level]
        if type(op) not in _BATCHED_OPERATORS or any(
            feds[e].compressors[level] != op for e in involved
        ):
            for e in involved:
                begin, end = offsets[e], offsets[e + 1]
                rows_np = np.flatnonzero(at_level[begin:end] & finite_np[begin:end])
                if rows_np.size:
                    feds[e].compress_rows(
                        level,
                        rows_np,
                        starts[e].client_ids,
                        updates[begin:end],
                        reconstructed[begin:end],
                        bits[begin:end],
                        starts[e].generator,
                    )
            continue
        rows_np = np.flatnonzero(at_level & finite_np)
        if rows_np.size == 0:
            continue
        rows = torch.as_tensor(rows_np, device=device)
        if type(op) is NoCompression:
            # The identity: the same values and bits as the operator, without its copy.
            reconstructed[rows] = updates[rows]
            bits[rows] = FLOAT_BITS * updates.shape[1]
            continue
        # Each federation's client rows of this level, in row order.
        members = []
        for e in np.unique(owner[rows_np]).tolist():
            mine = rows_np[owner[rows_np] == e] - offsets[e]
            members.append((e, starts[e].client_ids[torch.as_tensor(mine, device=device)]))
        x = updates[rows]
        if type(op) is QSGD:
            draws = torch.cat(
                [
                    uniform_draws((c.shape[0], x.shape[1]), starts[e].generator, x.dtype, device)
                    for e, c in members
                ]
            )
            out_rows = op._quantize(x, draws)
        else:
            residual = None
            if op.uses_residual:
                residual = torch.cat([feds[e].residual[c] for e, c in members])  # type: ignore[index]
            out_rows = op._compress(x, residual, None, None, 0)
        reconstructed[rows] = out_rows.reconstructed
        bits[rows] = out_rows.bits
        if out_rows.residual is not None:
            begin = 0
            for e, client_rows in members:
                end = begin + client_rows.shape[0]
                feds[e].set_residual_rows(client_rows, out_rows.residual[begin:end])
                begin = end
    return _pendings(starts, trained, reconstructed, finite, finite_np, bits.cpu().numpy(), offsets)


# -- aggregate ------------------------------------------------------------------------------------


def aggregate_round(fed: Federation, pending: PendingUpdates, delivery: Delivery) -> dict[str, Any]:
    """The aggregation stage of one round: move the global model; the report's fields but the
    evaluation.

    With a digital transport the server's rule (``FederationConfig.aggregator``) combines the
    finite updates that arrived (a robust rule may reject some); with an analog one the channel
    already formed the aggregate. Either way the step is scaled by the server learning rate.
    """
    num = pending.client_ids.shape[0]
    use = delivery.arrived & pending.finite
    update_norm = 0.0
    accepted = np.zeros(num, dtype=bool)
    if delivery.aggregate is not None:
        num_rejected = int((~pending.finite).sum())
        if use.any():
            step = delivery.aggregate * fed.config.server_learning_rate
            fed.params = fed.params + step
            update_norm = float(torch.linalg.vector_norm(step))
            accepted = use
    else:
        num_rejected = int((delivery.arrived & ~pending.finite).sum())
        extra = None if fed.config.stragglers == "drop" else _straggler_rows(fed, pending, use)
        if extra is not None:
            update_norm, accepted_rows, rejected = _aggregate_with(fed, pending, use, *extra)
            accepted[np.flatnonzero(use)] = accepted_rows
            num_rejected += rejected
        elif use.any():
            rows = torch.as_tensor(np.flatnonzero(use), device=fed.device)
            ids = torch.as_tensor(pending.client_ids[use], device=fed.device)
            result = fed.aggregator(pending.updates[rows], fed.client_weights[ids])
            step = result.aggregate * fed.config.server_learning_rate
            fed.params = fed.params + step
            update_norm = float(torch.linalg.vector_norm(step))
            accepted[np.flatnonzero(use)] = result.accepted.cpu().numpy()
            num_rejected += int(result.num_rejected)
        if delivery.late_rounds is not None:
            _store_late(fed, pending, delivery.late_rounds)
    return _round_fields(fed, pending, delivery, accepted, num_rejected, update_norm)


def _round_fields(
    fed: Federation,
    pending: PendingUpdates,
    delivery: Delivery,
    accepted: np.ndarray,
    num_rejected: int,
    update_norm: float,
) -> dict[str, Any]:
    """Record who took part and whose update was aggregated (``accepted``, per pending row);
    the round's report fields but the evaluation."""
    k = fed.num_clients
    delivered = np.zeros(k, dtype=bool)
    delivered[pending.client_ids[accepted]] = True
    fed.record_participation(pending.client_ids, delivered)
    bits_up = np.zeros(k, dtype=np.int64)
    bits_up[pending.client_ids] = pending.bits
    train_loss = np.zeros(k, dtype=np.float64)
    train_loss[pending.client_ids] = pending.train_loss
    fields = dict(
        round_index=fed.round_index,
        selected=pending.plan.selected,
        delivered=delivered,
        local_steps=pending.plan.local_steps,
        compression=pending.plan.compression,
        bits_up=bits_up,
        train_loss=train_loss,
        num_rejected=num_rejected,
        update_norm=update_norm,
        energy_compute_j=delivery.energy_compute_j,
        energy_transmit_j=delivery.energy_transmit_j,
        latency_s=delivery.latency_s,
        packet_error=delivery.packet_error,
        straggler=delivery.straggler,
        packet_lost=delivery.packet_lost,
        round_time_s=delivery.round_time_s,
        channel_uses=delivery.channel_uses,
    )
    if delivery.aggregation_mse is not None:
        fields["aggregation_mse"] = delivery.aggregation_mse
    return fields


_BATCHED_FEDAVG_MAX_ROWS = 7
"""The most used rows ``S`` of a round whose weighted sum joins one ``bmm`` with the other rounds
of as many rows: up to 7 rows, every ``(S,)`` by ``(S, d)`` product of a batch equals the
round's own ``w @ X`` bit for bit (measured on float32 for d = 1..6000, 1 to 64 rounds a batch,
rows at any offset); from 8 rows on, MKL's batched product (2 rounds or more) takes another
kernel and the last bit of some sums differs, so those rounds aggregate on their own."""


def aggregate_rounds(
    feds: Sequence[Federation],
    pendings: Sequence[PendingUpdates],
    deliveries: Sequence[Delivery],
) -> list[dict[str, Any]]:
    """The aggregation stage of a batch of rounds: :func:`aggregate_round` of every federation,
    the plain FedAvg rounds batched.

    A round is plain FedAvg when its digital transport left the aggregation to the server
    (``delivery.aggregate is None``), it drops stragglers (no late updates), its server's rule
    is :func:`~fl_gym.sim.learning.aggregation.fedavg_trusted` (``FederationConfig.aggregator
    = "fedavg"``; a rule an environment sets on the federation is another object), and its
    model is float32 on the CPU. The plain FedAvg rounds of one model size with at most
    :data:`_BATCHED_FEDAVG_MAX_ROWS` used rows share one gather of their rows and one
    computation of their steps and norms; those with the same number of used rows share one
    weight normalisation and one ``bmm``. Each round's step, norm and fields are those
    :func:`aggregate_round` gives it alone, bit for bit (the same kernels row by row). A round
    that ``fedavg_trusted`` would hand to ``fedavg`` (a row sum that overflows, weights that
    sum to zero, an aggregate that overflows) and every other round (robust rules, stale or
    coded stragglers, analog aggregates, more rows) runs :func:`aggregate_round` on its own,
    in batch order. Each federation's new global model is a tensor of its own.

    Args:
        feds: The federations.
        pendings: Each round's updates after compression.
        deliveries: What each round's transport delivered.

    Returns:
        Each round's report fields but the evaluation.
    """
    if len(feds) == 1 == len(pendings) == len(deliveries):  # a batch of one: nothing to share
        return [aggregate_round(feds[0], pendings[0], deliveries[0])]
    if not (len(feds) == len(pendings) == len(deliveries)):
        raise ValueError(
            f"federations, pendings and deliveries must have one entry each, got {len(feds)}, "
            f"{len(pendings)} and {len(deliveries)}"
        )
    if len({id(fed) for fed in feds}) < len(feds):  # a federation listed twice: in order
        return [
            aggregate_round(fed, pending, delivery)
            for fed, pending, delivery in zip(feds, pendings, deliveries, strict=True)
        ]
    out: list[dict[str, Any] | None] = [None] * len(feds)
    uses: dict[int, np.ndarray] = {}
    # Plain FedAvg rounds by model size, then by number of used rows.
    groups: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for e, (fed, pending, delivery) in enumerate(zip(feds, pendings, deliveries, strict=True)):
        if _plain_fedavg(fed, pending, delivery):
            use = delivery.arrived & pending.finite
            num_used = int(np.count_nonzero(use))
            if num_used == 0:
                num_rejected = int(np.count_nonzero(delivery.arrived & ~pending.finite))
                out[e] = _round_fields(fed, pending, delivery, use, num_rejected, 0.0)
                continue
            if num_used <= _BATCHED_FEDAVG_MAX_ROWS:
                uses[e] = use
                groups[fed.num_params][num_used].append(e)
                continue
        out[e] = aggregate_round(fed, pending, delivery)
    for by_rows in groups.values():
        members = [e for group in by_rows.values() for e in group]
        steps = _fedavg_steps(feds, pendings, uses, list(by_rows.values()))
        for e, step in zip(members, steps, strict=True):
            fed, pending, delivery = feds[e], pendings[e], deliveries[e]
            if step is None:  # fedavg_trusted hands this round to fedavg
                out[e] = aggregate_round(fed, pending, delivery)
                continue
            update, update_norm = step
            fed.params = fed.params + update
            num_rejected = int(np.count_nonzero(delivery.arrived & ~pending.finite))
            out[e] = _round_fields(fed, pending, delivery, uses[e], num_rejected, update_norm)
    return out  # type: ignore[return-value]


def _plain_fedavg(fed: Federation, pending: PendingUpdates, delivery: Delivery) -> bool:
    """Whether the round aggregates as plain FedAvg of float32 CPU rows (see
    :func:`aggregate_rounds`)."""
    return (
        delivery.aggregate is None
        and delivery.late_rounds is None
        and fed.config.stragglers == "drop"
        and fed.aggregator is fedavg_trusted
        and fed.params.dtype == torch.float32
        and fed.params.device.type == "cpu"
        and pending.updates.dtype == torch.float32
        and pending.updates.device.type == "cpu"
        and fed.client_weights.dtype == torch.float32
    )


def _fedavg_steps(
    feds: Sequence[Federation],
    pendings: Sequence[PendingUpdates],
    uses: dict[int, np.ndarray],
    groups: list[list[int]],
) -> list[tuple[torch.Tensor, float] | None]:
    """Per member of ``groups`` in order (rounds of one model size, each group of one number of
    used rows), the server's step ``fedavg_trusted(rows, weights).aggregate *
    server_learning_rate`` and its norm, or ``None`` where ``fedavg_trusted`` would hand the
    round to ``fedavg``.

    Each value is the one the round's own computation gives: all rows are gathered at once, each
    group's weights are normalised row by row as ``w / w.max()`` then ``w / w.sum()`` and summed
    with its rows in one ``bmm`` (whose rows equal ``w @ X`` up to
    :data:`_BATCHED_FEDAVG_MAX_ROWS` rows), into one tensor of all steps.
    """
    members = [e for group in groups for e in group]
    rows = [np.flatnonzero(uses[e]) for e in members]
    x = _gather_rows([pendings[e].updates for e in members], rows)
    weights = np.concatenate(
        [
            feds[e].client_weights.numpy()[pendings[e].client_ids[r]]
            for e, r in zip(members, rows, strict=True)
        ]
    )
    aggregate = torch.empty((len(members), x.shape[1]), dtype=x.dtype)
    first = row = 0
    for group in groups:
        num_rounds, num_used = len(group), rows[first].shape[0]
        end = row + num_rounds * num_used
        w = torch.from_numpy(weights[row:end]).view(num_rounds, num_used)
        w = w / w.amax(dim=1, keepdim=True)
        w = w / w.sum(dim=1, keepdim=True)
        torch.bmm(
            w.unsqueeze(1),
            x[row:end].view(num_rounds, num_used, -1),
            out=aggregate[first : first + num_rounds].unsqueeze(1),
        )
        first, row = first + num_rounds, end
    rates = [feds[e].config.server_learning_rate for e in members]
    if all(rate == rates[0] for rate in rates):
        step = aggregate * rates[0]
    else:
        step = aggregate * torch.tensor(rates, dtype=aggregate.dtype).unsqueeze(1)
    norms = torch.linalg.vector_norm(step, dim=1).tolist()
    # fedavg_trusted's tests: every row sum finite (the same sums as alone), the largest weight
    # positive and the aggregate finite, the last through its step's norm, which is not finite
    # where an entry is not (an overflow of the norm alone sends the round to aggregate_round,
    # which answers as fedavg_trusted does).
    starts = np.cumsum([0] + [r.shape[0] for r in rows[:-1]])
    finite = np.logical_and.reduceat(torch.isfinite(x.sum(dim=1)).numpy(), starts).tolist()
    positive = (np.maximum.reduceat(weights, starts) > 0).tolist()
    return [
        (step[g], norm) if finite[g] and positive[g] and math.isfinite(norm) else None
        for g, norm in enumerate(norms)
    ]


def _gather_rows(updates: Sequence[torch.Tensor], rows: Sequence[np.ndarray]) -> torch.Tensor:
    """``torch.cat([u[r] for u, r in zip(updates, rows)])``, in one ``index_select`` where the
    updates are row blocks of one tensor (as the compression stage hands them over)."""
    base = updates[0]._base
    starts = []
    if base is not None and base.dim() == 2 and base.is_contiguous():
        width = base.shape[1]
        for u in updates:
            offset = u.storage_offset() - base.storage_offset()
            if not (
                u._base is base
                and u.is_contiguous()
                and u.shape[1] == width
                and offset % width == 0
            ):
                break
            starts.append(offset // width)
    if len(starts) == len(updates):
        index = np.concatenate([s + r for s, r in zip(starts, rows, strict=True)])
        gathered = base.index_select(0, torch.from_numpy(index))
    else:
        gathered = torch.cat([u[torch.from_numpy(r)] for u, r in zip(updates, rows, strict=True)])
    return gathered


def _straggler_rows(
    fed: Federation, pending: PendingUpdates, use: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The rows the server adds to a round's fresh updates under ``stragglers="stale"`` (late
    updates due now) or ``"coded"`` (stand-ins for missing updates): ``(rows, weights, base
    weights)``, or ``None`` when there are none (the round then aggregates as with ``"drop"``).

    A late update of staleness ``tau`` is weighted ``n_k (1 + tau)^-a`` against a base weight
    ``n_k``; a stand-in is weighted as the update it replaces.
    """
    cfg = fed.config
    if cfg.stragglers == "stale":
        due = np.flatnonzero((fed.late_due_round == fed.round_index) & (fed.late_origin_round >= 0))
        if not due.size or fed.late_updates is None:
            return None
        ids = torch.as_tensor(due, device=fed.device)
        base = fed.client_weights[ids]
        tau = fed.round_index - fed.late_origin_round[due]
        scale = torch.as_tensor(
            staleness_weight(tau, cfg.staleness_exponent), dtype=base.dtype, device=fed.device
        )
        rows = fed.late_updates[ids].clone()
        fed.num_late_applied[due] += 1
        fed.late_origin_round[due] = -1
        fed.late_due_round[due] = -1
        return rows, base * scale, base
    coded = fed.coded
    if coded is None:
        return None
    missing = pending.finite & ~use & coded.available[pending.client_ids]
    if not missing.any():
        return None
    ids_np = pending.client_ids[missing]
    rows = stand_in_updates(
        fed.params,
        fed.model.num_classes,
        coded,
        ids_np,
        fed.data.client_sizes[ids_np],
        pending.plan.local_steps[ids_np],
        cfg.learning_rate,
    )
    base = fed.client_weights[torch.as_tensor(ids_np, device=fed.device)]
    return rows, base, base


def _aggregate_with(
    fed: Federation,
    pending: PendingUpdates,
    use: np.ndarray,
    extra_rows: torch.Tensor,
    extra_weights: torch.Tensor,
    extra_base: torch.Tensor,
) -> tuple[float, np.ndarray, int]:
    """Aggregate the fresh rows in ``use`` with extra rows: the server's rule over all of them
    with their weights, the result scaled by ``sum(weights) / sum(base weights)`` (so a late
    update's discount shrinks the step, FedAsync-style, rather than being normalised away).
    Returns the step's norm, the fresh rows' accepted mask and the number rejected."""
    fresh = np.flatnonzero(use)
    rows_t = torch.as_tensor(fresh, device=fed.device)
    ids = torch.as_tensor(pending.client_ids[fresh], device=fed.device)
    fresh_weights = fed.client_weights[ids]
    updates = torch.cat([pending.updates[rows_t], extra_rows.to(pending.updates.dtype)])
    weights = torch.cat([fresh_weights, extra_weights])
    base = torch.cat([fresh_weights, extra_base])
    result = fed.aggregator(updates, weights)
    taken = result.accepted
    share = float(weights[taken].sum() / base[taken].sum()) if bool(taken.any()) else 0.0
    step = result.aggregate * (fed.config.server_learning_rate * share)
    fed.params = fed.params + step
    return (
        float(torch.linalg.vector_norm(step)),
        taken[: fresh.size].cpu().numpy(),
        int(result.num_rejected),
    )


def _store_late(fed: Federation, pending: PendingUpdates, late_rounds: np.ndarray) -> None:
    """Hold this round's late updates until they arrive (a client's newer late update replaces
    one of its own still in flight)."""
    late = late_rounds > 0
    if not late.any():
        return
    if fed.late_updates is None:
        fed.late_updates = torch.zeros(
            fed.num_clients, fed.num_params, dtype=fed.params.dtype, device=fed.device
        )
    ids_np = pending.client_ids[late]
    rows = torch.as_tensor(np.flatnonzero(late), device=fed.device)
    fed.late_updates[torch.as_tensor(ids_np, device=fed.device)] = pending.updates[rows]
    fed.late_origin_round[ids_np] = fed.round_index
    fed.late_due_round[ids_np] = fed.round_index + late_rounds[late]


# -- evaluate -------------------------------------------------------------------------------------


class EvaluationCache:
    """The stacked, row-aligned test sets of a batch of federations, kept until one changes.

    A pipeline keeps one, so a vector environment does not copy its test sets every step.
    """

    def __init__(self) -> None:
        self._cache: dict[int, tuple[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor]] = {}
        self._buffers: dict[tuple[Any, ...], torch.Tensor] = {}

    def buffer(
        self, slot: str, batch: int, shape: tuple[int, ...], like: torch.Tensor
    ) -> torch.Tensor:
        """A reusable row-aligned ``(batch, *shape)`` work tensor (see :func:`_aligned_rows`);
        ``slot`` names its use, so two live tensors never share one buffer."""
        key = (slot, batch, shape, like.dtype, like.device)
        out = self._buffers.get(key)
        if out is None:
            out = self._buffers[key] = _aligned_rows(batch, shape, like)
        return out

    def get(self, feds: Sequence[Federation]) -> tuple[torch.Tensor, torch.Tensor]:
        key = tuple(fed.x_test for fed in feds)
        cached = self._cache.get(len(feds))
        if cached is not None:
            old_key, x, y = cached
            changed = [e for e, (a, b) in enumerate(zip(old_key, key, strict=True)) if a is not b]
            if not changed:
                return x, y
            if all(_same_layout(key[e], x) and _same_layout(feds[e].y_test, y) for e in changed):
                # Some federations were reset (new test sets of the same shape): copy theirs.
                for e in changed:
                    x[e].copy_(key[e])
                    y[e].copy_(feds[e].y_test)
                self._cache[len(feds)] = (key, x, y)
                return x, y
        first = feds[0].x_test
        x = _aligned_rows(len(feds), tuple(first.shape), first)
        torch.stack([fed.x_test for fed in feds], out=x)
        y = torch.stack([fed.y_test for fed in feds])
        self._cache[len(feds)] = (key, x, y)
        return x, y


def _same_layout(row: torch.Tensor, stack: torch.Tensor) -> bool:
    """Whether ``row`` can be copied into a row of ``stack`` as it is (no cast, no move)."""
    return row.shape == stack.shape[1:] and row.dtype == stack.dtype and row.device == stack.device


def evaluate_models(
    feds: Sequence[Federation], cache: EvaluationCache | None = None
) -> list[tuple[float, float]]:
    """Test loss and accuracy of every federation's global model, one batched pass per setting.

    Every row of the batched products and of the per-row means is computed as it is alone (the
    test sets and every layer's weights and outputs in row-aligned buffers, see
    :meth:`EvaluationCache.buffer`), so a federation's values do not depend on its batch.
    """
    cache = EvaluationCache() if cache is None else cache
    out: list[tuple[float, float]] = [(0.0, 0.0)] * len(feds)
    for members in _by_setting(feds, _evaluation_setting):
        group = [feds[e] for e in members]
        params = (
            group[0].params.unsqueeze(0)
            if len(group) == 1
            else torch.stack([fed.params for fed in group])
        )
        x, y = cache.get(group)
        with torch.no_grad():
            logits = group[0].model.logits(params, x, buffers=cache.buffer)
            loss, accuracy = group[0].model.loss_and_accuracy(logits, y)
        for e, values in zip(
            members, zip(loss.tolist(), accuracy.tolist(), strict=True), strict=True
        ):
            out[e] = values
    return out


def _aligned_rows(batch: int, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """An empty ``(batch, *shape)`` tensor whose rows each start 64-byte aligned."""
    size = math.prod(shape)
    stride = -(-size // 16) * 16
    buffer = torch.empty((batch, stride), dtype=like.dtype, device=like.device)
    return buffer[:, :size].view(batch, *shape)


# -- conclude -------------------------------------------------------------------------------------


def conclude_round(
    fed: Federation, fields: dict[str, Any], loss: float, accuracy: float, rng: np.random.Generator
) -> RoundReport:
    """Record the evaluation, build the report, count the round and move the channel on."""
    fed.loss, fed.accuracy = loss, accuracy
    report = RoundReport(accuracy=accuracy, loss=loss, **fields)
    fed.round_index += 1
    if fed.cell is not None:
        fed.cell.advance(rng)
    return report


# -- the pipeline ---------------------------------------------------------------------------------


class RoundPipeline:
    """The stages of a round with their settings: a transport and update transforms.

    Holds what is worth keeping between rounds (the stacked test sets), so an environment keeps
    one pipeline for its lifetime.

    Args:
        transport: How updates reach the server (:class:`DigitalUplink` by default).
        transforms: Update transforms applied in order after local training.
        local_privacy: DP-SGD in local training (per-example clipping and noise), or ``None``;
            an attribute a controller may change between rounds. A list gives one setting (or
            ``None``) per federation of the next :meth:`run`.
    """

    def __init__(
        self,
        transport: Transport | None = None,
        transforms: Sequence[UpdateTransform] = (),
        local_privacy: SampleLevelDP | Sequence[SampleLevelDP | None] | None = None,
    ) -> None:
        self.transport = DigitalUplink() if transport is None else transport
        if not isinstance(self.transport, Transport):
            raise TypeError(f"transport must be a Transport, got {type(self.transport).__name__}")
        self.transforms = tuple(transforms)
        for t in self.transforms:
            if not isinstance(t, UpdateTransform):
                raise TypeError(f"transforms must be UpdateTransform objects, got {t!r}")
        self.local_privacy = local_privacy
        self._test_sets = EvaluationCache()

    def run(
        self,
        feds: Sequence[Federation],
        plans: Sequence[RoundPlan],
        rngs: Sequence[np.random.Generator],
        *,
        allow_empty: bool = False,
    ) -> list[RoundReport]:
        """One round of every federation; see :func:`run_rounds`."""
        if not (len(feds) == len(plans) == len(rngs)):
            raise ValueError(
                f"federations, plans and rngs must have one entry each, got {len(feds)}, "
                f"{len(plans)} and {len(rngs)}"
            )
        if not feds:
            return []
        transport = self.transport
        starts = [
            transport.start(fed, plan, rng, allow_empty)
            for fed, plan, rng in zip(feds, plans, rngs, strict=True)
        ]
        privacy = self.local_privacy
        settings = privacy if isinstance(privacy, (list, tuple)) else [privacy]
        if not all(p is None or isinstance(p, SampleLevelDP) for p in settings):
            raise TypeError(
                "local_privacy must be a SampleLevelDP, None, or a list of them (one per "
                f"federation), got {privacy!r}"
            )
        trained = train_rounds(feds, starts, privacy)
        for transform in self.transforms:
            trained = transform.apply(feds, starts, trained)
        stage = compress_rounds if transport.compresses else uncompressed_rounds
        pendings = stage(feds, starts, trained)
        deliveries = transport.deliver(feds, starts, pendings, rngs)
        deliveries = [
            with_downlink(fed, start, delivery)
            for fed, start, delivery in zip(feds, starts, deliveries, strict=True)
        ]
        fields = aggregate_rounds(feds, pendings, deliveries)
        for transform in self.transforms:
            # Virtual subclasses (registered learning-side transforms) may not have the hook.
            after_aggregate = getattr(transform, "after_aggregate", None)
            if after_aggregate is not None:
                after_aggregate(feds, starts, pendings, fields)
        evaluations = evaluate_models(feds, self._test_sets)
        return [
            conclude_round(fed, f, loss, accuracy, rng)
            for fed, f, (loss, accuracy), rng in zip(feds, fields, evaluations, rngs, strict=True)
        ]


def run_rounds(
    feds: Sequence[Federation],
    plans: Sequence[RoundPlan],
    rngs: Sequence[np.random.Generator],
    *,
    transport: Transport | None = None,
    transforms: Sequence[UpdateTransform] = (),
    allow_empty: bool = False,
    local_privacy: SampleLevelDP | Sequence[SampleLevelDP | None] | None = None,
) -> list[RoundReport]:
    """One round of each of E federations, as one computation of the pipeline's stages.

    Args:
        feds: The federations (any mix of sizes and settings; those that share a setting are
            batched together).
        plans: One plan per federation.
        rngs: One generator per federation: the round's randomness (minibatches, compression,
            packet losses, receiver noise, channel evolution) comes from it alone.
        transport: :class:`DigitalUplink` (the default) or :class:`OverTheAir`.
        transforms: Update transforms after local training.
        allow_empty: Accept plans that select nobody (the model then stays unchanged).
        local_privacy: DP-SGD in local training, or ``None``; a list gives one setting (or
            ``None``) per federation.

    Returns:
        One :class:`~fl_gym.sim.plan.RoundReport` per federation.
    """
    return RoundPipeline(transport, transforms, local_privacy).run(
        feds, plans, rngs, allow_empty=allow_empty
    )
