"""Extreme-value model of queue tails, estimated centrally or by federated learning.

By the Pickands-Balkema-de Haan theorem, the exceedances ``X = Q - q0`` of a queue over a high
threshold ``q0``, given ``Q > q0``, follow approximately a generalised Pareto distribution (GPD)
with scale ``sigma > 0`` and shape ``xi``:

    ``Pr(X > x) = (1 + xi x / sigma)^(-1/xi)``  (``exp(-x / sigma)`` at ``xi = 0``),

with log-likelihood ``-n log sigma - (1 + 1/xi) sum_i log(1 + xi x_i / sigma)`` for ``n``
samples. Its conditional mean and second moment are ``sigma / (1 - xi)`` and
``2 sigma^2 / ((1 - xi)(1 - 2 xi))`` (finite for ``xi < 1/2``).

Two estimators, after Samarakoon et al. (IEEE Trans. Commun. 2020):

* :func:`fit_gpd_centralised`: every vehicle uploads all of its exceedance samples and the
  roadside unit (RSU) fits the GPD by maximum likelihood (``scipy.stats.genpareto.fit``).
* :func:`fit_gpd_federated`: in each round, every vehicle starts from the RSU's current
  ``(sigma, xi)`` and takes ``local_steps`` gradient-ascent steps on the mean log-likelihood of
  its own samples (all vehicles in one batched computation over a padded ``(K, W)`` array); the
  RSU averages the vehicles' ``(log sigma, xi)`` weighted by their sample counts
  (:func:`fl_gym.sim.learning.aggregation.fedavg`) and broadcasts the result.

The average is taken in the parameterisation the vehicles step in. With one local step, every
vehicle starts from the same point, so the weighted mean of ``log sigma_k = log sigma + lr g_k``
is ``log sigma + lr sum_k n_k g_k / n``: a gradient step on the pooled mean log-likelihood, whose
fixed point is the centralised MLE (while clipping and the support projection are inactive, as
they are near it). Averaging ``sigma`` itself would add ``E[exp(.)] - exp(E[.])`` > 0 (Jensen)
every round and move the fixed point above the MLE. With several local steps the vehicles drift
towards their own MLEs, which on a few dozen samples are noisy and biased (the GPD MLE is biased
in small samples), so the average of their steps is not the pooled step even on i.i.d. data.

Both count the values exchanged: the centralised fit uploads ``n_k`` samples per vehicle and
broadcasts 2 parameters; each federated round uploads 3 values per participating vehicle
(``log sigma``, ``xi`` and its sample count) and broadcasts 2 to every vehicle.

The gradient steps work on ``(log sigma, xi)`` (so the scale stays positive and the step is
invariant to the unit of the queue) and project ``xi`` onto ``[xi_min, xi_max]`` and ``sigma``
above ``-xi max(x)`` (the support of a GPD with ``xi < 0`` ends at ``-sigma / xi``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike

from fl_gym.sim.learning.aggregation import fedavg

__all__ = [
    "FederatedTailResult",
    "GPDParams",
    "fit_gpd_centralised",
    "fit_gpd_federated",
    "gpd_conditional_moments",
    "gpd_log_likelihood",
    "gpd_survival",
    "local_gpd_steps",
    "pad_samples",
]

XI_BOUNDS = (-0.45, 0.9)
"""Range of the shape the gradient steps keep ``xi`` in (the MLE is regular for xi > -1/2)."""
GRADIENT_CLIP = 5.0
"""Largest magnitude of each gradient component in a local step."""
_XI_SMALL = 1e-6
_SUPPORT_MARGIN = 1e-6


@dataclass(frozen=True)
class GPDParams:
    """A generalised Pareto distribution: ``scale`` (``sigma``, > 0) and ``shape`` (``xi``)."""

    scale: float
    shape: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be a finite number > 0, got {self.scale!r}")
        if not math.isfinite(self.shape):
            raise ValueError(f"shape must be finite, got {self.shape!r}")


def _log1p_ratio(xi: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``log(1 + xi z) / xi``, continued by ``z`` at ``xi = 0`` (``z = x / sigma``)."""
    small = np.abs(xi) < _XI_SMALL
    safe = np.where(small, 1.0, xi)
    return np.where(small, z - 0.5 * xi * z * z, np.log1p(safe * z) / safe)


