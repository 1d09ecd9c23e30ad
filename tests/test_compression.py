"""Tests of the compression operators: exact bit counts, closed forms, conservation laws."""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fl_gym.sim.learning.compression import (
    COMPRESSORS,
    FLOAT_BITS,
    QSGD,
    Compressor,
    DeepGradientCompression,
    NoCompression,
    RandomK,
    SignSGD,
    SparseQSGD,
    TernGrad,
    Threshold,
    TopK,
    _keep_top_k,
    _top_k_values,
    num_kept,
    parse_compressor,
)

STOCHASTIC = [RandomK(0.25), TernGrad(), QSGD(4)]

# One instance of every registered operator, several with non-default options.
EXAMPLES: list[Compressor] = [
    NoCompression(),
    TopK(0.01),
    TopK(0.3, error_feedback=False),
    RandomK(0.05),
    RandomK(0.5, error_feedback=True, unbiased=False),
    Threshold(0.001),
    Threshold(0.0, error_feedback=False),
    SignSGD(),
    SignSGD(error_feedback=False),
    TernGrad(),
    QSGD(4),
    QSGD(1),
    SparseQSGD(0.05),
    SparseQSGD(0.3, levels=2, error_feedback=False),
    DeepGradientCompression(0.001),
    DeepGradientCompression(0.01, momentum=0.5, clip_norm=2.5, warmup_rounds=0),
]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(k: int, d: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(k, d, generator=_gen(seed), dtype=dtype)


# -- bit counts --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "d", "round_index", "expected_bits"),
    [
        (NoCompression(), 5, 0, 5 * 32),
        # k = 3 of 10: 3 values, indices min(3 * ceil(log2 10) = 12, bitmap 10) = 10.
        (TopK(0.3), 10, 0, 3 * 32 + 10),
        # k = 10 of 1000: indices 10 * 10 = 100 < 1000.
        (TopK(0.01), 1000, 0, 10 * 32 + 100),
        # 0.1 * 30 is 3.0000000000000004 in binary floating point; k must still be 3.
        (TopK(0.1), 30, 0, 3 * 32 + 3 * 5),
        (TopK(0.5, error_feedback=False), 8, 0, 4 * 32 + 8),
        (TopK(1.0), 1, 0, 32),  # one coordinate needs no index
        (TopK(1e-9), 7, 0, 32 + 3),  # k is at least 1
        # Random-k: k values and a 32-bit seed.
        (RandomK(0.3), 10, 0, 3 * 32 + 32),
        (RandomK(1.0), 4, 0, 4 * 32 + 32),
        (SignSGD(), 5, 0, 5 + 32),
        (TernGrad(), 5, 0, 2 * 5 + 32),
        # QSGD: norm, and per entry a sign bit and ceil(log2(s + 1)) level bits.
        (QSGD(4), 5, 0, 32 + 5 * (1 + 3)),
        (QSGD(1), 5, 0, 32 + 5 * (1 + 1)),
        (QSGD(3), 5, 0, 32 + 5 * (1 + 2)),
        (QSGD(16), 100, 0, 32 + 100 * (1 + 5)),
        # DGC round 0 sends 25 %: k = 250 of 1000, bitmap (1000) beats 2500 index bits.
        (DeepGradientCompression(0.001), 1000, 0, 250 * 32 + 1000),
        (DeepGradientCompression(0.001), 1000, 1, 63 * 32 + 630),
        (DeepGradientCompression(0.001), 1000, 4, 32 + 10),
        (DeepGradientCompression(0.01, warmup_rounds=0), 1000, 0, 10 * 32 + 100),
    ],
)
def test_bits_equal_hand_computed_numbers(
    op: Compressor, d: int, round_index: int, expected_bits: int
) -> None:
    update = _randn(3, d, seed=d)
    update[1] = 0.0  # a zero row costs the same for every fixed-length encoding
    out = op.compress(update, generator=_gen(), round_index=round_index)
    assert out.bits.dtype == torch.int64
    assert out.bits.tolist() == [expected_bits] * 3


def test_threshold_bits_and_values_for_a_concrete_case() -> None:
    update = torch.tensor(
        [[3.0, -1.0, 0.5, 0.0, 2.0, -0.9], [0.0] * 6, [1.0] * 6, [0.2, 0.0, 0.0, 0.0, 0.0, 0.0]]
    )
    out = Threshold(1.0, error_feedback=False).compress(update)
    expected = torch.tensor([[3.0, -1.0, 0.0, 0.0, 2.0, 0.0], [0.0] * 6, [1.0] * 6, [0.0] * 6])
    assert torch.equal(out.reconstructed, expected)
    header = 3  # ceil(log2(6 + 1)) bits for the count 0..6
    assert out.bits.tolist() == [
        header + 3 * 32 + 6,  # 3 kept: indices 3 * 3 = 9 bits, bitmap 6
        header,
        header + 6 * 32 + 6,
        header,
    ]
    assert out.residual is None


