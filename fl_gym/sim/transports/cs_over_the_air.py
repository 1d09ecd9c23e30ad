"""The compressive-sensing over-the-air transport of the round pipeline (Amiri and Gunduz,
"Machine learning at the wireless edge: distributed stochastic gradient descent over-the-air",
IEEE TSP 2020, A-DSGD).

:class:`CSOverTheAir` is a :class:`~fl_gym.sim.stages.Transport`: every selected device adds its
error-accumulation residual to its update, keeps the ``density`` largest-magnitude entries,
scales them by its data share, projects them with a pseudo-random Gaussian matrix shared by all
(``s = measurement_ratio * d`` rows, drawn for the round) and sends the ``s`` measurements in
analog at the same time, aligned by channel inversion; the server recovers the sparse weighted
sum with normalised iterative hard thresholding
(:func:`~fl_gym.sim.radio.over_the_air.cs_ota_aggregate`, whose physics this module only
composes with the federation). What a device's top-k dropped stays in its residual, the
federation's ``residual`` rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from fl_gym.sim.config import check_int, check_real
from fl_gym.sim.radio.over_the_air import cs_ota_aggregate, ota_channels, receive_beamformer
from fl_gym.sim.stages import RoundStart
from fl_gym.sim.transports.over_the_air import OverTheAir

if TYPE_CHECKING:
    from fl_gym.sim.learning.federation import Federation

__all__ = ["CSOverTheAir"]

_SEED_HIGH = 2**62


@dataclass
class CSOverTheAir(OverTheAir):
    """Compressive-sensing over-the-air aggregation with error accumulation, as a transport.

    Every selected device trains; those whose compute time plus the airtime ``s / B`` fit the
    deadline and whose battery covers the round then transmit. The base station combines its
    antennas with a receive beamformer designed for the transmitting set (as
    :class:`~fl_gym.sim.transports.OverTheAir` does, equal weights), every device inverts its
    beamformed gain ``g_k`` to the aligned receive power ``rho0 = P0 min_k g_k`` (the weakest
    device at the budget ``P0``) and so transmits at ``rho0 / g_k`` per unit-power symbol, an
    upper bound of its average power. The server's estimate of the sample-weighted average of
    the sparsified updates, receiver noise ``N0 B`` per measurement included, is the aggregate;
    ``aggregation_mse`` reports its squared error per parameter against that average without
    noise or recovery error. Energy: compute as in the digital round, transmit = power x
    airtime. No sub-channel limit and no compression stage.

    Args:
        power_scale: ``P0`` as a fraction of ``p_max``, in (0, 1]; ``None`` (the default) takes
            each round's budget from its plan (the largest power of a selected device).
        density: Fraction of its entries each device keeps (top-k), in (0, 1].
        measurement_ratio: Measurements (channel uses) per parameter, ``s / d``, in (0, 1].
        recovery_fraction: The server recovers the ``floor(recovery_fraction * s)`` largest
            entries of the sum (at least one), in (0, 1].
        num_iterations: NIHT iterations of the recovery, >= 1.
    """

    density: float = 0.01
    measurement_ratio: float = 0.5
    recovery_fraction: float = 0.2
    num_iterations: int = 30
    name: str = field(default="cs-over-the-air", init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("density", "measurement_ratio", "recovery_fraction"):
            check_real(name, getattr(self, name), low=0.0, high=1.0, low_open=True)
        check_int("num_iterations", self.num_iterations, minimum=1)

    def sizes(self, num_params: int) -> tuple[int, int, int]:
        """``(entries kept per device, measurements s, entries recovered)`` for ``d`` parameters."""
        keep = max(1, round(self.density * num_params))
        measurements = max(1, round(self.measurement_ratio * num_params))
        # The guard keeps e.g. 0.2 * 2405 (481.00000000000006) and 0.3 * 10 (3.0000000000000004)
        # at their decimal values.
        recovered = max(1, math.floor(self.recovery_fraction * measurements + 1e-9))
        return keep, measurements, recovered

    def _airtime_s(self, fed: Federation) -> float:
        """``s / B``: one channel use per measurement over the whole band."""
        assert fed.cell is not None
        return self.sizes(fed.num_params)[1] / fed.cell.config.bandwidth_hz

    def _aggregate(
        self,
        fed: Federation,
        start: RoundStart,
        updates: torch.Tensor,
        send_ids: np.ndarray,
        p0: float,
        channels: object,
    ) -> tuple[torch.Tensor, np.ndarray, float, float]:
        cell = fed.cell
        assert cell is not None
        cfg = cell.config
        keep, measurements, recovered = self.sizes(fed.num_params)
        if fed.residual is None:
            fed.residual = torch.zeros(
                fed.num_clients, fed.num_params, dtype=fed.params.dtype, device=fed.device
            )
        ids = torch.as_tensor(send_ids, device=fed.device)
        corrected = updates + fed.residual[ids]
        gains = ota_channels(cell.large_scale_gain[send_ids], cell.fading[send_ids])
        beamformer = receive_beamformer(
            gains, np.ones(send_ids.size), num_iterations=20, num_starts=1
        ).beamformer
        aligned = np.abs(gains @ beamformer.conj()) ** 2  # |m^H h_k|^2
        rho0 = p0 * float(aligned.min())
        weights = fed.data.client_sizes[send_ids].astype(np.float64)
        seed = int(torch.randint(0, _SEED_HIGH, (1,), generator=start.generator).item())
        result = cs_ota_aggregate(
            corrected,
            sparsity=keep,
            num_measurements=measurements,
            matrix_seed=seed,
            receive_power_w=rho0,
            noise_power_w=cfg.noise_psd_w_per_hz * cfg.bandwidth_hz,
            weights=weights,
            recovery_sparsity=recovered,
            generator=start.generator,
            num_iterations=int(self.num_iterations),
        )
        fed.residual[ids] = corrected - result.sparse_updates
        share = torch.as_tensor(weights / weights.sum(), dtype=torch.float64, device=fed.device)
        exact = share @ result.sparse_updates.to(torch.float64)
        mse = float((result.aggregate.to(torch.float64) - exact).pow(2).mean())
        transmit_w = np.divide(rho0, aligned, out=np.zeros_like(aligned), where=aligned > 0)
        return result.aggregate, transmit_w, mse, float(measurements)