def gpd_log_likelihood(x: ArrayLike, scale: ArrayLike, shape: ArrayLike) -> np.ndarray:
    """Log-density of a GPD at ``x >= 0``: ``-log sigma - (1 + 1/xi) log(1 + xi x / sigma)``.

    Args:
        x: Samples (broadcast against the parameters).
        scale: ``sigma`` > 0.
        shape: ``xi``.

    Returns:
        The log-density; ``-inf`` outside the support.
    """
    x = np.asarray(x, dtype=np.float64)
    sigma = np.asarray(scale, dtype=np.float64)
    xi = np.asarray(shape, dtype=np.float64)
    z = x / sigma
    t = 1.0 + xi * z
    inside = (t > 0) & (x >= 0)
    z_in = np.where(inside, z, 0.0)
    value = -np.log(sigma) - _log1p_ratio(xi, z_in) - np.log1p(xi * z_in)
    return np.where(inside, value, -np.inf)


def gpd_survival(x: ArrayLike, scale: float, shape: float) -> np.ndarray:
    """``Pr(X > x) = (1 + xi x / sigma)^(-1/xi)`` of a GPD (0 beyond a finite support end)."""
    x = np.maximum(np.asarray(x, dtype=np.float64), 0.0)
    t = 1.0 + shape * x / scale
    xi = np.full(x.shape, float(shape))
    z = np.where(t > 0, x / scale, 0.0)
    return np.where(t > 0, np.exp(-_log1p_ratio(xi, z)), 0.0)


