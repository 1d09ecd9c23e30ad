"""The sorting rules (coordinate median, trimmed mean) against their definitions computed
another way, on the float32 columns they sort as packed keys: ties, both signed zeros, even and
odd counts, equal and unequal weights; and, bit for bit, the rules and the geometric median
against their arithmetic written out column by column or on whole arrays (the CPU code sorts
packed keys, works in column blocks and forms the Weiszfeld differences a block of rows at a
time)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fl_gym.sim.learning.aggregation import (
    _row_order,
    _row_sums_of_squares,
    _weighted_median_1d,
    centered_clipping,
    coordinate_median,
    geometric_median,
    krum,
    multi_krum,
    trimmed_mean,
)

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


# -- the CPU sorting paths bit for bit against the definitions' arithmetic, column by column -----


def hard_columns(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """float32 ``(n, d)`` columns that exercise every branch of the packed-key sort: distinct
    values, ties (at the trim boundaries too), both signed zeros, values one ulp apart (equal
    key prefixes that are not ties), subnormals, magnitudes from 1e-30 to 1e30 in one column,
    and a constant column."""
    x = rng.standard_normal((n, d)).astype(np.float32)
    kinds = rng.integers(0, 7, d)
    for j in range(d):
        kind = kinds[j]
        if kind == 1:  # few distinct values: ties wherever the trim falls
            x[:, j] = rng.integers(-2, 3, n)
        elif kind == 2:  # zeros of both signs among values
            x[rng.random(n) < 0.4, j] = np.float32(-0.0)
            x[rng.random(n) < 0.3, j] = np.float32(0.0)
        elif kind == 3:  # neighbours a few ulps apart
            steps = rng.integers(-40, 40, n).astype(np.int32)
            base = np.float32(rng.standard_normal())
            x[:, j] = (np.array([base], dtype=np.float32).view(np.int32) + steps).view(np.float32)
        elif kind == 4:  # subnormals
            x[:, j] = x[:, j] * np.float32(1e-40)
        elif kind == 5:  # huge and tiny magnitudes in one column
            x[:, j] = x[:, j] * np.float32(10.0) ** rng.uniform(-30, 30, n).astype(np.float32)
        elif kind == 6:
            x[:, j] = np.float32(rng.standard_normal())
    return x


def reference_order(column: np.ndarray) -> np.ndarray:
    """numpy's own argsort of one column (the tie order the rules keep)."""
    return np.argsort(np.ascontiguousarray(column))


