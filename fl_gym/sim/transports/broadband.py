"""The broadband analog aggregation transport of the round pipeline (Zhu, Wang, Huang, TWC 2020).

:class:`BroadbandAnalog` is a :class:`~fl_gym.sim.stages.Transport`: the selected devices train,
then transmit their raw updates at the same time over ``num_subcarriers`` OFDM sub-carriers of
the cell's band, each sub-carrier with its own Rayleigh fading drawn for the round, with
truncated channel inversion tied to the power budget
(:func:`~fl_gym.sim.radio.broadband_analog.broadband_analog_aggregate`). Its physics lives in
:mod:`fl_gym.sim.radio.broadband_analog`; this module only composes it with the federation.
"""

from __future__ import annotations

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
from fl_gym.sim.stages import RoundStart
from fl_gym.sim.transports.over_the_air import OverTheAir

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

    def _airtime_s(self, fed: Federation) -> float:
        """``ceil(d / M) M / B``: the entries spread over the ``M`` sub-carriers."""
        assert fed.cell is not None
        return baa_airtime_s(fed.num_params, self.num_subcarriers, fed.cell.config.bandwidth_hz)

    def _draw_channels(self, fed: Federation, rng: np.random.Generator) -> np.ndarray:
        """``(K, M)`` sub-carrier fading of every device (so the draws do not depend on who
        transmits)."""
        return broadband_fading(rng, fed.num_clients, self.num_subcarriers)

    def _aggregate(
        self,
        fed: Federation,
        start: RoundStart,
        updates: torch.Tensor,
        send_ids: np.ndarray,
        p0: float,
        channels: np.ndarray,
    ) -> tuple[torch.Tensor, np.ndarray, float, float]:
        cell = fed.cell
        assert cell is not None
        cfg = cell.config
        result = broadband_analog_aggregate(
            updates,
            fed.data.client_sizes[send_ids].astype(np.float64),
            cell.large_scale_gain[send_ids],
            channels[send_ids],
            gain_threshold=float(self.gain_threshold),
            p_max_w=p0,
            bandwidth_hz=cfg.bandwidth_hz,
            noise_psd_w_per_hz=cfg.noise_psd_w_per_hz,
            generator=start.generator,
        )
        return (
            result.aggregate,
            result.transmit_power_w,
            float(result.aggregate_mse),
            float(result.channel_uses),
        )
