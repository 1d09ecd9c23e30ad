"""Channel formulas of the radio side, vectorised over devices: dBm conversions, the path loss
``PL(d) = 128.1 + 37.6 log10(d / 1 km)`` dB, the Jakes correlation ``J0(2 pi f_d T)`` of block
fading across rounds and the sum-of-sinusoids fading that has it at every lag, Shannon rates and
the packet error probability ``q = 1 - exp(-m B N0 / (p g))`` of Chen, Yang, Saad, Poor and Cui
(IEEE TWC 2021); and the read-only array helpers the radio records share.

First-order Gauss-Markov fading with ``rho = J0(2 pi f_d T)`` (the default of
:class:`~fl_gym.sim.radio.cell.WirelessCell`) has correlation ``rho^n`` at a lag of ``n``
rounds: it agrees with Jakes' ``J0(2 pi f_d n T)`` at ``n = 1`` only, decays monotonically where
Jakes' oscillates, and never decorrelates fully at finite lag. The cell's ``fading_sinusoids``
option uses :func:`sum_of_sinusoids` instead.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import j0

from fl_gym.sim.config import check_positive

__all__ = [
    "dbm_to_w",
    "jakes_correlation",
    "packet_error_probability",
    "path_loss_db",
    "shannon_rate_bps",
    "sum_of_sinusoids",
    "w_to_dbm",
]

_LN2 = math.log(2.0)


# -- pure functions ----------------------------------------------------------------------------


def _finite_array(value: ArrayLike, name: str, *, minimum: float | None = 0.0) -> np.ndarray:
    """``value`` as a float64 array, or a ValueError naming ``name`` if NaN/inf/below minimum."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be numeric, got {value!r}") from exc
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if minimum is not None and np.any(arr < minimum):
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return arr


def dbm_to_w(x: ArrayLike) -> np.ndarray:
    """Convert a power from dBm to watts: ``10^((x - 30) / 10)``.

    Args:
        x: Power in dBm (any finite real; ``-inf`` gives 0 W).

    Returns:
        Power in watts, same shape as ``x``.
    """
    arr = np.asarray(x, dtype=np.float64)
    if not (arr < np.inf).all():  # NaN or +inf
        raise ValueError(f"power in dBm must be finite or -inf, got {x!r}")
    return np.power(10.0, (arr - 30.0) / 10.0)


def w_to_dbm(x: ArrayLike) -> np.ndarray:
    """Convert a power from watts to dBm: ``10 log10(x) + 30``.

    Args:
        x: Power in watts, finite and ``>= 0``.

    Returns:
        Power in dBm, same shape as ``x``; 0 W maps to ``-inf`` dBm.
    """
    arr = _finite_array(x, "power in watts")
    positive = arr > 0
    out = np.full(arr.shape, -np.inf)
    np.log10(arr, out=out, where=positive)
    return np.where(positive, 10.0 * out + 30.0, -np.inf)


def path_loss_db(
    distance_m: ArrayLike, intercept_db: float = 128.1, slope_db: float = 37.6
) -> np.ndarray:
    """Log-distance path loss ``intercept + slope * log10(d / 1 km)`` in dB (3GPP TR 36.814 macro).

    Args:
        distance_m: BS-device distance in metres, finite and ``> 0``.
        intercept_db: Path loss at 1 km, dB.
        slope_db: dB per decade of distance (10 times the path-loss exponent).

    Returns:
        Path loss in dB, same shape as ``distance_m``.
    """
    d = _finite_array(distance_m, "distance_m")
    if np.any(d <= 0):
        raise ValueError(f"distance_m must be > 0 m, got {distance_m!r}")
    return intercept_db + slope_db * np.log10(d / 1000.0)


def jakes_correlation(doppler_hz: float, interval_s: float) -> float:
    """Correlation of Rayleigh fading samples ``interval_s`` apart under Jakes' model.

    Used as the coefficient ``rho`` of first-order Gauss-Markov fading across rounds, it fixes
    the correlation at a lag of one round only: the Gauss-Markov process has correlation
    ``rho^n`` at ``n`` rounds, not ``J0(2 pi f_d n T)``. :func:`sum_of_sinusoids` has Jakes'
    correlation at every lag.

    Args:
        doppler_hz: Maximum Doppler frequency ``f_d`` in Hz, ``>= 0``.
        interval_s: Time between the two samples ``T`` in seconds, ``>= 0``.

    Returns:
        ``J0(2 pi f_d T)``, in ``[-0.403, 1]``.
    """
    check_positive("doppler_hz", doppler_hz, allow_zero=True)
    check_positive("interval_s", interval_s, allow_zero=True)
    return float(j0(2.0 * math.pi * doppler_hz * interval_s))