@given(
    d=st.integers(1, 5000),
    ratio=st.floats(1e-4, 1.0, allow_nan=False, exclude_min=False),
)
@settings(max_examples=200, deadline=None)
def test_num_kept_is_ceil_of_the_decimal_product(d: int, ratio: float) -> None:
    exact = Fraction(repr(ratio)) * d
    k = num_kept(ratio, d)
    assert 1 <= k <= d
    assert k == max(1, math.ceil(exact))


# -- top-k -------------------------------------------------------------------------------------


@given(
    num_clients=st.integers(1, 4),
    d=st.integers(1, 60),
    ratio=st.floats(0.01, 1.0),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=60, deadline=None)
def test_topk_keeps_exactly_the_k_largest_magnitudes(
    num_clients: int, d: int, ratio: float, seed: int
) -> None:
    x = _randn(num_clients, d, seed)  # continuous draws: no ties, no zeros
    out = TopK(ratio, error_feedback=False).compress(x)
    k = num_kept(ratio, d)
    xs = x.numpy()
    expected = np.zeros_like(xs)
    for row in range(num_clients):  # reference by sorting, one row at a time
        top = np.argsort(-np.abs(xs[row]), kind="stable")[:k]
        expected[row, top] = xs[row, top]
    np.testing.assert_array_equal(out.reconstructed.numpy(), expected)
    assert (out.reconstructed != 0).sum(dim=1).tolist() == [k] * num_clients


def test_topk_with_ties_still_keeps_exactly_k_of_maximal_magnitude() -> None:
    x = torch.tensor([[1.0, -1.0, 1.0, 0.5, -1.0, 0.25]])
    out = TopK(0.5, error_feedback=False).compress(x)
    kept = out.reconstructed != 0
    assert int(kept.sum()) == 3
    assert torch.all(out.reconstructed[kept].abs() == 1.0)


# -- error feedback ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "op", [TopK(0.1), Threshold(0.8), RandomK(0.2, error_feedback=True, unbiased=False)]
)
@given(seed=st.integers(0, 2**16))
@settings(max_examples=25, deadline=None)
def test_sparse_error_feedback_conserves_exactly(op: Compressor, seed: int) -> None:
    update, residual = _randn(3, 40, seed), _randn(3, 40, seed + 1)
    out = op.compress(update, residual=residual, generator=_gen(seed))
    assert out.residual is not None
    # Each entry is either sent (residual 0) or kept (reconstructed 0): equality is exact.
    assert torch.equal(out.reconstructed + out.residual, update + residual)


@given(seed=st.integers(0, 2**16))
@settings(max_examples=25, deadline=None)
def test_sign_error_feedback_conserves_and_matches_closed_form(seed: int) -> None:
    update, residual = _randn(3, 17, seed), _randn(3, 17, seed + 1)
    out = SignSGD().compress(update, residual=residual)
    x = update + residual
    scale = x.abs().sum(dim=1, keepdim=True) / 17
    assert torch.allclose(out.reconstructed, scale * torch.sign(x), rtol=1e-6, atol=0)
    assert out.residual is not None
    torch.testing.assert_close(out.reconstructed + out.residual, x, rtol=0, atol=1e-6)


def test_sign_of_zero_is_sent_as_plus_one() -> None:
    out = SignSGD(error_feedback=False).compress(torch.tensor([[1.0, -2.0, 0.0, 3.0]]))
    assert out.reconstructed.tolist() == [[1.5, -1.5, 1.5, 1.5]]
    assert out.residual is None


def test_error_feedback_telescopes_over_rounds() -> None:
    """Sum of decoded updates plus the final residual equals the sum of true updates."""
    op = TopK(0.05)
    residual = None
    sent_total = torch.zeros(4, 200, dtype=torch.float64)
    true_total = torch.zeros(4, 200, dtype=torch.float64)
    for r in range(12):
        update = _randn(4, 200, seed=100 + r, dtype=torch.float64)
        out = op.compress(update, residual=residual)
        residual = out.residual
        sent_total += out.reconstructed
        true_total += update
    assert residual is not None
    torch.testing.assert_close(sent_total + residual, true_total, rtol=0, atol=1e-12)
    assert residual.abs().sum() > 0  # something really was held back


def test_missing_residual_is_treated_as_zeros() -> None:
    update = _randn(3, 20)
    for op in (TopK(0.2), Threshold(0.5), SignSGD()):
        a = op.compress(update)
        b = op.compress(update, residual=torch.zeros_like(update))
        assert torch.equal(a.reconstructed, b.reconstructed)
        assert a.residual is not None and b.residual is not None
        assert torch.equal(a.residual, b.residual)


# -- unbiased stochastic operators -------------------------------------------------------------

_X = torch.tensor([0.3, -1.2, 0.05, 0.0, 2.0, -0.7, 0.45, 1.1])
_DRAWS = 20_000


def _mean_within(samples: torch.Tensor, target: torch.Tensor, variance: torch.Tensor) -> bool:
    """Whether the sample mean is within 5 standard errors (plus float slack) of ``target``."""
    tolerance = 5.0 * torch.sqrt(variance / samples.shape[0]) + 1e-5
    return bool(torch.all((samples.double().mean(dim=0) - target.double()).abs() <= tolerance))


