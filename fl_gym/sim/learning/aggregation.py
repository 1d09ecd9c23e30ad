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
  (Pillutla, Kakade and Harchaoui, "Robust Aggregation for Federated Learning", IEEE TSP 2022),
  with a start and a stopping rule that hold at any attacker scale.
- :func:`krum` and :func:`multi_krum` (Blanchard et al., NeurIPS 2017).
- :func:`centered_clipping` (Karimireddy, He and Jaggi, ICML 2021).
- :func:`norm_clipping`: weighted mean of norm-clipped rows (Sun et al. 2019).

The distance-based rules (geometric median, Krum, clipping) compute in float64 on the rows
divided by a power of two near their largest magnitude, so no squared norm overflows: finite
rows give a finite aggregate at any scale up to the dtype's maximum, and the aggregate is clamped
to the input dtype's range.

Arithmetic runs in the input's dtype, or in float32 for half-precision input, on the input's
device; the aggregate comes back in the input's dtype. Every rule is vectorised over clients; the
iterative rules loop over their iterations. On the CPU the column-wise rules (median, trimmed
mean) work a block of columns at a time and the distance-based ones form their row differences
a block of rows at a time, so their temporaries stay in the cache and need no fresh pages from
the allocator; the blocks are chosen so that every sum is taken in the order it would be over
the whole array (the same bits).

:func:`get_aggregator` binds a rule's options by name and returns a picklable callable
``(updates, weights) -> AggregationResult``, which is how a federation is configured.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fl_gym.sim.config import check_rows

__all__ = [
    "AGGREGATORS",
    "AggregationResult",
    "centered_clipping",
    "coordinate_median",
    "fedavg",
    "geometric_median",
    "get_aggregator",
    "krum",
    "multi_krum",
    "norm_clipping",
    "trimmed_mean",
]

# Guards floor(trim_ratio * n) against rounding just below a whole number (0.29 * 100 evaluates
# to 28.999999999999996, which must trim 29 rows, not 28).
_TRIM_COUNT_GUARD = 1e-9

# The packed 64-bit sort keys of _row_order_keys64 read an int64's two int32 words in memory
# order.
_LITTLE_ENDIAN = sys.byteorder == "little"

# _row_order packs the column index into the low bits of 32-bit keys up to this row length; the
# bits left for the value then still tell apart all but a few values of a row (longer rows are
# sorted as 64-bit keys).
_MAX_ROWS_KEYS32 = 1024

# Columns per block of the column-wise CPU rules (a multiple of 64: see _column_blocks).
_BLOCK_COLUMNS = 512

# Elements of the block of row differences of the Weiszfeld iteration (float64: 1 MiB).
_BLOCK_ELEMENTS = 1 << 17


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
    # Robust rules see attacked rows as they are: NaN and infinite entries are allowed (and
    # every rule takes a model of any width, d = 0 included).
    return check_rows("updates", updates, min_rows=1, min_width=0)


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
    # A row with a NaN or an infinity has a non-finite sum: finite sums mean finite rows, and
    # the row sums are cheaper than the element-wise test.
    if bool(torch.isfinite(upd.sum(dim=1)).all()):
        accepted = torch.ones(upd.shape[0], dtype=torch.bool, device=upd.device)
        num_accepted = upd.shape[0]
        x = upd.to(dtype)
    else:
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
    return _result(rows, _finite_mean(rows.w @ rows.x, rows.x, rows.w, updates), updates)


def _finite_mean(
    mean: torch.Tensor, x: torch.Tensor, w: torch.Tensor, like: torch.Tensor
) -> torch.Tensor:
    """``mean`` (``w @ x`` of finite rows), or, where its sums overflowed near the dtype's
    maximum, the same mean computed on power-of-two-scaled rows in float64."""
    if bool(torch.isfinite(mean).all()):
        return mean
    x64, scale = _scaled64(x)
    return _back(w.to(torch.float64) @ x64, scale, like)


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
    if not bool(torch.isfinite(aggregate).all()):
        return fedavg(updates, weights)
    return AggregationResult(
        aggregate=aggregate.to(updates.dtype), accepted=accepted, num_rejected=0
    )


def _sort_columns(x: torch.Tensor) -> torch.Tensor:
    """The values of ``x`` sorted down each column (``x.sort(dim=0).values``), through numpy on
    the CPU, whose column sort of a ``(K, d)`` array is an order of magnitude faster than
    torch's on one CPU thread."""
    if x.device.type != "cpu":
        return x.sort(dim=0).values
    return torch.from_numpy(np.sort(x.numpy(), axis=0))


