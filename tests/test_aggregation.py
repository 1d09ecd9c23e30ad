"""Aggregation rules: closed forms, independent references, robustness and input validation."""

from __future__ import annotations

import functools
import math
import pickle
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import optimize, stats

from fl_gym.sim.learning.aggregation import (
    AGGREGATORS,
    AggregationResult,
    centered_clipping,
    coordinate_median,
    fedavg,
    geometric_median,
    get_aggregator,
    krum,
    multi_krum,
    norm_clipping,
    trimmed_mean,
)

DTYPES = [torch.float32, torch.float64]

# Every rule called as (updates, weights); trimmed mean with a ratio that trims at K >= 5.
RULES: dict[str, Callable[..., AggregationResult]] = {
    "fedavg": fedavg,
    "median": coordinate_median,
    "trimmed_mean": functools.partial(trimmed_mean, trim_ratio=0.2),
    "geometric_median": geometric_median,
    "krum": krum,
    "multi_krum": multi_krum,
    "centered_clipping": centered_clipping,
    "norm_clipping": norm_clipping,
}

FAST = settings(max_examples=40, deadline=None)

finite_values = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


def matrices(min_rows: int = 1, max_rows: int = 10, max_cols: int = 6) -> st.SearchStrategy:
    shapes = st.tuples(st.integers(min_rows, max_rows), st.integers(1, max_cols))
    return hnp.arrays(np.float64, shapes, elements=finite_values)