def test_qsgd_is_unbiased_with_the_closed_form_variance() -> None:
    s = 2
    batch = _X.repeat(_DRAWS, 1)
    out = QSGD(s).compress(batch, generator=_gen(1))
    x = _X.double()
    norm = torch.linalg.vector_norm(x)
    ratio = s * x.abs() / norm
    frac = ratio - torch.floor(ratio)
    variance = (norm / s) ** 2 * frac * (1 - frac)
    assert _mean_within(out.reconstructed, _X, variance)
    # Per-coordinate variance matches (||x|| / s)^2 p (1 - p) where it is not zero.
    emp = out.reconstructed.double().var(dim=0)
    pos = variance > 1e-6
    torch.testing.assert_close(emp[pos], variance[pos], rtol=0.1, atol=0)
    # Deterministic rounding to the nearest level, a biased quantiser, fails the same test.
    biased = norm * torch.sign(x) * torch.round(ratio) / s
    assert not _mean_within(biased.expand(_DRAWS, -1), _X, variance)
    # Every decoded entry is on the grid ||x|| * sign(x) * l / s with l in {floor(r), floor(r)+1}.
    level = out.reconstructed.double() / norm * s * torch.sign(x)
    assert torch.allclose(level, torch.round(level), atol=1e-4)
    level = torch.round(level)
    assert torch.all((level == torch.floor(ratio)) | (level == torch.floor(ratio) + 1))


def test_terngrad_is_unbiased_and_ternary() -> None:
    batch = _X.repeat(_DRAWS, 1)
    out = TernGrad().compress(batch, generator=_gen(2))
    s = float(_X.abs().max())
    p = _X.double().abs() / s
    variance = s**2 * p * (1 - p)
    assert _mean_within(out.reconstructed, _X, variance)
    assert set(out.reconstructed.unique().tolist()) <= {-s, 0.0, s}
    # Signs never flip, and the largest entry is always sent.
    assert torch.all(out.reconstructed * _X >= 0)
    assert torch.all(out.reconstructed[:, 4] == s)
    # Deterministic ternarisation (send where p >= 1/2) is biased and fails.
    biased = torch.where(p >= 0.5, s * torch.sign(_X.double()), torch.zeros_like(p))
    assert not _mean_within(biased.expand(_DRAWS, -1), _X, variance)


def test_terngrad_clips_to_c_standard_deviations() -> None:
    # Wen et al.: entries beyond 2.5 sigma are clipped before ternarising, so the scale is
    # 2.5 sigma (population standard deviation of the row), not the outlier's magnitude.
    x = torch.tensor([[0.1, -0.2, 0.15, 0.05, -0.1, 0.2, -0.05, 0.1, 0.0, 9.0]] * 3)
    out = TernGrad(clip_sigmas=2.5).compress(x, generator=_gen(4))
    bound = 2.5 * float(np.std(x[0].numpy()))
    assert bound < 9.0
    magnitudes = out.reconstructed.abs().unique().tolist()
    assert all(m == 0.0 or m == pytest.approx(bound, rel=1e-6) for m in magnitudes)
    assert out.reconstructed[:, 9].tolist() == pytest.approx([bound] * 3, rel=1e-6)
    # Unbiased for the clipped row.
    batch = x[:1].repeat(_DRAWS, 1)
    many = TernGrad(clip_sigmas=2.5).compress(batch, generator=_gen(5))
    scale = float(many.reconstructed.abs().max())  # the bound in the operator's float32
    clipped = x[0].clamp(-scale, scale)
    p = clipped.double().abs() / scale
    assert _mean_within(many.reconstructed, clipped, scale**2 * p * (1 - p))
    # Without clipping the outlier sets the scale.
    assert float(TernGrad().compress(x, generator=_gen(4)).reconstructed.abs().max()) == 9.0


def test_terngrad_layerwise_keeps_one_scale_per_tensor() -> None:
    x = torch.cat([_randn(4, 6, 1), 100.0 * _randn(4, 3, 2), 0.01 * _randn(4, 5, 3)], dim=1)
    op = TernGrad(layerwise=True).for_layout((6, 3, 5))
    out = op.compress(x, generator=_gen(6))
    assert out.bits.tolist() == [2 * 14 + 32 * 3] * 4
    for start, end in ((0, 6), (6, 9), (9, 14)):
        part, sent = x[:, start:end], out.reconstructed[:, start:end]
        scale = part.abs().amax(dim=1, keepdim=True)
        assert torch.all((sent == 0) | (sent.abs() == scale))
        assert torch.all(sent.abs().amax(dim=1) == scale[:, 0])  # the largest entry is sent
    # One scale for the whole row: the 100x tensor wipes out the small ones' magnitudes.
    whole = TernGrad().compress(x, generator=_gen(6))
    assert whole.bits.tolist() == [2 * 14 + 32] * 4
    assert torch.all((whole.reconstructed[:, 9:] == 0) | (whole.reconstructed[:, 9:].abs() > 10))
    # The binding is not part of the spec, and a wrong layout is an error naming both sizes.
    assert op.spec == "terngrad:layerwise=true" and parse_compressor(op.spec) == op
    assert TernGrad().for_layout((6, 3, 5)) == TernGrad()
    with pytest.raises(ValueError, match="14 entries"):
        TernGrad(layerwise=True).for_layout((6, 3)).compress(x, generator=_gen(6))


