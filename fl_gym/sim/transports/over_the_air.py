"""The over-the-air (analog) transport with multi-antenna receive beamforming (Yang et al. 2020).

:class:`OverTheAir` is a :class:`~fl_gym.sim.stages.Transport` and the base of the other analog
schemes (:class:`~fl_gym.sim.transports.broadband.BroadbandAnalog`,
:class:`~fl_gym.sim.transports.cs_over_the_air.CSOverTheAir`), which redefine what an analog
scheme defines (airtime, extra channel state, the aggregate). Its physics lives in
:mod:`fl_gym.sim.radio.over_the_air`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fl_gym.sim.plan import RoundPlan
from fl_gym.sim.radio.over_the_air import ota_aggregate, ota_channels, receive_beamformer
from fl_gym.sim.stages import Delivery, PendingUpdates, RoundStart, Transport, start_round

if TYPE_CHECKING:
    from fl_gym.sim.learning.federation import Federation

__all__ = ["OverTheAir"]


@dataclass
class OverTheAir(Transport):
    """Over-the-air (analog) aggregation (Yang, Jiang, Shi, Ding, TWC 2020).

    Every selected device trains; those whose compute time plus the airtime fit the deadline
    and whose battery covers the round then transmit their raw update simultaneously, one
    parameter per channel use over the whole bandwidth (airtime ``d / bandwidth_hz``), with
    zero-forcing transmit scalars under the power budget ``P0``; the base station's
    ``num_antennas`` antennas combine them with a receive beamformer designed for the set
    (:func:`~fl_gym.sim.radio.over_the_air.receive_beamformer`), and the estimate of the
    sample-weighted average, receiver noise included, is the aggregate. No sub-channel limit and
    no compression. Energy: compute as in the digital round, transmit = each device's average
    power x airtime.

    Args:
        power_scale: ``P0`` as a fraction of ``p_max``, in (0, 1]; ``None`` (the default) takes
            each round's budget from its plan: the largest power of a selected device.
    """

    power_scale: float | None = None
    name: str = field(default="over-the-air", init=False)
    compresses: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        s = self.power_scale
        if s is not None and not (
            isinstance(s, (int, float)) and not isinstance(s, bool) and 0.0 < s <= 1.0
        ):
            raise ValueError(f"power_scale must be in (0, 1], got {s!r}")

    def start(
        self, fed: Federation, plan: RoundPlan, rng: np.random.Generator, allow_empty: bool
    ) -> RoundStart:
        if fed.cell is None:
            raise ValueError(
                "over-the-air aggregation needs a wireless cell: "
                "Federation(..., cell=WirelessCell(...))"
            )
        fed.check_plan(plan, allow_empty, subchannels=False)
        p_max_w = fed.cell.config.p_max_w
        scale = self.power_scale
        if scale is None:
            scale = (
                1.0
                if plan.power_w is None or not plan.selected.any()
                else float(plan.power_w[plan.selected].max()) / p_max_w
            )
            scale = min(max(scale, 1e-12), 1.0)
        # The analog round sends raw updates: the report shows no compression level.
        plan = RoundPlan(plan.selected, plan.local_steps, 0, plan.power_w)
        return start_round(fed, plan, rng, power_w=np.full(fed.num_clients, scale * p_max_w))

    def deliver(
        self,
        feds: Sequence[Federation],
        starts: Sequence[RoundStart],
        pendings: Sequence[PendingUpdates],
        rngs: Sequence[np.random.Generator],
    ) -> list[Delivery]:
        return [
            self._deliver_one(fed, start, pending, rng)
            for fed, start, pending, rng in zip(feds, starts, pendings, rngs, strict=True)
        ]

    # -- what an analog scheme defines (receive beamforming here) ---------------------------------

    def _airtime_s(self, fed: Federation) -> float:
        """Airtime of one analog upload of ``d`` entries: one channel use per entry."""
        assert fed.cell is not None
        return fed.num_params / fed.cell.config.bandwidth_hz

    def _draw_channels(self, fed: Federation, rng: np.random.Generator) -> Any:
        """The round's extra channel state, drawn before anyone transmits (none here: the
        cell's fading is the channel)."""
        return None

    def _aggregate(
        self,
        fed: Federation,
        start: RoundStart,
        updates: torch.Tensor,
        send_ids: np.ndarray,
        p0: float,
        channels: Any,
    ) -> tuple[torch.Tensor, np.ndarray, float, float]:
        """The transmitting devices' analog aggregate: ``(aggregate, transmit power of each
        sender in W, aggregation MSE, channel uses)``."""
        cell = fed.cell
        assert cell is not None
        cfg = cell.config
        gains = ota_channels(cell.large_scale_gain[send_ids], cell.fading[send_ids])
        weights = fed.data.client_sizes[send_ids].astype(np.float64)
        # 20 mirror-descent iterations and one local ascent reach >= 99.9% of the dual bound
        # on the default cells in ~2 ms; the function's defaults take ten times longer.
        beamformer = receive_beamformer(gains, weights, num_iterations=20, num_starts=1).beamformer
        result = ota_aggregate(
            updates,
            weights,
            gains,
            beamformer,
            power_w=p0,
            noise_power_w=cfg.noise_psd_w_per_hz * cfg.bandwidth_hz,
            generator=start.generator,
        )
        return (
            result.aggregate,
            result.transmit_power_w,
            float(result.aggregate_mse),
            float(fed.num_params),
        )

    def _deliver_one(
        self, fed: Federation, start: RoundStart, pending: PendingUpdates, rng: np.random.Generator
    ) -> Delivery:
        """One federation's analog round: who can transmit (deadline, battery, finite update),
        the scheme's aggregate, and the energy and latency it cost."""
        cell = fed.cell
        assert cell is not None and start.power_w is not None
        cfg = cell.config
        plan = start.plan
        k = fed.num_clients
        ids_np = pending.client_ids
        airtime_s = self._airtime_s(fed)
        p0 = float(start.power_w[0])
        compute_s, compute_j = cell.compute_cost(plan.local_steps, fed.config.batch_size)
        compute_s = np.where(plan.selected, compute_s, 0.0)
        compute_j = np.where(plan.selected, compute_j, 0.0)
        straggler = plan.selected & (compute_s + airtime_s > cfg.deadline_s)
        affordable = cell.battery_j >= compute_j + p0 * airtime_s
        finite = np.zeros(k, dtype=bool)
        finite[ids_np] = pending.finite
        send = plan.selected & ~straggler & affordable & finite
        channels = self._draw_channels(fed, rng)
        rows = np.flatnonzero(send[ids_np])
        transmit_w = np.zeros(k)
        aggregate = None
        mse = 0.0
        uses = 0.0
        if rows.size:
            send_ids = ids_np[rows]
            result, power_w, mse, uses = self._aggregate(
                fed,
                start,
                pending.updates[torch.as_tensor(rows, device=fed.device)],
                send_ids,
                p0,
                channels,
            )
            aggregate = result.to(fed.params.dtype)
            transmit_w[send_ids] = power_w
        spent = cell.drain(compute_j + transmit_w * airtime_s)
        # A device that could not pay for the round spent what it had, computing first.
        energy_compute = np.minimum(compute_j, spent)
        latency = np.minimum(np.where(send, compute_s + airtime_s, compute_s), cfg.deadline_s)
        return Delivery(
            arrived=send[ids_np],
            energy_compute_j=energy_compute,
            energy_transmit_j=spent - energy_compute,
            latency_s=latency,
            packet_error=np.zeros(k),
            straggler=straggler,
            packet_lost=np.zeros(k, dtype=bool),
            round_time_s=float(latency.max(initial=0.0)),
            channel_uses=uses,
            aggregate=aggregate,
            aggregation_mse=mse,
        )
