"""Broadband analog aggregation (BAA) over OFDM with truncated channel inversion.

After Zhu, Wang and Huang, "Broadband Analog Aggregation for Low-Latency Federated Edge
Learning", IEEE TWC 2020 (arXiv 1812.11494). The band ``B`` is split into ``M`` sub-carriers of
``B / M``; the ``d`` entries of every update are laid out entry ``i`` on sub-carrier
``i mod M`` of OFDM symbol ``i // M``, so a round takes ``ceil(d / M)`` OFDM symbols of
``M / B`` seconds each. The K scheduled devices transmit at the same time; the channel of device
``k`` on sub-carrier ``m`` is ``h_km = sqrt(G_k) f_km`` with ``G_k`` its large-scale gain and
``f_km ~ CN(0, 1)`` independent over devices and sub-carriers (frequency-selective Rayleigh
fading, constant over the round).

Truncated channel inversion: device ``k`` stays silent on every sub-carrier whose small-scale gain
``|f_km|^2`` is below the threshold ``g_th`` (its entries there are truncated) and inverts the
others, sending ``sqrt(rho0) h_km^* / |h_km|^2`` times its symbol, so all active devices arrive
aligned at the receive power ``rho0``. The paper ties ``rho0`` to the power budget through the
threshold: with ``|f|^2 ~ Exp(1)``, the expected power a device spends on one sub-carrier is
``rho0 E1(g_th) / G_k`` (``E1`` the exponential integral), so the weakest scheduled device meets
an average budget ``p_max`` spread over ``M`` sub-carriers when
``rho0 = p_max G_min / (M E1(g_th))`` (:func:`baa_receive_power`). A round's realised power
can exceed that expectation, so the scheme here also caps ``rho0`` by the round's realised
power: no device ever averages more than ``p_max`` over the round
(:func:`broadband_analog_aggregate`).

Aggregation: device ``k`` sends its update scaled by its weight ``w_k`` (sample count); the server
divides each entry by ``sqrt(rho0)`` and by the summed weight of the devices active on its
sub-carrier, so without noise and without truncation it returns exactly the weighted average
(FedAvg), and with truncation the weighted average of the devices that were not truncated there.
Symbols are normalised by one common scale as in :mod:`fl_gym.sim.radio.over_the_air`; the
in-phase component carries the value and the server keeps the real part.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy.special import exp1

from fl_gym.sim.config import check_int, check_positive
from fl_gym.sim.radio.over_the_air import _check_noise, _check_updates

__all__ = [
    "BAAResult",
    "baa_airtime_s",
    "baa_receive_power",
    "broadband_analog_aggregate",
    "broadband_fading",
    "expected_truncation_ratio",
]


@dataclass(frozen=True, eq=False)
class BAAResult:
    """Outcome of one broadband analog aggregation.

    Attributes:
        aggregate: ``(d,)`` estimate of the weighted average of the updates (per entry, of the
            devices not truncated on its sub-carrier; zero where every device was truncated).
        active: ``(K, M)`` bool, sub-carriers each device transmitted on.
        truncation_ratio: Fraction of the ``K d`` entries that were truncated.
        receive_power_w: The aligned receive power ``rho0`` per sub-carrier (unit-power symbol).
        transmit_power_w: ``(K,)`` each device's average transmit power over the round (summed
            over the sub-carriers), never above ``p_max_w``.
        aggregate_mse: Expected squared error the receiver noise adds to one entry of
            ``aggregate``, averaged over the entries that carry a value.
        num_symbols: OFDM symbols of the round, ``ceil(d / M)``.
        airtime_s: Duration of the transmission, ``num_symbols * M / B``.
        channel_uses: Sub-carrier uses spent, ``num_symbols * M``.
    """

    aggregate: torch.Tensor
    active: np.ndarray
    truncation_ratio: float
    receive_power_w: float
    transmit_power_w: np.ndarray
    aggregate_mse: float
    num_symbols: int
    airtime_s: float
    channel_uses: int


def baa_airtime_s(num_params: int, num_subcarriers: int, bandwidth_hz: float) -> float:
    """Airtime of one BAA round: ``ceil(d / M)`` OFDM symbols of ``M / B`` seconds.

    Args:
        num_params: Entries ``d`` of an update.
        num_subcarriers: Sub-carriers ``M``.
        bandwidth_hz: Total bandwidth ``B``.

    Returns:
        The airtime in seconds (``d / B`` when ``M`` divides ``d``).
    """
    d = check_int("num_params", num_params, minimum=1)
    m = check_int("num_subcarriers", num_subcarriers, minimum=1)
    b = check_positive("bandwidth_hz", bandwidth_hz)
    return math.ceil(d / m) * m / b


def expected_truncation_ratio(gain_threshold: float) -> float:
    """Expected fraction of truncated entries under Rayleigh fading, ``1 - exp(-g_th)``."""
    g = float(gain_threshold)
    if not math.isfinite(g) or g < 0.0:
        raise ValueError(f"gain_threshold must be finite and >= 0, got {gain_threshold}")
    return -math.expm1(-g)


def baa_receive_power(
    large_scale_gain: ArrayLike, *, p_max_w: float, gain_threshold: float, num_subcarriers: int
) -> float:
    """The paper's aligned receive power ``rho0 = p_max G_min / (M E1(g_th))``.

    The weakest device (smallest large-scale gain) then spends on average exactly ``p_max``
    over its ``M`` sub-carriers; every other device spends less.

    Args:
        large_scale_gain: ``(K,)`` linear large-scale gains of the scheduled devices.
        p_max_w: Average transmit power budget of a device.
        gain_threshold: Truncation threshold ``g_th`` on the small-scale gain, > 0 (with
            ``g_th = 0`` the expected inverse gain is infinite).
        num_subcarriers: Sub-carriers ``M``.

    Returns:
        ``rho0`` in watts.
    """
    gain = np.asarray(large_scale_gain, dtype=np.float64)
    if gain.ndim != 1 or gain.size == 0 or not np.all(np.isfinite(gain)) or np.any(gain <= 0):
        raise ValueError(f"large_scale_gain must be a non-empty 1-D array of > 0, got {gain}")
    p = check_positive("p_max_w", p_max_w)
    g = check_positive("gain_threshold", gain_threshold)
    m = check_int("num_subcarriers", num_subcarriers, minimum=1)
    return p * float(gain.min()) / (m * float(exp1(g)))


def broadband_fading(
    rng: np.random.Generator, num_devices: int, num_subcarriers: int
) -> np.ndarray:
    """``(K, M)`` i.i.d. ``CN(0, 1)`` small-scale fading, one coefficient per sub-carrier."""
    k = check_int("num_devices", num_devices, minimum=0)
    m = check_int("num_subcarriers", num_subcarriers, minimum=1)
    draws = rng.standard_normal((k, m, 2))
    return (draws[..., 0] + 1j * draws[..., 1]) / math.sqrt(2.0)


def broadband_analog_aggregate(
    updates: torch.Tensor,
    weights: ArrayLike,
    large_scale_gain: ArrayLike,
    fading: ArrayLike,
    *,
    gain_threshold: float,
    p_max_w: float,
    bandwidth_hz: float,
    noise_psd_w_per_hz: float,
    generator: torch.Generator | None = None,
) -> BAAResult:
    """Aggregate updates by broadband analog aggregation with truncated channel inversion.

    ``rho0`` is the smaller of :func:`baa_receive_power` (the paper's expected-power rule) and
    the largest value at which every device's realised average power over this round stays within
    ``p_max_w``; the noise on a sub-carrier has power ``N0 B / M``.

    Args:
        updates: ``(K, d)`` float updates of the scheduled devices.
        weights: ``(K,)`` positive weights (sample counts).
        large_scale_gain: ``(K,)`` linear large-scale gains ``G_k`` (> 0).
        fading: ``(K, M)`` complex small-scale fading per sub-carrier
            (:func:`broadband_fading`); ``M`` is the number of sub-carriers.
        gain_threshold: Truncation threshold ``g_th`` on ``|f_km|^2``, > 0.
        p_max_w: Average transmit power budget of a device over the round.
        bandwidth_hz: Total bandwidth ``B``.
        noise_psd_w_per_hz: Receiver noise spectral density ``N0`` (0 for a noiseless channel).
        generator: Draws the receiver noise; required when ``noise_psd_w_per_hz > 0``.

    Returns:
        The aggregate, truncation, powers, error and airtime of the round.
    """
    u = _check_updates(updates)
    num_devices, dim = u.shape
    phi = np.asarray(weights, dtype=np.float64)
    if phi.shape != (num_devices,) or not np.all(np.isfinite(phi)) or np.any(phi <= 0.0):
        raise ValueError(f"weights must be finite, > 0 and of shape ({num_devices},), got {phi}")
    gain = np.asarray(large_scale_gain, dtype=np.float64)
    if gain.shape != (num_devices,) or not np.all(np.isfinite(gain)) or np.any(gain <= 0.0):
        raise ValueError(
            f"large_scale_gain must be finite, > 0 and of shape ({num_devices},), got {gain}"
        )
    f = np.asarray(fading).astype(np.complex128)
    if f.ndim != 2 or f.shape[0] != num_devices or f.shape[1] == 0 or not np.all(np.isfinite(f)):
        raise ValueError(f"fading must be finite of shape ({num_devices}, M), got {f.shape}")
    threshold = check_positive("gain_threshold", gain_threshold)
    p_max = check_positive("p_max_w", p_max_w)
    bandwidth = check_positive("bandwidth_hz", bandwidth_hz)
    n0 = check_positive("noise_psd_w_per_hz", noise_psd_w_per_hz, allow_zero=True)
    num_sc = f.shape[1]
    sigma2 = _check_noise(n0 * bandwidth / num_sc, generator)

    num_symbols = math.ceil(dim / num_sc)
    airtime = num_symbols * num_sc / bandwidth
    small = f.real**2 + f.imag**2
    active = small >= threshold  # (K, M)
    carrier = np.arange(dim) % num_sc  # sub-carrier of every entry
    device = u.device

    # Symbols: weighted updates over one common scale (each device's mean power <= 1).
    share = phi / phi.sum()
    weighted = u.to(torch.float64) * torch.as_tensor(share, device=device)[:, None]
    rms = weighted.pow(2).mean(dim=1).sqrt()
    scale = float(rms.max()) if float(rms.max()) > 0.0 else 1.0
    symbols = weighted / scale  # (K, d)

    # Per entry, the power factor of a unit-rho0 inversion: 1 / (G_k |f_km|^2) where active.
    inverse = np.where(active, 1.0 / (gain[:, None] * np.where(active, small, 1.0)), 0.0)
    entry_inverse = torch.as_tensor(inverse[:, carrier], device=device)  # (K, d)
    # Average power over the round per unit rho0: sum over entries / number of symbols.
    unit_power = (entry_inverse * symbols.pow(2)).sum(dim=1).cpu().numpy() / num_symbols
    rho0 = baa_receive_power(gain, p_max_w=p_max, gain_threshold=threshold, num_subcarriers=num_sc)
    peak = float(unit_power.max())
    if peak > 0.0:
        rho0 = min(rho0, p_max / peak)
    transmit_power = rho0 * unit_power

    entry_active = torch.as_tensor(active[:, carrier], device=device)  # (K, d)
    # The channel aligns every active device at sqrt(rho0): the received superposition.
    received = math.sqrt(rho0) * torch.where(entry_active, symbols, 0.0).sum(dim=0)
    if sigma2 > 0.0:
        noise = torch.randn((dim,), dtype=torch.float64, generator=generator, device=device)
        received = received + noise * math.sqrt(sigma2 / 2.0)
    active_share = torch.as_tensor(share, device=device)[:, None] * entry_active
    denominator = active_share.sum(dim=0)  # (d,) summed share of the devices active there
    carries = denominator > 0
    aggregate = torch.where(
        carries,
        received * scale / (math.sqrt(rho0) * torch.where(carries, denominator, 1.0)),
        0.0,
    )
    per_entry_mse = torch.where(
        carries, scale**2 * sigma2 / (2.0 * rho0 * torch.where(carries, denominator, 1.0) ** 2), 0.0
    )
    num_carrying = int(carries.sum())
    mse = float(per_entry_mse.sum()) / num_carrying if num_carrying else 0.0
    truncated = float((~entry_active).sum()) / (num_devices * dim)
    return BAAResult(
        aggregate=aggregate.to(u.dtype),
        active=active,
        truncation_ratio=truncated,
        receive_power_w=float(rho0),
        transmit_power_w=transmit_power,
        aggregate_mse=mse,
        num_symbols=num_symbols,
        airtime_s=airtime,
        channel_uses=num_symbols * num_sc,
    )