def test_random_k_is_unbiased_and_picks_coordinates_uniformly() -> None:
    d, ratio = 8, 0.25  # k = 2, scale d / k = 4
    batch = _X.repeat(_DRAWS, 1)
    out = RandomK(ratio).compress(batch, generator=_gen(3))
    variance = _X.double() ** 2 * (d / 2 - 1)
    assert _mean_within(out.reconstructed, _X, variance)
    sent = out.reconstructed != 0
    nonzero = _X != 0
    assert torch.all(sent.sum(dim=1) <= 2)
    assert torch.equal(out.reconstructed[sent], (batch * 4)[sent])
    freq = sent[:, nonzero].double().mean(dim=0)
    se = math.sqrt(0.25 * 0.75 / _DRAWS)
    assert torch.all((freq - 0.25).abs() < 5 * se)
    # Without the d / k scaling the mean is x * k / d: biased.
    plain = RandomK(ratio, unbiased=False).compress(batch, generator=_gen(3)).reconstructed
    assert torch.equal(plain * 4, out.reconstructed)
    assert not _mean_within(plain, _X, variance)


@pytest.mark.parametrize("op", STOCHASTIC, ids=lambda op: op.spec)
def test_stochastic_operators_are_deterministic_given_the_seed(op: Compressor) -> None:
    update = _randn(5, 64)
    a = op.compress(update, generator=_gen(11))
    b = op.compress(update, generator=_gen(11))
    c = op.compress(update, generator=_gen(12))
    assert torch.equal(a.reconstructed, b.reconstructed) and torch.equal(a.bits, b.bits)
    assert not torch.equal(a.reconstructed, c.reconstructed)
    # Rows are independent draws: identical inputs in two rows decode differently.
    twin = op.compress(update[:1].repeat(2, 1), generator=_gen(11)).reconstructed
    assert not torch.equal(twin[0], twin[1])


def test_global_rng_is_untouched() -> None:
    state = torch.random.get_rng_state()
    for op in STOCHASTIC:
        op.compress(_randn(3, 10), generator=_gen())
    assert torch.equal(torch.random.get_rng_state(), state)


# -- deep gradient compression -----------------------------------------------------------------


def test_dgc_warmup_densities_follow_the_paper() -> None:
    op = DeepGradientCompression(0.001)
    assert [op.density_at(r) for r in range(6)] == [0.25, 0.0625, 0.015625, 0.00390625] + [
        0.001
    ] * 2
    d = 1024
    update = _randn(2, d)
    counts = [
        int((op.compress(update, round_index=r).reconstructed[0] != 0).sum()) for r in range(6)
    ]
    assert counts == [256, 64, 16, 4, 2, 2]  # ceil(0.001 * 1024) = 2
    # The warm-up never sends less than the target, and warmup_rounds = 0 disables it.
    assert [DeepGradientCompression(0.1).density_at(r) for r in range(5)] == [0.25] + [0.1] * 4
    assert DeepGradientCompression(0.5).density_at(0) == 0.5
    assert DeepGradientCompression(0.001, warmup_rounds=0).density_at(0) == 0.001
    assert DeepGradientCompression(1e-5, warmup_rounds=6).density_at(5) == 0.25 * 4.0**-5


def test_dgc_warmup_runs_per_row() -> None:
    # Each row at its own place in the schedule: the same k as that row compressed alone.
    op = DeepGradientCompression(0.001)
    update = _randn(5, 1024, 3)
    positions = np.array([0, 3, 1, 7, 0])
    out = op.compress(update, round_index=positions)
    for row, r in enumerate(positions):
        alone = op.compress(update[row : row + 1], round_index=int(r))
        torch.testing.assert_close(out.reconstructed[row], alone.reconstructed[0])
        torch.testing.assert_close(out.residual[row], alone.residual[0])
        assert int(out.bits[row]) == int(alone.bits[0])
    assert (out.reconstructed != 0).sum(dim=1).tolist() == [256, 4, 64, 2, 256]
    with pytest.raises(ValueError, match="one per row"):
        op.compress(update, round_index=np.array([0, 1]))
    with pytest.raises(ValueError, match="one per row"):
        op.compress(update, round_index=np.array([0, 1, -1, 0, 0]))