def accepted_rows(x: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The finite rows in the working dtype (in the input's layout when all are finite, as the
    rules keep it) and their weights normalised as the rules do."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    finite = torch.isfinite(x).all(dim=1)
    w = weights.to(dtype)[finite]
    w = w / w.max()
    rows = x.to(dtype) if bool(finite.all()) else x[finite].to(dtype)
    return rows, w / w.sum()


def trimmed_reference(x: torch.Tensor, weights: torch.Tensor, trim_ratio: float) -> torch.Tensor:
    """The weighted trimmed mean: each column's kept values and weights in numpy's argsort
    order, then the float64 sums down the whole (n - 2 trim, d) array."""
    xs, w = accepted_rows(x, weights)
    n = xs.shape[0]
    trim = min(int(trim_ratio * n + 1e-9), (n - 1) // 2)
    largest = float(xs.abs().max())
    scale = 1.0 if largest == 0 else math.ldexp(1.0, math.frexp(largest)[1])
    cols = xs.numpy()
    kept_rows = np.stack([reference_order(column)[trim : n - trim] for column in cols.T])
    # The sums run down the columns of C-contiguous (n - 2 trim, d) arrays, as the rule's do
    # (torch sums a transposed layout in another order).
    index = np.ascontiguousarray(kept_rows.T)
    kept = torch.from_numpy(np.take_along_axis(cols, index, axis=0).astype(np.float64)) / scale
    kept_w = w.to(torch.float64)[torch.from_numpy(index)].contiguous()
    weight_sum = kept_w.sum(dim=0)
    has = weight_sum > 0
    mean = torch.where(
        has, (kept_w * kept).sum(dim=0) / torch.where(has, weight_sum, 1.0), kept.mean(dim=0)
    )
    limit = torch.finfo(x.dtype).max
    return (mean * scale).clamp(-limit, limit).to(x.dtype)


def median_reference(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The weighted median, one column at a time: cumulative weights in numpy's argsort order,
    the first values reaching and passing half the total (within the rules' slack), their
    midpoint."""
    xs, w = accepted_rows(x, weights)
    cols, w = xs.numpy(), w.numpy()
    n = cols.shape[0]
    out = []
    for column in cols.T:
        if (w == w[0]).all():
            # Equal weights take the ordinary median of the sorted values.
            middle = np.sort(column)[[(n - 1) // 2, n // 2]]
            out.append(middle[0] if middle[0] == middle[1] else 0.5 * middle[0] + 0.5 * middle[1])
            continue
        order = reference_order(column)
        cum = torch.from_numpy(w[order]).cumsum(dim=0).numpy()
        total = cum[-1]
        slack = n * float(np.finfo(w.dtype).eps) * total
        lo = column[order[np.searchsorted(cum, 0.5 * total - slack, side="left")]]
        hi_index = min(int(np.searchsorted(cum, 0.5 * total + slack, side="right")), n - 1)
        hi = column[order[hi_index]]
        out.append(lo if lo == hi else column.dtype.type(0.5) * lo + column.dtype.type(0.5) * hi)
    return torch.from_numpy(np.array(out, dtype=cols.dtype)).to(x.dtype)


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32 if t.dtype == torch.float32 else torch.int64)


CASES = [(k, seed) for k in (3, 4, 20, 100) for seed in range(4)]


@pytest.mark.parametrize(("k", "seed"), CASES)
def test_sorting_rules_match_the_column_by_column_definitions_bit_for_bit(k: int, seed: int):
    rng = np.random.default_rng(1000 * k + seed)
    # Widths of one column block and of two (the last block takes the remainder).
    d = int(rng.choice([7, 700, 1100]))
    x = hard_columns(rng, k, d)
    if seed % 2 and k > 3:
        x[rng.integers(k)] = np.nan  # a rejected row (three rows must stay to trim one)
    weight_sets = [
        np.full(k, 5.0),
        rng.integers(13, 15, k).astype(np.float64),
        rng.random(k) * (rng.random(k) < 0.7),  # zeros among real weights
    ]
    for dtype in (torch.float32, torch.float64):
        upd = torch.as_tensor(x).to(dtype)
        for weights in weight_sets:
            w = torch.as_tensor(weights)
            if not bool((w[torch.isfinite(upd).all(dim=1)] > 0).any()):
                continue
            n = int(torch.isfinite(upd).all(dim=1).sum())
            for ratio in (max(0.1, 1.01 / n), 0.45):  # at least one row trimmed
                got = trimmed_mean(upd, w, trim_ratio=ratio).aggregate
                assert torch.equal(bits(got), bits(trimmed_reference(upd, w, ratio)))
            got = coordinate_median(upd, w).aggregate
            assert torch.equal(bits(got), bits(median_reference(upd, w)))


def test_all_kept_weights_zero_falls_back_to_the_plain_mean_bit_for_bit():
    rng = np.random.default_rng(7)
    x = hard_columns(rng, 20, 600)
    # Only two rows weigh anything: columns that trim both away keep weight 0.
    w = torch.zeros(20)
    w[:2] = torch.tensor([1.0, 3.0])
    ranks = np.argsort(np.argsort(x, axis=0), axis=0)[:2]  # ranks of rows 0 and 1
    trimmed_away = ((ranks < 4) | (ranks >= 16)).all(axis=0)
    assert trimmed_away.sum() > 10  # the fallback is exercised
    upd = torch.as_tensor(x)
    got = trimmed_mean(upd, w, trim_ratio=0.2).aggregate
    assert torch.equal(bits(got), bits(trimmed_reference(upd, w, 0.2)))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 100, 1100])
def test_row_order_is_numpys_argsort(n: int):
    rng = np.random.default_rng(n)
    values = np.ascontiguousarray(hard_columns(rng, n, 300).T)  # (300, n) rows to sort
    expected = np.stack([np.argsort(row) for row in values])
    np.testing.assert_array_equal(_row_order(values), expected)


def weiszfeld_reference(x: torch.Tensor, weights: torch.Tensor, iterations: int) -> torch.Tensor:
    """The geometric median's iteration written out on whole arrays: float64 rows scaled by a
    power of two, the coordinate median of the full column sort as the start, the differences
    and their norms over all rows at once, and the same stopping rule (median of distances as
    the scale)."""
    xs, w = accepted_rows(x, weights)
    largest = float(xs.abs().max())
    scale = 1.0 if largest == 0 else math.ldexp(1.0, math.frexp(largest)[1])
    x64 = xs.to(torch.float64) / scale
    n = xs.shape[0]
    ranked = torch.from_numpy(np.sort(xs.numpy(), axis=0))[[(n - 1) // 2, n // 2]]
    middle = ranked.to(torch.float64) / scale
    median = torch.where(middle[0] == middle[1], middle[0], 0.5 * middle[0] + 0.5 * middle[1])
    alpha = w.to(torch.float64)
    for _ in range(iterations):
        distance = torch.linalg.vector_norm(x64 - median, dim=1)
        beta = alpha / distance.clamp_min(1e-6 / scale)
        new_median = (beta @ x64) / beta.sum()
        step = float(torch.linalg.vector_norm(new_median - median))
        spread = float(_weighted_median_1d(distance, alpha))
        median = new_median
        if step <= 1e-10 * spread:
            break
    limit = torch.finfo(x.dtype).max
    return (median * scale).clamp(-limit, limit).to(x.dtype)


@pytest.mark.parametrize(("k", "seed"), CASES)
def test_geometric_median_matches_its_iteration_on_whole_arrays_bit_for_bit(k: int, seed: int):
    rng = np.random.default_rng(2000 * k + seed)
    # Rows wider than a block of differences, and narrow ones.
    d = int(rng.choice([7, 1400, 3000]))
    x = hard_columns(rng, k, d)
    x[: max(1, k // 5)] *= -4  # attackers
    if seed % 2 and k > 3:
        x[rng.integers(k)] = np.inf
    for upd in (torch.as_tensor(x), torch.as_tensor(x).double()):
        w = torch.as_tensor(rng.integers(13, 15, k).astype(np.float64))
        got = geometric_median(upd, w).aggregate
        assert torch.equal(bits(got), bits(weiszfeld_reference(upd, w, 200)))


@pytest.mark.parametrize(("n", "d"), [(1, 5), (3, 7), (100, 4810), (37, 9000)])
def test_blocked_sums_of_squares_are_the_whole_array_sums_bit_for_bit(n: int, d: int):
    rng = np.random.default_rng(n * d)
    x = torch.from_numpy(rng.standard_normal((n, d)) * np.exp(rng.normal(0, 20, (n, d))))
    assert torch.equal(bits(_row_sums_of_squares(x)), bits((x * x).sum(dim=1)))


@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")
def test_krum_takes_rows_that_require_grad_with_the_same_bits():
    rng = np.random.default_rng(3)
    x = torch.from_numpy(hard_columns(rng, 20, 700))
    w = torch.as_tensor(rng.integers(13, 15, 20).astype(np.float32))
    for rule in (krum, multi_krum):
        plain = rule(x, w).aggregate
        tracked = rule(x.clone().requires_grad_(True), w).aggregate.detach()
        assert torch.equal(bits(tracked), bits(plain))


def clipping_reference(
    x: torch.Tensor, weights: torch.Tensor, radius: float | None
) -> torch.Tensor:
    """Centered clipping written out on whole arrays: float64 rows scaled by a power of two, the
    coordinate median of the full column sort as the centre, three clipping iterations."""
    xs, w = accepted_rows(x, weights)
    largest = float(xs.abs().max())
    scale = 1.0 if largest == 0 else math.ldexp(1.0, math.frexp(largest)[1])
    x64 = xs.to(torch.float64) / scale
    n = xs.shape[0]
    middle = torch.from_numpy(np.sort(xs.numpy(), axis=0))[[(n - 1) // 2, n // 2]]
    middle = middle.to(torch.float64) / scale
    center = torch.where(middle[0] == middle[1], middle[0], 0.5 * middle[0] + 0.5 * middle[1])
    alpha = w.to(torch.float64)
    for _ in range(3):
        diff = x64 - center
        distance = torch.linalg.vector_norm(diff, dim=1)
        tau = _weighted_median_1d(distance, alpha) if radius is None else radius / scale
        factor = torch.where(
            distance > tau, tau / distance.clamp_min(1e-300), torch.ones_like(distance)
        )
        center = center + (alpha * factor) @ diff
    limit = torch.finfo(x.dtype).max
    return (center * scale).clamp(-limit, limit).to(x.dtype)


@pytest.mark.parametrize(("k", "seed"), CASES)
def test_centered_clipping_matches_its_iteration_on_whole_arrays_bit_for_bit(k: int, seed: int):
    rng = np.random.default_rng(3000 * k + seed)
    x = hard_columns(rng, k, int(rng.choice([7, 1400])))
    x[: max(1, k // 5)] *= -4
    for upd in (torch.as_tensor(x), torch.as_tensor(x).double()):
        w = torch.as_tensor(rng.integers(13, 15, k).astype(np.float64))
        for radius in (None, 0.5):
            got = centered_clipping(upd, w, radius=radius).aggregate
            assert torch.equal(bits(got), bits(clipping_reference(upd, w, radius)))


@pytest.mark.parametrize("d", [0, 1, 64, 513])
def test_every_rule_takes_any_width_on_the_blocked_paths(d: int):
    rng = np.random.default_rng(d)
    x = torch.from_numpy(hard_columns(rng, 12, d))
    w = torch.as_tensor(rng.integers(13, 15, 12).astype(np.float32))
    for rule in (coordinate_median, geometric_median, centered_clipping, krum, multi_krum):
        assert rule(x, w).aggregate.shape == (d,)
    got = trimmed_mean(x, w, trim_ratio=0.2).aggregate
    assert got.shape == (d,)
    if d:
        assert torch.equal(bits(got), bits(trimmed_reference(x, w, 0.2)))
        assert torch.equal(bits(coordinate_median(x, w).aggregate), bits(median_reference(x, w)))
