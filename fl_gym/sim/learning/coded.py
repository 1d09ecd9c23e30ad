"""Coded federated learning (CodedFedL; Prakash, Dhakal et al., IEEE JSAC 2020) and the
staleness weight of late updates (FedAsync; Xie, Koyejo, Gupta 2019).

CodedFedL, as the paper states it: each device ``k`` holds data ``X_k`` (``n_k x d``, random
Fourier features of its inputs in the paper) and one-hot labels ``Y_k``. Once, before training, it
draws a generator matrix ``G_k`` (``c x n_k``, i.i.d. standard normal entries) and a diagonal
weight matrix ``W_k``, and uploads the coded data ``X~_k = G_k W_k X_k``, ``Y~_k = G_k W_k Y_k``.
Because ``E[G^T G] = c I``, the least-squares gradient on the coded data,

    g~ = (1 / c) X~^T (X~ theta - Y~),  E[g~] = X^T W^2 (X theta - Y),

is the gradient on the weighted raw data in expectation, and ``(1 / c) G^T G -> I`` as ``c``
grows (the law of large numbers), so it tends to that gradient itself. The paper sums the
devices' coded data into one global parity set and chooses ``W_k^2 = 1 - P_k``, ``P_k`` the
probability that device ``k``'s gradient meets the deadline: the server's coded gradient then
covers exactly the expected missing part, and coded plus received gradients equal the
full-data gradient in expectation.

What fl_gym implements (a documented simplification of the paper's load allocation):

* :func:`encode` and :func:`coded_gradient` are the paper's coding and server gradient, with
  the weights given by the caller (``sqrt(1 - P_k)`` as in the paper, or 1).
* Inside the round pipeline (``FederationConfig.stragglers="coded"``), the server keeps each
  device's coded data apart rather than summed, with ``W_k = I``, and stands in for exactly
  the selected devices whose update did not arrive: for each, the server runs the device's
  local steps on the least-squares loss of its coded data (:func:`stand_in_updates`; the
  paper's model is least squares on one-hot labels; with the environments' cross-entropy
  clients it is the same linear model's least-squares surrogate). Devices process their
  whole minibatches (no per-device load ``l~_k``); the deadline is the cell's.
* ``benchmarks/reproduce_coded.py`` runs the paper's own scheme (summed parity,
  ``W_k^2 = 1 - P_k``, the deadline chosen so that the expected returned points cover the data
  set) on linear regression over random Fourier features.

Privacy: the coded data are random projections of the raw data; with a code length ``c``
comparable to ``n_k`` they reveal the data's second-order statistics (``X~^T X~ / c`` estimates
``X^T W^2 X``) and far more than a gradient does. The paper bounds the leakage by the mutual
information of a Gaussian code; fl_gym offers no formal guarantee for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from fl_gym.sim.config import check_int, check_real

__all__ = [
    "CodedClients",
    "CodedData",
    "code_length",
    "coded_gradient",
    "encode",
    "least_squares_gradient",
    "random_fourier_features",
    "staleness_weight",
    "stand_in_updates",
]


def staleness_weight(staleness: np.ndarray | int, exponent: float) -> np.ndarray:
    """FedAsync's polynomial staleness function ``s(tau) = (1 + tau)^-a``.

    Args:
        staleness: Rounds ``tau >= 0`` an update arrives late (0: on time).
        exponent: ``a >= 0`` (``0``: late updates count in full).

    Returns:
        The weights, float64, one per ``tau``.
    """
    check_real("exponent", exponent, low=0.0)
    tau = np.asarray(staleness)
    if tau.size and (not np.issubdtype(tau.dtype, np.integer) or int(tau.min()) < 0):
        raise ValueError(f"staleness must be whole numbers of rounds >= 0, got {staleness!r}")
    return np.power(1.0 + tau.astype(np.float64), -float(exponent))


def code_length(num_samples: int, redundancy: float) -> int:
    """Rows of a device's coded data: ``ceil(redundancy * num_samples)``, at least 1."""
    check_int("num_samples", num_samples, minimum=1)
    check_real("redundancy", redundancy, low=0.0, low_open=True)
    return max(1, math.ceil(redundancy * num_samples - 1e-9))


@dataclass(frozen=True, eq=False)
class CodedData:
    """One device's (or the server's summed) coded data.

    Attributes:
        x: ``(c, d)`` coded features ``G W X``.
        y: ``(c, C)`` coded targets ``G W Y``.
    """

    x: torch.Tensor
    y: torch.Tensor

    @property
    def code_length(self) -> int:
        return int(self.x.shape[0])

    def __add__(self, other: CodedData) -> CodedData:
        """The sum of two devices' codes of one length (the paper's global parity set)."""
        if self.x.shape != other.x.shape or self.y.shape != other.y.shape:
            raise ValueError(
                f"coded data of shapes {tuple(self.x.shape)} and {tuple(other.x.shape)} "
                "cannot be summed: the code lengths and widths must match"
            )
        return CodedData(self.x + other.x, self.y + other.y)


@dataclass(frozen=True, eq=False)
class CodedClients:
    """What the server holds of every device's one-off coded upload.

    Attributes:
        codes: One :class:`CodedData` per device: features with a bias column, one-hot targets.
        available: ``(K,)`` whose coded data reached the server (each device uploads its
            code once, the first round it takes part).
    """

    codes: tuple[CodedData, ...]
    available: np.ndarray


