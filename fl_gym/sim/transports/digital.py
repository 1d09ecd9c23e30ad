"""The digital transport: compressed updates over the cell's orthogonal sub-channels.

:class:`DigitalUplink` is the pipeline's default :class:`~fl_gym.sim.stages.Transport`; its
physics (rates, deadline, packet errors, batteries) is
:func:`~fl_gym.sim.radio.uplink.uplink_many`. The helpers below it turn an uplink report into a
:class:`~fl_gym.sim.stages.Delivery` and carry the two straggler modes that act in the channel:
late updates (``stragglers="stale"``, :func:`_hold_late`) and the one-off coded uploads
(``stragglers="coded"``, :func:`_coded_setup`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from fl_gym.sim.learning.coded import CodedClients, code_length, encode
from fl_gym.sim.learning.compression import FLOAT_BITS
from fl_gym.sim.plan import RoundPlan
from fl_gym.sim.radio.uplink import UplinkReport, uplink_many
from fl_gym.sim.stages import (
    Delivery,
    PendingUpdates,
    RoundStart,
    Transport,
    _ideal_delivery,
    start_round,
)

if TYPE_CHECKING:
    from fl_gym.sim.learning.federation import Federation

__all__ = ["DigitalUplink", "coded_upload_bits"]


class DigitalUplink(Transport):
    """Digital uploads on the cell's orthogonal sub-channels (or an ideal channel without one).

    Each selected device with at least the cell's ``power_floor_w`` trains, gets its own
    sub-channel (at most M per round) and uploads its compressed update at its power
    (``p_max`` where the plan has none) by the deadline; stragglers, lost packets and devices
    whose battery ran out contribute nothing (:func:`~fl_gym.sim.radio.uplink.uplink_many`, all
    cells of a batch in one array computation). A selected device below the power floor neither
    trains nor transmits.
    """

    name = "digital"
    compresses = True

    def start(
        self, fed: Federation, plan: RoundPlan, rng: np.random.Generator, allow_empty: bool
    ) -> RoundStart:
        fed.check_plan(plan, allow_empty, subchannels=True)
        if fed.cell is None:
            return start_round(fed, plan, rng)
        cell_config = fed.cell.config
        power = (
            np.full(fed.num_clients, cell_config.p_max_w) if plan.power_w is None else plan.power_w
        )
        silent = plan.selected & (power < cell_config.power_floor_w)
        if silent.any():
            plan = RoundPlan(plan.selected & ~silent, plan.local_steps, plan.compression, power)
        return start_round(fed, plan, rng, silent=silent, power_w=power)

    def deliver(
        self,
        feds: Sequence[Federation],
        starts: Sequence[RoundStart],
        pendings: Sequence[PendingUpdates],
        rngs: Sequence[np.random.Generator],
    ) -> list[Delivery]:
        out: list[Delivery | None] = [None] * len(feds)
        batch: dict[int, list[tuple[int, tuple[np.ndarray, ...]]]] = {}
        setups: dict[int, tuple[np.ndarray, float]] = {}
        for e, (fed, start, pending) in enumerate(zip(feds, starts, pendings, strict=True)):
            if fed.cell is None:
                out[e] = _ideal_delivery(pending.client_ids.shape[0], fed.num_clients)
                continue
            if fed.config.stragglers == "coded":
                setups[e] = _coded_setup(fed, start)
            args = self._uplink_args(fed, start, pending, rngs[e])
            if args is None:  # the cell's public method raises the error
                assert start.power_w is not None and start.silent is not None
                plan = start.plan
                fed.cell.uplink(
                    plan.selected | start.silent,
                    np.where(plan.selected, start.power_w, 0.0),
                    _bits_per_device(fed, pending),
                    plan.local_steps,
                    fed.config.batch_size,
                    rngs[e],
                )
                raise AssertionError("the uplink accepted inputs the transport rejected")
            batch.setdefault(fed.config.batch_size, []).append((e, args))
        for batch_size, members in batch.items():
            columns = list(zip(*(args for _, args in members), strict=True))
            reports = uplink_many(
                [feds[e].cell for e, _ in members],  # type: ignore[misc]
                *[list(column) for column in columns],
                batch_size,
                [rngs[e] for e, _ in members],
            )
            for (e, _), uplink in zip(members, reports, strict=True):
                out[e] = _from_uplink(feds[e], pendings[e], uplink)
                if feds[e].config.stragglers == "stale":
                    out[e] = _hold_late(feds[e], starts[e], pendings[e], uplink, rngs[e], out[e])
        for e, (energy_j, _) in setups.items():
            delivery = out[e]
            assert delivery is not None
            out[e] = replace(delivery, energy_transmit_j=delivery.energy_transmit_j + energy_j)
        return out  # type: ignore[return-value]

    @staticmethod
    def _uplink_args(
        fed: Federation, start: RoundStart, pending: PendingUpdates, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """The validated inputs of the round's uplink (selection, powers, bits, local steps), or
        ``None`` where the cell's public ``uplink`` must run to raise its error (a power above
        ``p_max_w``, an ``rng`` that is not a generator). The start stage validated the rest."""
        assert fed.cell is not None
        assert start.silent is not None and start.power_w is not None
        plan = start.plan
        power = np.where(plan.selected, start.power_w, 0.0)
        p_max_w = fed.cell.config.p_max_w
        if not isinstance(rng, np.random.Generator) or (power > p_max_w * (1.0 + 1e-9)).any():
            return None
        return (
            plan.selected | start.silent,
            np.minimum(power, p_max_w),
            _bits_per_device(fed, pending),
            np.asarray(plan.local_steps, dtype=np.float64),
        )


def _bits_per_device(fed: Federation, pending: PendingUpdates) -> np.ndarray:
    bits = np.zeros(fed.num_clients)
    bits[pending.client_ids] = pending.bits
    return bits


def _from_uplink(fed: Federation, pending: PendingUpdates, uplink: UplinkReport) -> Delivery:
    assert fed.cell is not None
    return Delivery(
        arrived=uplink.delivered[pending.client_ids],
        energy_compute_j=uplink.compute_energy_j,
        energy_transmit_j=uplink.transmit_energy_j,
        latency_s=uplink.latency_s,
        packet_error=uplink.packet_error_prob,
        straggler=uplink.straggler,
        packet_lost=uplink.packet_lost,
        round_time_s=uplink.round_time_s,
        channel_uses=float(uplink.transmit_time_s.sum() * fed.cell.config.subchannel_bandwidth_hz),
    )


def _hold_late(
    fed: Federation,
    start: RoundStart,
    pending: PendingUpdates,
    uplink: UplinkReport,
    rng: np.random.Generator,
    delivery: Delivery,
) -> Delivery:
    """Stragglers that finish late (``stragglers="stale"``): which of them keep working past the
    deadline, how many rounds late their update arrives, and the energy the rest costs.

    A straggler whose battery lasted the round and whose upload can finish (rate above 0) goes
    on computing and transmitting at its power: it needs ``C b s / f + bits / rate`` seconds (on
    the round's channel), so its update arrives ``tau = ceil(need / deadline) - 1`` rounds late
    (rounds that end at the deadline, as every round with a straggler does). One later than
    ``max_staleness`` rounds, or one whose battery cannot pay for the rest, stops at the deadline
    and is lost as with ``"drop"``. The rest of the work is charged now, to this round's energy;
    the late upload is lost with the round's packet error probability (drawn from ``rng``).
    """
    cell = fed.cell
    assert cell is not None and start.power_w is not None
    plan = start.plan
    k = fed.num_clients
    finite = np.zeros(k, dtype=bool)
    finite[pending.client_ids] = pending.finite
    candidate = uplink.straggler & ~uplink.battery_depleted & finite & (uplink.rate_bps > 0)
    late_rounds = np.zeros(pending.client_ids.shape[0], dtype=np.int64)
    if not candidate.any():
        return replace(delivery, late_rounds=late_rounds)
    compute_need_s, compute_need_j = cell.compute_cost(plan.local_steps, fed.config.batch_size)
    bits = _bits_per_device(fed, pending)
    rate = np.where(candidate, uplink.rate_bps, 1.0)
    transmit_need_s = np.where(candidate, bits / rate, 0.0)
    need_s = compute_need_s + transmit_need_s
    tau = np.ceil(need_s / cell.config.deadline_s).astype(np.int64) - 1
    candidate &= (tau >= 1) & (tau <= fed.config.max_staleness)
    power = np.where(plan.selected, start.power_w, 0.0)
    more_compute_j = np.where(candidate, compute_need_j - uplink.compute_energy_j, 0.0)
    more_transmit_j = np.where(candidate, power * (transmit_need_s - uplink.transmit_time_s), 0.0)
    candidate &= cell.battery_j >= more_compute_j + more_transmit_j
    more_compute_j = np.where(candidate, np.maximum(more_compute_j, 0.0), 0.0)
    more_transmit_j = np.where(candidate, np.maximum(more_transmit_j, 0.0), 0.0)
    cell.drain(more_compute_j + more_transmit_j)
    lost = rng.random(k) < uplink.packet_error_prob
    late = candidate & ~lost
    late_rounds[:] = np.where(late[pending.client_ids], tau[pending.client_ids], 0)
    return replace(
        delivery,
        energy_compute_j=delivery.energy_compute_j + more_compute_j,
        energy_transmit_j=delivery.energy_transmit_j + more_transmit_j,
        late_rounds=late_rounds,
    )


def coded_upload_bits(fed: Federation) -> np.ndarray:
    """``(K,)`` bits each device uploads once with ``stragglers="coded"``: its code length times
    the coded features, bias column and one-hot targets, as float32."""
    width = fed.model.num_features + 1 + fed.model.num_classes
    lengths = [code_length(int(n), fed.config.code_redundancy) for n in fed.data.client_sizes]
    return np.asarray(lengths, dtype=np.float64) * width * FLOAT_BITS


def _coded_setup(fed: Federation, start: RoundStart) -> tuple[np.ndarray, float]:
    """The one-off coded uploads of ``stragglers="coded"``: every selected device that has not
    yet uploaded its coded data does so this round, charged through the cell; returns the
    energy each device spent and the time the uploads add to the round.

    At the first round, every device's code is drawn from the round's generator (features with
    a bias column and one-hot labels, :func:`fl_gym.sim.learning.coded.encode`, ``W = I``). A
    device uploads it at ``p_max`` on its sub-channel of the current channel the first round
    it is selected: time ``bits / rate``, energy ``p_max * time``, before the round (its energy
    is in the round's report, its time in ``Federation.coded_upload_time_s``; the round's own
    duration stays within the deadline). The selected devices upload in parallel. A device
    whose battery cannot pay for its upload (or whose rate is 0) sends nothing and tries again
    the next time it is selected; until its upload arrives the server has no stand-in for it.
    """
    cell = fed.cell
    assert cell is not None
    cfg = cell.config
    k = fed.num_clients
    if fed.coded is None:
        clients = fed.clients
        ones = torch.ones(1, dtype=clients.x.dtype, device=fed.device)
        codes = []
        for i in range(k):
            begin, n = int(clients.offsets[i]), int(clients.counts[i])
            x = clients.x[begin : begin + n]
            x_aug = torch.cat([x, ones.expand(n, 1)], dim=1)
            y = torch.nn.functional.one_hot(clients.y[begin : begin + n], fed.model.num_classes)
            length = code_length(n, fed.config.code_redundancy)
            codes.append(encode(x_aug, y, length, start.generator))
        fed.coded = CodedClients(tuple(codes), np.zeros(k, dtype=bool))
    uploading = start.plan.selected & ~fed.coded.available
    if not uploading.any():
        return np.zeros(k), 0.0
    rate = cell.achievable_rate_bps(cfg.p_max_w)
    bits = coded_upload_bits(fed)
    time_s = np.divide(bits, rate, out=np.full(k, np.inf), where=uploading & (rate > 0))
    energy_j = np.where(uploading, cfg.p_max_w * time_s, 0.0)
    sent = uploading & np.isfinite(time_s) & (cell.battery_j >= energy_j)
    spent = cell.drain(np.where(sent, energy_j, 0.0))
    fed.coded = CodedClients(fed.coded.codes, fed.coded.available | sent)
    fed.coded_upload_time_s = fed.coded_upload_time_s + np.where(sent, time_s, 0.0)
    return spent, float(time_s[sent].max(initial=0.0))
