"""The broadband analog aggregation transport of the round pipeline (Zhu, Wang, Huang, TWC 2020).

:class:`BroadbandAnalog` is a :class:`~fl_gym.sim.rounds.Transport`: the selected devices train,
then transmit their raw updates at the same time over ``num_subcarriers`` OFDM sub-carriers of
the cell's band, each sub-carrier with its own Rayleigh fading drawn for the round, with
truncated channel inversion tied to the power budget
(:func:`~fl_gym.sim.radio.broadband_analog.broadband_analog_aggregate`). Its physics lives in
:mod:`fl_gym.sim.radio.broadband_analog`; this module only composes it with the federation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from fl_gym.sim.config import check_int
from fl_gym.sim.radio.broadband_analog import (
    baa_airtime_s,
    broadband_analog_aggregate,
    broadband_fading,
)
from fl_gym.sim.rounds import Delivery, OverTheAir, PendingUpdates, RoundStart

if TYPE_CHECKING:
    from fl_gym.sim.learning.federation import Federation

__all__ = ["BroadbandAnalog"]


@dataclass
class BroadbandAnalog(OverTheAir):
    """Broadband analog aggregation with truncated channel inversion, as a transport.

    Every selected device trains; those whose compute time plus the airtime
    ``ceil(d / M) M / B`` fit the deadline and whose battery covers compute plus ``P0`` for the
    airtime then transmit. The round draws ``(K, M)`` independent ``CN(0, 1)`` sub-carrier
    fading coefficients from the federation's generator (every device, transmitting or not, so
    the draws do not depend on the selection); a device is silent on the sub-carriers whose gain
    is below ``gain_threshold`` and inverts the others. The aligned receive power is the
    paper's ``rho0 = P0 G_min / (M E1(g_th))``, capped so that no device averages more than
    ``P0`` over the round; the server's estimate of the sample-weighted average (per entry, of
    the devices not truncated there), receiver noise ``N0 B / M`` per sub-carrier included, is
    the aggregate. Energy: compute as in the digital round, transmit = each device's average
    power x airtime. No sub-channel limit and no compression.

    Args:
        power_scale: ``P0`` as a fraction of ``p_max``, in (0, 1]; ``None`` (the default) takes
            each round's budget from its plan (the largest power of a selected device).
        gain_threshold: Truncation threshold ``g_th`` on the small-scale gain ``|f|^2``, in
            (0, 100]. The default 0.1 truncates ``1 - exp(-0.1)`` = 9.5 % of the entries on
            average.
        num_subcarriers: OFDM sub-carriers ``M`` the band is split into, in [1, 100000].
    """

    gain_threshold: float = 0.1
    num_subcarriers: int = 64
    name: str = field(default="broadband-analog", init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        g = self.gain_threshold
        if not (
            isinstance(g, (int, float)) and not isinstance(g, bool) and 0.0 < float(g) <= 100.0
        ):
            raise ValueError(f"gain_threshold must be a number in (0, 100], got {g!r}")
        check_int("num_subcarriers", self.num_subcarriers, minimum=1, maximum=100_000)

    def deliver(
        self,
        feds: Sequence[Federation],
        starts: Sequence[RoundStart],
        pendings: Sequence[PendingUpdates],
        rngs: Sequence[np.random.Generator],
    ) -> list[Delivery]:
        return [
            self._deliver_broadband(fed, start, pending, rng)
            for fed, start, pending, rng in zip(feds, starts, pendings, rngs, strict=True)
        ]

    def _deliver_broadband(
        self,
        fed: Federation,
        start: RoundStart,
        pending: PendingUpdates,
        rng: np.random.Generator,
    ) -> Delivery:
        cell = fed.cell
        assert cell is not None and start.power_w is not None
        cfg = cell.config
        plan = start.plan
        k, d = fed.num_clients, fed.num_params
        ids_np = pending.client_ids
        airtime_s = baa_airtime_s(d, self.num_subcarriers, cfg.bandwidth_hz)
        p0 = float(start.power_w[0])
        compute_s, compute_j = cell.compute_cost(plan.local_steps, fed.config.batch_size)
        compute_s = np.where(plan.selected, compute_s, 0.0)
        compute_j = np.where(plan.selected, compute_j, 0.0)
        straggler = plan.selected & (compute_s + airtime_s > cfg.deadline_s)
        affordable = cell.battery_j >= compute_j + p0 * airtime_s
        finite = np.zeros(k, dtype=bool)
        finite[ids_np] = pending.finite
        send = plan.selected & ~straggler & affordable & finite
        fading = broadband_fading(rng, k, self.num_subcarriers)
        rows = np.flatnonzero(send[ids_np])
        transmit_w = np.zeros(k)
        aggregate = None
        mse = 0.0
        uses = 0
        if rows.size:
            send_ids = ids_np[rows]
            result = broadband_analog_aggregate(
                pending.updates[torch.as_tensor(rows, device=fed.device)],
                fed.data.client_sizes[send_ids].astype(np.float64),
                cell.large_scale_gain[send_ids],
                fading[send_ids],
                gain_threshold=float(self.gain_threshold),
                p_max_w=p0,
                bandwidth_hz=cfg.bandwidth_hz,
                noise_psd_w_per_hz=cfg.noise_psd_w_per_hz,
                generator=start.generator,
            )
            aggregate = result.aggregate.to(fed.params.dtype)
            transmit_w[send_ids] = result.transmit_power_w
            mse = float(result.aggregate_mse)
            uses = result.channel_uses
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
            channel_uses=float(uses),
            aggregate=aggregate,
            aggregation_mse=mse,
        )