def _column_order(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` transposed to ``(d, n)`` (contiguous) and, per column of ``x``, the row indices
    that sort it (``(d, n)``, each row of the result an argsort; :func:`_row_order` on the
    CPU)."""
    xt = _transpose(x)
    if x.device.type != "cpu":
        return xt, xt.argsort(dim=1)
    return xt, torch.from_numpy(_row_order(xt.numpy()))


def _row_order(values: np.ndarray) -> np.ndarray:
    """Per row of the C-contiguous ``(m, n)`` array ``values`` (finite), the indices that sort
    it: numpy's ``argsort(values, axis=1)``, as ``intp``.

    Finite float32 values are sorted as packed 32-bit keys: an order-preserving integer image
    of the value with its lowest bits replaced by the column index, whose vectorised value
    sort is several times faster than an argsort. Two values whose images differ above the
    index bits sort by value, so a row where no two images agree there holds no two equal
    values: its sorting permutation is unique, and it is the one an argsort gives. A row where
    two images agree there (close values, equal values, or ``-0.0`` beside ``0.0``) is
    argsorted by numpy, so equal values keep the order numpy's argsort gives them (the same
    down ``dim=0``: numpy sorts a strided column by copying it out and running the same
    kernel). Rows longer than ``_MAX_ROWS_KEYS32`` are sorted as 64-bit keys; wider dtypes are
    argsorted by numpy.
    """
    num = values.shape[1]
    if values.dtype != np.float32:
        return np.argsort(values, axis=1)
    if num > _MAX_ROWS_KEYS32:
        return _row_order_keys64(values)
    index_bits = max(1, (num - 1).bit_length())
    index_mask = (1 << index_bits) - 1
    keys = _order_image(values)
    keys &= ~index_mask
    keys |= np.arange(num, dtype=np.int32)
    keys.sort(axis=1)
    order = np.bitwise_and(keys, index_mask, dtype=np.intp)
    # Rows where two neighbours share the bits above the index: adjacent equal prefixes in the
    # flattened keys, except the last key of one row beside the first of the next.
    keys >>= index_bits
    flat = keys.ravel()
    same = np.flatnonzero(flat[1:] == flat[:-1])
    flagged = np.zeros(values.shape[0], dtype=bool)
    flagged[same[same % num != num - 1] // num] = True
    redo = np.flatnonzero(flagged)
    if redo.size:
        # Few rows: numpy's argsort itself (its result, by definition) costs less than their
        # 64-bit keys.
        order[redo] = np.argsort(values[redo], axis=1)
    return order


def _order_image(values: np.ndarray) -> np.ndarray:
    """A fresh int32 array ordered as the float32 ``values`` (finite), ``-0.0`` and ``0.0``
    mapped alike."""
    # IEEE order as integers: a float's bits read as a signed integer order the positive values;
    # flipping the magnitude bits of the negative ones orders those too. Adding 0.0 first turns
    # -0.0 into 0.0 (equal values get equal keys).
    image = np.add(values, np.float32(0.0)).view(np.int32)
    flip = image >> 31
    flip &= 0x7FFFFFFF
    image ^= flip
    return image


def _row_order_keys64(values: np.ndarray) -> np.ndarray:
    """:func:`_row_order` of float32 rows through packed 64-bit keys (the value's image above
    the whole column index): exact for any row length; a row holding equal values is
    argsorted by numpy."""
    if not _LITTLE_ENDIAN:
        return np.argsort(values, axis=1)
    keys = _order_image(values).astype(np.int64)
    keys <<= 32
    keys |= np.arange(values.shape[1], dtype=np.int64)
    keys.sort(axis=1)
    words = keys.view(np.int32)  # (m, 2 n): low word the column index, high word the image
    order = words[:, 0::2].astype(np.intp)
    tied = np.flatnonzero((words[:, 3::2] == words[:, 1:-2:2]).any(axis=1))
    if tied.size:
        order[tied] = np.argsort(values[tied], axis=1)
    return order


def _transpose(x: torch.Tensor) -> torch.Tensor:
    """``x.T.contiguous()`` (numpy's copy on the CPU: several times faster than torch's)."""
    if x.device.type != "cpu":
        return x.T.contiguous()
    return torch.from_numpy(np.ascontiguousarray(x.numpy().T))


def _midpoint(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """``(lo + hi) / 2`` without overflow, and exactly ``lo`` where ``lo == hi``."""
    # Halving each term first cannot overflow; keeping equal ends as they are avoids the rounding
    # of halving a subnormal, so an odd count returns its middle value bit for bit.
    return torch.where(lo == hi, lo, 0.5 * lo + 0.5 * hi)


def _take(w: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """``w[order]`` (numpy's gather on the CPU: several times faster than torch's indexing)."""
    if w.device.type != "cpu":
        return w[order]
    return torch.from_numpy(w.numpy()[order.numpy()])


def _weighted_median_rows(
    values: torch.Tensor, order: torch.Tensor, w: torch.Tensor
) -> torch.Tensor:
    """Weighted median of each row of ``values`` (``(m, n)``, ``order`` its per-row argsort,
    ``w`` the ``(n,)`` weights), midpoint of the minimiser interval.

    ``m`` minimises ``sum_k w_k |x_k - m|`` exactly when the weight strictly below ``m`` and the
    weight strictly above ``m`` are each at most half the total. The minimisers form an interval
    ``[lo, hi]``: ``lo`` is the first sorted value whose cumulative weight reaches half the total,
    ``hi`` the first whose cumulative weight exceeds it. The midpoint of that interval is returned,
    so equal weights reproduce the ordinary median (the mean of the two middle values for an even
    count) and integer weights the median of rows repeated that many times.
    """
    num = values.shape[1]
    if values.device.type == "cpu":
        return _weighted_median_rows_numpy(values.numpy(), order.numpy(), w.numpy())
    cum = w[order].cumsum(dim=1)  # (m, n), non-decreasing along each row
    total = cum[:, -1]
    half = 0.5 * total
    # Cumulative sums of non-integer weights land a few ulps off an exact tie with half the
    # total; within this tolerance a tie is treated as one, keeping the midpoint convention.
    slack = num * torch.finfo(cum.dtype).eps * total
    # The rows of cum are sorted: the count of entries below (at most) a bound is a binary
    # search, not a pass over the (m, n) array.
    lo_index = torch.searchsorted(cum, (half - slack).unsqueeze(1), side="left")
    hi_index = torch.searchsorted(cum, (half + slack).unsqueeze(1), side="right")
    hi_index = hi_index.clamp_max(num - 1)
    lo = values.gather(1, order.gather(1, lo_index))[:, 0]
    hi = values.gather(1, order.gather(1, hi_index))[:, 0]
    return _midpoint(lo, hi)


def _weighted_median_rows_numpy(
    values: np.ndarray, order: np.ndarray, w: np.ndarray
) -> torch.Tensor:
    """:func:`_weighted_median_rows` on the CPU, the same arithmetic through numpy (whose
    per-call cost is a fraction of torch's on the short rows of a median of distances).

    The cumulative sums stay torch's (faster than numpy's along rows, and the same bits: torch
    accumulates them in float64 and rounds each partial sum to the weights' dtype).
    """
    num = values.shape[1]
    cum = torch.from_numpy(w[order]).cumsum(dim=1).numpy()
    total = cum[:, -1]
    half = 0.5 * total
    slack = num * float(np.finfo(w.dtype).eps) * total
    below, above = half - slack, half + slack
    rows = np.arange(values.shape[0])
    if values.shape[0] == 1:
        lo_index = np.searchsorted(cum[0], below, side="left")
        hi_index = np.searchsorted(cum[0], above, side="right")
    else:
        cum_t = torch.from_numpy(cum)
        lo_index = torch.searchsorted(cum_t, torch.from_numpy(below[:, None]), side="left")
        hi_index = torch.searchsorted(cum_t, torch.from_numpy(above[:, None]), side="right")
        lo_index, hi_index = lo_index.numpy()[:, 0], hi_index.numpy()[:, 0]
    hi_index = np.minimum(hi_index, num - 1)
    lo = values[rows, order[rows, lo_index]]
    hi = values[rows, order[rows, hi_index]]
    # The midpoint convention of _midpoint: halve each term first (no overflow), keep equal ends.
    return torch.from_numpy(np.where(lo == hi, lo, 0.5 * lo + 0.5 * hi))


def _equal(w: torch.Tensor) -> bool:
    """Whether all weights are equal (the weighted rules then reduce to the unweighted ones)."""
    return bool((w == w[0]).all())


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
    if rows.w is None or _equal(rows.w):
        # Equal weights: the minimiser interval of the weighted definition is that of the
        # ordinary median, so only the values are sorted.
        middle = _middle_values(rows.x)
        median = _midpoint(middle[0], middle[1])
    elif rows.x.device.type == "cpu":
        x = np.ascontiguousarray(rows.x.numpy())
        median = torch.from_numpy(np.empty(x.shape[1], dtype=x.dtype))
        for start, stop in _column_blocks(x.shape[1]):
            values = np.ascontiguousarray(x[:, start:stop].T)
            median[start:stop] = _weighted_median_rows_numpy(
                values, _row_order(values), rows.w.numpy()
            )
    else:
        xt, order = _column_order(rows.x)
        median = _weighted_median_rows(xt, order, rows.w)
    return _result(rows, median, updates)


def trimmed_mean(
    updates: torch.Tensor, weights: torch.Tensor | None = None, *, trim_ratio: float = 0.1
) -> AggregationResult:
    """Coordinate-wise trimmed mean of the finite rows.

    With ``n`` finite rows, each column drops its ``b = floor(trim_ratio * n)`` largest and ``b``
    smallest values and averages the rest. Without weights the average is the plain mean; with
    weights each kept value carries its row's weight, so ``trim_ratio=0`` gives :func:`fedavg`.
    A column whose kept values all have weight zero falls back to their plain mean. The means are
    taken in float64 on the rows divided by a power of two, so no sum overflows.

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
    # Sums of values near the dtype's maximum overflow: average power-of-two-scaled rows.
    if trim == 0 or rows.w is None:
        x, scale = _scaled64(rows.x)
        if trim == 0:
            # Nothing is trimmed: skip the (n, d) sort.
            mean = x.mean(dim=0) if rows.w is None else rows.w.to(torch.float64) @ x
        else:
            mean = _sort_columns(x)[trim : num - trim].mean(dim=0)
        return _result(rows, _back(mean, scale, updates), updates)
    # Only the kept values are scaled to float64, in the (n - 2 trim, d) layout the sums below
    # have always run in. The order of the rows in the working dtype is that of the scaled rows
    # (dividing by a power of two is exact and monotone).
    scale = _scale_of(rows.x)
    w = rows.w.to(torch.float64)
    if _equal(w):
        # Equal weights: which rows are kept does not change their weights, so only the values
        # are sorted; the weighted mean below is computed as for any weights.
        kept = _sort_columns(rows.x)[trim : num - trim]
        kept_w = torch.full(kept.shape, float(w[0]), dtype=torch.float64, device=kept.device)
    elif rows.x.device.type == "cpu":
        x = np.ascontiguousarray(rows.x.numpy())
        mean = torch.from_numpy(np.empty(x.shape[1], dtype=np.float64))
        for start, stop in _column_blocks(x.shape[1]):
            kept, kept_w = _kept_numpy(x[:, start:stop], w.numpy(), trim, scale)
            mean[start:stop] = _kept_mean(kept, kept_w)
        return _result(rows, _back(mean, scale, updates), updates)
    else:
        xt, order = _column_order(rows.x)
        order = order[:, trim : num - trim]  # (d, n - 2 trim)
        kept = _transpose(xt.gather(1, order))
        kept_w = _transpose(_take(w, order))
    mean = _kept_mean(kept.to(torch.float64).div_(scale), kept_w)
    return _result(rows, _back(mean, scale, updates), updates)


def _kept_mean(kept: torch.Tensor, kept_w: torch.Tensor) -> torch.Tensor:
    """Per column, the weighted mean of the kept values (``(n - 2 trim, d)``, float64, sorted
    down each column) with their weights (same shape; overwritten), or their plain mean where
    the weights are all zero."""
    weight_sum = kept_w.sum(dim=0)
    has_weight = weight_sum > 0
    # The products overwrite the weights, whose sums are taken: one array less to allocate.
    weighted = kept_w.mul_(kept).sum(dim=0) / torch.where(has_weight, weight_sum, 1.0)
    if bool(has_weight.all()):
        return weighted
    return torch.where(has_weight, weighted, kept.mean(dim=0))


def _kept_numpy(
    x: np.ndarray, w: np.ndarray, trim: int, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The values each column of ``x`` (``(n, b)``) keeps after trimming ``trim`` at each end,
    sorted down the column, and their rows' weights ``w`` (``(n,)``, float64): two
    ``(n - 2 trim, b)`` tensors, the values widened to float64 and divided by ``scale`` (both
    exact, in one pass) and the weights.

    The kept values are gathered from the sorted layout at their flat indices (column times
    ``n`` plus row), straight into the layout of the sums.
    """
    num, width = x.shape
    values = np.ascontiguousarray(x.T)  # (b, n)
    order = _row_order(values)
    index = np.ascontiguousarray(order[:, trim : num - trim].T)  # (n - 2 trim, b) rows
    kept_w = w.take(index)
    index += np.arange(0, width * num, num)
    kept = np.divide(values.ravel().take(index), scale, dtype=np.float64)
    return torch.from_numpy(kept), torch.from_numpy(kept_w)


def _column_blocks(num_columns: int) -> list[tuple[int, int]]:
    """``(start, stop)`` ranges covering ``num_columns`` columns in blocks of
    ``_BLOCK_COLUMNS`` (the last one takes the remainder, so none is narrower than a block).

    The CPU rules that work column by column run a block at a time: its temporaries stay in the
    cache and small enough for the allocator to reuse memory rather than map fresh pages. A
    block's bounds are multiples of 64 columns, so torch's vectorised sums down the columns of
    a block group the columns as over the whole array (the same bits).
    """
    starts = list(range(0, num_columns, _BLOCK_COLUMNS))
    if len(starts) > 1 and num_columns - starts[-1] < _BLOCK_COLUMNS:
        starts.pop()
    stops = [*starts[1:], num_columns] if starts else []
    return list(zip(starts, stops, strict=True))


def _scaled64(x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``x / s`` in float64 with ``s`` a power of two near ``max |x|`` (1 for an all-zero ``x``).

    Dividing by a power of two is exact, so the robust rules' distances are computed on values of
    magnitude at most 1: squared norms cannot overflow at any finite input scale (float32's
    ``3.4e38`` or float64's ``1.8e308``), and multiplying back by ``s`` returns the input's
    scale exactly.
    """
    scale = _scale_of(x)
    if scale != 1.0 and _numpy_float32(x):
        # One pass instead of a copy and a division: numpy widens each value to float64 and
        # divides it (the same two exact operations).
        return torch.from_numpy(np.divide(x.numpy(), scale, dtype=np.float64)), scale
    x64 = x.to(torch.float64)
    if scale != 1.0:
        # x64 is a fresh copy when x is narrower, so it can be divided in place.
        x64 = x64.div_(scale) if x64.data_ptr() != x.data_ptr() else x64 / scale
    return x64, scale


def _numpy_float32(x: torch.Tensor) -> bool:
    """Whether ``x`` is a contiguous float32 CPU tensor outside autograd, which the rules may
    widen to float64 through numpy."""
    return (
        x.dtype == torch.float32
        and x.device.type == "cpu"
        and x.is_contiguous()
        and not x.requires_grad
    )


def _scale_of(x: torch.Tensor) -> float:
    """The power of two ``s`` of :func:`_scaled64`: ``2**e >= max |x|`` (1 for all zeros)."""
    if x.numel() == 0:
        return 1.0
    # The extremes give max |x| exactly, without an (n, d) temporary of absolute values.
    low, high = torch.aminmax(x)
    largest = max(-float(low), float(high))
    if largest == 0.0:
        return 1.0
    return math.ldexp(1.0, math.frexp(largest)[1])


def _back(aggregate: torch.Tensor, scale: float, like: torch.Tensor) -> torch.Tensor:
    """A float64 aggregate of scaled rows back at the input's scale, clamped to the input's
    dtype range (an aggregate of finite rows stays finite)."""
    out = aggregate * scale
    limit = torch.finfo(like.dtype).max
    return out.clamp(-limit, limit)


def _median_start(x: torch.Tensor, scale: float) -> torch.Tensor:
    """The unweighted coordinate median of the rows ``x / scale`` in float64: the robust start
    of the iterative rules (only the values are sorted, which is cheap; a start does not need
    the weights).

    ``x`` holds the accepted rows in the working dtype: their order is that of the scaled float64
    rows (dividing by a power of two is exact and monotone), and the narrower values sort faster;
    only the two middle rows are scaled, and their midpoint is taken in float64.
    """
    middle = _middle_values(x).to(torch.float64) / scale
    return _midpoint(middle[0], middle[1])


def _middle_values(x: torch.Tensor) -> torch.Tensor:
    """``(2, d)``: the values of each column of ``x`` (``(n, d)``) ranked ``(n - 1) // 2`` and
    ``n // 2`` (rows of ``x`` sorted down its columns).

    On the CPU a block of columns at a time is transposed and sorted along its rows: numpy
    sorts a column down ``axis=0`` by copying it out and running the same kernel, so the values
    (signed zeros included) are those of :func:`_sort_columns`, without its ``(n, d)`` copy.
    """
    ranks = [(x.shape[0] - 1) // 2, x.shape[0] // 2]
    if x.device.type != "cpu":
        return x.sort(dim=0).values[ranks]
    values = x.numpy()
    middle = np.empty((2, values.shape[1]), dtype=values.dtype)
    for start, stop in _column_blocks(values.shape[1]):
        # A copy even where the transposed block is already contiguous (one column, one row):
        # it is sorted in place, and ``values`` is the caller's tensor.
        block = np.array(values[:, start:stop].T, order="C", copy=True)
        block.sort(axis=1)
        middle[:, start:stop] = block[:, ranks].T
    return torch.from_numpy(middle)


def _weighted_median_1d(values: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Weighted median of a 1-D tensor (midpoint convention of :func:`coordinate_median`)."""
    order = values.unsqueeze(1).sort(dim=0).indices.T  # (1, n)
    return _weighted_median_rows(values.unsqueeze(0), order, w)[0]


def geometric_median(
    updates: torch.Tensor,
    weights: torch.Tensor,
    *,
    nu: float = 1e-6,
    max_iter: int = 200,
    tol: float = 1e-10,
) -> AggregationResult:
    """Weighted geometric median of the finite rows by the smoothed Weiszfeld algorithm (RFA).

    Approximately minimises ``g(v) = sum_k alpha_k ||v - x_k||`` with ``alpha = w / sum(w)``.
    Each iteration sets

        ``beta_k = alpha_k / max(nu, ||v - x_k||)``, ``v <- sum_k beta_k x_k / sum_k beta_k``,

    the smoothed Weiszfeld step of Pillutla, Kakade and Harchaoui (IEEE TSP 2022). Three choices
    make it hold at any attacker scale:

    - it starts from the coordinate median, which is already within the honest rows' range
      when attackers are fewer than half the rows (the weighted mean the reference code starts
      from sits next to a huge outlier);
    - it stops when the step ``||v_new - v||`` is at most ``tol`` times the weighted median of the
      distances ``||v - x_k||``, a scale set by the majority of the rows, not by an outlier (a
      rule on the relative change of ``g``, dominated by an outlier's distance, stops while the
      outlier still pulls the point), or after ``max_iter`` iterations;
    - it runs in float64 on rows divided by a power of two near their largest magnitude, so no
      distance overflows and finite rows give a finite aggregate.

    ``nu`` (in the units of the updates) keeps the step defined when ``v`` lands on a row. The
    result is equivariant under rotations, translations and power-of-two scalings of the updates.

    Args:
        updates: ``(K, d)`` floating tensor, one client update per row.
        weights: ``(K,)`` finite, non-negative weights (e.g. sample counts).
        nu: Smoothing distance, > 0.
        max_iter: Maximum number of Weiszfeld iterations, >= 1.
        tol: Stopping tolerance on the step relative to the median distance, >= 0.

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
    x, scale = _scaled64(rows.x)
    assert rows.w is not None
    alpha = rows.w.to(torch.float64)
    median = _median_start(rows.x, scale)
    smoothing = float(nu) / scale
    # The differences are formed a block of rows at a time in one small buffer that stays in the
    # cache (a row's norm does not depend on the rows beside it).
    ranges, diff = _row_blocks(x)
    distance = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for _ in range(int(max_iter)):
        for start, stop in ranges:
            torch.linalg.vector_norm(
                torch.sub(x[start:stop], median, out=diff[: stop - start]),
                dim=1,
                out=distance[start:stop],
            )
        beta = alpha / distance.clamp_min(smoothing)
        new_median = (beta @ x) / beta.sum()
        step = float(torch.linalg.vector_norm(new_median - median))
        spread = float(_weighted_median_1d(distance, alpha))
        median = new_median
        if step <= tol * spread:
            break
    return _result(rows, _back(median, scale, updates), updates)


def _check_count(name: str, value: object, minimum: int) -> int | None:
    if value is None:
        return None
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be None or an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_radius(name: str, value: object) -> float | None:
    if value is None:
        return None
    if not _is_real(value) or not float(value) > 0:  # type: ignore[arg-type]
        raise ValueError(f"{name} must be None or a number > 0 (inf allowed), got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _krum_scores(x: torch.Tensor, num_byzantine: int | None) -> torch.Tensor:
    """Krum's score of each scaled row: the sum of squared distances to its ``n - f - 2``
    nearest other rows (at least one neighbour)."""
    n = x.shape[0]
    f = (n - 1) // 2 if num_byzantine is None else num_byzantine
    neighbours = max(n - max(min(f, n - 3), 0) - 2, 1)
    # The Gram expansion ||a||^2 + ||b||^2 - 2 a.b in float64: its rounding is relative to the
    # two rows' own norms (not to the largest row's), so honest rows stay apart from each other
    # however large an attacker's row is.
    sq_norms = _row_sums_of_squares(x)
    squared = (sq_norms.unsqueeze(1) + sq_norms.unsqueeze(0) - 2.0 * (x @ x.T)).clamp_min(0.0)
    squared.fill_diagonal_(math.inf)
    nearest = squared.topk(min(neighbours, n - 1), dim=1, largest=False).values
    return nearest.sum(dim=1)


def _row_blocks(x: torch.Tensor) -> tuple[list[tuple[int, int]], torch.Tensor]:
    """Ranges of rows of ``x`` (``(n, d)``) of about ``_BLOCK_ELEMENTS`` elements each, and a
    buffer of one block's shape: the rules that work row by row form their temporaries a block
    at a time in it, so they stay in the cache (each row's result is its own: the same bits)."""
    n, d = x.shape
    if not x.is_contiguous():
        # One block in x's own layout: torch's reductions along a row depend on the layout.
        return [(0, n)], torch.empty_like(x)
    block = max(1, min(n, _BLOCK_ELEMENTS // max(d, 1)))
    ranges = [(start, min(start + block, n)) for start in range(0, n, block)]
    return ranges, torch.empty((block, d), dtype=x.dtype, device=x.device)


def _row_sums_of_squares(x: torch.Tensor) -> torch.Tensor:
    """``(x * x).sum(dim=1)``, the products formed a block of rows at a time (at once for a
    tensor that requires grad, as ``out=`` arguments do not record a graph, or that is not
    contiguous)."""
    if x.requires_grad or not x.is_contiguous():
        return (x * x).sum(dim=1)
    ranges, buffer = _row_blocks(x)
    out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for start, stop in ranges:
        block = torch.mul(x[start:stop], x[start:stop], out=buffer[: stop - start])
        torch.sum(block, dim=1, out=out[start:stop])
    return out


def _krum_select(
    updates: torch.Tensor,
    weights: torch.Tensor,
    num_byzantine: int | None,
    num_selected: int | None,
) -> AggregationResult:
    rows = _accept(updates, weights, weighted=True)
    n = rows.x.shape[0]
    if n == 0:
        return _result(rows, None, updates)
    assert rows.w is not None
    x, scale = _scaled64(rows.x)
    if n == 1:
        return _result(rows, _back(x[0], scale, updates), updates)
    scores = _krum_scores(x, num_byzantine)
    if num_selected is None:
        f = (n - 1) // 2 if num_byzantine is None else num_byzantine
        num_selected = max(n - f, 1)
    m = min(num_selected, n)
    # A stable sort: equal scores go to the lower index.
    chosen = scores.argsort(stable=True)[:m]
    w = rows.w.to(torch.float64)[chosen]
    total = w.sum()
    w = w / total if bool(total > 0) else torch.full_like(w, 1.0 / m)
    aggregate = w @ x[chosen]
    return _result(rows, _back(aggregate, scale, updates), updates)


def krum(
    updates: torch.Tensor, weights: torch.Tensor, *, num_byzantine: int | None = None
) -> AggregationResult:
    """Krum (Blanchard, El Mhamdi, Guerraoui and Stainer, NeurIPS 2017): the finite row whose
    ``n - f - 2`` nearest other rows are closest (smallest sum of squared distances).

    Weights do not enter the choice (Krum is defined on unweighted rows); ties go to the lower
    index. ``accepted`` marks the finite rows, as for every rule.

    Args:
        updates: ``(K, d)`` floating tensor, one client update per row.
        weights: ``(K,)`` finite, non-negative weights (validated; unused by the choice).
        num_byzantine: The ``f`` Krum tolerates; ``None`` takes the largest minority of the
            ``n`` finite rows, ``floor((n - 1) / 2)``. The neighbour count ``n - f - 2`` is kept
            at least 1 (``f`` clamped to ``[0, n - 3]`` there).

    Returns:
        The aggregation result.
    """
    f = _check_count("num_byzantine", num_byzantine, 0)
    return _krum_select(updates, weights, f, 1)


def multi_krum(
    updates: torch.Tensor,
    weights: torch.Tensor,
    *,
    num_byzantine: int | None = None,
    num_selected: int | None = None,
) -> AggregationResult:
    """Multi-Krum (Blanchard et al. 2017; El Mhamdi et al. 2018): the weighted mean of the
    ``m`` rows of smallest Krum score.

    Args:
        updates: ``(K, d)`` floating tensor, one client update per row.
        weights: ``(K,)`` finite, non-negative weights; the chosen rows are averaged with them
            (equally if theirs sum to zero).
        num_byzantine: Krum's ``f`` (see :func:`krum`).
        num_selected: ``m``; ``None`` takes ``n - f`` (with the default ``f``, a majority that
            the honest rows fill when attackers are a minority). ``m = 1`` is :func:`krum`,
            ``m = n`` (with any ``f``) is :func:`fedavg`.

    Returns:
        The aggregation result.
    """
    f = _check_count("num_byzantine", num_byzantine, 0)
    m = _check_count("num_selected", num_selected, 1)
    return _krum_select(updates, weights, f, m)


def centered_clipping(
    updates: torch.Tensor,
    weights: torch.Tensor,
    *,
    radius: float | None = None,
    num_iter: int = 3,
) -> AggregationResult:
    """Centered clipping (Karimireddy, He and Jaggi, ICML 2021), weighted.

    From a centre ``v`` (the coordinate median: the rule is a pure function and keeps no
    momentum from round to round, where the paper centres on the last aggregate), each
    iteration sets

        ``v <- v + sum_k alpha_k (x_k - v) min(1, tau / ||x_k - v||)``

    with ``alpha = w / sum(w)``. ``tau`` is ``radius`` or, when ``radius`` is ``None``, the
    weighted median of the distances ``||x_k - v||`` at that iteration (scale-free, and set by the
    majority). With ``radius=inf`` every row is kept whole and one iteration gives
    :func:`fedavg`. Computed in float64 on rows scaled as :func:`geometric_median` does.

    Args:
        updates: ``(K, d)`` floating tensor, one client update per row.
        weights: ``(K,)`` finite, non-negative weights.
        radius: Clipping radius ``tau`` in the units of the updates (> 0, ``inf`` allowed), or
            ``None`` for the adaptive radius.
        num_iter: Clipping iterations ``L``, >= 1.

    Returns:
        The aggregation result.
    """
    tau = _check_radius("radius", radius)
    iterations = _check_count("num_iter", num_iter, 1)
    rows = _accept(updates, weights, weighted=True)
    if rows.x.shape[0] == 0:
        return _result(rows, None, updates)
    assert rows.w is not None and iterations is not None
    alpha = rows.w.to(torch.float64)
    if tau is not None and math.isinf(tau):
        x, scale = _scaled64(rows.x)
        center = alpha @ x
        return _result(rows, _back(center, scale, updates), updates)
    scale = _scale_of(rows.x)
    center = _median_start(rows.x, scale)
    # Float32 rows on the CPU are widened and scaled into the differences at each iteration
    # (the values of the scaled float64 rows, minus the centre), so no scaled copy of the rows
    # is kept beside the differences the weighted sum needs whole.
    x = None if _numpy_float32(rows.x) else _scaled64(rows.x)[0]
    # In the layout of the scaled rows (the norms and the weighted sum depend on it).
    diff = torch.empty_like(rows.x, dtype=torch.float64) if x is None else torch.empty_like(x)
    for _ in range(iterations):
        if x is None:
            widened = diff.numpy()
            np.divide(rows.x.numpy(), scale, out=widened, dtype=np.float64)
            np.subtract(widened, center.numpy(), out=widened)
        else:
            torch.sub(x, center, out=diff)
        distance = torch.linalg.vector_norm(diff, dim=1)
        radius_k = _weighted_median_1d(distance, alpha) if tau is None else tau / scale
        factor = torch.where(
            distance > radius_k, radius_k / distance.clamp_min(1e-300), torch.ones_like(distance)
        )
        center = center + (alpha * factor) @ diff
    return _result(rows, _back(center, scale, updates), updates)


def norm_clipping(
    updates: torch.Tensor, weights: torch.Tensor, *, max_norm: float | None = None
) -> AggregationResult:
    """Weighted mean of the finite rows after clipping each to norm ``c``: ``x_k min(1, c /
    ||x_k||)`` (Sun et al., "Can You Really Backdoor Federated Learning?", 2019).

    Args:
        updates: ``(K, d)`` floating tensor, one client update per row.
        weights: ``(K,)`` finite, non-negative weights.
        max_norm: ``c`` in the units of the updates (> 0, ``inf`` allowed: :func:`fedavg`), or
            ``None`` for the weighted median of the rows' norms.

    Returns:
        The aggregation result.
    """
    c = _check_radius("max_norm", max_norm)
    rows = _accept(updates, weights, weighted=True)
    if rows.x.shape[0] == 0:
        return _result(rows, None, updates)
    assert rows.w is not None
    x, scale = _scaled64(rows.x)
    alpha = rows.w.to(torch.float64)
    norms = torch.linalg.vector_norm(x, dim=1)
    if c is not None and math.isinf(c):
        return _result(rows, _back(alpha @ x, scale, updates), updates)
    bound = _weighted_median_1d(norms, alpha) if c is None else torch.tensor(c / scale)
    factor = torch.where(norms > bound, bound / norms.clamp_min(1e-300), torch.ones_like(norms))
    return _result(rows, _back((alpha * factor) @ x, scale, updates), updates)


AGGREGATORS: dict[str, Callable[..., AggregationResult]] = {
    "fedavg": fedavg,
    "median": coordinate_median,
    "trimmed_mean": trimmed_mean,
    "geometric_median": geometric_median,
    "krum": krum,
    "multi_krum": multi_krum,
    "centered_clipping": centered_clipping,
    "norm_clipping": norm_clipping,
}


def _options(rule: Callable[..., AggregationResult]) -> tuple[str, ...]:
    params = inspect.signature(rule).parameters.values()
    return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def get_aggregator(name: str, **kwargs: Any) -> Callable[..., AggregationResult]:
    """Look up an aggregation rule by name and bind its options.

    Args:
        name: One of :data:`AGGREGATORS`: ``"fedavg"``, ``"median"``, ``"trimmed_mean"``,
            ``"geometric_median"``, ``"krum"``, ``"multi_krum"``, ``"centered_clipping"``,
            ``"norm_clipping"``.
        **kwargs: Options of that rule (its keyword-only arguments): ``trim_ratio`` for
            ``"trimmed_mean"``; ``nu``, ``max_iter`` and ``tol`` for ``"geometric_median"``;
            ``num_byzantine`` (and ``num_selected``) for the Krums; ``radius`` and ``num_iter``
            for ``"centered_clipping"``; ``max_norm`` for ``"norm_clipping"``. Values are
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
    for option in ("num_byzantine",):
        if option in kwargs:
            _check_count(option, kwargs[option], 0)
    for option in ("num_selected", "num_iter"):
        if option in kwargs:
            _check_count(option, kwargs[option], 1)
    for option in ("radius", "max_norm"):
        if option in kwargs:
            _check_radius(option, kwargs[option])
    # A partial of a module-level function pickles, so environments holding it can be sent to
    # subprocess vector environments.
    return functools.partial(rule, **kwargs)
