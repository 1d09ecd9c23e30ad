"""The sorting rules (coordinate median, trimmed mean) against their definitions computed
another way, on the float32 columns they sort as packed keys: ties, both signed zeros, even and
odd counts, equal and unequal weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fl_gym.sim.learning.aggregation import coordinate_median, trimmed_mean

SEEDS = range(12)


def tied_columns(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """float32 half-integers in [-3, 3] (many equal values, both signed zeros), a column of
    distinct values, and an all-zero one."""
    x = rng.integers(-6, 7, (n, d)).astype(np.float32) / 2
    x[rng.random((n, d)) < 0.2] = -0.0
    x[:, 0] = rng.permutation(n).astype(np.float32) - n / 2
    x[:, 1] = 0.0
    return x


def median_by_definition(column: np.ndarray, weights: np.ndarray) -> float:
    """Midpoint of the interval of minimisers of ``sum_k w_k |x_k - m|``: its ends are the
    smallest and the largest data value attaining the minimum (exact here: half-integer values
    and integer weights make every objective an exact float64 sum)."""
    objective = (weights[:, None] * np.abs(column[:, None] - column[None, :])).sum(axis=0)
    minimisers = column[objective == objective.min()]
    return 0.5 * (float(minimisers.min()) + float(minimisers.max()))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("equal", [True, False])
def test_float32_median_is_the_weighted_definition(seed: int, equal: bool):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 30)) + seed % 2  # odd and even counts
    x = tied_columns(rng, n, 40)
    weights = np.full(n, 3.0) if equal else rng.integers(1, 5, n).astype(np.float64)
    got = coordinate_median(torch.as_tensor(x), torch.as_tensor(weights, dtype=torch.float32))
    expected = [median_by_definition(x[:, j].astype(np.float64), weights) for j in range(40)]
    np.testing.assert_array_equal(got.aggregate.numpy(), np.array(expected, dtype=np.float32))


@pytest.mark.parametrize("seed", SEEDS)
def test_equal_weights_take_the_unweighted_median(seed: int):
    rng = np.random.default_rng(seed)
    x = torch.as_tensor(tied_columns(rng, 2 * int(rng.integers(1, 15)), 30))
    weighted = coordinate_median(x, torch.full((x.shape[0],), 0.7)).aggregate
    assert torch.equal(weighted, coordinate_median(x).aggregate)
    assert torch.equal(weighted, torch.as_tensor(np.median(x.numpy(), axis=0)))


def trimmed_by_definition(x: np.ndarray, weights: np.ndarray, trim: int) -> np.ndarray:
    """Each column's weighted mean of its values ranked ``trim`` to ``n - trim - 1``."""
    out = []
    for column in x.T.astype(np.float64):
        kept = np.argsort(column, kind="stable")[trim : len(column) - trim]
        out.append((weights[kept] * column[kept]).sum() / weights[kept].sum())
    return np.array(out)


@pytest.mark.parametrize("seed", SEEDS)
def test_float32_weighted_trimmed_mean_is_the_definition(seed: int):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 40))
    # Distinct values (a random permutation per column): which row is trimmed is unambiguous.
    x = np.argsort(rng.random((n, 25)), axis=0).astype(np.float32) * np.float32(0.37) - 3
    weights = rng.integers(1, 9, n).astype(np.float64)
    got = trimmed_mean(torch.as_tensor(x), torch.as_tensor(weights), trim_ratio=0.2)
    expected = trimmed_by_definition(x, weights, int(0.2 * n))
    np.testing.assert_allclose(got.aggregate.numpy(), expected, rtol=2e-7, atol=1e-7)


@pytest.mark.parametrize("seed", SEEDS)
def test_float32_trimmed_mean_with_equal_weights_and_ties_is_the_plain_trimmed_mean(seed: int):
    rng = np.random.default_rng(seed)
    x = tied_columns(rng, int(rng.integers(5, 40)), 30)
    n = x.shape[0]
    # With equal weights the tied values' order cannot matter: the kept values are the same.
    expected = np.sort(x.astype(np.float64), axis=0)[int(0.25 * n) : n - int(0.25 * n)].mean(0)
    got = trimmed_mean(torch.as_tensor(x), torch.full((n,), 2.5), trim_ratio=0.25)
    np.testing.assert_allclose(got.aggregate.numpy(), expected, rtol=2e-7, atol=1e-7)
