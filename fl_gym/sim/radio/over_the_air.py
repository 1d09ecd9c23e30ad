"""Over-the-air (analog) aggregation: the channel itself sums the clients' updates.

Three schemes, as pure functions over stacked ``(K, d)`` float updates (numpy for the complex
beamforming maths, torch for pushing the updates through the channel):

- :func:`ota_aggregate`: receive beamforming with zero-forcing transmit scalars, after Yang,
  Jiang, Shi and Ding, "Federated Learning via Over-the-Air Computation", IEEE TWC 2020. The
  target is ``g = sum_k phi_k s_k`` with ``phi_k = |D_k|``; device ``k`` sends
  ``b_k = sqrt(eta) phi_k (m^H h_k)^* / |m^H h_k|^2``, ``eta = P0 min_k |m^H h_k|^2 / phi_k^2``,
  the BS forms ``g_hat = m^H y / sqrt(eta)`` and the error has the closed-form MSE
  ``(sigma^2 / P0) max_k phi_k^2 ||m||^2 / |m^H h_k|^2``. :func:`receive_beamformer` designs
  ``m`` and :func:`select_ota_devices` chooses the devices (all, strongest, or the largest set
  meeting an MSE target).
- :func:`cs_ota_aggregate`: compressive-sensing over-the-air aggregation. Devices top-k sparsify,
  project with a shared Gaussian matrix and transmit the ``s`` measurements in analog; the server
  recovers the sparse sum by normalised iterative hard thresholding (:func:`niht_recover`).

Symbols. The papers assume unit-power symbols. Real updates are mapped to symbols by one common
scale ``c`` (the largest per-device root-mean-square of what the devices send), which the server
learns as side information (one scalar per round, noiseless, negligible against ``d`` channel
uses); each device then meets its power budget on average over the round. Every entry of an
update is one channel use carrying a real value on the in-phase component; the server keeps the
real part of its estimate, so the quadrature noise is discarded and the per-entry error of the
returned aggregate is half the complex MSE, rescaled by ``c^2`` and by the normalisation of the
average. Both numbers are returned (``mse`` in the paper's units, ``aggregate_mse`` in the
units of the aggregate).

Noise draws take an explicit ``torch.Generator``; no function touches a global random state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy.optimize import minimize

from fl_gym.sim.config import check_int, check_positive, check_rows
from fl_gym.sim.threads import single_blas_thread

__all__ = [
    "BeamformerDesign",
    "CSOTAResult",
    "OTAResult",
    "cs_ota_aggregate",
    "gaussian_measurement_matrix",
    "niht_recover",
    "ota_aggregate",
    "ota_channels",
    "ota_mse",
    "receive_beamformer",
    "select_ota_devices",
    "top_k_sparsify",
]

_SELECTION_METHODS = ("all", "greedy_channel", "sparse")


# -- results ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class OTAResult:
    """Outcome of one beamformed over-the-air aggregation.

    Attributes:
        aggregate: ``(d,)`` estimate of the weighted average ``sum_k phi_k u_k / sum_k phi_k``,
            in the input's dtype and on its device.
        mse: Analytic MSE of ``g_hat`` for unit-power symbols, the paper's
            ``(sigma^2 / P0) max_k phi_k^2 ||m||^2 / |m^H h_k|^2``.
        aggregate_mse: Expected squared error of one entry of ``aggregate``:
            ``c^2 mse / (2 (sum_k phi_k)^2)``.
        channel_uses: Channel uses spent, ``d`` (one real entry per use).
        transmit_power_w: ``(K,)`` average transmit power of each device over the round.
        eta: The receive scaling ``eta`` of the paper.
        symbol_scale: The common scale ``c`` mapping updates to symbols.
    """

    aggregate: torch.Tensor
    mse: float
    aggregate_mse: float
    channel_uses: int
    transmit_power_w: np.ndarray
    eta: float
    symbol_scale: float


@dataclass(frozen=True, eq=False)
class BeamformerDesign:
    """A receive beamformer and how good it is.

    Attributes:
        beamformer: ``(N,)`` complex unit-norm receive beamformer ``m``.
        min_gain: ``min_k |m^H h_k|^2 / phi_k^2``, the quantity the MSE is inversely
            proportional to.
        upper_bound: An upper bound on ``min_gain`` over all unit-norm beamformers (the
            Lagrangian dual bound ``min_w lambda_max(sum_k w_k h_k h_k^H / phi_k^2)``, which
            equals the semidefinite relaxation's value); ``min_gain / upper_bound`` certifies
            how close to optimal the design is.
    """

    beamformer: np.ndarray
    min_gain: float
    upper_bound: float


@dataclass(frozen=True, eq=False)
class CSOTAResult:
    """Outcome of one compressive-sensing over-the-air aggregation.

    Attributes:
        aggregate: ``(d,)`` recovered weighted average of the sparsified updates.
        sparse_updates: ``(K, d)`` what each device's sparsifier kept (the caller subtracts it
            from the update for error accumulation).
        measurements: ``(s,)`` the noisy measurements ``A (sum_k w_k x_k) + n`` the server saw.
        channel_uses: Channel uses spent, ``s``.
        noise_variance: Variance of the noise on each measurement, in the units of the update.
    """

    aggregate: torch.Tensor
    sparse_updates: torch.Tensor
    measurements: torch.Tensor
    channel_uses: int
    noise_variance: float


# -- validation ------------------------------------------------------------------------------


def _check_updates(updates: object) -> torch.Tensor:
    # An analog channel cannot carry a NaN: a non-finite entry is a caller's error, not noise.
    return check_rows("updates", updates, min_rows=1, finite=True)


def _check_weights(weights: ArrayLike | torch.Tensor, num_devices: int) -> np.ndarray:
    if isinstance(weights, torch.Tensor):
        weights = weights.detach().cpu().numpy()
    phi = np.asarray(weights, dtype=np.float64)
    if phi.shape != (num_devices,):
        raise ValueError(f"weights must have shape ({num_devices},), got shape {phi.shape}")
    if not np.all(np.isfinite(phi)) or np.any(phi <= 0.0):
        raise ValueError(
            f"weights must be finite and > 0 (sample counts of the selected devices), got {phi}"
        )
    return phi


def _check_channels(channels: ArrayLike, num_devices: int | None) -> np.ndarray:
    h = np.asarray(channels)
    if h.ndim != 2 or h.shape[0] == 0 or h.shape[1] == 0:
        raise ValueError(f"channels must have shape (K, N) with K, N >= 1, got shape {h.shape}")
    if num_devices is not None and h.shape[0] != num_devices:
        raise ValueError(
            f"channels must have one row per device ({num_devices}), got shape {h.shape}"
        )
    h = h.astype(np.complex128)
    if not np.all(np.isfinite(h)):
        raise ValueError("channels hold NaN or infinite entries")
    return h


def _check_noise(noise_power_w: float, generator: torch.Generator | None) -> float:
    sigma2 = check_positive("noise_power_w", noise_power_w, allow_zero=True)
    if sigma2 > 0.0 and generator is None:
        raise ValueError(
            "a torch.Generator is required to draw receiver noise when noise_power_w > 0"
        )
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return sigma2


def _complex_noise(
    shape: tuple[int, ...], variance: float, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """``CN(0, variance)`` entries (torch's complex normal has unit total variance)."""
    if variance == 0.0:
        return torch.zeros(shape, dtype=torch.complex128, device=device)
    noise = torch.randn(shape, dtype=torch.complex128, generator=generator, device=device)
    return noise * math.sqrt(variance)


def _symbol_scale(rows: torch.Tensor) -> float:
    """Largest per-row root-mean-square: dividing by it keeps every row's mean power <= 1."""
    scale = float(rows.pow(2).mean(dim=1).sqrt().max()) if rows.numel() else 0.0
    # An all-zero round carries nothing; any positive scale sends the zeros exactly.
    return scale if scale > 0.0 else 1.0


def _reported_mse_scale(rows: torch.Tensor) -> float:
    """:func:`_symbol_scale` for the reported ``aggregate_mse``: float64 in numpy, summed in a
    fixed (pairwise) order, so the reported MSE does not depend on how many threads torch
    reduces with.

    The transmission keeps :func:`_symbol_scale` (the aggregate divides it out again, and the
    transmit powers and energies it sets are part of the environments' recorded dynamics); the two
    differ by at most a few units in the last place.
    """
    if not rows.numel():
        return 1.0
    values = rows.detach().to(device="cpu", dtype=torch.float64).numpy()
    scale = float(np.sqrt(np.mean(values * values, axis=1)).max())
    return scale if scale > 0.0 else 1.0


# -- channels and the beamformed scheme ------------------------------------------------------


def ota_channels(large_scale_gain: ArrayLike, fading: ArrayLike) -> np.ndarray:
    """Channel vectors ``h_k = sqrt(large_scale_gain_k) * fading_k`` of the over-the-air model.

    Args:
        large_scale_gain: ``(K,)`` linear large-scale gains (``WirelessCell.large_scale_gain``).
        fading: ``(K, N)`` complex small-scale fading (``WirelessCell.fading``).

    Returns:
        ``(K, N)`` complex channels.
    """
    gain = np.asarray(large_scale_gain, dtype=np.float64)
    h = _check_channels(fading, None)
    if gain.shape != (h.shape[0],) or np.any(gain < 0.0) or not np.all(np.isfinite(gain)):
        raise ValueError(
            f"large_scale_gain must be finite, >= 0 and of shape ({h.shape[0]},), got {gain}"
        )
    return np.sqrt(gain)[:, None] * h


def _beam_gains(h: np.ndarray, phi: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``|m^H h_k|^2 / phi_k^2`` for every device; ``m`` may be ``(N,)`` or ``(C, N)``."""
    inner = m.conj() @ h.T  # (..., K): m^H h_k
    return (inner.real**2 + inner.imag**2) / phi**2


def ota_mse(
    channels: ArrayLike,
    weights: ArrayLike | torch.Tensor,
    beamformer: ArrayLike,
    *,
    power_w: float,
    noise_power_w: float,
) -> float:
    """Analytic MSE ``(sigma^2 / P0) max_k phi_k^2 ||m||^2 / |m^H h_k|^2`` (Yang et al. 2020).

    Args:
        channels: ``(K, N)`` complex channel vectors of the participating devices.
        weights: ``(K,)`` positive weights ``phi_k`` (sample counts).
        beamformer: ``(N,)`` complex receive beamformer ``m``.
        power_w: Per-device transmit power budget ``P0``.
        noise_power_w: Receiver noise power ``sigma^2`` per antenna.

    Returns:
        The MSE of ``g_hat`` for unit-power symbols; ``inf`` when ``m`` is orthogonal to a
        channel.
    """
    h = _check_channels(channels, None)
    phi = _check_weights(weights, h.shape[0])
    m = _check_beamformer(beamformer, h.shape[1])
    p0 = check_positive("power_w", power_w)
    sigma2 = check_positive("noise_power_w", noise_power_w, allow_zero=True)
    worst = float(_beam_gains(h, phi, m).min())
    if worst == 0.0:
        return math.inf
    return sigma2 / p0 * float(np.vdot(m, m).real) / worst


def _check_beamformer(beamformer: ArrayLike, num_antennas: int) -> np.ndarray:
    m = np.asarray(beamformer).astype(np.complex128)
    if m.shape != (num_antennas,):
        raise ValueError(f"beamformer must have shape ({num_antennas},), got shape {m.shape}")
    if not np.all(np.isfinite(m)) or not np.any(m != 0):
        raise ValueError("beamformer must be finite and nonzero")
    return m


def ota_aggregate(
    updates: torch.Tensor,
    weights: ArrayLike | torch.Tensor,
    channels: ArrayLike,
    beamformer: ArrayLike,
    *,
    power_w: float,
    noise_power_w: float,
    generator: torch.Generator | None = None,
) -> OTAResult:
    """Aggregate updates over the air with receive beamforming (Yang et al. 2020).

    Each of the ``d`` entries is one channel use: device ``k`` sends ``b_k s_k`` with
    ``s_k = u_k / c`` (see the module docstring for ``c``), the ``N`` antennas receive
    ``y = sum_k h_k b_k s_k + n`` with ``n ~ CN(0, sigma^2 I)``, and the server forms
    ``g_hat = m^H y / sqrt(eta)`` and returns ``c Re(g_hat) / sum_k phi_k``. With no noise and
    perfect channel knowledge this is weighted FedAvg exactly.

    Args:
        updates: ``(K, d)`` float updates of the participating devices.
        weights: ``(K,)`` positive weights ``phi_k`` (sample counts).
        channels: ``(K, N)`` complex channels, large-scale gain included (:func:`ota_channels`).
        beamformer: ``(N,)`` complex receive beamformer ``m`` (:func:`receive_beamformer`).
        power_w: Per-device average transmit power budget ``P0``.
        noise_power_w: Receiver noise power ``sigma^2`` per antenna and channel use.
        generator: Draws the receiver noise; required when ``noise_power_w > 0``.

    Returns:
        The aggregate, its analytic MSE and the channel uses.
    """
    u = _check_updates(updates)
    num_devices, dim = u.shape
    phi = _check_weights(weights, num_devices)
    h = _check_channels(channels, num_devices)
    m = _check_beamformer(beamformer, h.shape[1])
    p0 = check_positive("power_w", power_w)
    sigma2 = _check_noise(noise_power_w, generator)

    inner = h @ m.conj()  # (K,): m^H h_k
    inner_sq = inner.real**2 + inner.imag**2
    if np.any(inner_sq == 0.0):
        bad = np.flatnonzero(inner_sq == 0.0).tolist()
        raise ValueError(
            f"beamformer is orthogonal to the channels of devices {bad}: zero forcing impossible"
        )
    # Zero forcing: the slowest device (smallest |m^H h_k|^2 / phi_k^2) transmits at P0.
    eta = p0 * float(np.min(inner_sq / phi**2))
    b = math.sqrt(eta) * phi * inner.conj() / inner_sq  # (K,) transmit scalars

    device = u.device
    u64 = u.to(torch.float64)
    scale = _symbol_scale(u64)
    symbols = u64 / scale
    h_t = torch.as_tensor(h, device=device)
    sent = torch.as_tensor(b, device=device)[:, None] * symbols.to(torch.complex128)  # (K, d)
    received = h_t.T @ sent + _complex_noise((h.shape[1], dim), sigma2, generator, device)
    estimate = (torch.as_tensor(m, device=device).conj() @ received) / math.sqrt(eta)
    aggregate = (estimate.real * (scale / float(phi.sum()))).to(u.dtype)

    mse = sigma2 / p0 * float(np.vdot(m, m).real) / float(np.min(inner_sq / phi**2))
    mean_symbol_power = symbols.pow(2).mean(dim=1).cpu().numpy()
    return OTAResult(
        aggregate=aggregate,
        mse=mse,
        aggregate_mse=_reported_mse_scale(u64) ** 2 * mse / (2.0 * float(phi.sum()) ** 2),
        channel_uses=int(dim),
        transmit_power_w=np.abs(b) ** 2 * mean_symbol_power,
        eta=eta,
        symbol_scale=scale,
    )


def receive_beamformer(
    channels: ArrayLike,
    weights: ArrayLike | torch.Tensor,
    *,
    num_iterations: int = 200,
    num_starts: int = 8,
) -> BeamformerDesign:
    """Unit-norm ``m`` maximising ``min_k |m^H h_k|^2 / phi_k^2``, i.e. minimising the MSE.

    The max-min problem is the single-group multicast beamforming problem (NP-hard in general).
    Writing ``g_k = h_k / phi_k`` and ``R(w) = sum_k w_k g_k g_k^H`` for ``w`` on the simplex,
    ``min_k |m^H g_k|^2 <= m^H R(w) m <= lambda_max(R(w))`` for every ``w``, so
    ``min_w lambda_max(R(w))`` bounds the optimum from above (it is the dual of the semidefinite
    relaxation). This function runs entropic mirror descent on that convex dual
    (``w_k <- w_k exp(-step |m^H g_k|^2 / lambda_max)``, step ``1 / sqrt(t + 1)``, ``m`` the
    principal eigenvector of ``R(w)``, which is also the dual's subgradient direction), and
    pools those eigenvectors with the starting points
    ``{sum_k h_k / ||h_k||, h_1 / ||h_1||, ..., h_K / ||h_K||}``. From the ``num_starts`` best
    of the pool, a local ascent (SLSQP on the epigraph form) climbs to a local optimum; the best
    result is returned. It is therefore never worse than any candidate in the pool, and
    ``upper_bound`` certifies the remaining gap.

    Args:
        channels: ``(K, N)`` complex channel vectors of the candidate devices.
        weights: ``(K,)`` positive weights ``phi_k``.
        num_iterations: Mirror-descent iterations (each an ``N x N`` eigendecomposition).
        num_starts: Candidates refined by local ascent.

    Returns:
        The beamformer, its ``min_gain`` and the dual ``upper_bound``.
    """
    h = _check_channels(channels, None)
    phi = _check_weights(weights, h.shape[0])
    iterations = check_int("num_iterations", num_iterations, minimum=0)
    g = h / phi[:, None]
    # Normalising the gains keeps the exponent of the weight update O(1) whatever the scale.
    gain_unit = float(np.max(np.sum(g.real**2 + g.imag**2, axis=1)))
    if gain_unit == 0.0:
        raise ValueError("every channel is zero: no beamformer can receive anything")
    g = g / math.sqrt(gain_unit)

    norms = np.linalg.norm(h, axis=1)
    directions = h / np.where(norms > 0.0, norms, 1.0)[:, None]
    candidates = np.vstack([directions.sum(axis=0, keepdims=True), directions])
    candidate_norms = np.linalg.norm(candidates, axis=1)
    candidates = candidates[candidate_norms > 0.0] / candidate_norms[candidate_norms > 0.0, None]
    w = np.full(len(g), 1.0 / len(g))
    bound = math.inf
    eigenvectors_seen: list[np.ndarray] = []
    for t in range(iterations):
        covariance = (g.T * w) @ g.conj()
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        lam = float(eigenvalues[-1])
        bound = min(bound, lam)
        eigenvectors_seen.append(eigenvectors[:, -1])
        q = _beam_gains(g, np.ones(len(g)), eigenvectors[:, -1])
        w = w * np.exp(-(q / lam) / math.sqrt(t + 1.0))
        w /= w.sum()
    initial_count = len(candidates)
    if eigenvectors_seen:
        candidates = np.vstack([candidates, np.array(eigenvectors_seen)])
    values = _beam_gains(g, np.ones(len(g)), candidates).min(axis=1)
    # Local refinement from the best eigenvector and the best starting directions: the
    # landscape has several local optima when K > N, and distinct starts reach different ones
    # (successive eigenvectors are near-copies of each other, so only the best one is used).
    starts = check_int("num_starts", num_starts, minimum=1)
    order = np.argsort(-values[:initial_count], kind="stable")[: starts - 1]
    order = np.concatenate([[int(np.argmax(values))], order])
    best_m, best_value = candidates[order[0]], float(values[order[0]])
    for start in candidates[order]:
        refined = _refine_max_min(g, start)
        refined_value = float(_beam_gains(g, np.ones(len(g)), refined).min())
        if refined_value > best_value:
            best_m, best_value = refined, refined_value
    if iterations == 0:
        bound = float(np.linalg.eigvalsh((g.T * w) @ g.conj())[-1])
    # The best eigenvalue found is an upper bound; so is the trivial min_k ||g_k||^2.
    bound = min(bound, float(np.min(np.sum(g.real**2 + g.imag**2, axis=1))))
    return BeamformerDesign(
        beamformer=best_m / np.linalg.norm(best_m),
        min_gain=best_value * gain_unit,
        upper_bound=max(bound, best_value) * gain_unit,
    )


def _refine_max_min(g: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Local ascent of ``min_k |m^H g_k|^2`` over ``||m|| <= 1`` from ``start``.

    The epigraph form ``max t  s.t.  |m^H g_k|^2 >= t, ||m||^2 <= 1`` over the real and
    imaginary parts of ``m`` is solved to a local optimum by SLSQP with exact Jacobians; the
    eigenvector candidates rarely sit at a local optimum when ``K > N``.
    """
    n = g.shape[1]
    conj_g = g.conj()  # (K, N): v_k = sum_n conj(g_kn) m_n = m^H g_k conjugated, same modulus

    def split(z: np.ndarray) -> np.ndarray:
        return z[:n] + 1j * z[n : 2 * n]

    def gains(z: np.ndarray) -> np.ndarray:
        v = conj_g @ split(z)
        return v.real**2 + v.imag**2

    def gains_jacobian(z: np.ndarray) -> np.ndarray:
        v = conj_g @ split(z)
        weighted = v.conj()[:, None] * conj_g  # d q_k / d x_n = 2 Re(.), d q_k / d y_n = -2 Im(.)
        return np.hstack([2.0 * weighted.real, -2.0 * weighted.imag])

    def constraints(z: np.ndarray) -> np.ndarray:
        return np.concatenate([gains(z) - z[-1], [1.0 - float(np.sum(z[:-1] ** 2))]])

    def constraints_jacobian(z: np.ndarray) -> np.ndarray:
        top = np.hstack([gains_jacobian(z), -np.ones((g.shape[0], 1))])
        bottom = np.concatenate([-2.0 * z[:-1], [0.0]])[None, :]
        return np.vstack([top, bottom])

    start = start / np.linalg.norm(start)
    start_value = float(_beam_gains(g, np.ones(len(g)), start).min())
    z0 = np.concatenate([start.real, start.imag, [start_value]])
    objective_gradient = np.zeros(2 * n + 1)
    objective_gradient[-1] = -1.0
    # SLSQP's iterates depend in the last bits on the BLAS thread count; one thread makes the
    # design, and so the environment's trajectory, the same under any thread setting.
    with single_blas_thread():
        solution = minimize(
            lambda z: -z[-1],
            z0,
            jac=lambda z: objective_gradient,
            constraints=[{"type": "ineq", "fun": constraints, "jac": constraints_jacobian}],
            method="SLSQP",
            options={"maxiter": 200, "ftol": 1e-12},
        )
    m = split(solution.x)
    norm = np.linalg.norm(m)
    return m / norm if np.isfinite(norm) and norm > 0.0 else start


def select_ota_devices(
    channels: ArrayLike,
    weights: ArrayLike | torch.Tensor,
    *,
    method: Literal["all", "greedy_channel", "sparse"],
    power_w: float = 1.0,
    noise_power_w: float = 0.0,
    num_devices: int | None = None,
    mse_target: float | None = None,
    num_iterations: int = 200,
) -> np.ndarray:
    """Choose the devices that take part in a beamformed over-the-air round.

    Methods:

    - ``"all"``: every device.
    - ``"greedy_channel"``: the ``num_devices`` devices with the largest ``||h_k||^2 / phi_k^2``
      (each device's single-device receive gain, which bounds what it can contribute to the
      max-min objective; for equal weights the strongest channels).
    - ``"sparse"``: the largest set meeting ``MSE <= mse_target`` (the sparse-selection problem
      of Yang et al. 2020). Its exact solution is combinatorial; the paper approximates it with
      DC programming. Here the approximation is greedy removal: start from all devices, design
      :func:`receive_beamformer` for the set, and while its MSE exceeds the target drop the
      device that attains the maximum in the MSE (the smallest ``|m^H h_k|^2 / phi_k^2``).
      The returned set always satisfies the constraint; it is empty when no device can.

    Args:
        channels: ``(K, N)`` complex channels of all candidate devices.
        weights: ``(K,)`` positive weights ``phi_k``.
        method: One of ``"all"``, ``"greedy_channel"``, ``"sparse"``.
        power_w: Transmit power budget ``P0`` (``"sparse"`` only).
        noise_power_w: Receiver noise power ``sigma^2`` (``"sparse"`` only).
        num_devices: Number of devices to keep (``"greedy_channel"`` only).
        mse_target: MSE threshold ``gamma`` (``"sparse"`` only).
        num_iterations: Beamformer iterations per design (``"sparse"`` only).

    Returns:
        ``(K,)`` bool mask of the selected devices.
    """
    h = _check_channels(channels, None)
    k = h.shape[0]
    phi = _check_weights(weights, k)
    if method == "all":
        return np.ones(k, dtype=bool)
    if method == "greedy_channel":
        if num_devices is None:
            raise ValueError("method 'greedy_channel' needs num_devices")
        count = check_int("num_devices", num_devices, minimum=0)
        strength = np.sum(h.real**2 + h.imag**2, axis=1) / phi**2
        mask = np.zeros(k, dtype=bool)
        # A stable sort breaks ties by index, so equal channels give a reproducible set.
        mask[np.argsort(-strength, kind="stable")[: min(count, k)]] = True
        return mask
    if method == "sparse":
        if mse_target is None:
            raise ValueError("method 'sparse' needs mse_target")
        gamma = float(mse_target)
        if math.isnan(gamma) or gamma < 0.0:
            raise ValueError(f"mse_target must be >= 0, got {mse_target}")
        p0 = check_positive("power_w", power_w)
        sigma2 = check_positive("noise_power_w", noise_power_w, allow_zero=True)
        # A device with a zero channel has an infinite MSE whatever the beamformer.
        mask = np.any(h != 0, axis=1) if sigma2 > 0.0 else np.ones(k, dtype=bool)
        while mask.any():
            index = np.flatnonzero(mask)
            design = receive_beamformer(h[index], phi[index], num_iterations=num_iterations)
            mse = sigma2 / p0 / design.min_gain if design.min_gain > 0.0 else math.inf
            if sigma2 == 0.0 or mse <= gamma:
                break
            gains = _beam_gains(h[index], phi[index], design.beamformer)
            mask[index[int(np.argmin(gains))]] = False
        return mask
    raise ValueError(f"method must be one of {_SELECTION_METHODS}, got {method!r}")


# -- compressive-sensing over the air --------------------------------------------------------


def gaussian_measurement_matrix(
    num_measurements: int, dim: int, *, seed: int, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """The shared pseudo-random ``(s, d)`` matrix ``A`` with i.i.d. ``N(0, 1/s)`` entries.

    Devices and server rebuild the same matrix from the shared ``seed`` (no global RNG).

    Args:
        num_measurements: Rows ``s``.
        dim: Columns ``d``.
        seed: Seed shared by devices and server.
        dtype: Floating dtype of the matrix.

    Returns:
        The ``(s, d)`` matrix.
    """
    s = check_int("num_measurements", num_measurements, minimum=1)
    d = check_int("dim", dim, minimum=1)
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randn((s, d), generator=generator, dtype=dtype) / math.sqrt(s)


def top_k_sparsify(updates: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest-magnitude entries of every row, zero the rest.

    Args:
        updates: ``(K, d)`` float updates.
        k: Entries kept per row (clipped to ``d``).

    Returns:
        ``(K, d)`` sparsified updates.
    """
    u = _check_updates(updates)
    keep = min(check_int("k", k, minimum=0), u.shape[1])
    index = torch.topk(u.abs(), keep, dim=1).indices
    return torch.zeros_like(u).scatter_(1, index, u.gather(1, index))


def _hard_threshold(x: torch.Tensor, sparsity: int) -> torch.Tensor:
    index = torch.topk(x.abs(), sparsity).indices
    out = torch.zeros_like(x)
    out[index] = x[index]
    return out


def niht_recover(
    measurements: torch.Tensor,
    matrix: torch.Tensor,
    sparsity: int,
    *,
    num_iterations: int = 500,
    tolerance: float = 1e-12,
) -> torch.Tensor:
    """Recover a ``sparsity``-sparse ``x`` from ``y = A x + n`` by normalised IHT.

    Normalised iterative hard thresholding (Blumensath and Davies, "Normalized Iterative Hard
    Thresholding: Guaranteed Stability and Performance", IEEE JSTSP 2010): gradient steps with
    the step size ``||g_S||^2 / ||A_S g_S||^2`` on the current support, halved (with the
    paper's ``k = 2, c = 0.01``) while a support change would break its stability condition,
    followed by hard thresholding. A final least-squares fit on the found support removes the
    bias of the iteration, so noise-free recovery is exact once the support is right.

    Args:
        measurements: ``(s,)`` measurements ``y``.
        matrix: ``(s, d)`` measurement matrix ``A``.
        sparsity: Number of nonzeros kept.
        num_iterations: Maximum iterations.
        tolerance: Stop when an iteration moves ``x`` by less than this, relative to ``||x||``.

    Returns:
        ``(d,)`` recovered vector.
    """
    if matrix.ndim != 2 or measurements.shape != (matrix.shape[0],):
        raise ValueError(
            f"matrix must be (s, d) and measurements (s,), got {tuple(matrix.shape)} and "
            f"{tuple(measurements.shape)}"
        )
    dim = matrix.shape[1]
    keep = min(check_int("sparsity", sparsity, minimum=1), dim)
    y = measurements.to(matrix.dtype)
    x = torch.zeros(dim, dtype=matrix.dtype, device=matrix.device)
    support = torch.topk((matrix.T @ y).abs(), keep).indices
    for _ in range(check_int("num_iterations", num_iterations, minimum=0)):
        gradient = matrix.T @ (y - matrix @ x)
        if bool((x != 0).any()):
            support = torch.nonzero(x, as_tuple=True)[0]
        g_support = gradient[support]
        denominator = float((matrix[:, support] @ g_support).pow(2).sum())
        if denominator == 0.0:
            break
        step = float(g_support.pow(2).sum()) / denominator
        candidate = _hard_threshold(x + step * gradient, keep)
        # Normalised IHT's safeguard: when the support moves, the step must not exceed
        # (1 - c) ||dx||^2 / ||A dx||^2, else it shrinks by 1 / (k (1 - c)).
        for _ in range(60):
            if torch.equal(candidate != 0, x != 0):
                break
            delta = candidate - x
            curvature = max(float((matrix @ delta).pow(2).sum()), 1e-300)
            limit = 0.99 * float(delta.pow(2).sum()) / curvature
            if step <= limit:
                break
            step /= 2.0 * 0.99
            candidate = _hard_threshold(x + step * gradient, keep)
        moved = float((candidate - x).norm())
        x = candidate
        if moved <= tolerance * max(float(x.norm()), 1e-300):
            break
    final_support = torch.nonzero(x, as_tuple=True)[0]
    if 0 < final_support.numel() <= matrix.shape[0]:
        fit = torch.linalg.lstsq(matrix[:, final_support], y[:, None]).solution[:, 0]
        x = torch.zeros_like(x)
        x[final_support] = fit
    return x


def cs_ota_aggregate(
    updates: torch.Tensor,
    *,
    sparsity: int,
    num_measurements: int,
    matrix_seed: int,
    receive_power_w: float,
    noise_power_w: float,
    weights: ArrayLike | torch.Tensor | None = None,
    recovery_sparsity: int | None = None,
    generator: torch.Generator | None = None,
    num_iterations: int = 500,
) -> CSOTAResult:
    """Compressive-sensing over-the-air aggregation of top-k sparsified updates.

    Device ``k`` keeps its ``sparsity`` largest entries (``x_k``), scales them by its share
    ``w_k / sum w``, projects with the shared matrix ``A`` (:func:`gaussian_measurement_matrix`)
    and sends the ``s`` measurements in analog with channel inversion to the aligned receive
    power ``rho0`` (symbols normalised by a common scale as in the module docstring). The
    server receives ``A sum_k (w_k / sum w) x_k + n`` and recovers the sparse weighted sum with
    :func:`niht_recover`. Error accumulation is the caller's, with ``sparse_updates``.

    Args:
        updates: ``(K, d)`` float updates.
        sparsity: Entries each device keeps (top-k).
        num_measurements: Measurements ``s`` (= channel uses).
        matrix_seed: Seed of the shared measurement matrix.
        receive_power_w: Aligned receive power ``rho0`` per unit-power symbol.
        noise_power_w: Receiver noise power ``sigma^2`` per channel use.
        weights: ``(K,)`` positive weights; ``None`` for the plain mean.
        recovery_sparsity: Sparsity the server recovers; default ``min(d, K * sparsity)``, the
            largest support the sum can have.
        generator: Draws the receiver noise; required when ``noise_power_w > 0``.
        num_iterations: Maximum recovery iterations.

    Returns:
        The recovered aggregate, the sparsified updates, the measurements and the channel uses.
    """
    u = _check_updates(updates)
    num_devices, dim = u.shape
    phi = np.ones(num_devices) if weights is None else _check_weights(weights, num_devices)
    keep = check_int("sparsity", sparsity, minimum=1)
    s = check_int("num_measurements", num_measurements, minimum=1)
    rho0 = check_positive("receive_power_w", receive_power_w)
    sigma2 = _check_noise(noise_power_w, generator)
    target = (
        min(dim, num_devices * keep)
        if recovery_sparsity is None
        else check_int("recovery_sparsity", recovery_sparsity, minimum=1)
    )

    device = u.device
    sparse = top_k_sparsify(u, keep)
    share = torch.as_tensor(phi / phi.sum(), dtype=torch.float64, device=device)
    matrix = gaussian_measurement_matrix(s, dim, seed=matrix_seed).to(device)
    projected = (sparse.to(torch.float64) * share[:, None]) @ matrix.T  # (K, s)
    scale = _symbol_scale(projected)
    # Channel inversion aligns every device at sqrt(rho0); the real part carries the value.
    received = (
        math.sqrt(rho0) * (projected / scale).sum(dim=0)
        + _complex_noise((s,), sigma2, generator, device).real
    )
    measurements = received * (scale / math.sqrt(rho0))
    aggregate = niht_recover(measurements, matrix, target, num_iterations=num_iterations)
    return CSOTAResult(
        aggregate=aggregate.to(u.dtype),
        sparse_updates=sparse,
        measurements=measurements,
        channel_uses=s,
        noise_variance=scale**2 * sigma2 / (2.0 * rho0),
    )
