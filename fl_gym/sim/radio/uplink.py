"""The digital uplink of one round, batched over cells: each selected device trains, gets its
own sub-channel and uploads its bits by the deadline; the report says what arrived and what it
cost. :func:`uplink_many` computes E cells' rounds as one array computation (element by element,
so a cell's row is what it computes alone); each cell then applies its new batteries itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fl_gym.sim.plan import _freeze_arrays
from fl_gym.sim.radio.channel import _packet_error, _rate

if TYPE_CHECKING:
    from fl_gym.sim.radio.cell import WirelessCell, WirelessConfig

__all__ = ["UplinkReport", "uplink_many"]


@dataclass(frozen=True, eq=False)
class UplinkReport:
    """What happened on the uplink in one round.

    Per-device arrays have shape ``(K,)``; they hold 0 / False for devices that were not selected
    (and the link quantities ``rate_bps``, ``packet_error_prob`` and all times and energies hold
    0 for selected devices that did not transmit).

    Attributes:
        selected: Devices asked to take part.
        transmitted: Selected devices whose power was at least ``power_floor_w``: they trained and
            started their upload. The others spent nothing.
        delivered: Updates that reached the BS: transmitted, not a straggler, battery not
            exhausted during the round, packet not lost.
        straggler: Transmitting devices whose compute plus upload time exceeds the deadline.
            Work stops at the deadline: a straggler spends energy up to the deadline and its
            update is lost.
        packet_lost: Uploads finished in time whose packet was lost (drawn with probability
            ``packet_error_prob``).
        battery_depleted: Transmitting devices whose battery ran out during the round: a device
            spends what it has (computing first, then transmitting), its update is lost and its
            battery is left at 0.
        channel_gain: Effective channel power gain ``g`` of the round.
        rate_bps: Uplink rate on the device's sub-channel.
        compute_time_s: Time spent on local training.
        compute_energy_j: Energy spent on local training.
        transmit_time_s: Time spent transmitting (``bits / rate`` for a completed upload; less
            when the deadline or the battery cut it short).
        transmit_energy_j: Energy spent transmitting, ``power * transmit_time_s``.
        latency_s: ``compute_time_s + transmit_time_s``; at most ``deadline_s``.
        packet_error_prob: Packet error probability of the upload.
        round_time_s: Duration of the round: ``min(deadline, max latency over transmitting
            devices)``, 0 if nobody transmitted. Because a round with a straggler waits for the
            deadline, it equals ``deadline_s`` whenever there is one.
    """

    selected: np.ndarray
    transmitted: np.ndarray
    delivered: np.ndarray
    straggler: np.ndarray
    packet_lost: np.ndarray
    battery_depleted: np.ndarray
    channel_gain: np.ndarray
    rate_bps: np.ndarray
    compute_time_s: np.ndarray
    compute_energy_j: np.ndarray
    transmit_time_s: np.ndarray
    transmit_energy_j: np.ndarray
    latency_s: np.ndarray
    packet_error_prob: np.ndarray
    round_time_s: float

    def __post_init__(self) -> None:
        _freeze_arrays(self)

    @property
    def energy_j(self) -> np.ndarray:
        """Total energy spent by each device, compute plus transmit."""
        return self.compute_energy_j + self.transmit_energy_j

    @property
    def num_delivered(self) -> int:
        return int(self.delivered.sum())


def _uplink_arrays(
    cfg: WirelessConfig,
    sel: np.ndarray,
    power: np.ndarray,
    size_bits: np.ndarray,
    steps: np.ndarray,
    batch_size: int,
    channel_gain: np.ndarray,
    cpu_hz: np.ndarray,
    battery: np.ndarray,
    draws: np.ndarray,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The arithmetic of :meth:`WirelessCell.uplink`, element by element on arrays of one shape
    (``(K,)`` for one cell, ``(E, K)`` for E cells of one config): the report's arrays, the new
    batteries and the largest latency of each row. ``draws`` are the packet-loss uniforms."""
    transmitted = sel & (power >= cfg.power_floor_w)
    p = np.where(transmitted, power, 0.0)
    gain = np.where(sel, channel_gain, 0.0)
    b_m, n0 = cfg.subchannel_bandwidth_hz, cfg.noise_psd_w_per_hz
    # p and gain are checked above and by the cell's state, B and N0 by the config.
    received_w, noise_w = p * gain, b_m * n0
    rate = np.where(transmitted, _rate(received_w, noise_w, b_m), 0.0)
    q = np.where(transmitted, _packet_error(received_w, noise_w, cfg.waterfall_threshold), 0.0)

    # Time and energy the whole job needs; an upload at rate 0 never finishes.
    cycles = np.where(transmitted, cfg.cycles_per_sample * batch_size * steps, 0.0)
    compute_need_s = cycles / cpu_hz
    compute_need_j = cfg.effective_capacitance * cycles * cpu_hz**2
    compute_power_w = cfg.effective_capacitance * cpu_hz**3
    needs_air = transmitted & (size_bits > 0)
    with np.errstate(over="ignore"):  # a rate so small the time overflows is an inf time
        transmit_need_s = np.divide(
            size_bits, rate, out=np.where(needs_air, np.inf, 0.0), where=needs_air & (rate > 0)
        )
    deadline = cfg.deadline_s
    straggler = transmitted & (compute_need_s + transmit_need_s > deadline)

    # Work stops at the deadline.
    compute_s = np.minimum(compute_need_s, deadline)
    compute_j = np.where(compute_need_s <= deadline, compute_need_j, compute_power_w * deadline)
    transmit_s = np.minimum(transmit_need_s, deadline - compute_s)
    transmit_j = p * transmit_s

    # A battery that cannot pay for all of it pays compute first, then as much airtime as is
    # left; the device then stops with an empty battery.
    depleted = transmitted & (compute_j + transmit_j > battery)
    if depleted.any():  # otherwise every step of this branch keeps its input as it is
        short_compute = depleted & (compute_j >= battery)
        compute_s = np.where(
            short_compute,
            np.divide(battery, compute_power_w, out=np.zeros_like(battery), where=short_compute),
            compute_s,
        )
        compute_j = np.where(short_compute, battery, compute_j)
        left_j = battery - compute_j
        short_transmit = depleted & ~short_compute
        transmit_s = np.where(
            short_transmit,
            np.divide(left_j, p, out=np.zeros_like(p), where=short_transmit),
            np.where(short_compute, 0.0, transmit_s),
        )
        transmit_j = np.where(depleted, np.where(short_compute, 0.0, left_j), transmit_j)

    finished = transmitted & ~straggler & ~depleted
    packet_lost = finished & (draws < q)
    delivered = finished & ~packet_lost

    spent_j = compute_j + transmit_j
    new_battery = np.where(depleted, 0.0, np.maximum(battery - spent_j, 0.0))
    latency_s = compute_s + transmit_s
    fields = dict(
        selected=sel,
        transmitted=transmitted,
        delivered=delivered,
        straggler=straggler,
        packet_lost=packet_lost,
        battery_depleted=depleted,
        channel_gain=gain,
        rate_bps=rate,
        compute_time_s=compute_s,
        compute_energy_j=compute_j,
        transmit_time_s=transmit_s,
        transmit_energy_j=transmit_j,
        latency_s=latency_s,
        packet_error_prob=q,
    )
    return fields, new_battery, latency_s.max(axis=-1, initial=0.0)


