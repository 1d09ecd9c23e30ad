"""Gradient leakage: what an honest-but-curious server learns from one device's update.

A gradient-inversion attack reconstructs a device's training batch from the update the server
receives, batched over many target devices at once (every target is one row of the batched
model, as in local training):

* **Labels** from the last layer's bias gradient (Zhao, Mopuri and Bilen, "iDLG: Improved Deep
  Leakage from Gradients", 2020): for softmax cross-entropy the bias gradient of one example is
  ``p - onehot(y)``, negative only at the true class; for a batch of ``B`` the class counts are
  estimated as ``n_c = B (1/C - g_c)`` rounded to ``B`` in all (exact when the model's mean
  prediction is uniform, the usual regime of an early round; Geng et al. 2021 study the
  estimator).
* **Inputs** by matching gradients (Zhu, Liu and Han, "Deep Leakage from Gradients", NeurIPS
  2019), with the cosine objective of Geiping et al., "Inverting Gradients - How easy is it to
  break privacy in federated learning?" (NeurIPS 2020): dummy inputs ``x'`` are optimised with
  Adam so that the gradient of the model at ``x'`` (with the inferred labels) points the same
  way as the observed one, inside the data's box.

The observed update of one local step of learning rate ``eta`` is ``-eta g``; the attack only
needs its direction. :func:`reconstruction_metrics` scores a reconstruction against the truth
(best matching of the batch's examples, mean squared error, PSNR) and against the data-
independent baseline, the mean image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from fl_gym.sim.config import check_int, check_real
from fl_gym.sim.learning.models import BatchedMLP

__all__ = [
    "InversionResult",
    "ReconstructionScores",
    "infer_labels",
    "invert_gradients",
    "reconstruction_metrics",
]


def infer_labels(model: BatchedMLP, observed: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Each target's batch labels from the sign and size of its last-layer bias gradient.

    Args:
        model: The attacked model's architecture.
        observed: ``(T, P)`` what the server received from each target, proportional to minus
            its gradient (an update), or the gradient itself negated.
        batch_size: ``B``, the examples behind each update.

    Returns:
        ``(T, B)`` int64 labels, sorted per row.
    """
    batch_size = check_int("batch_size", batch_size, minimum=1)
    layer = model._layers[-1]
    # Updates move against the gradient: g = -update (the scale does not matter for B = 1; for
    # B > 1 the counts use the gradient's own scale, recovered from sum_c |g_c| = 2 (1 - p_y)).
    g = -observed[:, layer.bias_offset : layer.end].to(torch.float64)
    c = g.shape[1]
    if batch_size == 1:
        return g.argmin(dim=1, keepdim=True)
    # Normalise so that the negative part sums to about 1 - 1/C (a uniform prediction).
    negative = torch.clamp(-g, min=0.0).sum(dim=1, keepdim=True)
    g = g / torch.clamp(negative, min=1e-30) * (1.0 - 1.0 / c)
    counts = batch_size * (1.0 / c - g)
    counts = torch.clamp(counts, min=0.0)
    counts = counts / torch.clamp(counts.sum(dim=1, keepdim=True), min=1e-30) * batch_size
    floor = counts.floor()
    missing = (batch_size - floor.sum(dim=1)).long()
    remainder = counts - floor
    order = remainder.argsort(dim=1, descending=True)
    ranks = order.argsort(dim=1)
    whole = floor + (ranks < missing.unsqueeze(1)).to(floor.dtype)
    labels = torch.repeat_interleave(
        torch.arange(c, device=g.device).repeat(g.shape[0]), whole.long().reshape(-1)
    )
    return labels.view(g.shape[0], batch_size)


@dataclass(frozen=True)
class InversionResult:
    """A batch of reconstructions.

    Attributes:
        inputs: ``(T, B, F)`` the reconstructed inputs.
        labels: ``(T, B)`` the labels used (inferred or given).
        cosine_distance: ``(T,)`` final ``1 - cos(gradient at inputs, observed)``.
    """

    inputs: torch.Tensor
    labels: torch.Tensor
    cosine_distance: torch.Tensor


def _per_target_gradients(
    model: BatchedMLP, params: torch.Tensor, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """``(T, P)`` the gradient of each target's mean cross-entropy, differentiable in ``x``."""
    logits = model.logits(params, x)
    loss = (
        torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"
        )
        / x.shape[1]
    )
    (grad,) = torch.autograd.grad(loss, params, create_graph=True)
    return grad