def sum_of_sinusoids(phase: np.ndarray) -> np.ndarray:
    """Fading as a sum of unit-power sinusoids: ``sum_m exp(j phase_m) / sqrt(M)`` over the
    last axis.

    With phases ``phi_m + 2 pi f_d t cos(alpha_m)``, each angle ``alpha_m`` uniform on the circle
    and the ``phi_m`` independent and uniform, ``E[h(t) conj(h(t + tau))] = J0(2 pi f_d tau)``
    at every lag (Clarke's model; Jakes' correlation), and ``E|h|^2 = 1``.

    Args:
        phase: ``(..., M)`` phases of the ``M`` sinusoids.

    Returns:
        ``(...)`` complex fading.
    """
    m = phase.shape[-1]
    return np.exp(1j * phase).sum(axis=-1) / math.sqrt(m)


def _snr(
    bandwidth_hz: ArrayLike, power_w: ArrayLike, gain: ArrayLike, noise_psd_w_per_hz: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Received power ``p g``, noise power ``B N0`` and their validated broadcast."""
    b = _finite_array(bandwidth_hz, "bandwidth_hz")
    p = _finite_array(power_w, "power_w")
    g = _finite_array(gain, "gain")
    n0 = _finite_array(noise_psd_w_per_hz, "noise_psd_w_per_hz")
    if np.any(n0 <= 0):
        raise ValueError(f"noise_psd_w_per_hz must be > 0, got {noise_psd_w_per_hz!r}")
    received_w, noise_w = np.broadcast_arrays(p * g, b * n0)
    return received_w, noise_w, np.broadcast_to(b, received_w.shape)


def shannon_rate_bps(
    bandwidth_hz: ArrayLike, power_w: ArrayLike, gain: ArrayLike, noise_psd_w_per_hz: ArrayLike
) -> np.ndarray:
    """Shannon capacity ``B log2(1 + p g / (B N0))`` of an AWGN link in bit/s.

    Args:
        bandwidth_hz: Bandwidth ``B`` in Hz, ``>= 0`` (0 gives rate 0).
        power_w: Transmit power ``p`` in watts, ``>= 0``.
        gain: Channel power gain ``g`` (linear), ``>= 0``.
        noise_psd_w_per_hz: Noise power spectral density ``N0`` in W/Hz, ``> 0``.

    Returns:
        Rate in bit/s, the broadcast shape of the arguments.
    """
    received_w, noise_w, b = _snr(bandwidth_hz, power_w, gain, noise_psd_w_per_hz)
    return _rate(received_w, noise_w, b)


def _rate(received_w: np.ndarray, noise_w: np.ndarray, b: ArrayLike) -> np.ndarray:
    """Shannon rate on validated, broadcast inputs."""
    snr = np.divide(received_w, noise_w, out=np.zeros(np.shape(received_w)), where=noise_w > 0)
    # log1p keeps the low-SNR regime (cell edge, deep fades) accurate.
    return b * np.log1p(snr) / _LN2


def packet_error_probability(
    power_w: ArrayLike,
    gain: ArrayLike,
    bandwidth_hz: ArrayLike,
    noise_psd_w_per_hz: ArrayLike,
    waterfall: float = 0.023,
) -> np.ndarray:
    """Packet error probability ``q = 1 - exp(-m B N0 / (p g))`` (Chen et al., IEEE TWC 2021).

    Args:
        power_w: Transmit power ``p`` in watts, ``>= 0``.
        gain: Channel power gain ``g`` (linear), ``>= 0``.
        bandwidth_hz: Bandwidth ``B`` in Hz, ``>= 0``.
        noise_psd_w_per_hz: Noise power spectral density ``N0`` in W/Hz, ``> 0``.
        waterfall: Waterfall threshold ``m`` (linear), ``> 0``.

    Returns:
        ``q`` in ``[0, 1]``; 1 wherever nothing is received (``p g = 0``).
    """
    check_positive("waterfall", waterfall)
    received_w, noise_w, _ = _snr(bandwidth_hz, power_w, gain, noise_psd_w_per_hz)
    return _packet_error(received_w, noise_w, waterfall)


def _packet_error(received_w: np.ndarray, noise_w: ArrayLike, waterfall: float) -> np.ndarray:
    """Packet error probability on validated inputs."""
    inverse_snr = np.divide(
        waterfall * noise_w,
        received_w,
        out=np.full(np.shape(received_w), np.inf),
        where=received_w > 0,
    )
    # -expm1(-x) is 1 - exp(-x) without cancellation at high SNR; exp(-inf) = 0 gives q = 1.
    return -np.expm1(-inverse_snr)


# -- read-only arrays ----------------------------------------------------------------------------


def _view(a: np.ndarray) -> np.ndarray:
    # The cell replaces its arrays instead of writing into them, so a read-only view never
    # changes after it was handed out.
    v = a.view()
    v.setflags(write=False)
    return v
