"""The gradient-inversion attack (fl_gym.sim.learning.leakage) on digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from fl_gym.sim.learning.leakage import infer_labels, invert_gradients, reconstruction_metrics
from fl_gym.sim.learning.models import BatchedMLP


def _targets(batch: int, num: int = 8, seed: int = 0) -> tuple[torch.Tensor, ...]:
    digits = load_digits()
    x_all = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y_all = torch.tensor(digits.target)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(x_all), generator=g)[: num * batch].view(num, batch)
    return x_all[idx], y_all[idx], x_all.mean(dim=0)


def _attack(noise_std: float, batch: int) -> tuple[object, object]:
    model = BatchedMLP(64, 10, (32,))
    g = torch.Generator().manual_seed(1)
    params = model.init_params(g)
    x, y, mean = _targets(batch)
    _, grad = model.loss_and_grad(params.expand(x.shape[0], -1).contiguous(), x, y)
    update = -0.1 * grad + noise_std * torch.randn(grad.shape, generator=g)
    result = invert_gradients(
        model, params, update, batch, bounds=(0.0, 1.0), steps=150, generator=g
    )
    scores = reconstruction_metrics(
        result.inputs, x, mean_image=mean, data_range=1.0, labels=result.labels, true_labels=y
    )
    return result, scores


def test_a_clean_update_gives_the_batch_away() -> None:
    """Without noise one example's update reveals its label and its image (DLG / iDLG)."""
    _, scores = _attack(0.0, batch=1)
    assert np.all(scores.label_accuracy == 1.0)
    assert scores.mse.mean() < 0.05 * scores.mean_image_mse.mean()
    assert scores.psnr_db.min() > 20.0


def test_huge_noise_leaves_nothing_better_than_the_mean_image() -> None:
    _, scores = _attack(1e6, batch=1)
    assert scores.mse.mean() >= scores.mean_image_mse.mean()
    assert np.all(np.isfinite(scores.mse))


def test_label_counts_of_a_batch_from_the_bias_gradient() -> None:
    """B = 4 from a fresh model: the label multiset comes back from the bias gradient."""
    model = BatchedMLP(64, 10, (32,))
    params = model.init_params(torch.Generator().manual_seed(2))
    x, y, _ = _targets(4, num=16, seed=3)
    _, grad = model.loss_and_grad(params.expand(16, -1).contiguous(), x, y)
    labels = infer_labels(model, -grad, 4)
    assert labels.shape == (16, 4)
    np.testing.assert_array_equal(labels.numpy(), np.sort(y.numpy(), axis=1))


def test_metrics_match_by_the_best_assignment() -> None:
    truth = torch.tensor([[[0.0, 0.0], [1.0, 1.0]]])
    swapped = truth[:, [1, 0]]
    scores = reconstruction_metrics(swapped, truth, mean_image=torch.zeros(2), data_range=1.0)
    assert scores.mse[0] == 0.0
    assert scores.mean_image_mse[0] == pytest.approx(0.5)