def uplink_many(
    cells: list[WirelessCell],
    selected: list[np.ndarray],
    power_w: list[np.ndarray],
    bits: list[np.ndarray],
    local_steps: list[np.ndarray],
    batch_size: int,
    rngs: list[np.random.Generator],
) -> list[UplinkReport]:
    """:meth:`WirelessCell.uplink` of many cells on validated inputs (see
    :meth:`WirelessCell._uplink`), bit for bit, with one array computation for all of them.

    Every cell draws its packet-loss uniforms from its own generator, as alone; the arithmetic
    is element by element, so a cell's row of the stacked arrays is what it computes alone.
    Cells whose configs or sizes differ from the first's are computed one by one.
    """
    first = cells[0]
    if len(cells) > 1 and any(
        c.config != first.config or c.num_devices != first.num_devices for c in cells
    ):
        return [
            uplink_many([c], [s], [p], [b], [t], batch_size, [r])[0]
            for c, s, p, b, t, r in zip(
                cells, selected, power_w, bits, local_steps, rngs, strict=True
            )
        ]
    states = [c.snapshot() for c in cells]
    draws = [rng.random(c.num_devices) for c, rng in zip(cells, rngs, strict=True)]
    if len(cells) == 1:
        stack = lambda arrays: arrays[0]  # noqa: E731
    else:
        stack = np.stack
    fields, new_battery, latency_max = _uplink_arrays(
        first.config,
        stack(selected),
        stack(power_w),
        stack(bits),
        stack(local_steps),
        batch_size,
        stack([c.channel_gain for c in cells]),
        stack([s.cpu_hz for s in states]),
        stack([s.battery_j for s in states]),
        stack(draws),
    )
    if len(cells) == 1:
        # The arrays just computed belong to the one cell's records alone: read-only as they
        # are, the records keep them instead of copying (the selection is the caller's array).
        new_battery.setflags(write=False)
        for name, value in fields.items():
            if name != "selected":
                value.setflags(write=False)
    deadline = first.config.deadline_s
    reports = []
    for e, cell in enumerate(cells):
        row = (lambda a: a) if len(cells) == 1 else (lambda a, e=e: a[e])
        cell.set_batteries(row(new_battery))
        reports.append(
            UplinkReport(
                **{name: row(value) for name, value in fields.items()},
                round_time_s=float(min(deadline, row(latency_max))),
            )
        )
    return reports