def random_case(
    seed: int, num_rows: int = 9, dim: int = 5, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    updates = torch.randn(num_rows, dim, generator=generator, dtype=dtype)
    weights = torch.rand(num_rows, generator=generator, dtype=dtype) + 0.1
    return updates, weights


def weiszfeld_objective(v: np.ndarray, points: np.ndarray, weights: np.ndarray) -> float:
    return float(weights @ np.linalg.norm(points - v, axis=1))


# -- FedAvg ----------------------------------------------------------------------------------


@FAST
@given(
    update=hnp.arrays(np.float64, st.integers(1, 8), elements=finite_values),
    weights=st.lists(st.floats(0.0, 1e3), min_size=1, max_size=12),
)
def test_fedavg_of_identical_updates_is_that_update(update: np.ndarray, weights: list[float]):
    assume(sum(weights) > 0)
    stacked = torch.as_tensor(np.tile(update, (len(weights), 1)))
    result = fedavg(stacked, torch.tensor(weights, dtype=torch.float64))
    scale = float(np.abs(update).max()) + 1.0
    torch.testing.assert_close(
        result.aggregate, torch.as_tensor(update), rtol=1e-12, atol=1e-12 * scale
    )


@pytest.mark.parametrize("name", list(RULES))
def test_every_rule_returns_the_update_when_all_rows_agree(name: str):
    update = torch.tensor([0.5, -2.0, 3.25, 1e-3], dtype=torch.float64)
    weights = torch.tensor([1.0, 4.0, 0.5, 2.0, 3.0, 1.0], dtype=torch.float64)
    result = RULES[name](update.expand(6, -1).clone(), weights)
    torch.testing.assert_close(result.aggregate, update, rtol=1e-12, atol=1e-12)


def test_fedavg_matches_hand_computed_weighted_mean():
    updates = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    # (1*1 + 0*3 + 3*5) / 4 = 4 and (1*2 + 0*4 + 3*6) / 4 = 5.
    result = fedavg(updates, torch.tensor([1.0, 0.0, 3.0]))
    torch.testing.assert_close(result.aggregate, torch.tensor([4.0, 5.0]))
    # Sample counts as integers: (10 + 60 + 50) / 40 = 3 and (20 + 80 + 60) / 40 = 4.
    result = fedavg(updates, torch.tensor([10, 20, 10]))
    torch.testing.assert_close(result.aggregate, torch.tensor([3.0, 4.0]))
    assert result.accepted.tolist() == [True, True, True]
    assert result.num_rejected == 0


@FAST
@given(data=st.data(), x=matrices())
def test_fedavg_equals_numpy_average(data: st.DataObject, x: np.ndarray):
    weights = np.array(
        data.draw(st.lists(st.floats(0.0, 1e3), min_size=x.shape[0], max_size=x.shape[0]))
    )
    assume(weights.sum() > 0)
    result = fedavg(torch.as_tensor(x), torch.as_tensor(weights))
    # Scaled by the largest weight first: with subnormal weights (5e-324) np.average's
    # products round to the subnormal grid and its answer is off by a third.
    expected = np.average(x, axis=0, weights=weights / weights.max())
    np.testing.assert_allclose(result.aggregate.numpy(), expected, rtol=1e-9, atol=1e-9 * 1e6)


@pytest.mark.parametrize("name", list(RULES))
def test_huge_weights_do_not_overflow(name: str):
    updates, weights = random_case(6, dtype=torch.float32)
    huge = weights / weights.max() * 3e38  # their float32 sum would overflow
    with_huge = RULES[name](updates, huge).aggregate
    with_plain = RULES[name](updates, weights).aggregate
    assert bool(torch.isfinite(with_huge).all())
    if name != "geometric_median":
        torch.testing.assert_close(with_huge, with_plain)
        return
    # Weiszfeld stops once the objective stalls; in float32 the two runs (whose normalised weights
    # differ by an ulp) may stop an iteration apart, so compare what the method guarantees: the
    # objective to about its tolerance, the point to about sqrt(tol) times the spread.
    points, alpha = updates.double().numpy(), (weights / weights.sum()).double().numpy()
    objective_huge = weiszfeld_objective(with_huge.double().numpy(), points, alpha)
    objective_plain = weiszfeld_objective(with_plain.double().numpy(), points, alpha)
    assert objective_huge == pytest.approx(objective_plain, rel=1e-6)
    torch.testing.assert_close(with_huge, with_plain, atol=1e-3, rtol=0)


def test_zero_weight_row_is_accepted_but_has_no_influence():
    updates, weights = random_case(3)
    weights[4] = 0.0
    result = fedavg(updates, weights)
    keep = torch.arange(9) != 4
    torch.testing.assert_close(result.aggregate, fedavg(updates[keep], weights[keep]).aggregate)
    assert bool(result.accepted.all())


# -- robustness ------------------------------------------------------------------------------


def corrupted_case(
    attack: str, dtype: torch.dtype, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """10 clients, 3 of them (at random positions) replaced by 1e6-scale values."""
    generator = torch.Generator().manual_seed(seed)
    num_rows, dim = 10, 20
    honest = 1.0 + 0.1 * torch.randn(num_rows, dim, generator=generator, dtype=dtype)
    bad = torch.zeros(num_rows, dtype=torch.bool)
    bad[torch.randperm(num_rows, generator=generator)[:3]] = True
    if attack == "random":
        evil = 1e6 * torch.randn(3, dim, generator=generator, dtype=dtype)
    elif attack == "same_direction":
        evil = torch.full((3, dim), 1e6, dtype=dtype)
    else:  # "opposite_signs": pull two ways at once
        evil = torch.tensor([[1e6], [-1e6], [1e6]], dtype=dtype).expand(3, dim)
    updates = honest.clone()
    updates[bad] = evil
    # Honest clients weigh more than corrupted ones: corrupted weight fraction alpha <= 0.3.
    weights = torch.where(
        bad,
        0.5 + 0.5 * torch.rand(num_rows, generator=generator, dtype=dtype),
        1.0 + torch.rand(num_rows, generator=generator, dtype=dtype),
    )
    return updates, weights, honest[~bad], weights[bad].sum() / weights.sum()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("attack", ["random", "same_direction", "opposite_signs"])
@pytest.mark.parametrize("weighted", [False, True])
def test_robust_rules_stay_near_honest_clients_while_fedavg_breaks(
    dtype: torch.dtype, attack: str, weighted: bool
):
    updates, weights, honest, alpha = corrupted_case(attack, dtype, seed=7)
    if not weighted:
        weights = torch.ones_like(weights)
        alpha = torch.tensor(0.3, dtype=dtype)
    honest_mean = honest.mean(dim=0)
    low, high = honest.min(dim=0).values, honest.max(dim=0).values
    slack = 1e-5 if dtype == torch.float32 else 1e-12

    assert float(torch.linalg.vector_norm(fedavg(updates, weights).aggregate - honest_mean)) > 1e4

    # Fewer than half the rows (and half the weight) corrupted: every column's median lies within
    # the honest clients' range in that column.
    median = coordinate_median(updates, weights if weighted else None).aggregate
    assert bool(((median >= low - slack) & (median <= high + slack)).all())

    # Trimming 3 per side removes at least the 3 corrupted values in each column.
    trimmed = trimmed_mean(updates, weights if weighted else None, trim_ratio=0.3).aggregate
    assert bool(((trimmed >= low - slack) & (trimmed <= high + slack)).all())

    # For the exact minimiser, ||gm - z|| <= 2 (1 - alpha) / (1 - 2 alpha) max_k ||x_k - z|| over
    # honest x_k (compare the objective at gm and at z); a small margin covers the smoothing.
    gm = geometric_median(updates, weights).aggregate
    radius = torch.linalg.vector_norm(honest - honest_mean, dim=1).max()
    bound = 2 * (1 - alpha) / (1 - 2 * alpha) * radius
    assert float(torch.linalg.vector_norm(gm - honest_mean)) <= float(bound) + 1e-3


# -- non-finite rows -------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(RULES))
@settings(max_examples=25, deadline=None)
@given(
    x=matrices(min_rows=1, max_rows=9, max_cols=4),
    data=st.data(),
)
def test_non_finite_rows_are_rejected_and_the_rest_aggregated(
    name: str, x: np.ndarray, data: st.DataObject
):
    num_rows, dim = x.shape
    bad = np.array(data.draw(st.lists(st.booleans(), min_size=num_rows, max_size=num_rows)))
    assume(not bad.all())
    poison = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    column = data.draw(st.integers(0, dim - 1))
    x = x.copy()
    x[bad, column] = poison
    weights = torch.linspace(0.5, 2.0, num_rows, dtype=torch.float64)
    updates = torch.as_tensor(x)

    result = RULES[name](updates, weights)

    keep = torch.as_tensor(~bad)
    assert result.accepted.tolist() == (~bad).tolist()
    assert result.num_rejected == int(bad.sum())
    assert bool(torch.isfinite(result.aggregate).all())
    expected = RULES[name](updates[keep], weights[keep]).aggregate
    torch.testing.assert_close(result.aggregate, expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(RULES))
def test_no_finite_row_gives_a_zero_aggregate(name: str, dtype: torch.dtype):
    updates = torch.tensor([[math.nan, 1.0, 2.0], [3.0, math.inf, 0.0]], dtype=dtype)
    result = RULES[name](updates, torch.ones(2, dtype=dtype))
    assert torch.equal(result.aggregate, torch.zeros(3, dtype=dtype))
    assert result.accepted.tolist() == [False, False]
    assert result.num_rejected == 2


# -- geometric median ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_geometric_median_matches_direct_minimisation(seed: int):
    updates, weights = random_case(seed, num_rows=7, dim=3)
    result = geometric_median(updates, weights, nu=1e-9, max_iter=1000, tol=1e-15)
    points, w = updates.numpy(), weights.numpy()
    reference = optimize.minimize(
        weiszfeld_objective,
        points.mean(axis=0),
        args=(points, w),
        method="Nelder-Mead",
        options={"xatol": 1e-12, "fatol": 1e-15, "maxiter": 20000},
    )
    assert reference.success
    np.testing.assert_allclose(result.aggregate.numpy(), reference.x, atol=1e-6)
    assert weiszfeld_objective(result.aggregate.numpy(), points, w) <= reference.fun + 1e-12


def test_geometric_median_default_stopping_rule_bounds_the_objective_gap():
    # The stopping rule is on the objective, which is flat at its minimum: the objective is
    # within about tol of optimal (relative), the point within about sqrt(tol) of the spread.
    for seed in range(11, 16):
        updates, weights = random_case(seed, num_rows=8, dim=4)
        points, w = updates.numpy(), weights.numpy()
        loose = geometric_median(updates, weights).aggregate
        tight = geometric_median(updates, weights, nu=1e-12, max_iter=5000, tol=0.0).aggregate
        best = weiszfeld_objective(tight.numpy(), points, w)
        assert weiszfeld_objective(loose.numpy(), points, w) - best <= 1e-6 * best
        assert float(torch.linalg.vector_norm(loose - tight)) <= 1e-2


def test_geometric_median_closed_forms():
    # Equilateral triangle: the Fermat point is the centroid.
    triangle = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]], dtype=torch.float64)
    triangle = triangle + torch.tensor([5.0, -2.0], dtype=torch.float64)
    result = geometric_median(triangle, torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(result.aggregate, triangle.mean(dim=0), rtol=0, atol=1e-9)
    # A point carrying at least half the total weight is the minimiser.
    corner = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    result = geometric_median(corner, torch.tensor([3.0, 1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(result.aggregate, corner[0], rtol=0, atol=1e-5)
    # In one dimension the geometric median is the median.
    line = torch.tensor([[4.0], [-1.0], [10.0], [2.5], [7.0]], dtype=torch.float64)
    result = geometric_median(line, torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(
        result.aggregate, torch.tensor([4.0], dtype=torch.float64), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_geometric_median_is_rotation_and_translation_equivariant(seed: int):
    updates, weights = random_case(seed, num_rows=9, dim=4)
    generator = torch.Generator().manual_seed(100 + seed)
    rotation, _ = torch.linalg.qr(torch.randn(4, 4, generator=generator, dtype=torch.float64))
    shift = 10.0 * torch.randn(4, generator=generator, dtype=torch.float64)
    moved = geometric_median(updates @ rotation.T + shift, weights).aggregate
    expected = geometric_median(updates, weights).aggregate @ rotation.T + shift
    torch.testing.assert_close(moved, expected, rtol=0, atol=1e-7)


# -- coordinate median -----------------------------------------------------------------------


@FAST
@given(x=matrices().filter(lambda a: a.shape[0] % 2 == 1))
def test_median_with_odd_count_equals_numpy(x: np.ndarray):
    result = coordinate_median(torch.as_tensor(x))
    assert np.array_equal(result.aggregate.numpy(), np.median(x, axis=0))


@FAST
@given(x=matrices().filter(lambda a: a.shape[0] % 2 == 0))
def test_median_with_even_count_averages_the_middle_pair_like_numpy(x: np.ndarray):
    result = coordinate_median(torch.as_tensor(x))
    np.testing.assert_allclose(result.aggregate.numpy(), np.median(x, axis=0), rtol=1e-15)


@FAST
@given(x=matrices(), data=st.data())
def test_weighted_median_with_integer_weights_is_median_of_repeated_rows(
    x: np.ndarray, data: st.DataObject
):
    counts = np.array(
        data.draw(st.lists(st.integers(0, 4), min_size=x.shape[0], max_size=x.shape[0]))
    )
    assume(counts.sum() > 0)
    result = coordinate_median(torch.as_tensor(x), torch.as_tensor(counts))
    expected = np.median(np.repeat(x, counts, axis=0), axis=0)
    np.testing.assert_allclose(result.aggregate.numpy(), expected, rtol=1e-15)


@FAST
@given(x=matrices(), weight=st.floats(1e-4, 1e4))
def test_weighted_median_with_equal_weights_is_the_median(x: np.ndarray, weight: float):
    weights = torch.full((x.shape[0],), weight, dtype=torch.float64)
    result = coordinate_median(torch.as_tensor(x), weights)
    torch.testing.assert_close(result.aggregate, coordinate_median(torch.as_tensor(x)).aggregate)


@FAST
@given(x=matrices(), data=st.data())
def test_weighted_median_minimises_weighted_absolute_deviation(x: np.ndarray, data: st.DataObject):
    weights = np.array(
        data.draw(st.lists(st.floats(0.0, 10.0), min_size=x.shape[0], max_size=x.shape[0]))
    )
    assume(weights.sum() > 1e-3)
    median = coordinate_median(torch.as_tensor(x), torch.as_tensor(weights)).aggregate.numpy()
    # The minimum of sum_k w_k |x_k - m| over m is attained at a data value of the column.
    achieved = (weights[:, None] * np.abs(x - median)).sum(axis=0)
    best = (weights[:, None, None] * np.abs(x[:, None, :] - x[None, :, :])).sum(axis=0).min(axis=0)
    np.testing.assert_array_less(achieved, best * (1 + 1e-9) + 1e-6)


# -- trimmed mean ----------------------------------------------------------------------------


@FAST
@given(x=matrices())
def test_trimmed_mean_without_trimming_is_the_mean(x: np.ndarray):
    result = trimmed_mean(torch.as_tensor(x), trim_ratio=0.0)
    np.testing.assert_allclose(result.aggregate.numpy(), x.mean(axis=0), rtol=1e-12, atol=1e-6)


def test_weighted_trimmed_mean_without_trimming_is_fedavg():
    updates, weights = random_case(5)
    result = trimmed_mean(updates, weights, trim_ratio=0.0)
    assert torch.equal(result.aggregate, fedavg(updates, weights).aggregate)
    # Fewer than 1 / trim_ratio rows trims nothing either.
    result = trimmed_mean(updates, weights, trim_ratio=0.1)
    assert torch.equal(result.aggregate, fedavg(updates, weights).aggregate)


@FAST
@given(x=matrices(max_rows=12), ratio=st.floats(0.0, 0.49))
def test_trimmed_mean_equals_scipy_trim_mean(x: np.ndarray, ratio: float):
    num_rows = x.shape[0]
    # scipy truncates ratio * n without a guard against rounding; skip the rare disagreeing case.
    assume(int(ratio * num_rows) == math.floor(ratio * num_rows + 1e-9))
    result = trimmed_mean(torch.as_tensor(x), trim_ratio=ratio)
    expected = stats.trim_mean(x, ratio, axis=0)
    np.testing.assert_allclose(result.aggregate.numpy(), expected, rtol=1e-12, atol=1e-6)


def test_trim_count_is_not_lost_to_rounding():
    # 0.29 * 100 evaluates to 28.999999999999996 but must trim 29 per side.
    column = torch.arange(100, dtype=torch.float64) ** 2
    result = trimmed_mean(column[:, None], trim_ratio=0.29)
    expected = column[29:71].mean()
    torch.testing.assert_close(result.aggregate, expected[None])


def test_weighted_trimmed_mean_keeps_each_value_with_its_rows_weight():
    updates = torch.tensor(
        [[1.0, 50.0], [2.0, 4.0], [3.0, 3.0], [4.0, 2.0], [100.0, 1.0]], dtype=torch.float64
    )
    weights = torch.tensor([1.0, 3.0, 2.0, 1.0, 1.0], dtype=torch.float64)
    result = trimmed_mean(updates, weights, trim_ratio=0.2)
    # Column 0 keeps rows 1, 2, 3: (3*2 + 2*3 + 1*4) / 6; column 1 keeps rows 3, 2, 1:
    # (1*2 + 2*3 + 3*4) / 6.
    expected = torch.tensor([16.0 / 6.0, 20.0 / 6.0], dtype=torch.float64)
    torch.testing.assert_close(result.aggregate, expected)


def test_weighted_trimmed_mean_falls_back_to_plain_mean_where_kept_weight_is_zero():
    updates = torch.tensor([[1.0, 5.0], [2.0, 6.0], [3.0, 4.0]], dtype=torch.float64)
    weights = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    result = trimmed_mean(updates, weights, trim_ratio=0.34)
    # Both columns keep only the middle value: row 1 (weight 0) in column 0 and row 0 in column 1.
    torch.testing.assert_close(result.aggregate, torch.tensor([2.0, 5.0], dtype=torch.float64))


# -- properties shared by the rules ----------------------------------------------------------


@pytest.mark.parametrize("name", list(RULES))
@pytest.mark.parametrize("scale", [1e-3, 3.0, 1e5])
def test_weights_scale_invariance(name: str, scale: float):
    updates, weights = random_case(21)
    base = RULES[name](updates, weights).aggregate
    scaled = RULES[name](updates, weights * scale).aggregate
    torch.testing.assert_close(scaled, base, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", list(RULES))
def test_row_order_does_not_matter(name: str):
    updates, weights = random_case(13)
    order = torch.randperm(9, generator=torch.Generator().manual_seed(4))
    result = RULES[name](updates[order], weights[order]).aggregate
    torch.testing.assert_close(result, RULES[name](updates, weights).aggregate)


@pytest.mark.parametrize("name", ["median", "trimmed_mean"])
def test_coordinate_rules_commute_with_per_coordinate_affine_maps(name: str):
    updates, weights = random_case(17, num_rows=10)
    # Negative scales reverse the order in a column: a trim or midpoint that favoured one side
    # would show here.
    scale = torch.tensor([2.0, -1.0, 0.5, -3.0, 1.0], dtype=torch.float64)
    shift = torch.tensor([1.0, -4.0, 0.0, 2.5, 100.0], dtype=torch.float64)
    for w in (None, weights):
        moved = RULES[name](updates * scale + shift, w).aggregate
        expected = RULES[name](updates, w).aggregate * scale + shift
        torch.testing.assert_close(moved, expected)


@pytest.mark.parametrize("name", list(RULES))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, *DTYPES])
def test_output_dtype_follows_input(name: str, dtype: torch.dtype):
    updates, weights = random_case(2, dtype=torch.float64)
    result = RULES[name](updates.to(dtype), weights.to(dtype))
    assert result.aggregate.dtype == dtype
    reference = RULES[name](updates.to(dtype).double(), weights.to(dtype).double()).aggregate
    torch.testing.assert_close(result.aggregate.double(), reference, rtol=1e-2, atol=1e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", list(RULES))
def test_runs_on_the_inputs_device(name: str):
    updates, weights = random_case(8)
    updates[2, 1] = math.nan
    on_gpu = RULES[name](updates.cuda(), weights.cuda())
    on_cpu = RULES[name](updates, weights)
    assert on_gpu.aggregate.device.type == "cuda"
    torch.testing.assert_close(on_gpu.aggregate.cpu(), on_cpu.aggregate)
    assert on_gpu.num_rejected == on_cpu.num_rejected == 1


# -- registry --------------------------------------------------------------------------------


def test_registry_names():
    assert set(AGGREGATORS) == {
        "fedavg",
        "median",
        "trimmed_mean",
        "geometric_median",
        "krum",
        "multi_krum",
        "centered_clipping",
        "norm_clipping",
    }


def test_get_aggregator_binds_options_and_pickles():
    updates, weights = random_case(9, num_rows=10)
    rule = get_aggregator("trimmed_mean", trim_ratio=0.3)
    expected = trimmed_mean(updates, weights, trim_ratio=0.3).aggregate
    assert torch.equal(rule(updates, weights).aggregate, expected)
    assert not torch.equal(expected, trimmed_mean(updates, weights).aggregate)
    restored = pickle.loads(pickle.dumps(rule))
    assert torch.equal(restored(updates, weights).aggregate, expected)
    gm = get_aggregator("geometric_median", max_iter=1)
    one_step = gm(updates, weights).aggregate
    assert not torch.allclose(one_step, geometric_median(updates, weights).aggregate)


def test_get_aggregator_errors():
    with pytest.raises(ValueError, match=r"unknown aggregator 'bulyan'.*'fedavg'.*'median'"):
        get_aggregator("bulyan")
    with pytest.raises(ValueError, match=r"num_byzantine must be None or an integer >= 0.*-1"):
        get_aggregator("krum", num_byzantine=-1)
    with pytest.raises(ValueError, match=r"radius must be None or a number > 0.*0"):
        get_aggregator("centered_clipping", radius=0)
    with pytest.raises(ValueError, match=r"max_norm must be None or a number > 0.*nan"):
        get_aggregator("norm_clipping", max_norm=float("nan"))
    with pytest.raises(TypeError, match="must be a string"):
        get_aggregator(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"\['trim_ratio'\].*allowed: none"):
        get_aggregator("fedavg", trim_ratio=0.1)
    with pytest.raises(TypeError, match=r"\['beta'\].*\['nu', 'max_iter', 'tol'\]"):
        get_aggregator("geometric_median", beta=2)
    with pytest.raises(ValueError, match="trim_ratio must be a number in"):
        get_aggregator("trimmed_mean", trim_ratio=0.5)
    with pytest.raises(ValueError, match="max_iter must be an integer >= 1, got 0"):
        get_aggregator("geometric_median", max_iter=0)


# -- input validation ------------------------------------------------------------------------

GOOD_UPDATES = torch.zeros(3, 2)
GOOD_WEIGHTS = torch.ones(3)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: fedavg(np.zeros((3, 2)), GOOD_WEIGHTS), TypeError, "torch.Tensor.*ndarray"),
        (lambda: fedavg(torch.zeros(3), GOOD_WEIGHTS), ValueError, r"2-D.*\(3,\)"),
        (lambda: fedavg(torch.zeros(3, 2, 1), GOOD_WEIGHTS), ValueError, r"\(3, 2, 1\)"),
        (lambda: fedavg(torch.zeros(3, 2, dtype=torch.int64), GOOD_WEIGHTS), TypeError, "int64"),
        (lambda: fedavg(torch.zeros(0, 2), torch.ones(0)), ValueError, "K >= 1"),
        (lambda: fedavg(GOOD_UPDATES, None), TypeError, "weights are required"),
        (lambda: fedavg(GOOD_UPDATES, torch.ones(4)), ValueError, r"\(3,\).*\(4,\)"),
        (lambda: fedavg(GOOD_UPDATES, torch.ones(3, 1)), ValueError, r"\(3, 1\)"),
        (lambda: fedavg(GOOD_UPDATES, torch.tensor([1.0, -1.0, 1.0])), ValueError, ">= 0"),
        (lambda: fedavg(GOOD_UPDATES, torch.tensor([1.0, math.nan, 1.0])), ValueError, "finite"),
        (lambda: fedavg(GOOD_UPDATES, torch.tensor([True, False, True])), TypeError, "bool"),
        (lambda: fedavg(GOOD_UPDATES, torch.zeros(3)), ValueError, "sum to 0"),
        (lambda: coordinate_median(GOOD_UPDATES, torch.zeros(3)), ValueError, "sum to 0"),
        (lambda: trimmed_mean(GOOD_UPDATES, torch.zeros(3)), ValueError, "sum to 0"),
        (lambda: geometric_median(GOOD_UPDATES, torch.zeros(3)), ValueError, "sum to 0"),
        (lambda: trimmed_mean(GOOD_UPDATES, trim_ratio=0.5), ValueError, "got 0.5"),
        (lambda: trimmed_mean(GOOD_UPDATES, trim_ratio=-0.1), ValueError, "got -0.1"),
        (lambda: trimmed_mean(GOOD_UPDATES, trim_ratio=math.nan), ValueError, "got nan"),
        (lambda: geometric_median(GOOD_UPDATES, GOOD_WEIGHTS, nu=0.0), ValueError, "nu must"),
        (lambda: geometric_median(GOOD_UPDATES, GOOD_WEIGHTS, max_iter=2.5), ValueError, "2.5"),
        (lambda: geometric_median(GOOD_UPDATES, GOOD_WEIGHTS, tol=-1.0), ValueError, "tol must"),
    ],
)
def test_bad_input_raises_a_clear_error(call: Callable[[], object], error: type, message: str):
    with pytest.raises(error, match=message):
        call()


def test_only_positive_weight_on_a_rejected_row_is_an_error():
    updates = torch.tensor([[math.nan, 0.0], [1.0, 2.0]])
    with pytest.raises(ValueError, match=r"accepted rows=\[1\]"):
        fedavg(updates, torch.tensor([1.0, 0.0]))


@pytest.mark.parametrize("shape", [(1, 1), (5, 1), (1, 7), (6, 3), (9, 70), (4, 600)])
@pytest.mark.parametrize("name", list(RULES))
def test_no_rule_changes_its_input(name: str, shape: tuple[int, int]):
    """The caller's updates and weights come back untouched (one column or one row included,
    where a transposed block of the input is a view of it), and a second call on them gives
    the same bits."""
    generator = torch.Generator().manual_seed(sum(shape))
    for dtype in (torch.float32, torch.float64):
        updates = (torch.randn(shape, generator=generator) * 1e3).to(dtype)
        weights = torch.arange(1, shape[0] + 1, dtype=dtype)
        kept_updates, kept_weights = updates.clone(), weights.clone()
        first = RULES[name](updates, weights).aggregate
        assert torch.equal(updates, kept_updates) and torch.equal(weights, kept_weights)
        assert torch.equal(RULES[name](updates, weights).aggregate, first)