def invert_gradients(
    model: BatchedMLP,
    global_params: torch.Tensor,
    observed: torch.Tensor,
    batch_size: int,
    *,
    bounds: tuple[float, float],
    labels: torch.Tensor | None = None,
    steps: int = 300,
    learning_rate: float = 0.1,
    generator: torch.Generator,
) -> InversionResult:
    """Reconstruct every target's batch from what the server received (Geiping et al.'s
    cosine objective, batched over the targets).

    Args:
        model: The attacked model's architecture.
        global_params: ``(P,)`` the model the targets trained from (the server knows it).
        observed: ``(T, P)`` each target's received update (any scale; its direction counts).
        batch_size: ``B`` examples per target.
        bounds: The data's box ``(low, high)``: reconstructions are kept inside it.
        labels: ``(T, B)`` labels to use, or ``None`` to infer them (:func:`infer_labels`).
        steps: Adam iterations, >= 1.
        learning_rate: Adam step size, > 0.
        generator: Draws the dummy inputs' start.

    Returns:
        The reconstructions.
    """
    steps = check_int("steps", steps, minimum=1)
    learning_rate = check_real("learning_rate", learning_rate, low=0.0, low_open=True)
    low, high = (float(b) for b in bounds)
    if not low < high:
        raise ValueError(f"bounds must be (low, high) with low < high, got {bounds!r}")
    t = observed.shape[0]
    labels = infer_labels(model, observed, batch_size) if labels is None else labels
    target = (-observed).to(torch.float32).detach()
    target_norm = torch.linalg.vector_norm(target, dim=1).clamp(min=1e-30)
    params = global_params.detach().to(torch.float32).unsqueeze(0).expand(t, -1).clone()
    params.requires_grad_(True)
    start = torch.rand(
        (t, batch_size, model.num_features), generator=generator, device=observed.device
    )
    x = (low + (high - low) * start).requires_grad_(True)
    optimiser = torch.optim.Adam([x], lr=learning_rate)
    distance = torch.ones(t)
    with torch.enable_grad():
        for _ in range(steps):
            optimiser.zero_grad()
            grad = _per_target_gradients(model, params, x, labels)
            cos = (grad * target).sum(dim=1) / (
                torch.linalg.vector_norm(grad, dim=1).clamp(min=1e-30) * target_norm
            )
            distance = 1.0 - cos
            distance.sum().backward()
            optimiser.step()
            with torch.no_grad():
                x.clamp_(low, high)
    return InversionResult(x.detach(), labels.detach(), distance.detach())


@dataclass(frozen=True)
class ReconstructionScores:
    """How well reconstructions match the truth.

    Attributes:
        mse: ``(T,)`` per target, the mean squared error over its batch (examples matched to
            reconstructions by the assignment of least total error).
        psnr_db: ``(T,)`` ``10 log10(range^2 / mse)``.
        mean_image_mse: ``(T,)`` the same error of the data's mean image in every slot: what a
            guess that ignores the update achieves.
        label_accuracy: ``(T,)`` the fraction of the batch's label multiset recovered.
    """

    mse: np.ndarray
    psnr_db: np.ndarray
    mean_image_mse: np.ndarray
    label_accuracy: np.ndarray


def reconstruction_metrics(
    reconstructed: torch.Tensor,
    truth: torch.Tensor,
    *,
    mean_image: torch.Tensor,
    data_range: float,
    labels: torch.Tensor | None = None,
    true_labels: torch.Tensor | None = None,
) -> ReconstructionScores:
    """Score reconstructions ``(T, B, F)`` against the true batches ``(T, B, F)``.

    Args:
        reconstructed: The attack's inputs.
        truth: The targets' true inputs.
        mean_image: ``(F,)`` the data's mean input (the uninformed guess).
        data_range: Peak-to-peak range of the data, for the PSNR.
        labels: ``(T, B)`` the attack's labels, or ``None``.
        true_labels: ``(T, B)`` the true labels, or ``None``.

    Returns:
        The scores (``label_accuracy`` is NaN-free: zeros when labels are not given).
    """
    rec = reconstructed.detach().to(torch.float64).cpu().numpy()
    tru = truth.detach().to(torch.float64).cpu().numpy()
    t, b, _ = tru.shape
    mse = np.empty(t)
    for i in range(t):
        cost = ((rec[i][:, None, :] - tru[i][None, :, :]) ** 2).mean(axis=2)
        rows, cols = linear_sum_assignment(cost)
        mse[i] = float(cost[rows, cols].mean())
    mean = mean_image.detach().to(torch.float64).cpu().numpy()
    mean_mse = ((tru - mean) ** 2).mean(axis=(1, 2))
    psnr = 10.0 * np.log10(data_range**2 / np.maximum(mse, 1e-12))
    label_accuracy = np.zeros(t)
    if labels is not None and true_labels is not None:
        guess = labels.cpu().numpy()
        real = true_labels.cpu().numpy()
        for i in range(t):
            common = np.intersect1d(guess[i], real[i])
            hits = sum(min(int((guess[i] == c).sum()), int((real[i] == c).sum())) for c in common)
            label_accuracy[i] = hits / b
    return ReconstructionScores(mse, psnr, mean_mse, label_accuracy)