@given(seed=st.integers(0, 2**16), momentum=st.floats(0.0, 0.99))
@settings(max_examples=30, deadline=None)
def test_dgc_conservation_and_momentum_factor_masking(seed: int, momentum: float) -> None:
    op = DeepGradientCompression(0.1, momentum=momentum, warmup_rounds=0)
    g = _randn(3, 50, seed, torch.float64)
    u_old = _randn(3, 50, seed + 1, torch.float64)
    v_old = _randn(3, 50, seed + 2, torch.float64)
    out = op.compress(g, residual=v_old, momentum=u_old)
    assert out.residual is not None and out.momentum is not None
    u_new = momentum * u_old + g  # momentum before masking
    sent = out.reconstructed != 0
    assert sent.sum(dim=1).tolist() == [5, 5, 5]
    # v_new + sent == v_old + u_new: exact, since every entry is either sent or kept.
    assert torch.equal(out.residual + out.reconstructed, v_old + u_new)
    # Momentum factor masking: u and v are zero exactly where sent, unchanged elsewhere.
    assert torch.all(out.residual[sent] == 0) and torch.all(out.momentum[sent] == 0)
    assert torch.equal(out.momentum[~sent], u_new[~sent])
    assert torch.equal(out.residual[~sent], (v_old + u_new)[~sent])
    # What is sent is the top-k of the accumulated v.
    magnitude = (v_old + u_new).abs()
    smallest_sent = torch.where(sent, magnitude, torch.inf).amin(dim=1)
    largest_kept = torch.where(sent, 0.0, magnitude).amax(dim=1)
    assert torch.all(smallest_sent >= largest_kept)


