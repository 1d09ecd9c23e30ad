"""Server-side aggregation rules: pure functions over stacked client updates.

Every rule takes ``updates``, a ``(K, d)`` floating tensor with one client's update per row, and
``weights``, a ``(K,)`` tensor of non-negative importances (sample counts, say; they need not sum
to one and only their ratios matter). A row holding any NaN or infinite entry is rejected before
aggregation and counted in :attr:`AggregationResult.num_rejected`; the rule then runs on the finite
rows alone, so a corrupted transmission can never poison the aggregate with a NaN.

Rules:

- :func:`fedavg`: weighted mean (McMahan et al., 2017).
- :func:`coordinate_median`: coordinate-wise median, weighted when weights are given.
- :func:`trimmed_mean`: coordinate-wise trimmed mean (Yin et al., 2018), weighted when weights
  are given.
- :func:`geometric_median`: weighted geometric median by the smoothed Weiszfeld algorithm of RFA
  (Pillutla, Kakade and Harchaoui, "Robust Aggregation for Federated Learning", IEEE TSP 2022).

Arithmetic runs in the input's dtype, or in float32 for half-precision input, on the input's
device; the aggregate comes back in the input's dtype. Every rule is vectorised over clients; only
the Weiszfeld iteration is a Python loop.

:func:`get_aggregator` binds a rule's options by name and returns a picklable callable
``(updates, weights) -> AggregationResult``, which is how a federation is configured.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "AGGREGATORS",
    "AggregationResult",
    "coordinate_median",
    "fedavg",
    "geometric_median",
    "get_aggregator",
    "trimmed_mean",
]

# Guards floor(trim_ratio * n) against rounding just below a whole number (0.29 * 100 evaluates
# to 28.999999999999996, which must trim 29 rows, not 28).
_TRIM_COUNT_GUARD = 1e-9


@dataclass(frozen=True, eq=False)
class AggregationResult:
    """Outcome of one aggregation.

    Attributes:
        aggregate: ``(d,)`` aggregated update, in the dtype and on the device of the input;
            zeros if no row was accepted.
        accepted: ``(K,)`` bool, the rows that were finite and entered the rule. A finite row of
            weight zero is accepted even though a weighted rule gives it no influence.
        num_rejected: Number of rows rejected for holding a NaN or infinite entry.
    """

    aggregate: torch.Tensor
    accepted: torch.Tensor
    num_rejected: int


# -- validation ------------------------------------------------------------------------------


def _check_updates(updates: object) -> torch.Tensor:
    if not isinstance(updates, torch.Tensor):
        raise TypeError(
            f"updates must be a torch.Tensor of shape (K, d), got {type(updates).__name__}"
        )
    if updates.ndim != 2:
        raise ValueError(f"updates must be 2-D with shape (K, d), got shape {tuple(updates.shape)}")
    if not updates.is_floating_point():
        raise TypeError(f"updates must have a floating dtype, got {updates.dtype}")
    if updates.shape[0] < 1:
        raise ValueError(
            f"updates must hold at least one client row (K >= 1), got shape {tuple(updates.shape)}"
        )
    return updates


def _working_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half precision loses too much in sums over many clients; float32 and float64 are kept.
    return torch.promote_types(dtype, torch.float32)


def _check_weights(weights: object, updates: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    num_rows = updates.shape[0]
    if weights is None:
        raise TypeError(
            f"weights are required: pass a (K,) = ({num_rows},) tensor, e.g. torch.ones({num_rows})"
        )
    w = weights if isinstance(weights, torch.Tensor) else torch.as_tensor(weights)
    if w.dtype == torch.bool or w.is_complex():
        raise TypeError(f"weights must be real numbers, got dtype {w.dtype}")
    if tuple(w.shape) != (num_rows,):
        raise ValueError(
            f"weights must have shape (K,) = ({num_rows},) to match updates, "
            f"got shape {tuple(w.shape)}"
        )
    w = w.to(device=updates.device, dtype=dtype)
    if not bool(torch.isfinite(w).all()):
        raise ValueError(f"weights must be finite, got {w}")
    if bool((w < 0).any()):
        raise ValueError(f"weights must be >= 0, got {w}")
    return w


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_trim_ratio(trim_ratio: object) -> float:
    if not _is_real(trim_ratio) or not 0.0 <= float(trim_ratio) < 0.5:  # type: ignore[arg-type]
        raise ValueError(f"trim_ratio must be a number in [0, 0.5), got {trim_ratio!r}")
    return float(trim_ratio)  # type: ignore[arg-type]


def _check_weiszfeld_options(nu: object, max_iter: object, tol: object) -> None:
    if not _is_real(nu) or not math.isfinite(nu) or nu <= 0:  # type: ignore[arg-type, operator]
        raise ValueError(f"nu must be a finite number > 0, got {nu!r}")
    if not isinstance(max_iter, numbers.Integral) or isinstance(max_iter, bool) or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    if not _is_real(tol) or not math.isfinite(tol) or tol < 0:  # type: ignore[arg-type, operator]
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")


@dataclass(frozen=True)
class _Rows:
    """The finite rows of a validated input, in the working dtype."""

    x: torch.Tensor  # (n, d) accepted rows
    w: torch.Tensor | None  # (n,) their weights, normalised to sum to one; None if unweighted
    accepted: torch.Tensor  # (K,) bool
    num_rejected: int


def _accept(updates: object, weights: object, *, weighted: bool) -> _Rows:
    """Validate the input and keep the finite rows (and their weights when ``weighted``)."""
    upd = _check_updates(updates)
    dtype = _working_dtype(upd.dtype)
    w_all = _check_weights(weights, upd, dtype) if weighted else None
    accepted = torch.isfinite(upd).all(dim=1)
    num_accepted = int(accepted.sum())
    x = upd[accepted].to(dtype)
    w = None
    if w_all is not None and num_accepted > 0:
        w = w_all[accepted]
        largest = w.max()
        if not bool(largest > 0):
            raise ValueError(
                "weights of the accepted (finite) rows sum to 0, so a weighted aggregate is "
                f"undefined; weights={w_all}, accepted rows={accepted.nonzero().flatten().tolist()}"
            )
        # Dividing by the largest weight before summing keeps huge weights (near the dtype's
        # maximum) from overflowing the total; normalised weights keep the weighted sums in range.
        w = w / largest
        w = w / w.sum()
    return _Rows(x=x, w=w, accepted=accepted, num_rejected=upd.shape[0] - num_accepted)


def _result(rows: _Rows, aggregate: torch.Tensor | None, like: torch.Tensor) -> AggregationResult:
    if aggregate is None:
        aggregate = torch.zeros(like.shape[1], dtype=like.dtype, device=like.device)
    return AggregationResult(
        aggregate=aggregate.to(like.dtype), accepted=rows.accepted, num_rejected=rows.num_rejected
    )


# -- rules -----------------------------------------------------------------------------------


def fedavg(updates: torch.Tensor, weights: torch.Tensor) -> AggregationResult:
    """Weighted mean of the finite rows: ``sum_k w_k x_k / sum_k w_k``.

    Args:
        updates: ``(K, d)`` floating tensor, one client update per row.
        weights: ``(K,)`` finite, non-negative weights (e.g. sample counts).

    Returns:
        The aggregation result.

    Raises:
        ValueError: If the shapes or weights are invalid, or the weights of the finite rows sum
            to zero.
        TypeError: If ``updates`` is not a floating tensor or ``weights`` is missing.
    """
    rows = _accept(updates, weights, weighted=True)
    if rows.x.shape[0] == 0:
        return _result(rows, None, updates)
    assert rows.w is not None
    return _result(rows, rows.w @ rows.x, updates)


def fedavg_trusted(updates: torch.Tensor, weights: torch.Tensor) -> AggregationResult:
    """:func:`fedavg` without its input validation, for callers whose inputs are well formed.

    ``updates`` must be a ``(K, d)`` floating tensor with ``K >= 1`` and ``weights`` a ``(K,)``
    tensor of finite, non-negative weights (a federation's own sample counts). The arithmetic is
    :func:`fedavg`'s, so the result is the same bit for bit; where a row is not finite or the
    weights sum to zero, :func:`fedavg` itself answers.
    """
    # A row with a NaN or an infinity has a non-finite sum; finite sums mean finite rows.
    if not bool(torch.isfinite(updates.sum(dim=1)).all()):
        return fedavg(updates, weights)
    accepted = torch.ones(updates.shape[0], dtype=torch.bool, device=updates.device)
    dtype = _working_dtype(updates.dtype)
    w = weights.to(device=updates.device, dtype=dtype)
    largest = w.max()
    if not bool(largest > 0):
        return fedavg(updates, weights)
    w = w / largest
    w = w / w.sum()
    aggregate = w @ updates.to(dtype)
    return AggregationResult(
        aggregate=aggregate.to(updates.dtype), accepted=accepted, num_rejected=0
    )


def _midpoint(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """``(lo + hi) / 2`` without overflow, and exactly ``lo`` where ``lo == hi``."""
    # Halving each term first cannot overflow; keeping equal ends as they are avoids the rounding
    # of halving a subnormal, so an odd count returns its middle value bit for bit.
    return torch.where(lo == hi, lo, 0.5 * lo + 0.5 * hi)


def _weighted_median_sorted(
    sorted_x: torch.Tensor, order: torch.Tensor, w: torch.Tensor
) -> torch.Tensor:
    """Per-column weighted median of column-sorted values, midpoint of the minimiser interval.

    ``m`` minimises ``sum_k w_k |x_k - m|`` exactly when the weight strictly below ``m`` and the
    weight strictly above ``m`` are each at most half the total. The minimisers form an interval
    ``[lo, hi]``: ``lo`` is the first sorted value whose cumulative weight reaches half the total,
    ``hi`` the first whose cumulative weight exceeds it. The midpoint of that interval is returned,
    so equal weights reproduce the ordinary median (the mean of the two middle values for an even
    count) and integer weights the median of rows repeated that many times.
    """
    num = sorted_x.shape[0]
    cum = w[order].cumsum(dim=0)  # (n, d), non-decreasing down each column
    total = cum[-1]
    half = 0.5 * total
    # Cumulative sums of non-integer weights land a few ulps off an exact tie with half the
    # total; within this tolerance a tie is treated as one, keeping the midpoint convention.
    slack = num * torch.finfo(cum.dtype).eps * total
    lo_index = (cum < half - slack).sum(dim=0, keepdim=True)
    hi_index = (cum <= half + slack).sum(dim=0, keepdim=True).clamp_max(num - 1)
    lo = sorted_x.gather(0, lo_index)[0]
    hi = sorted_x.gather(0, hi_index)[0]
    return _midpoint(lo, hi)


def coordinate_median(
    updates: torch.Tensor, weights: torch.Tensor | None = None
) -> AggregationResult:
    """Coordinate-wise median of the finite rows.

    Without weights this is the ordinary median of each column, with numpy's convention for an
    even count: the mean of the two middle values. With weights it is the weighted median of each
    column, a minimiser of ``sum_k w_k |x_k - m|``; where the minimisers form an interval its
    midpoint is returned, so equal weights give the unweighted median and integer weights give
    the median of rows repeated that many times.

    Args:
        updates: ``(K, d)`` floating tensor, one client update per row.
        weights: ``(K,)`` finite, non-negative weights, or ``None`` for the unweighted median.

    Returns:
        The aggregation result.

    Raises:
        ValueError: If the shapes or weights are invalid, or given weights of the finite rows sum
            to zero.
        TypeError: If ``updates`` is not a floating tensor.
    """
    weighted = weights is not None
    rows = _accept(updates, weights, weighted=weighted)
    num = rows.x.shape[0]
    if num == 0:
        return _result(rows, None, updates)
    if rows.w is None:
        sorted_x = rows.x.sort(dim=0).values
        median = _midpoint(sorted_x[(num - 1) // 2], sorted_x[num // 2])
    else:
        sorted_x, order = rows.x.sort(dim=0)
        median = _weighted_median_sorted(sorted_x, order, rows.w)
    return _result(rows, median, updates)


def trimmed_mean(
    updates: torch.Tensor, weights: torch.Tensor | None = None, *, trim_ratio: float = 0.1
) -> AggregationResult:
    """Coordinate-wise trimmed mean of the finite rows.

    With ``n`` finite rows, each column drops its ``b = floor(trim_ratio * n)`` largest and ``b``
    smallest values and averages the rest. Without weights the average is the plain mean; with
    weights each kept value carries its row's weight, so ``trim_ratio=0`` gives :func:`fedavg`.
    A column whose kept values all have weight zero falls back to their plain mean.

    Args:
        updates: ``(K, d)`` floating tensor, one client update per row.
        weights: ``(K,)`` finite, non-negative weights, or ``None`` for equal weights.
        trim_ratio: Fraction of the finite rows trimmed at each end, in ``[0, 0.5)``.

    Returns:
        The aggregation result.

    Raises:
        ValueError: If ``trim_ratio``, the shapes or the weights are invalid, or given weights of
            the finite rows sum to zero.
        TypeError: If ``updates`` is not a floating tensor.
    """
    ratio = _check_trim_ratio(trim_ratio)
    rows = _accept(updates, weights, weighted=weights is not None)
    num = rows.x.shape[0]
    if num == 0:
        return _result(rows, None, updates)
    # trim_ratio < 0.5 keeps at least one value; the clamp covers the rounding guard.
    trim = min(math.floor(ratio * num + _TRIM_COUNT_GUARD), (num - 1) // 2)
    if trim == 0:
        # Nothing is trimmed: skip the (n, d) sort.
        mean = rows.x.mean(dim=0) if rows.w is None else rows.w @ rows.x
        return _result(rows, mean, updates)
    sorted_x, order = rows.x.sort(dim=0)
    kept = sorted_x[trim : num - trim]
    if rows.w is None:
        return _result(rows, kept.mean(dim=0), updates)
    kept_w = rows.w[order[trim : num - trim]]
    weight_sum = kept_w.sum(dim=0)
    has_weight = weight_sum > 0
    weighted = (kept_w * kept).sum(dim=0) / torch.where(has_weight, weight_sum, 1.0)
    return _result(rows, torch.where(has_weight, weighted, kept.mean(dim=0)), updates)


def geometric_median(
    updates: torch.Tensor,
    weights: torch.Tensor,
    *,
    nu: float = 1e-6,
    max_iter: int = 100,
    tol: float = 1e-7,
) -> AggregationResult:
    """Weighted geometric median of the finite rows by the smoothed Weiszfeld algorithm (RFA).

    Approximately minimises ``g(v) = sum_k alpha_k ||v - x_k||`` with ``alpha = w / sum(w)``.
    Starting from the weighted mean, each iteration sets

        ``beta_k = alpha_k / max(nu, ||v - x_k||)``, ``v <- sum_k beta_k x_k / sum_k beta_k``,

    and it stops after ``max_iter`` iterations or once ``|g(v_prev) - g(v)| <= tol * g(v)``, as in
    the reference implementation of Pillutla, Kakade and Harchaoui (IEEE TSP 2022). The objective
    is flat at its minimum, so this rule leaves ``g`` within about ``tol`` of its minimum
    (relative) but the point only within about ``sqrt(tol)`` times the spread of the updates; pass
    ``tol=0`` and a larger ``max_iter`` for a more exact point. The smoothing ``nu`` (in the units
    of the updates) keeps the step defined when ``v`` lands on a client's update. The result is
    equivariant under rotations and translations of the updates.

    Args:
        updates: ``(K, d)`` floating tensor, one client update per row.
        weights: ``(K,)`` finite, non-negative weights (e.g. sample counts).
        nu: Smoothing distance, > 0.
        max_iter: Maximum number of Weiszfeld iterations, >= 1.
        tol: Relative tolerance on the decrease of the objective, >= 0.

    Returns:
        The aggregation result.

    Raises:
        ValueError: If an option, the shapes or the weights are invalid, or the weights of the
            finite rows sum to zero.
        TypeError: If ``updates`` is not a floating tensor or ``weights`` is missing.
    """
    _check_weiszfeld_options(nu, max_iter, tol)
    rows = _accept(updates, weights, weighted=True)
    if rows.x.shape[0] == 0:
        return _result(rows, None, updates)
    x, alpha = rows.x, rows.w
    assert alpha is not None
    median = alpha @ x
    distance = torch.linalg.vector_norm(x - median, dim=1)
    objective = float(alpha @ distance)
    for _ in range(int(max_iter)):
        beta = alpha / distance.clamp_min(nu)
        median = (beta @ x) / beta.sum()
        distance = torch.linalg.vector_norm(x - median, dim=1)
        new_objective = float(alpha @ distance)
        converged = abs(objective - new_objective) <= tol * new_objective
        objective = new_objective
        if converged:
            break
    return _result(rows, median, updates)


AGGREGATORS: dict[str, Callable[..., AggregationResult]] = {
    "fedavg": fedavg,
    "median": coordinate_median,
    "trimmed_mean": trimmed_mean,
    "geometric_median": geometric_median,
}


def _options(rule: Callable[..., AggregationResult]) -> tuple[str, ...]:
    params = inspect.signature(rule).parameters.values()
    return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def get_aggregator(name: str, **kwargs: Any) -> Callable[..., AggregationResult]:
    """Look up an aggregation rule by name and bind its options.

    Args:
        name: One of ``"fedavg"``, ``"median"``, ``"trimmed_mean"``, ``"geometric_median"``.
        **kwargs: Options of that rule: ``trim_ratio`` for ``"trimmed_mean"``; ``nu``,
            ``max_iter`` and ``tol`` for ``"geometric_median"``; none for the others. Values are
            validated here, not at the first call.

    Returns:
        A picklable callable ``(updates, weights) -> AggregationResult``.

    Raises:
        ValueError: If ``name`` is unknown or an option's value is invalid.
        TypeError: If ``name`` is not a string or an option does not belong to the rule.
    """
    if not isinstance(name, str):
        raise TypeError(f"aggregator name must be a string, got {type(name).__name__}")
    if name not in AGGREGATORS:
        raise ValueError(f"unknown aggregator {name!r}; allowed: {sorted(AGGREGATORS)}")
    rule = AGGREGATORS[name]
    allowed = _options(rule)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise TypeError(
            f"aggregator {name!r} got unknown option(s) {unknown}; "
            f"allowed: {list(allowed) if allowed else 'none'}"
        )
    if "trim_ratio" in kwargs:
        _check_trim_ratio(kwargs["trim_ratio"])
    if rule is geometric_median:
        defaults = {p: inspect.signature(rule).parameters[p].default for p in allowed}
        merged = {**defaults, **kwargs}
        _check_weiszfeld_options(merged["nu"], merged["max_iter"], merged["tol"])
    # A partial of a module-level function pickles, so environments holding it can be sent to
    # subprocess vector environments.
    return functools.partial(rule, **kwargs)