def encode(
    x: torch.Tensor,
    y: torch.Tensor,
    length: int,
    generator: torch.Generator,
    weights: torch.Tensor | None = None,
) -> CodedData:
    """A device's coded data ``(G W X, G W Y)``, ``G`` i.i.d. standard normal (``length x n``).

    Args:
        x: ``(n, d)`` features.
        y: ``(n, C)`` targets (one-hot labels for classification).
        length: Code length ``c >= 1``.
        generator: Draws ``G``.
        weights: ``(n,)`` diagonal of ``W`` (``None``: the identity).

    Returns:
        The coded data.
    """
    check_int("length", length, minimum=1)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x must be (n, d) and y (n, C) with the same n, got {tuple(x.shape)} and "
            f"{tuple(y.shape)}"
        )
    g = torch.randn(
        (length, x.shape[0]), generator=generator, dtype=x.dtype, device=generator.device
    ).to(x.device)
    if weights is not None:
        if weights.shape != (x.shape[0],):
            raise ValueError(f"weights must have shape ({x.shape[0]},), got {tuple(weights.shape)}")
        g = g * weights.to(x.dtype).unsqueeze(0)
    return CodedData(g @ x, g @ y.to(x.dtype))


def least_squares_gradient(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``X^T (X theta - Y)``: the gradient of ``0.5 ||X theta - Y||^2`` (summed, not averaged).

    Args:
        theta: ``(d, C)`` linear model.
        x: ``(n, d)`` features.
        y: ``(n, C)`` targets.
    """
    return x.T @ (x @ theta - y)


def coded_gradient(theta: torch.Tensor, coded: CodedData) -> torch.Tensor:
    """The server's gradient on coded data, ``(1 / c) X~^T (X~ theta - Y~)``: in expectation over
    the code, :func:`least_squares_gradient` on the weighted raw data ``(W X, W Y)``."""
    return least_squares_gradient(theta, coded.x, coded.y) / coded.code_length


def random_fourier_features(
    x: np.ndarray, num_features: int, bandwidth: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random Fourier features of the Gaussian kernel (Rahimi and Recht 2007), the paper's
    kernel embedding: ``z(x) = sqrt(2 / q) cos(x Omega + b)``, ``Omega ~ N(0, 1 / sigma^2)``,
    ``b ~ U[0, 2 pi)``, so ``z(x) . z(x')`` estimates ``exp(-||x - x'||^2 / (2 sigma^2))``.

    Args:
        x: ``(n, d)`` inputs.
        num_features: ``q``, the embedding's width.
        bandwidth: The kernel's ``sigma > 0``.
        rng: Draws ``Omega`` and ``b``.

    Returns:
        ``(features, (Omega, b) stacked as a (d + 1, q) array)``: apply the same map to test
        data with ``sqrt(2 / q) * cos(x @ map[:-1] + map[-1])``.
    """
    check_int("num_features", num_features, minimum=1)
    check_real("bandwidth", bandwidth, low=0.0, low_open=True)
    omega = rng.normal(0.0, 1.0 / bandwidth, size=(x.shape[1], num_features))
    phase = rng.uniform(0.0, 2.0 * np.pi, size=num_features)
    mapping = np.vstack([omega, phase])
    return np.sqrt(2.0 / num_features) * np.cos(x @ omega + phase), mapping


def stand_in_updates(
    params: torch.Tensor,
    num_classes: int,
    coded: CodedClients,
    client_ids: np.ndarray,
    sample_counts: np.ndarray,
    local_steps: np.ndarray,
    learning_rate: float,
) -> torch.Tensor:
    """The server's stand-ins for missing updates of a linear model: each client's local steps
    run by the server on that client's coded data.

    From the global model, ``s`` gradient steps on the mean least-squares loss of the coded
    data (gradient ``g~ / n``, :func:`coded_gradient`), of size ``min(lr, 1 / lambda_max)``
    where ``lambda_max`` is the largest eigenvalue of that loss's Hessian ``X~^T X~ / (c n)``:
    the least-squares surrogate of the clients' cross-entropy is steeper, and a step above
    ``2 / lambda_max`` would diverge.

    Args:
        params: ``(P,)`` the global linear model, ``W (d, C)`` row-major then ``b (C,)`` (so
            ``params.view(d + 1, C)`` is the model on features with a bias column).
        num_classes: ``C``.
        coded: The devices' coded data.
        client_ids: ``(S,)`` the clients to stand in for (each with coded data).
        sample_counts: ``(S,)`` their sample counts ``n``.
        local_steps: ``(S,)`` their local steps ``s``.
        learning_rate: The clients' step size.

    Returns:
        ``(S, P)`` the stand-in updates (local minus global).
    """
    theta0 = params.view(-1, num_classes)
    rows = []
    for i, n, steps in zip(client_ids.tolist(), sample_counts, local_steps, strict=True):
        code = coded.codes[i]
        lam = float(torch.linalg.matrix_norm(code.x, ord=2)) ** 2 / (code.code_length * float(n))
        step = min(learning_rate, 1.0 / lam) if lam > 0 else learning_rate
        theta = theta0.clone()
        for _ in range(int(steps)):
            theta = theta - (step / float(n)) * coded_gradient(theta, code)
        rows.append((theta - theta0).reshape(-1))
    return torch.stack(rows).to(params.dtype)