def _dgc_reference(
    grads: list[np.ndarray], momentum: float, clip_norm: float | None, ks: list[int]
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Lin et al.'s algorithm, one client at a time in plain numpy."""
    num_clients, d = grads[0].shape
    u = np.zeros((num_clients, d))
    v = np.zeros((num_clients, d))
    outputs = []
    for g_round, k in zip(grads, ks, strict=True):
        sent_round = np.zeros((num_clients, d))
        for c in range(num_clients):
            g = g_round[c].copy()
            if clip_norm is not None:
                g *= min(1.0, clip_norm / np.linalg.norm(g))
            u[c] = momentum * u[c] + g
            v[c] = v[c] + u[c]
            top = np.argsort(-np.abs(v[c]))[:k]
            sent_round[c, top] = v[c, top]
            v[c, top] = 0.0
            u[c, top] = 0.0
        outputs.append((sent_round, v.copy(), u.copy()))
    return outputs


@pytest.mark.parametrize("clip_norm", [None, 0.8])
def test_dgc_matches_a_per_client_reference_over_rounds(clip_norm: float | None) -> None:
    op = DeepGradientCompression(0.1, momentum=0.7, clip_norm=clip_norm, warmup_rounds=2)
    grads = [_randn(3, 50, seed=40 + r, dtype=torch.float64) * (r + 1) for r in range(5)]
    # 50 * 0.25 = 12.5 -> 13; round 1: max(0.1, 0.0625) = 0.1 -> 5; then the target, 5.
    reference = _dgc_reference([g.numpy() for g in grads], 0.7, clip_norm, [13, 5, 5, 5, 5])
    v = u = None
    for r, (g, (sent, v_ref, u_ref)) in enumerate(zip(grads, reference, strict=True)):
        out = op.compress(g, residual=v, momentum=u, round_index=r)
        v, u = out.residual, out.momentum
        np.testing.assert_allclose(out.reconstructed.numpy(), sent, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(v.numpy(), v_ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(u.numpy(), u_ref, rtol=1e-12, atol=1e-12)


def test_dgc_clipping_scales_rows_above_the_threshold_only() -> None:
    g = torch.tensor([[3.0, 4.0, 0.0, 0.0], [0.3, 0.4, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    out = DeepGradientCompression(1.0, clip_norm=1.0, warmup_rounds=0).compress(g)
    torch.testing.assert_close(
        out.reconstructed,
        torch.tensor([[0.6, 0.8, 0.0, 0.0], [0.3, 0.4, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]),
    )


def test_dgc_without_momentum_is_topk_with_error_feedback() -> None:
    dgc = DeepGradientCompression(0.05, momentum=0.0, warmup_rounds=0)
    topk = TopK(0.05)
    v = u = r = None
    for t in range(6):
        g = _randn(4, 80, seed=t)
        a = dgc.compress(g, residual=v, momentum=u, round_index=t)
        b = topk.compress(g, residual=r)
        v, u, r = a.residual, a.momentum, b.residual
        assert torch.equal(a.reconstructed, b.reconstructed)
        assert torch.equal(a.bits, b.bits)
        assert v is not None and r is not None and torch.equal(v, r)


# -- general properties ------------------------------------------------------------------------


@pytest.mark.parametrize("op", EXAMPLES, ids=lambda op: op.spec)
def test_inputs_are_not_modified_and_state_flags_match_outputs(op: Compressor) -> None:
    update = _randn(3, 30, seed=5)
    residual = _randn(3, 30, seed=6) if op.uses_residual else None
    momentum = _randn(3, 30, seed=7) if op.uses_momentum else None
    copies = [t.clone() if t is not None else None for t in (update, residual, momentum)]
    out = op.compress(update, residual=residual, momentum=momentum, generator=_gen(), round_index=2)
    for before, after in zip(copies, (update, residual, momentum), strict=True):
        assert before is None or torch.equal(before, after)
    assert out.reconstructed.shape == update.shape
    assert out.reconstructed.dtype == update.dtype
    assert (out.residual is not None) == op.uses_residual
    assert (out.momentum is not None) == op.uses_momentum
    assert out.bits.shape == (3,) and torch.all(out.bits > 0)


def test_no_compression_is_the_identity_at_full_cost() -> None:
    update = _randn(2, 9)
    out = NoCompression().compress(update)
    assert torch.equal(out.reconstructed, update) and out.reconstructed is not update
    assert out.bits.tolist() == [9 * FLOAT_BITS] * 2


def test_float64_updates_are_compressed_in_float64() -> None:
    update = _randn(2, 16, dtype=torch.float64)
    for op in EXAMPLES:
        res = _randn(2, 16, 1, torch.float64) if op.uses_residual else None
        out = op.compress(update, residual=res, generator=_gen())
        assert out.reconstructed.dtype == torch.float64


def test_empty_batch_is_allowed() -> None:
    for op in EXAMPLES:
        out = op.compress(torch.zeros(0, 12), generator=_gen())
        assert out.reconstructed.shape == (0, 12) and out.bits.shape == (0,)


# -- specs -------------------------------------------------------------------------------------


def test_every_registered_operator_has_an_example() -> None:
    assert {type(op) for op in EXAMPLES} == set(COMPRESSORS.values())
    assert all(cls.name == name for name, cls in COMPRESSORS.items())


@pytest.mark.parametrize("op", EXAMPLES, ids=lambda op: op.spec)
def test_spec_round_trips(op: Compressor) -> None:
    assert parse_compressor(op.spec) == op
    assert parse_compressor(op.spec).spec == op.spec
    assert parse_compressor(op) is op


@given(ratio=st.floats(1e-9, 1.0), ef=st.booleans())
@settings(max_examples=100, deadline=None)
def test_float_specs_round_trip_exactly(ratio: float, ef: bool) -> None:
    op = TopK(ratio, error_feedback=ef)
    assert parse_compressor(op.spec) == op
    assert parse_compressor(Threshold(ratio).spec) == Threshold(ratio)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("none", NoCompression()),
        ("topk:0.01", TopK(0.01)),
        (" TopK : 0.01 ", TopK(0.01)),
        ("topk:ratio=0.01,error_feedback=false", TopK(0.01, error_feedback=False)),
        ("randk:0.1,unbiased=0,error_feedback=yes", RandomK(0.1, True, False)),
        ("threshold:1e-3", Threshold(0.001)),
        ("sign:error_feedback=false", SignSGD(error_feedback=False)),
        ("terngrad", TernGrad()),
        ("terngrad:layerwise=true,clip_sigmas=2.5", TernGrad(layerwise=True, clip_sigmas=2.5)),
        ("qsgd:16", QSGD(16)),
        ("dgc:0.001", DeepGradientCompression(0.001)),
        (
            "dgc:0.001,momentum=0.5,clip_norm=none,warmup_rounds=0",
            DeepGradientCompression(0.001, momentum=0.5, warmup_rounds=0),
        ),
        ("dgc:0.01,clip_norm=2", DeepGradientCompression(0.01, clip_norm=2.0)),
    ],
)
def test_spec_strings_parse(spec: str, expected: Compressor) -> None:
    assert parse_compressor(spec) == expected


def test_specs_written_by_operators() -> None:
    assert TopK(0.01).spec == "topk:0.01"
    assert TopK(0.01, error_feedback=False).spec == "topk:0.01,error_feedback=false"
    assert SignSGD().spec == "sign" and SignSGD(False).spec == "sign:error_feedback=false"
    assert QSGD(4).spec == "qsgd:4"
    assert DeepGradientCompression(0.001, clip_norm=1.0).spec == "dgc:0.001,clip_norm=1.0"


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("zip", r"unknown compressor 'zip'.*allowed: none, topk, randk"),
        ("", "empty"),
        ("topk", "needs a ratio"),
        ("topk:", "no parameters"),
        ("topk:abc", r"invalid ratio.*expected a number, got 'abc'"),
        ("topk:2", r"ratio must be a finite number in \(0, 1\], got 2.0"),
        ("topk:0", r"ratio must be a finite number in \(0, 1\]"),
        ("topk:nan", r"ratio must be a finite number in \(0, 1\]"),
        ("topk:0.1,foo=1", r"unknown option 'foo'.*allowed: ratio, error_feedback"),
        ("topk:0.1,ratio=0.2", "given twice"),
        ("topk:0.1,,", "empty parameter"),
        ("topk:0.1,error_feedback=maybe", "expected true or false"),
        ("topk:0.1,0.2", "key=value"),
        ("none:3", "takes no parameters"),
        ("sign:0.5", "key=value"),
        ("qsgd:4.5", "expected an integer"),
        ("qsgd:0", r"levels must be an integer >= 1, got 0"),
        ("threshold:-1", r"tau must be a finite number >= 0"),
        ("dgc:0.1,momentum=1", r"momentum must be a finite number in \[0, 1\)"),
        ("dgc:0.1,clip_norm=0", r"clip_norm must be a finite number > 0"),
        ("dgc:0.1,warmup_rounds=-1", r"warmup_rounds must be an integer >= 0"),
    ],
)
def test_bad_specs_raise_clear_errors(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_compressor(spec)


def test_bad_constructor_arguments() -> None:
    with pytest.raises(TypeError, match="ratio must be a finite number"):
        TopK(True)
    with pytest.raises(TypeError, match="ratio must be a finite number"):
        TopK("0.1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="error_feedback must be True or False"):
        TopK(0.1, error_feedback=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="levels must be an integer"):
        QSGD(4.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tau must be a finite number >= 0"):
        Threshold(float("inf"))
    with pytest.raises(TypeError, match="spec must be a string"):
        parse_compressor(3)  # type: ignore[arg-type]
    assert QSGD(np.int64(3)) == QSGD(3) and isinstance(QSGD(np.int64(3)).levels, int)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: TopK(0.1).compress(torch.ones(5)),
            ValueError,
            r"shape \(K, d\).*got shape \(5,\)",
        ),
        (lambda: TopK(0.1).compress(torch.ones(2, 3, 4)), ValueError, r"got shape \(2, 3, 4\)"),
        (lambda: TopK(0.1).compress(torch.ones(2, 0)), ValueError, "d >= 1"),
        (lambda: TopK(0.1).compress(torch.ones(2, 3, dtype=torch.int64)), TypeError, "int64"),
        (lambda: TopK(0.1).compress(np.ones((2, 3))), TypeError, "torch.Tensor"),
        (
            lambda: TopK(0.1).compress(torch.tensor([[1.0, float("nan")], [1.0, 2.0]])),
            ValueError,
            r"rows \[0\]",
        ),
        (
            lambda: TopK(0.1).compress(torch.ones(2, 3), residual=torch.ones(3, 3)),
            ValueError,
            r"residual must have the update's shape \(2, 3\), got \(3, 3\)",
        ),
        (
            lambda: TopK(0.1, error_feedback=False).compress(
                torch.ones(2, 3), residual=torch.ones(2, 3)
            ),
            ValueError,
            "keeps no error-feedback residual",
        ),
        (
            lambda: TopK(0.1).compress(torch.ones(2, 3), momentum=torch.ones(2, 3)),
            ValueError,
            "keeps no momentum",
        ),
        (
            lambda: DeepGradientCompression(0.1).compress(
                torch.ones(2, 3), momentum=torch.ones(2, 4)
            ),
            ValueError,
            "momentum must have",
        ),
        (lambda: QSGD(4).compress(torch.ones(2, 3)), ValueError, "pass generator="),
        (lambda: RandomK(0.5).compress(torch.ones(2, 3)), ValueError, "pass generator="),
        (
            lambda: TernGrad().compress(torch.ones(2, 3), generator=np.random.default_rng(0)),
            TypeError,
            "torch.Generator",
        ),
        (
            lambda: DeepGradientCompression(0.1).compress(torch.ones(2, 3), round_index=-1),
            ValueError,
            "round_index must be an integer >= 0, got -1",
        ),
    ],
)
def test_bad_inputs_raise_clear_errors(
    call: Callable[[], object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        call()


def test_sparse_qsgd_bits_conservation_and_unbiasedness() -> None:
    op = parse_compressor("topk_qsgd:0.1,levels=4")
    assert op == SparseQSGD(0.1, 4) and parse_compressor(op.spec) == op
    gen = torch.Generator().manual_seed(0)
    update = torch.randn(3, 100, generator=gen, dtype=torch.float64)
    residual = torch.randn(3, 100, generator=gen, dtype=torch.float64) * 0.1
    out = op.compress(update, residual=residual, generator=gen)
    # k = 10 kept values: 32-bit norm, 1 sign + 3 level bits each, 10 indices of 7 bits
    assert out.bits.tolist() == [32 + 10 * 4 + 70] * 3
    assert ((out.reconstructed != 0).sum(dim=1) <= 10).all()
    # Error feedback carries the sparsification error only: residual = x - top_k(x).
    x = update + residual
    topk = parse_compressor("topk:0.1,error_feedback=false").compress(x).reconstructed
    torch.testing.assert_close(out.residual, x - topk)
    # Given the kept set, the quantisation is unbiased: the mean over draws is the top-k output.
    mean = torch.stack(
        [op.compress(update, residual=residual, generator=gen).reconstructed for _ in range(4000)]
    ).mean(dim=0)
    torch.testing.assert_close(mean, topk, atol=0.05, rtol=0.0)


# -- the template: error feedback handled once in the base ----------------------------------------

ERROR_FEEDBACK_OPERATORS = [
    TopK(0.2),
    RandomK(0.3, error_feedback=True),
    RandomK(0.3, error_feedback=True, unbiased=False),
    Threshold(0.5),
    SignSGD(),
    # DGC with no momentum and no clipping is plain top-k error feedback at its density.
    DeepGradientCompression(0.1, momentum=0.0, warmup_rounds=2),
]


@pytest.mark.parametrize("op", ERROR_FEEDBACK_OPERATORS, ids=lambda op: op.spec)
def test_error_feedback_conserves_the_signal(op: Compressor) -> None:
    """Sum of what was sent over the rounds plus the final residual is the sum of the updates."""
    data = torch.Generator().manual_seed(7)
    draws = torch.Generator().manual_seed(8)
    k, d, rounds = 3, 40, 12
    residual = None
    momentum = None
    sent_total = torch.zeros(k, d, dtype=torch.float64)
    raw_total = torch.zeros(k, d, dtype=torch.float64)
    for r in range(rounds):
        update = torch.randn(k, d, generator=data, dtype=torch.float64)
        out = op.compress(
            update, residual=residual, momentum=momentum, generator=draws, round_index=r
        )
        assert out.residual is not None
        residual, momentum = out.residual, out.momentum
        sent_total += out.reconstructed
        raw_total += update
    assert residual is not None and bool(residual.abs().sum() > 0)  # something was held back
    torch.testing.assert_close(sent_total + residual, raw_total, rtol=0.0, atol=1e-12)


@pytest.mark.parametrize(
    ("with_feedback", "without"),
    [
        (TopK(0.2), TopK(0.2, error_feedback=False)),
        (Threshold(0.5), Threshold(0.5, error_feedback=False)),
        (SignSGD(), SignSGD(error_feedback=False)),
    ],
    ids=lambda op: op.spec,
)
def test_error_feedback_encodes_update_plus_residual(
    with_feedback: Compressor, without: Compressor
) -> None:
    gen = torch.Generator().manual_seed(3)
    update = torch.randn(4, 25, generator=gen, dtype=torch.float64)
    residual = torch.randn(4, 25, generator=gen, dtype=torch.float64)
    fed = with_feedback.compress(update, residual=residual)
    plain = without.compress(update + residual)
    assert torch.equal(fed.reconstructed, plain.reconstructed)
    assert torch.equal(fed.bits, plain.bits)
    assert torch.equal(fed.residual, update + residual - plain.reconstructed)
    assert plain.residual is None


def test_sparse_qsgd_feeds_back_only_the_sparsification_error() -> None:
    """Its residual is top-k's (same ratio, same input), whatever the quantiser drew."""
    gen = torch.Generator().manual_seed(5)
    update = torch.randn(3, 50, generator=gen, dtype=torch.float64)
    residual = torch.randn(3, 50, generator=gen, dtype=torch.float64)
    out = SparseQSGD(0.2, levels=2).compress(
        update, residual=residual, generator=torch.Generator().manual_seed(1)
    )
    topk = TopK(0.2).compress(update, residual=residual)
    assert torch.equal(out.residual, topk.residual)
    assert not torch.equal(out.reconstructed, topk.reconstructed)  # the values were quantised
    # Nothing outside top-k's support is sent.
    assert not bool(out.reconstructed[topk.reconstructed == 0].any())


def test_dgc_keeps_its_momentum_correction_and_masking() -> None:
    """v_new + sent == v_old + u_new, and both states are zero where something was sent."""
    gen = torch.Generator().manual_seed(9)
    op = DeepGradientCompression(0.1, momentum=0.9, warmup_rounds=0)
    update = torch.randn(2, 30, generator=gen, dtype=torch.float64)
    u_old = torch.randn(2, 30, generator=gen, dtype=torch.float64)
    v_old = torch.randn(2, 30, generator=gen, dtype=torch.float64)
    out = op.compress(update, residual=v_old, momentum=u_old)
    u_new = 0.9 * u_old + update
    torch.testing.assert_close(out.residual + out.reconstructed, v_old + u_new, rtol=0, atol=1e-12)
    sent = out.reconstructed != 0
    assert int(sent.sum()) == 2 * 3
    assert not bool(out.residual[sent].any()) and not bool(out.momentum[sent].any())
    torch.testing.assert_close(out.momentum[~sent], u_new[~sent], rtol=0, atol=0)


@pytest.mark.parametrize("k", [1, 3, 17, 40])
def test_top_k_values_keep_the_entries_of_the_top_k_mask(k: int) -> None:
    """The gather/scatter top-k keeps, bit for bit, the entries the mask of ``_keep_top_k``
    keeps (ties, signed zeros and repeated magnitudes included), zeros elsewhere."""
    gen = torch.Generator().manual_seed(k)
    x = torch.randn(12, 40, generator=gen)
    x[0] = 0.0  # every magnitude tied
    x[1, ::2] = -0.0
    x[2] = torch.tensor([1.0, -1.0] * 20)  # ties of opposite signs at every boundary
    x[3, :5] = 1e-30
    x[4] = torch.round(x[4])  # repeated magnitudes
    sparse, mask = _keep_top_k(x, k)
    values = _top_k_values(x, k)
    assert torch.equal(values, sparse)
    assert torch.equal(values.view(torch.int32), sparse.view(torch.int32))  # signed zeros too
    assert int(mask.sum(dim=1).min()) == int(mask.sum(dim=1).max()) == k