def gpd_conditional_moments(scale: ArrayLike, shape: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``sigma / (1 - xi)`` and second moment ``2 sigma^2 / ((1 - xi)(1 - 2 xi))``.

    Returns ``inf`` where the moment does not exist (``xi >= 1`` or ``xi >= 1/2``).
    """
    sigma = np.asarray(scale, dtype=np.float64)
    xi = np.asarray(shape, dtype=np.float64)
    # Both branches are evaluated; the masked one may overflow for xi >= 1/2 and is discarded.
    with np.errstate(divide="ignore", over="ignore"):
        mean = np.where(xi < 1.0, sigma / np.maximum(1.0 - xi, 1e-300), np.inf)
        second = np.where(
            xi < 0.5,
            2.0 * sigma**2 / np.maximum((1.0 - xi) * (1.0 - 2.0 * xi), 1e-300),
            np.inf,
        )
    return mean, second


def pad_samples(samples: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-vehicle sample lists as one zero-padded ``(K, W)`` array and its ``(K, W)`` mask."""
    k = len(samples)
    width = max((len(s) for s in samples), default=0)
    out = np.zeros((k, max(width, 1)))
    mask = np.zeros((k, max(width, 1)), dtype=bool)
    lengths = np.array([len(s) for s in samples], dtype=np.int64)
    mask[:, :width] = np.arange(width)[None, :] < lengths[:, None]
    if width:
        out[mask] = np.concatenate([np.asarray(s, dtype=np.float64) for s in samples])
    return out, mask


def _gradients(
    x: np.ndarray, mask: np.ndarray, log_scale: np.ndarray, shape: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Gradient of each row's mean log-likelihood w.r.t. ``(log sigma, xi)``, ``(K,)`` each.

    With ``z = x / sigma`` and ``t = 1 + xi z``, per sample:
    ``d/d log sigma = -1 + (1 + xi) z / t`` and
    ``d/d xi = log(t) / xi^2 - (1 + 1/xi) z / t`` (``z^2 / 2 - z`` at ``xi = 0``).
    """
    sigma = np.exp(log_scale)[:, None]
    xi = shape[:, None]
    z = x / sigma
    t = 1.0 + xi * z
    d_log_scale = -1.0 + (1.0 + xi) * z / t
    small = np.abs(xi) < 1e-4
    safe = np.where(small, 1.0, xi)
    with np.errstate(invalid="ignore", divide="ignore"):  # padded entries; masked below
        general = (np.log1p(safe * z) / safe - z / t) / safe - z / t
    # Series of the general term at small xi: z^2/2 - z - xi (2 z^3 / 3 - z^2) + O(xi^2).
    series = 0.5 * z * z - z - xi * (2.0 * z**3 / 3.0 - z * z)
    d_shape = np.where(small, series, general)
    count = np.maximum(mask.sum(axis=1), 1)
    return (
        np.where(mask, d_log_scale, 0.0).sum(axis=1) / count,
        np.where(mask, d_shape, 0.0).sum(axis=1) / count,
    )


def _project(
    log_scale: np.ndarray, shape: np.ndarray, x_max: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    shape = np.clip(shape, *XI_BOUNDS)
    # xi < 0 bounds the support at -sigma / xi: keep every sample inside it.
    floor = np.where(shape < 0, -shape * x_max * (1.0 + _SUPPORT_MARGIN), 0.0)
    with np.errstate(divide="ignore"):
        log_floor = np.where(floor > 0, np.log(np.maximum(floor, 1e-300)), -np.inf)
    return np.maximum(log_scale, log_floor), shape


def local_gpd_steps(
    x: np.ndarray,
    mask: np.ndarray,
    scale: ArrayLike,
    shape: ArrayLike,
    *,
    steps: int,
    learning_rate: float,
) -> tuple[np.ndarray, np.ndarray]:
    """``steps`` projected gradient-ascent steps of every vehicle on its own samples, batched.

    Each component of the gradient is clipped to ``[-GRADIENT_CLIP, GRADIENT_CLIP]``.

    Args:
        x: ``(K, W)`` exceedance samples, zero-padded.
        mask: ``(K, W)`` which entries of ``x`` are samples.
        scale: ``(K,)`` (or scalar) starting ``sigma``.
        shape: ``(K,)`` (or scalar) starting ``xi``.
        steps: Number of steps, >= 0.
        learning_rate: Step size on ``(log sigma, xi)``.

    Returns:
        ``(sigma, xi)`` of every vehicle, ``(K,)`` each. Rows without samples keep their start.
    """
    k = x.shape[0]
    log_scale = np.log(np.broadcast_to(np.asarray(scale, dtype=np.float64), (k,))).copy()
    xi = np.broadcast_to(np.asarray(shape, dtype=np.float64), (k,)).copy()
    x_max = np.where(mask, x, 0.0).max(axis=1, initial=0.0)
    log_scale, xi = _project(log_scale, xi, x_max)
    for _ in range(steps):
        g_scale, g_shape = _gradients(x, mask, log_scale, xi)
        # Near the end of the support (xi < 0) the gradient is unbounded; a clipped step keeps a
        # vehicle with a handful of samples from jumping far.
        g_scale = np.clip(g_scale, -GRADIENT_CLIP, GRADIENT_CLIP)
        g_shape = np.clip(g_shape, -GRADIENT_CLIP, GRADIENT_CLIP)
        log_scale, xi = _project(
            log_scale + learning_rate * g_scale, xi + learning_rate * g_shape, x_max
        )
    return np.exp(log_scale), xi


def fit_gpd_centralised(samples: ArrayLike) -> GPDParams:
    """Maximum-likelihood GPD of pooled exceedances (``scipy.stats.genpareto.fit``, loc 0).

    Args:
        samples: Exceedances ``x > 0``, at least 2.

    Returns:
        The fitted parameters.
    """
    from scipy.stats import genpareto

    x = np.asarray(samples, dtype=np.float64).ravel()
    if x.size < 2 or not np.all(np.isfinite(x)) or np.any(x < 0):
        raise ValueError(f"samples must be >= 2 finite exceedances >= 0, got {x.size} values")
    shape, _, scale = genpareto.fit(x, floc=0.0)
    return GPDParams(float(scale), float(shape))


@dataclass(frozen=True)
class FederatedTailResult:
    """Outcome of :func:`fit_gpd_federated`.

    Attributes:
        params: The RSU's final estimate.
        history: ``(rounds + 1, 2)`` estimate ``(sigma, xi)`` before the first and after every
            round.
        values_uploaded: Values sent by the vehicles (3 per participating vehicle and round).
        values_downloaded: Values broadcast by the RSU (2 per vehicle and round).
    """

    params: GPDParams
    history: np.ndarray
    values_uploaded: int
    values_downloaded: int

    @property
    def values_exchanged(self) -> int:
        """Uploads plus downloads."""
        return self.values_uploaded + self.values_downloaded


def federated_round(
    x: np.ndarray,
    mask: np.ndarray,
    global_params: GPDParams,
    *,
    local_steps: int,
    learning_rate: float,
) -> tuple[GPDParams, int]:
    """One federated round: local steps on every vehicle with samples, then weighted FedAvg of
    ``(log sigma, xi)``.

    Args:
        x: ``(K, W)`` zero-padded exceedances.
        mask: ``(K, W)`` which entries are samples.
        global_params: The estimate broadcast at the start of the round.
        local_steps: Gradient steps per vehicle.
        learning_rate: Step size on ``(log sigma, xi)``.

    Returns:
        The new estimate and the number of vehicles that took part (had samples); with none,
        the estimate is unchanged.
    """
    counts = mask.sum(axis=1)
    active = counts > 0
    if not active.any():
        return global_params, 0
    sigma, xi = local_gpd_steps(
        x[active],
        mask[active],
        global_params.scale,
        global_params.shape,
        steps=local_steps,
        learning_rate=learning_rate,
    )
    # Average (log sigma, xi), the coordinates of the steps (module docstring).
    updates = torch.from_numpy(np.stack([np.log(sigma), xi], axis=1))
    weights = torch.from_numpy(counts[active].astype(np.float64))
    mean = fedavg(updates, weights).aggregate.numpy()
    return GPDParams(float(np.exp(mean[0])), float(mean[1])), int(active.sum())


def fit_gpd_federated(
    samples: list[np.ndarray] | tuple[np.ndarray, np.ndarray],
    *,
    rounds: int,
    local_steps: int = 5,
    learning_rate: float = 0.2,
    init: GPDParams | None = None,
) -> FederatedTailResult:
    """Federated GPD estimate of the vehicles' exceedances (module docstring).

    Args:
        samples: One array of exceedances per vehicle, or an already padded ``(x, mask)``.
        rounds: Communication rounds, >= 1.
        local_steps: Gradient steps per vehicle and round, >= 1.
        learning_rate: Step size on ``(log sigma, xi)``, > 0.
        init: The RSU's starting estimate; by default ``sigma`` = the mean of all samples
            (the exponential MLE; each vehicle with samples uploads its sum and count, 2 values,
            counted in ``values_uploaded``) and ``xi = 0``.

    Returns:
        The estimate, its history and the values exchanged.
    """
    if isinstance(samples, tuple):
        x, mask = samples
    else:
        x, mask = pad_samples(list(samples))
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an integer >= 1, got {rounds!r}")
    if isinstance(local_steps, bool) or not isinstance(local_steps, int) or local_steps < 1:
        raise ValueError(f"local_steps must be an integer >= 1, got {local_steps!r}")
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a finite number > 0, got {learning_rate!r}")
    total = int(mask.sum())
    if total == 0:
        raise ValueError("samples hold no exceedances; nothing to fit")
    k = x.shape[0]
    uploaded = downloaded = 0
    if init is None:
        init = GPDParams(float(np.where(mask, x, 0.0).sum() / total), 0.0)
        uploaded += 2 * int((mask.sum(axis=1) > 0).sum())  # each vehicle's sum and count
    params = init
    history = [(params.scale, params.shape)]
    for _ in range(rounds):
        downloaded += 2 * k
        params, active = federated_round(
            x, mask, params, local_steps=local_steps, learning_rate=learning_rate
        )
        uploaded += 3 * active
        history.append((params.scale, params.shape))
    return FederatedTailResult(params, np.array(history), uploaded, downloaded)
