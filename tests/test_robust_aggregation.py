"""Robust aggregation under attack: definitions on clean data, Krum's choice, breakdown at any
attacker scale, and the guarantee that finite rows never give a NaN or infinite aggregate."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fl_gym.sim.learning.aggregation import (
    AGGREGATORS,
    AggregationResult,
    centered_clipping,
    coordinate_median,
    fedavg,
    geometric_median,
    krum,
    multi_krum,
    norm_clipping,
    trimmed_mean,
)

ROBUST: dict[str, Callable[..., AggregationResult]] = {
    "median": coordinate_median,
    "trimmed_mean": functools.partial(trimmed_mean, trim_ratio=0.45),
    "geometric_median": geometric_median,
    "krum": krum,
    "multi_krum": multi_krum,
    "centered_clipping": centered_clipping,
    "norm_clipping": norm_clipping,
}


def honest_rows(seed: int, n: int = 20, d: int = 30) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 1.0 + 0.1 * torch.randn(n, d, generator=g, dtype=torch.float64)


# -- definitions on clean data ---------------------------------------------------------------


def test_krum_is_its_definition_by_brute_force():
    x = honest_rows(0, n=9, d=4)
    n, f = 9, 2
    scores = []
    for i in range(n):
        d2 = sorted(float(((x[i] - x[j]) ** 2).sum()) for j in range(n) if j != i)
        scores.append(sum(d2[: n - f - 2]))
    best = int(np.argmin(scores))
    result = krum(x, torch.ones(n), num_byzantine=f)
    torch.testing.assert_close(result.aggregate, x[best], rtol=0, atol=1e-15)
    chosen = np.argsort(scores, kind="stable")[:5]
    w = torch.arange(1.0, n + 1, dtype=torch.float64)
    expected = (w[chosen] @ x[chosen]) / w[chosen].sum()
    got = multi_krum(x, w, num_byzantine=f, num_selected=5).aggregate
    torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-14)


def test_krum_picks_the_known_point():
    # A tight cluster around the origin with its centre point, two outliers far apart: the
    # centre's nearest neighbours are the closest, so Krum returns it.
    x = torch.tensor(
        [[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [50.0, 50.0], [-40, 80.0]],
        dtype=torch.float64,
    )
    result = krum(x, torch.ones(7), num_byzantine=2)
    assert torch.equal(result.aggregate, x[0])
    # Multi-Krum with m = n - f = 5 averages the cluster: the origin.
    torch.testing.assert_close(
        multi_krum(x, torch.ones(7), num_byzantine=2).aggregate, torch.zeros(2, dtype=x.dtype)
    )


def test_multi_krum_of_every_row_and_unbounded_clipping_are_fedavg():
    x = honest_rows(1, n=11, d=7)
    w = torch.rand(11, generator=torch.Generator().manual_seed(2), dtype=torch.float64) + 0.5
    expected = fedavg(x, w).aggregate
    for got in (
        multi_krum(x, w, num_selected=11).aggregate,
        centered_clipping(x, w, radius=math.inf).aggregate,
        norm_clipping(x, w, max_norm=math.inf).aggregate,
        # A radius above every row's norm clips nothing.
        norm_clipping(x, w, max_norm=1e6).aggregate,
    ):
        torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-14)


def test_centered_clipping_is_its_iteration_written_out():
    x = honest_rows(3, n=8, d=5)
    x[0] += 3.0
    w = torch.arange(1.0, 9.0, dtype=torch.float64)
    alpha = w / w.sum()
    v = coordinate_median(x).aggregate
    for _ in range(2):
        step = torch.zeros_like(v)
        for k in range(8):
            diff = x[k] - v
            step += alpha[k] * diff * min(1.0, 0.4 / float(diff.norm()))
        v = v + step
    got = centered_clipping(x, w, radius=0.4, num_iter=2).aggregate
    torch.testing.assert_close(got, v, rtol=1e-12, atol=1e-13)


def test_norm_clipping_is_its_definition():
    x = honest_rows(4, n=6, d=3)
    x[2] *= 10
    w = torch.ones(6, dtype=torch.float64)
    norms = x.norm(dim=1)
    # An even count: the median is the midpoint of the middle pair.
    c = float(0.5 * (norms.sort().values[2] + norms.sort().values[3]))
    clipped = x * torch.clamp(c / norms, max=1.0).unsqueeze(1)
    torch.testing.assert_close(norm_clipping(x, w).aggregate, clipped.mean(dim=0))


def test_geometric_median_first_order_condition_on_clean_data():
    # At the geometric median the weighted unit vectors towards the rows sum to zero.
    x = honest_rows(5, n=15, d=6)
    w = torch.rand(15, generator=torch.Generator().manual_seed(6), dtype=torch.float64) + 0.5
    v = geometric_median(x, w).aggregate
    diff = x - v
    gradient = (w.unsqueeze(1) * diff / diff.norm(dim=1, keepdim=True)).sum(dim=0)
    assert float(gradient.norm()) < 1e-7 * float(w.sum())


# -- breakdown -------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1e6, 1e12, 3e38])
@pytest.mark.parametrize("num_bad", [1, 4, 9])
@pytest.mark.parametrize("name", list(ROBUST))
def test_aggregate_stays_near_the_honest_mean_at_any_attacker_scale(
    name: str, num_bad: int, scale: float
):
    n = 20
    honest = honest_rows(7, n=n).to(torch.float32)
    g = torch.Generator().manual_seed(num_bad)
    # Attackers at the given scale in random directions (and two of them agreeing).
    direction = torch.randn(num_bad, honest.shape[1], generator=g)
    direction[: min(2, num_bad)] = 1.0
    direction = direction / direction.abs().amax(dim=1, keepdim=True)
    updates = honest.clone()
    updates[:num_bad] = direction * scale
    good = honest[num_bad:]
    mean = good.mean(dim=0)
    radius = float((good - mean).norm(dim=1).max())
    alpha = num_bad / n
    result = ROBUST[name](updates, torch.ones(n))
    assert bool(torch.isfinite(result.aggregate).all())
    error = float((result.aggregate.double() - mean.double()).norm())
    if name == "norm_clipping":
        # Clipped rows have the median norm, at most the largest honest norm c: an attacker
        # share alpha moves the mean by at most 2 alpha c plus the honest clipping.
        bound = 2 * float(good.norm(dim=1).max())
    else:
        # The geometric median's bound 2 (1 - a) / (1 - 2 a) r holds for the other rules on
        # this data as well (they select, trim or clip towards the majority).
        bound = 2 * (1 - alpha) / (1 - 2 * alpha) * radius
    assert error <= bound, (name, num_bad, scale, error, bound)
    fedavg_error = float((fedavg(updates, torch.ones(n)).aggregate.double() - mean).norm())
    assert fedavg_error > 1e3 * bound


def test_one_huge_client_of_twenty_does_not_move_the_geometric_median():
    honest = honest_rows(8, n=20, d=100)
    updates = honest.clone()
    updates[3] = 1e12
    v = geometric_median(updates, torch.ones(20)).aggregate
    exact = geometric_median(honest[torch.arange(20) != 3], torch.ones(19)).aggregate
    # One row of twenty pulls the point by at most about one honest spread / n.
    assert float((v - exact).norm()) < 0.1 * float((honest - honest.mean(0)).norm(dim=1).max())


def test_the_reported_nan_case_is_finite():
    x = torch.tensor([[0.1] * 1000, [1e20] * 1000, [0.1] * 1000])
    for name, rule in ROBUST.items():
        aggregate = rule(x, torch.ones(3)).aggregate
        torch.testing.assert_close(aggregate, torch.full((1000,), 0.1), msg=name)


# -- the NaN guarantee -----------------------------------------------------------------------

special = st.sampled_from([0.0, -0.0, 1e-45, 3.4e38, -3.4e38, 1e20, -1e30, math.nan, math.inf])
values = st.one_of(st.floats(width=32, allow_nan=False, allow_infinity=False), special)


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
@settings(max_examples=60, deadline=None)
@given(
    x=hnp.arrays(np.float32, st.tuples(st.integers(1, 7), st.integers(1, 5)), elements=values),
    data=st.data(),
)
def test_no_nan_or_inf_from_any_rule(name: str, x: np.ndarray, data: st.DataObject):
    weights = data.draw(
        hnp.arrays(np.float32, (x.shape[0],), elements=st.floats(0.5, 1e6, width=32))
    )
    result = AGGREGATORS[name](torch.from_numpy(x), torch.from_numpy(weights))
    assert bool(torch.isfinite(result.aggregate).all())
    finite_rows = np.isfinite(x).all(axis=1)
    assert result.accepted.tolist() == finite_rows.tolist()
    if finite_rows.any():
        # Every rule's aggregate lies within the finite rows' bounding box, up to rounding.
        low, high = x[finite_rows].min(axis=0), x[finite_rows].max(axis=0)
        agg = result.aggregate.double().numpy()
        span = np.maximum(high.astype(np.float64) - low, np.abs(high).astype(np.float64))
        slack = 1e-5 * span + 1e-30
        if name not in ("centered_clipping", "norm_clipping", "geometric_median"):
            assert np.all(agg >= low - slack) and np.all(agg <= high + slack)


def test_krum_does_not_depend_on_row_order():
    x = honest_rows(9, n=12, d=8)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    assert torch.equal(krum(x, torch.ones(12)).aggregate, krum(x[perm], torch.ones(12)).aggregate)
