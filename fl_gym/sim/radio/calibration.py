"""Calibration of the cell's defaults: how fast full participation at full power empties the
batteries (``python -m fl_gym.sim.radio.calibration`` prints it for the defaults)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from fl_gym.sim.config import check_int
from fl_gym.sim.radio.cell import WirelessCell, WirelessConfig

__all__ = ["DrainSummary", "simulate_full_power"]


# -- calibration -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DrainSummary:
    """How fast full participation at full power empties the batteries.

    Attributes:
        rounds: Rounds simulated.
        compute_energy_j: Mean compute energy per transmitting device and round.
        transmit_energy_j: Mean transmit energy per transmitting device and round.
        max_energy_j: Largest energy one device spent in one round.
        mean_battery_j: Mean battery capacity.
        first_depletion_round: 0-based round at the end of which the first device was exhausted,
            ``None`` if none was.
        median_depletion_round: Round by the end of which half of the devices were exhausted,
            ``None`` if fewer were.
        depleted_fraction: Fraction of the devices exhausted at the end.
        straggler_fraction: Stragglers per transmission.
        packet_loss_fraction: Lost packets per transmission.
    """

    rounds: int
    compute_energy_j: float
    transmit_energy_j: float
    max_energy_j: float
    mean_battery_j: float
    first_depletion_round: int | None
    median_depletion_round: int | None
    depleted_fraction: float
    straggler_fraction: float
    packet_loss_fraction: float


def simulate_full_power(
    config: WirelessConfig | None = None,
    num_devices: int = 10,
    *,
    bits: float = 1.5e5,
    local_steps: int = 5,
    batch_size: int = 16,
    rounds: int = 100,
    rng: np.random.Generator,
) -> DrainSummary:
    """Run ``rounds`` rounds in which the available devices upload at ``p_max``.

    Every round selects up to ``num_subchannels`` available devices in round-robin order (all of
    them when ``num_devices <= num_subchannels``). Use it to calibrate battery sizes against an
    episode length.

    Args:
        config: Physical parameters (defaults if ``None``).
        num_devices: ``K``.
        bits: Upload size per device and round.
        local_steps: Local steps per round.
        batch_size: Samples per local step.
        rounds: Rounds to simulate.
        rng: Source of every draw.

    Returns:
        The :class:`DrainSummary`.
    """
    check_int("rounds", rounds, minimum=1)
    cell = WirelessCell(config, num_devices)
    cell.reset(rng)
    cfg, k = cell.config, num_devices
    compute = transmit = max_energy = 0.0
    transmissions = stragglers = lost = 0
    never = rounds  # marks a device that outlived the simulation
    depleted_at = np.full(k, never)
    for t in range(rounds):
        # Round robin: rotate a priority over the devices and take the first M available.
        priority = (np.arange(k) - t * cfg.num_subchannels) % k
        priority = np.where(cell.available, priority, k + np.arange(k))
        selected = np.zeros(k, dtype=bool)
        selected[np.argsort(priority, kind="stable")[: cfg.num_subchannels]] = True
        selected &= cell.available
        report = cell.uplink(selected, cfg.p_max_w, bits, local_steps, batch_size, rng)
        compute += float(report.compute_energy_j.sum())
        transmit += float(report.transmit_energy_j.sum())
        max_energy = max(max_energy, float(report.energy_j.max()))
        transmissions += int(report.transmitted.sum())
        stragglers += int(report.straggler.sum())
        lost += int(report.packet_lost.sum())
        depleted_at = np.where(~cell.available & (depleted_at == never), t, depleted_at)
        if not cell.available.any():
            break
        cell.advance(rng)
    per = max(transmissions, 1)
    ordered = np.sort(depleted_at)
    first, median = int(ordered[0]), int(ordered[(k - 1) // 2])
    return DrainSummary(
        rounds=t + 1,
        compute_energy_j=compute / per,
        transmit_energy_j=transmit / per,
        max_energy_j=max_energy,
        mean_battery_j=float(cell.battery_capacity_j.mean()),
        first_depletion_round=first if first < never else None,
        median_depletion_round=median if median < never else None,
        depleted_fraction=float(np.mean(depleted_at < never)),
        straggler_fraction=stragglers / per,
        packet_loss_fraction=lost / per,
    )


if __name__ == "__main__":
    summary = simulate_full_power(rng=np.random.default_rng(0))
    for f in fields(summary):
        print(f"{f.name:>24}: {getattr(summary, f.name)}")
