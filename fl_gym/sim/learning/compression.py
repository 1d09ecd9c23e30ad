"""Compression operators for stacked client updates, with exact bit counts.

Every operator acts on a ``(K, d)`` floating tensor, one row per participating client, and applies
the same rule to each row independently in one batched computation. It returns what the server
decodes (``reconstructed``, ``(K, d)``) and the exact number of bits each client puts on the air
(``bits``, ``(K,)`` int64), value and index encoding included, so that the wireless layer can turn
payloads into airtime and energy.

Per-client state (the error-feedback residual and the momentum of Deep Gradient Compression) is
owned by the caller: the :class:`~fl_gym.sim.learning.federation.Federation` keeps ``(K_total, d)``
tensors
and passes in the rows of the clients that take part. Operators are pure apart from the state they
receive and return; they never modify their inputs and keep nothing between calls. State that an
operator needs but is not given (``residual=None`` or ``momentum=None``) is taken as zeros, which
is the state of a client that has never compressed before. Passing state to an operator that does
not use it is an error, since it points at a caller that believes error feedback is on when it
is not.

Encodings (``FLOAT_BITS = 32`` bits per transmitted real number, whatever the tensor's dtype):

* sparse operators send ``k`` values of a row of length ``d`` as ``32 k`` value bits plus
  ``min(k * ceil(log2 d), d)`` index bits, i.e. explicit indices or a ``d``-bit bitmap, whichever
  is shorter (both ends know ``k`` and ``d``, so no flag is needed);
* each operator's class docstring states its header, if any.

Operators are named by short spec strings (``"topk:0.01"``, ``"qsgd:4"``, ``"sign"``, ...) that
:func:`parse_compressor` reads and :attr:`Compressor.spec` writes. The grammar is
``name[:value][,key=value...]``: an optional first positional value (the operator's main
parameter) followed by ``key=value`` options named after the dataclass fields, for example
``"topk:0.01,error_feedback=false"`` or ``"dgc:0.001,momentum=0.5,clip_norm=1.0"``.

References:
    Alistarh et al., "QSGD: Communication-Efficient SGD via Gradient Quantization and Encoding",
    NeurIPS 2017. Wen et al., "TernGrad: Ternary Gradients to Reduce Communication in Distributed
    Deep Learning", NeurIPS 2017. Karimireddy et al., "Error Feedback Fixes SignSGD and other
    Gradient Compression Schemes", ICML 2019. Lin et al., "Deep Gradient Compression: Reducing the
    Communication Bandwidth for Distributed Training", ICLR 2018. Stich et al., "Sparsified SGD
    with Memory", NeurIPS 2018.
"""

from __future__ import annotations

import abc
import itertools
import math
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields, replace
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np
import torch
from numpy.typing import ArrayLike

from fl_gym.sim.config import check_bool, check_int, check_positive, check_real, check_rows

__all__ = [
    "COMPRESSORS",
    "FLOAT_BITS",
    "QSGD",
    "CompressionResult",
    "Compressor",
    "DeepGradientCompression",
    "NoCompression",
    "RandomK",
    "SignSGD",
    "SparseQSGD",
    "TernGrad",
    "Threshold",
    "TopK",
    "index_bits",
    "num_kept",
    "parse_compressor",
    "sparse_bits",
    "uniform_draws",
]

FLOAT_BITS = 32
"""Bits per transmitted real number (values, scales, norms): IEEE-754 single precision."""

SEED_BITS = 32
"""Bits of the seed from which a random-k receiver regenerates the chosen coordinates."""

DGC_WARMUP_START_DENSITY = 0.25
"""Density of Deep Gradient Compression's first warm-up round (Lin et al.: 75 % sparsity)."""

DGC_WARMUP_DECAY = 4.0
"""Factor by which the warm-up density shrinks each round (25 %, 6.25 %, 1.5625 %, 0.39 %)."""


# -- results ---------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CompressionResult:
    """What one compression call produces for ``K`` clients.

    Attributes:
        reconstructed: ``(K, d)`` update as the server decodes it.
        bits: ``(K,)`` int64, exact number of bits each client sends.
        residual: ``(K, d)`` new error-feedback residual, or ``None`` if the operator keeps none.
        momentum: ``(K, d)`` new momentum state, or ``None`` if the operator keeps none.
    """

    reconstructed: torch.Tensor
    bits: torch.Tensor
    residual: torch.Tensor | None = None
    momentum: torch.Tensor | None = None


@dataclass(frozen=True, eq=False)
class Encoding:
    """What an operator's encoding produces for ``K`` rows.

    Attributes:
        reconstructed: ``(K, d)`` values as the server decodes them.
        bits: ``(K,)`` int64 exact bits per row.
        fed_back: ``(K, d)`` what error feedback counts as sent, where that is not
            ``reconstructed`` (top-k + QSGD feeds back only the sparsification error), else
            ``None``.
    """

    reconstructed: torch.Tensor
    bits: torch.Tensor
    fed_back: torch.Tensor | None = None


# -- bit accounting --------------------------------------------------------------------------------


def _ceil_log2(n: int) -> int:
    """Bits needed to name one of ``n >= 1`` items: ``ceil(log2 n)``, computed exactly on ints."""
    return (n - 1).bit_length()


def index_bits(kept: torch.Tensor, num_params: int) -> torch.Tensor:
    """Bits that tell the receiver which coordinates of a row were sent.

    Args:
        kept: ``(K,)`` int64, number of coordinates sent per row.
        num_params: Row length ``d``.

    Returns:
        ``(K,)`` int64, ``min(kept * ceil(log2 d), d)``: explicit indices or a ``d``-bit bitmap,
        whichever is shorter.
    """
    return torch.clamp(kept * _ceil_log2(num_params), max=num_params)


def sparse_bits(kept: torch.Tensor, num_params: int) -> torch.Tensor:
    """Bits of a sparse row: ``FLOAT_BITS`` per kept value plus :func:`index_bits`.

    Args:
        kept: ``(K,)`` int64, number of coordinates sent per row.
        num_params: Row length ``d``.

    Returns:
        ``(K,)`` int64 bits per row, without any operator-specific header.
    """
    return FLOAT_BITS * kept + index_bits(kept, num_params)


def num_kept(fraction: float, num_params: int) -> int:
    """Number of coordinates a fixed-fraction sparsifier keeps: ``max(1, ceil(fraction * d))``.

    The product is taken on the decimal value of ``fraction`` (its shortest ``repr``), so that
    ``num_kept(0.1, 30)`` is 3 as written, not 4 as ``ceil(0.1 * 30)`` gives in binary floating
    point (``0.1 * 30 == 3.0000000000000004``).

    Args:
        fraction: Fraction of coordinates to keep, in ``(0, 1]``.
        num_params: Row length ``d >= 1``.

    Returns:
        The count ``k`` with ``1 <= k <= d``.
    """
    return min(num_params, max(1, math.ceil(Fraction(repr(float(fraction))) * num_params)))


# -- validation helpers ----------------------------------------------------------------------------


def _check_fraction(name: str, value: object) -> float:
    return check_real(name, value, low=0.0, high=1.0, low_open=True)


def _check_update(update: object) -> torch.Tensor:
    return check_rows("update", update, finite=True)


def _check_state(name: str, state: object, update: torch.Tensor) -> torch.Tensor:
    if not isinstance(state, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(state).__name__}")
    if state.shape != update.shape:
        raise ValueError(
            f"{name} must have the update's shape {tuple(update.shape)}, got {tuple(state.shape)}"
        )
    if not state.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {state.dtype}")
    if state.device != update.device:
        raise ValueError(f"{name} is on {state.device} but the update is on {update.device}")
    return state


# -- spec strings ----------------------------------------------------------------------------------


def _parse_float(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"expected a number, got {raw!r}") from None


def _parse_optional_float(raw: str) -> float | None:
    return None if raw.lower() == "none" else _parse_float(raw)


def _parse_int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"expected an integer, got {raw!r}") from None


_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def _parse_bool(raw: str) -> bool:
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def _format_value(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # shortest string that reads back as the same float
    return str(value)


# -- operators -------------------------------------------------------------------------------------


class Compressor(abc.ABC):
    """Base of all operators: validation, state handling and spec strings.

    Subclasses are frozen dataclasses; they set the class attributes ``name`` (the spec name),
    ``_positional`` (the field a bare spec value sets, or ``None``), ``_option_parsers`` (field
    name -> parser of its spec text) and ``_example`` (a valid spec, for error messages), and
    implement :meth:`_encode` (values kept, bits counted). :meth:`_compress` is the template
    around it that handles the state once: under error feedback (``uses_residual``) it encodes
    ``x = update + residual`` and keeps ``x - sent`` as the new residual. Deep Gradient
    Compression overrides the template (momentum correction before, masking of both states
    after); top-k + QSGD feeds back only its sparsification error (its encoding names the part
    error feedback counts as sent).
    """

    name: ClassVar[str]
    stochastic: ClassVar[bool] = False
    _positional: ClassVar[str | None] = None
    _option_parsers: ClassVar[dict[str, Callable[[str], Any]]] = {}
    _example: ClassVar[str] = ""

    @property
    def uses_residual(self) -> bool:
        """Whether the operator needs the caller's error-feedback residual rows (its
        ``error_feedback`` field, where it has one)."""
        return bool(getattr(self, "error_feedback", False))

    @property
    def uses_momentum(self) -> bool:
        """Whether the operator needs the caller's momentum rows."""
        return False

    def for_layout(self, tensor_sizes: tuple[int, ...]) -> Compressor:
        """This operator for updates made of parameter tensors of these sizes (in order); the
        federation calls it with its model's ``tensor_sizes``. Operators that treat a row as
        one vector return themselves."""
        return self

    @property
    def spec(self) -> str:
        """The spec string of this operator; ``parse_compressor(op.spec) == op``."""
        head: list[str] = []
        options: list[str] = []
        for f in fields(self):  # type: ignore[arg-type]
            if not f.metadata.get("spec", True):
                continue  # bound by the caller (e.g. the model's layout), not part of the spec
            value = getattr(self, f.name)
            if f.name == self._positional:
                head.append(_format_value(value))
            elif f.default is MISSING or value != f.default:
                options.append(f"{f.name}={_format_value(value)}")
        parts = head + options
        return f"{self.name}:{','.join(parts)}" if parts else self.name

    def compress(
        self,
        update: torch.Tensor,
        *,
        residual: torch.Tensor | None = None,
        momentum: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        round_index: int | ArrayLike = 0,
    ) -> CompressionResult:
        """Compress the stacked updates of ``K`` clients.

        Args:
            update: ``(K, d)`` floating tensor, one finite row per client.
            residual: ``(K, d)`` error-feedback residual rows of these clients; ``None`` means
                zeros. Only for operators with ``uses_residual``.
            momentum: ``(K, d)`` momentum rows of these clients; ``None`` means zeros. Only for
                operators with ``uses_momentum``.
            generator: Source of randomness; required by stochastic operators (random-k,
                TernGrad, QSGD), ignored by the others. Draws are made on its device.
            round_index: Where each client stands in its warm-up schedule (>= 0): one integer
                for every row or one per row, the number of rounds that client has taken part
                in before (the federation passes its per-client participation counts).

        Returns:
            The decoded update, exact bits per client, and the new state rows.

        Raises:
            TypeError: A tensor of the wrong type or dtype, or a generator that is not one.
            ValueError: A bad shape, non-finite update, state given to an operator that does not
                use it, a missing generator, or a negative ``round_index``.
        """
        update = _check_update(update)
        if residual is not None:
            if not self.uses_residual:
                raise ValueError(
                    f"{self.spec!r} keeps no error-feedback residual, but residual was given"
                )
            residual = _check_state("residual", residual, update)
        if momentum is not None:
            if not self.uses_momentum:
                raise ValueError(f"{self.spec!r} keeps no momentum, but momentum was given")
            momentum = _check_state("momentum", momentum, update)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if self.stochastic and generator is None:
            raise ValueError(
                f"{self.spec!r} draws random numbers: pass generator=torch.Generator(...)"
            )
        return self._compress(
            update, residual, momentum, generator, _check_round_index(round_index, update)
        )

    def _compress(
        self,
        update: torch.Tensor,
        residual: torch.Tensor | None,
        momentum_state: torch.Tensor | None,
        generator: torch.Generator | None,
        round_index: int | np.ndarray,
    ) -> CompressionResult:
        """The template, on validated inputs (``None`` state means zeros): error feedback adds
        the residual before encoding and keeps what was not sent as the new residual,
        ``residual_new = x - sent``, so ``reconstructed + residual_new == update + residual``
        (to float rounding); the operator itself only encodes (:meth:`_encode`)."""
        x = _add_residual(update, residual)
        encoded = self._encode(x, generator, round_index)
        new_residual = None
        if self.uses_residual:
            sent = encoded.reconstructed if encoded.fed_back is None else encoded.fed_back
            new_residual = x - sent
        return CompressionResult(encoded.reconstructed, encoded.bits, new_residual)

    @abc.abstractmethod
    def _encode(
        self, x: torch.Tensor, generator: torch.Generator | None, round_index: int | np.ndarray
    ) -> Encoding:
        """Encode the rows of ``x`` (the update, plus the residual under error feedback): the
        values the server decodes and the exact bits of each row."""


def _check_round_index(round_index: object, update: torch.Tensor) -> int | np.ndarray:
    """One integer >= 0, or a ``(K,)`` integer array >= 0 with one entry per row."""
    if np.ndim(round_index) == 0:  # type: ignore[arg-type]
        return check_int("round_index", round_index, minimum=0)
    values = np.asarray(round_index)
    k = update.shape[0]
    if values.shape != (k,) or values.dtype.kind not in "iu" or (values < 0).any():
        raise ValueError(
            f"round_index must be an integer >= 0 or {k} of them (one per row), got "
            f"{values.dtype} values of shape {values.shape}"
        )
    return values.astype(np.int64)


def _add_residual(update: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
    """Error-feedback input ``update + residual``; a missing residual is zero."""
    return update if residual is None else update + residual


def _keep_top_k(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the ``k`` largest-magnitude entries of every row.

    Returns:
        The sparsified ``(K, d)`` tensor and the ``(K, d)`` bool mask of kept entries.
    """
    idx = x.abs().topk(k, dim=1, sorted=False).indices
    mask = torch.zeros(x.shape, dtype=torch.bool, device=x.device).scatter_(1, idx, True)
    return torch.where(mask, x, torch.zeros_like(x)), mask


def _top_k_values(x: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` largest-magnitude entries of every row of ``x`` in place, zeros elsewhere: the
    values of :func:`_keep_top_k` (the same entries kept), gathered and scattered rather than
    selected through a ``(K, d)`` mask."""
    idx = x.abs().topk(k, dim=1, sorted=False).indices
    return torch.zeros_like(x).scatter_(1, idx, x.gather(1, idx))


def uniform_draws(
    shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Uniform [0, 1) draws of ``shape``, made on the generator's device and moved to
    ``device``: the draws of every stochastic operator (and of the compression stage, which
    draws each federation's rows from its own generator)."""
    draws = torch.rand(shape, generator=generator, device=generator.device, dtype=dtype)
    return draws.to(device)


def _uniform(like: torch.Tensor, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """:func:`uniform_draws` of ``like``'s shape, on its device."""
    return uniform_draws(tuple(like.shape), generator, dtype, like.device)


def _full_bits(update: torch.Tensor, bits: int) -> torch.Tensor:
    return torch.full((update.shape[0],), bits, dtype=torch.int64, device=update.device)


@dataclass(frozen=True)
class NoCompression(Compressor):
    """Identity: every client sends its ``d`` values as 32-bit floats, ``32 d`` bits.

    Spec: ``"none"``.
    """

    name: ClassVar[str] = "none"
    _example: ClassVar[str] = "none"

    def _encode(
        self, x: torch.Tensor, generator: torch.Generator | None, round_index: int | np.ndarray
    ) -> Encoding:
        return Encoding(x.clone(), _full_bits(x, FLOAT_BITS * x.shape[1]))


@dataclass(frozen=True)
class TopK(Compressor):
    """Top-k sparsification, with error feedback by default (Stich et al. 2018).

    Every row keeps exactly ``k = max(1, ceil(ratio * d))`` entries of largest magnitude of
    ``x = update + residual`` (see :func:`num_kept`; ties are broken by ``torch.topk``). With
    error feedback the new residual is ``x - reconstructed``, so ``reconstructed + residual_new ==
    update + residual_old`` exactly. Both ends know ``k``, so no header is sent:
    ``bits = 32 k + min(k * ceil(log2 d), d)`` per row.

    Args:
        ratio: Fraction of coordinates kept, in ``(0, 1]``.
        error_feedback: Whether the unsent part is carried to the next round.

    Spec: ``"topk:0.01"``, ``"topk:0.01,error_feedback=false"``.
    """

    ratio: float
    error_feedback: bool = True

    name: ClassVar[str] = "topk"
    _positional: ClassVar[str | None] = "ratio"
    _option_parsers: ClassVar[dict[str, Callable[[str], Any]]] = {
        "ratio": _parse_float,
        "error_feedback": _parse_bool,
    }
    _example: ClassVar[str] = "topk:0.01"

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratio", _check_fraction("ratio", self.ratio))
        object.__setattr__(
            self, "error_feedback", check_bool("error_feedback", self.error_feedback)
        )

    def _encode(
        self, x: torch.Tensor, generator: torch.Generator | None, round_index: int | np.ndarray
    ) -> Encoding:
        d = x.shape[1]
        k = num_kept(self.ratio, d)
        return Encoding(_top_k_values(x, k), sparse_bits(_full_bits(x, k), d))


@dataclass(frozen=True)
class RandomK(Compressor):
    """Random-k sparsification: ``k`` coordinates per row chosen uniformly from ``generator``.

    Every row keeps ``k = max(1, ceil(ratio * d))`` distinct coordinates of ``x = update +
    residual``, a fresh uniform subset per row. When ``unbiased`` the kept values are scaled by
    ``d / k``, so that ``E[reconstructed] = x``. With error feedback the new residual is
    ``x - reconstructed``.

    Encoding: the client sends a 32-bit seed from which the server regenerates the chosen
    coordinates, then the ``k`` values: ``bits = 32 k + 32`` per row (the scale ``d / k`` is known
    to the server).

    Args:
        ratio: Fraction of coordinates kept, in ``(0, 1]``.
        error_feedback: Whether the unsent part is carried to the next round.
        unbiased: Whether kept values are scaled by ``d / k``.

    Spec: ``"randk:0.01"``, ``"randk:0.01,error_feedback=true,unbiased=false"``.
    """

    ratio: float
    error_feedback: bool = False
    unbiased: bool = True

    name: ClassVar[str] = "randk"
    stochastic: ClassVar[bool] = True
    _positional: ClassVar[str | None] = "ratio"
    _option_parsers: ClassVar[dict[str, Callable[[str], Any]]] = {
        "ratio": _parse_float,
        "error_feedback": _parse_bool,
        "unbiased": _parse_bool,
    }
    _example: ClassVar[str] = "randk:0.01"

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratio", _check_fraction("ratio", self.ratio))
        object.__setattr__(
            self, "error_feedback", check_bool("error_feedback", self.error_feedback)
        )
        object.__setattr__(self, "unbiased", check_bool("unbiased", self.unbiased))

    def _encode(
        self, x: torch.Tensor, generator: torch.Generator | None, round_index: int | np.ndarray
    ) -> Encoding:
        assert generator is not None  # checked in compress()
        d = x.shape[1]
        k = num_kept(self.ratio, d)
        # The k largest of d i.i.d. uniform keys form a uniform k-subset; float64 keys make ties
        # (which topk would break by position) vanishingly rare even for large d.
        idx = _uniform(x, generator, torch.float64).topk(k, dim=1, sorted=False).indices
        mask = torch.zeros(x.shape, dtype=torch.bool, device=x.device).scatter_(1, idx, True)
        reconstructed = torch.where(mask, x, torch.zeros_like(x))
        if self.unbiased:
            reconstructed = reconstructed * (d / k)
        return Encoding(reconstructed, _full_bits(x, FLOAT_BITS * k + SEED_BITS))


@dataclass(frozen=True)
class Threshold(Compressor):
    """Threshold sparsification: send the entries with ``|x| >= tau``, error feedback by default.

    ``x = update + residual``; the number kept, ``k``, varies per row. The row starts with a header
    of ``ceil(log2(d + 1))`` bits holding ``k`` (0..d), then the values and indices as for every
    sparse operator: ``bits = ceil(log2(d + 1)) + 32 k + min(k * ceil(log2 d), d)``. A row with
    nothing above the threshold sends only the header. With error feedback the new residual is
    ``x - reconstructed`` (exact conservation).

    Args:
        tau: Magnitude threshold, finite and >= 0 (``tau = 0`` sends everything).
        error_feedback: Whether the unsent part is carried to the next round.

    Spec: ``"threshold:0.001"``, ``"threshold:0.001,error_feedback=false"``.
    """

    tau: float
    error_feedback: bool = True

    name: ClassVar[str] = "threshold"
    _positional: ClassVar[str | None] = "tau"
    _option_parsers: ClassVar[dict[str, Callable[[str], Any]]] = {
        "tau": _parse_float,
        "error_feedback": _parse_bool,
    }
    _example: ClassVar[str] = "threshold:0.001"

    def __post_init__(self) -> None:
        object.__setattr__(self, "tau", check_positive("tau", self.tau, allow_zero=True))
        object.__setattr__(
            self, "error_feedback", check_bool("error_feedback", self.error_feedback)
        )

    def _encode(
        self, x: torch.Tensor, generator: torch.Generator | None, round_index: int | np.ndarray
    ) -> Encoding:
        d = x.shape[1]
        mask = x.abs() >= self.tau
        reconstructed = torch.where(mask, x, torch.zeros_like(x))
        kept = mask.sum(dim=1, dtype=torch.int64)
        bits = d.bit_length() + sparse_bits(kept, d)  # d.bit_length() == ceil(log2(d + 1))
        return Encoding(reconstructed, bits)


@dataclass(frozen=True)
class SignSGD(Compressor):
    """Scaled sign compression with error feedback (EF-SignSGD, Karimireddy et al. 2019).

    ``x = update + residual``; ``reconstructed = (||x||_1 / d) * sign(x)`` with ``sign(0) = +1``,
    because one bit per entry cannot encode a zero. With error feedback the new residual is
    ``x - reconstructed``. Encoding: one bit per entry and the 32-bit scale, ``bits = d + 32``.

    Args:
        error_feedback: Whether the compression error is carried to the next round.

    Spec: ``"sign"``, ``"sign:error_feedback=false"``.
    """

    error_feedback: bool = True

    name: ClassVar[str] = "sign"
    _option_parsers: ClassVar[dict[str, Callable[[str], Any]]] = {
        "error_feedback": _parse_bool,
    }
    _example: ClassVar[str] = "sign"

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "error_feedback", check_bool("error_feedback", self.error_feedback)
        )

    def _encode(
        self, x: torch.Tensor, generator: torch.Generator | None, round_index: int | np.ndarray
    ) -> Encoding:
        d = x.shape[1]
        scale = x.abs().sum(dim=1, keepdim=True) / d
        reconstructed = torch.where(x >= 0, scale, -scale)
        return Encoding(reconstructed, _full_bits(x, d + FLOAT_BITS))


@dataclass(frozen=True)
class TernGrad(Compressor):
    """Stochastic ternarisation (Wen et al. 2017), unbiased, no error feedback.

    Per row (per parameter tensor of the row with ``layerwise``): optionally clip every entry to
    ``[-c sigma, c sigma]`` with ``sigma`` the standard deviation of the entries and ``c =
    clip_sigmas`` (the paper's gradient clipping uses ``c = 2.5``), then ``s = max_i |x_i|`` and
    ``b_i ~ Bernoulli(|x_i| / s)``; ``reconstructed = s * sign(x) * b``, so ``E[reconstructed]``
    is the (clipped) ``x``. A zero row decodes to zeros. The paper's layer-wise ternarising
    (``layerwise=True``) keeps one scale per parameter tensor (each layer's weights and bias):
    the federation binds its model's tensor sizes (:meth:`for_layout`); an unbound operator
    treats the row as one tensor.

    Encoding: two bits per entry (a fixed-length code for -1, 0, +1, as the paper's
    implementation; ``log2 3 = 1.58`` bits would need entropy or base-3 packing, not modelled)
    and one 32-bit scale per tensor: ``bits = 2 d + 32 L`` with ``L`` the number of scales.

    Args:
        layerwise: One scale per parameter tensor instead of one per row.
        clip_sigmas: ``c`` of the clipping to ``c`` standard deviations (> 0), or ``None``.

    Spec: ``"terngrad"``, ``"terngrad:layerwise=true,clip_sigmas=2.5"`` (the paper's setting).
    """

    layerwise: bool = False
    clip_sigmas: float | None = None
    tensor_sizes: tuple[int, ...] | None = field(
        default=None, compare=False, repr=False, metadata={"spec": False}
    )

    name: ClassVar[str] = "terngrad"
    stochastic: ClassVar[bool] = True
    _option_parsers: ClassVar[dict[str, Callable[[str], Any]]] = {
        "layerwise": _parse_bool,
        "clip_sigmas": _parse_optional_float,
    }
    _example: ClassVar[str] = "terngrad:layerwise=true,clip_sigmas=2.5"

    def __post_init__(self) -> None:
        object.__setattr__(self, "layerwise", check_bool("layerwise", self.layerwise))
        if self.clip_sigmas is not None:
            object.__setattr__(self, "clip_sigmas", check_positive("clip_sigmas", self.clip_sigmas))
        if self.tensor_sizes is not None:
            sizes = tuple(check_int("tensor_sizes", n, minimum=1) for n in self.tensor_sizes)
            object.__setattr__(self, "tensor_sizes", sizes)

    def for_layout(self, tensor_sizes: tuple[int, ...]) -> TernGrad:
        return replace(self, tensor_sizes=tuple(tensor_sizes)) if self.layerwise else self

    def _segments(self, d: int) -> list[tuple[int, int]]:
        """``(start, end)`` of each tensor that gets its own scale."""
        if not self.layerwise or self.tensor_sizes is None:
            return [(0, d)]
        if sum(self.tensor_sizes) != d:
            raise ValueError(
                f"{self.spec!r} is bound to tensors of sizes {self.tensor_sizes} (sum "
                f"{sum(self.tensor_sizes)}), but the update has {d} entries per row"
            )
        ends = list(itertools.accumulate(self.tensor_sizes))
        return list(zip([0, *ends[:-1]], ends, strict=True))

    def _encode(
        self, x: torch.Tensor, generator: torch.Generator | None, round_index: int | np.ndarray
    ) -> Encoding:
        assert generator is not None  # checked in compress()
        d = x.shape[1]
        segments = self._segments(d)
        draws = _uniform(x, generator, x.dtype)
        reconstructed = torch.empty_like(x)
        # A loop over the model's few tensors, each batched over the rows.
        for start, end in segments:
            part = x[:, start:end]
            if self.clip_sigmas is not None:
                bound = self.clip_sigmas * part.std(dim=1, correction=0, keepdim=True)
                part = torch.maximum(torch.minimum(part, bound), -bound)
            magnitude = part.abs()
            scale = magnitude.amax(dim=1, keepdim=True)
            # A zero row has scale 0 and all-zero magnitudes: the clamp turns 0/0 into 0/tiny = 0.
            prob = magnitude / scale.clamp_min(torch.finfo(x.dtype).tiny)
            keep = draws[:, start:end] < prob
            reconstructed[:, start:end] = torch.where(
                keep, scale * torch.sign(part), torch.zeros_like(part)
            )
        return Encoding(reconstructed, _full_bits(x, 2 * d + FLOAT_BITS * len(segments)))


@dataclass(frozen=True)
class QSGD(Compressor):
    """QSGD stochastic quantisation with ``levels`` levels (Alistarh et al. 2017), unbiased.

    Per row ``reconstructed_i = ||x||_2 * sign(x_i) * xi_i`` where, with ``r_i = levels * |x_i| /
    ||x||_2`` and ``l_i = floor(r_i)``, ``xi_i = (l_i + 1) / levels`` with probability
    ``r_i - l_i`` and ``l_i / levels`` otherwise; ``E[reconstructed] = x``.

    Encoding (fixed length, no Elias coding): the 32-bit norm, then per entry one sign bit and
    ``ceil(log2(levels + 1))`` bits for the level index ``0..levels``:
    ``bits = 32 + d * (1 + ceil(log2(levels + 1)))``. A zero row still sends the norm and its
    (zero) levels, so the count never depends on the values.

    Args:
        levels: Number of quantisation levels ``s >= 1``.

    Spec: ``"qsgd:4"``.
    """

    levels: int

    name: ClassVar[str] = "qsgd"
    stochastic: ClassVar[bool] = True
    _positional: ClassVar[str | None] = "levels"
    _option_parsers: ClassVar[dict[str, Callable[[str], Any]]] = {"levels": _parse_int}
    _example: ClassVar[str] = "qsgd:4"

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", check_int("levels", self.levels, minimum=1))

    def _encode(
        self, x: torch.Tensor, generator: torch.Generator | None, round_index: int | np.ndarray
    ) -> Encoding:
        assert generator is not None  # checked in compress()
        out = self._quantize(x, _uniform(x, generator, x.dtype))
        return Encoding(out.reconstructed, out.bits)

    def _quantize(self, update: torch.Tensor, draws: torch.Tensor) -> CompressionResult:
        """The operator on given uniform ``draws`` (``update``'s shape): row by row, so rows of
        many callers, each with its own draws, can be quantised in one call."""
        d, s = update.shape[1], self.levels
        norm = torch.linalg.vector_norm(update, dim=1, keepdim=True)
        # Rounding can push |x_i| / ||x|| a hair above 1 for a row with one non-zero entry; the
        # clamp keeps the level index within the 0..s that the encoding has room for.
        ratio = (update.abs() / norm.clamp_min(torch.finfo(update.dtype).tiny) * s).clamp(max=s)
        lower = torch.floor(ratio)
        level = lower + (draws < ratio - lower).to(lower.dtype)
        reconstructed = norm * torch.sign(update) * (level / s)
        bits = _full_bits(update, FLOAT_BITS + d * (1 + _ceil_log2(s + 1)))
        return CompressionResult(reconstructed, bits)


@dataclass(frozen=True)
class DeepGradientCompression(Compressor):
    """Deep Gradient Compression (Lin et al., ICLR 2018).

    One call, per row, with ``u`` the momentum state and ``v`` the residual (accumulation) state:

    1. local gradient clipping: ``g = update * min(1, clip_norm / ||update||_2)`` when
       ``clip_norm`` is set;
    2. momentum correction: ``u <- momentum * u + g``, ``v <- v + u``;
    3. sparsification: the ``k = max(1, ceil(density_r * d))`` largest-magnitude entries of ``v``
       are sent, with ``density_r = density_at(r)`` and ``r`` the number of rounds this
       client has taken part in before (``round_index``, one per row);
    4. momentum factor masking: ``u`` and ``v`` are zeroed where sent.

    Hence ``v_new + reconstructed == v_old + u_new`` exactly, with ``u_new`` the momentum after
    step 2 (before masking). Warm-up: in a client's participations ``r < warmup_rounds`` the
    density is ``max(density, 0.25 * 4**-r)``, the paper's 25 %, 6.25 %, 1.5625 %, 0.39 % for
    the default four; from its participation ``warmup_rounds`` on it is ``density``. The
    schedule is counted per client (Lin et al. warm up each worker over its first epochs), so a
    client that first takes part late still warms up. Both ends know ``k``, so the encoding is
    that of :class:`TopK`: ``bits = 32 k + min(k * ceil(log2 d), d)``.

    In federated learning the operator acts once per round on a client's model delta (the sum of
    its local steps), so the momentum correction and the accumulation run across rounds on
    deltas, not across iterations on gradients as in the paper's data-parallel training; the
    local optimiser's own momentum, if any, is separate.

    Args:
        density: Target fraction of coordinates sent, in ``(0, 1]``.
        momentum: Momentum factor, in ``[0, 1)``.
        clip_norm: Per-row L2 clipping threshold (> 0), or ``None`` for no clipping.
        warmup_rounds: Number of warm-up rounds (>= 0).

    Spec: ``"dgc:0.001"``, ``"dgc:0.001,momentum=0.5,clip_norm=1.0,warmup_rounds=0"``.
    """

    density: float
    momentum: float = 0.9
    clip_norm: float | None = None
    warmup_rounds: int = 4

    name: ClassVar[str] = "dgc"
    _positional: ClassVar[str | None] = "density"
    _option_parsers: ClassVar[dict[str, Callable[[str], Any]]] = {
        "density": _parse_float,
        "momentum": _parse_float,
        "clip_norm": _parse_optional_float,
        "warmup_rounds": _parse_int,
    }
    _example: ClassVar[str] = "dgc:0.001"

    def __post_init__(self) -> None:
        object.__setattr__(self, "density", _check_fraction("density", self.density))
        object.__setattr__(
            self,
            "momentum",
            check_real("momentum", self.momentum, low=0.0, high=1.0, high_open=True),
        )
        if self.clip_norm is not None:
            object.__setattr__(
                self,
                "clip_norm",
                check_positive("clip_norm", self.clip_norm),
            )
        object.__setattr__(
            self, "warmup_rounds", check_int("warmup_rounds", self.warmup_rounds, minimum=0)
        )

    @property
    def uses_residual(self) -> bool:
        return True

    @property
    def uses_momentum(self) -> bool:
        return True

    def density_at(self, round_index: int) -> float:
        """Fraction of coordinates sent in round ``round_index`` (warm-up schedule included).

        Args:
            round_index: Round index, >= 0.

        Returns:
            ``max(density, 0.25 * 4**-round_index)`` during warm-up, else ``density``.
        """
        round_index = check_int("round_index", round_index, minimum=0)
        if round_index < self.warmup_rounds:
            warmup = DGC_WARMUP_START_DENSITY * DGC_WARMUP_DECAY ** (-round_index)
            return max(self.density, warmup)
        return self.density

    def _compress(
        self,
        update: torch.Tensor,
        residual: torch.Tensor | None,
        momentum_state: torch.Tensor | None,
        generator: torch.Generator | None,
        round_index: int | np.ndarray,
    ) -> CompressionResult:
        """DGC's own state update around the shared top-k encoding: clipping and momentum
        correction before it, and momentum factor masking of both states after it (the
        template's ``residual = x - sent`` equals the masked accumulation; the momentum's
        masking is DGC's own)."""
        grad = update
        if self.clip_norm is not None:
            norm = torch.linalg.vector_norm(grad, dim=1, keepdim=True)
            # clip / max(norm, clip) == min(1, clip / norm), with no division by a zero norm.
            grad = grad * (self.clip_norm / norm.clamp_min(self.clip_norm))
        u = grad if momentum_state is None else self.momentum * momentum_state + grad
        v = u if residual is None else residual + u
        reconstructed, sent, bits = self._top_k(v, round_index)
        zeros = torch.zeros_like(v)
        new_v = torch.where(sent, zeros, v)
        new_u = torch.where(sent, zeros, u)
        return CompressionResult(reconstructed, bits, new_v, new_u)

    def _top_k(
        self, v: torch.Tensor, round_index: int | np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sent values, the mask of sent entries and the bits (top-k's encoding) of ``v``;
        ``round_index`` is every row's position in the warm-up schedule (one or per row)."""
        d = v.shape[1]
        if np.ndim(round_index) == 0:
            k = num_kept(self.density_at(int(round_index)), d)
            reconstructed, sent = _keep_top_k(v, k)
            return reconstructed, sent, sparse_bits(_full_bits(v, k), d)
        # One k per row: rank every row once at the largest k, keep each row's first k_r.
        per_row = [num_kept(self.density_at(int(r)), d) for r in np.unique(round_index)]
        lookup = dict(zip(np.unique(round_index).tolist(), per_row, strict=True))
        ks = torch.tensor([lookup[int(r)] for r in round_index], device=v.device)
        idx = v.abs().topk(int(ks.max()), dim=1, sorted=True).indices
        take = torch.arange(idx.shape[1], device=v.device)[None, :] < ks[:, None]
        sent = torch.zeros(v.shape, dtype=torch.bool, device=v.device).scatter_(1, idx, take)
        reconstructed = torch.where(sent, v, torch.zeros_like(v))
        return reconstructed, sent, sparse_bits(ks.to(torch.int64), d)

    def _encode(
        self, x: torch.Tensor, generator: torch.Generator | None, round_index: int | np.ndarray
    ) -> Encoding:
        reconstructed, _, bits = self._top_k(x, round_index)
        return Encoding(reconstructed, bits)


@dataclass(frozen=True)
class SparseQSGD(Compressor):
    """Top-k sparsification followed by QSGD quantisation of the kept values.

    The combined sparsification + quantisation scheme the survey's Section III discusses
    (e.g. Sattler et al., "Robust and Communication-Efficient Federated Learning From Non-i.i.d.
    Data", IEEE TNNLS 2020, quantise what top-k keeps). Per row: the ``k = max(1, ceil(ratio *
    d))`` largest-magnitude entries of ``x = update + residual`` are kept and quantised by QSGD
    with ``levels`` levels relative to the norm of the kept vector (unbiased given the kept set).
    With error feedback the new residual is ``x - top_k(x)``: only the sparsification error is
    carried over. Feeding back the quantisation error too diverges, because QSGD with few levels
    is not a contraction (its variance exceeds ``||x||^2`` once ``k > levels^2``), which error
    feedback needs; its zero-mean noise is left to average out instead.

    Encoding: the 32-bit norm, per kept entry one sign bit and ``ceil(log2(levels + 1))`` level
    bits, and the indices as for top-k: ``bits = 32 + k (1 + ceil(log2(levels + 1))) + min(k
    ceil(log2 d), d)``.

    Args:
        ratio: Fraction of coordinates kept, in ``(0, 1]``.
        levels: QSGD levels ``s >= 1``.
        error_feedback: Whether the unsent part is carried to the next round.

    Spec: ``"topk_qsgd:0.01,levels=4"``.
    """

    ratio: float
    levels: int = 4
    error_feedback: bool = True

    name: ClassVar[str] = "topk_qsgd"
    stochastic: ClassVar[bool] = True
    _positional: ClassVar[str | None] = "ratio"
    _option_parsers: ClassVar[dict[str, Callable[[str], Any]]] = {
        "ratio": _parse_float,
        "levels": _parse_int,
        "error_feedback": _parse_bool,
    }
    _example: ClassVar[str] = "topk_qsgd:0.01,levels=4"

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratio", _check_fraction("ratio", self.ratio))
        object.__setattr__(self, "levels", check_int("levels", self.levels, minimum=1))
        object.__setattr__(
            self, "error_feedback", check_bool("error_feedback", self.error_feedback)
        )

    def _encode(
        self, x: torch.Tensor, generator: torch.Generator | None, round_index: int | np.ndarray
    ) -> Encoding:
        assert generator is not None  # checked in compress()
        d, s = x.shape[1], self.levels
        k = num_kept(self.ratio, d)
        sparse = _top_k_values(x, k)
        quantised = QSGD(s)._encode(sparse, generator, round_index).reconstructed
        per_value = 1 + _ceil_log2(s + 1)
        bits = _full_bits(x, FLOAT_BITS + k * per_value + min(k * _ceil_log2(d), d))
        # The published scheme feeds back only the sparsification error (see the docstring).
        return Encoding(quantised, bits, fed_back=sparse)


COMPRESSORS: dict[str, type[Compressor]] = {
    cls.name: cls
    for cls in (
        NoCompression,
        TopK,
        RandomK,
        Threshold,
        SignSGD,
        TernGrad,
        QSGD,
        SparseQSGD,
        DeepGradientCompression,
    )
}
"""Registry of operators by spec name."""


def parse_compressor(spec: str | Compressor) -> Compressor:
    """Build an operator from its spec string (an operator is returned as it is).

    Grammar: ``name[:value][,key=value...]``. ``value`` sets the operator's main parameter (the
    ratio of ``topk``/``randk``, ``tau`` of ``threshold``, ``levels`` of ``qsgd``, ``density`` of
    ``dgc``); ``key=value`` options are named after the operator's fields, booleans written
    ``true``/``false``, a missing ``clip_norm`` as ``none``. Names and keys are case-insensitive.

    Args:
        spec: A spec such as ``"topk:0.01"``, ``"qsgd:4"``, ``"sign:error_feedback=false"`` or
            ``"dgc:0.001,momentum=0.5"``, or a :class:`Compressor`.

    Returns:
        The operator; ``parse_compressor(op.spec) == op`` for every operator.

    Raises:
        TypeError: ``spec`` is neither a string nor a :class:`Compressor`.
        ValueError: An unknown name or option, a malformed value, or a value out of range.
    """
    if isinstance(spec, Compressor):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"compressor spec must be a string or a Compressor, got {spec!r}")
    if not spec.strip():
        raise ValueError(f"compressor spec is empty; allowed names: {', '.join(COMPRESSORS)}")
    name, colon, params = spec.strip().partition(":")
    name = name.strip().lower()
    cls = COMPRESSORS.get(name)
    if cls is None:
        raise ValueError(
            f"unknown compressor {name!r} in spec {spec!r}; allowed: {', '.join(COMPRESSORS)}"
        )
    kwargs: dict[str, Any] = {}
    if colon:
        if not params.strip():
            raise ValueError(f"spec {spec!r} has ':' but no parameters, e.g. {cls._example!r}")
        if not cls._option_parsers:
            raise ValueError(f"compressor {name!r} takes no parameters, got spec {spec!r}")
        for position, item in enumerate(params.split(",")):
            if not item.strip():
                raise ValueError(f"spec {spec!r} has an empty parameter between commas")
            key, equals, raw = item.partition("=")
            key, raw = key.strip().lower(), raw.strip()
            if not equals:
                if position != 0 or cls._positional is None:
                    raise ValueError(
                        f"parameter {item.strip()!r} in spec {spec!r} must be written key=value; "
                        f"allowed keys: {', '.join(cls._option_parsers)}"
                    )
                key, raw = cls._positional, item.strip()
            parser = cls._option_parsers.get(key)
            if parser is None:
                raise ValueError(
                    f"unknown option {key!r} for {name!r} in spec {spec!r}; "
                    f"allowed: {', '.join(cls._option_parsers)}"
                )
            if key in kwargs:
                raise ValueError(f"option {key!r} is given twice in spec {spec!r}")
            try:
                kwargs[key] = parser(raw)
            except ValueError as exc:
                raise ValueError(f"invalid {key} in spec {spec!r}: {exc}") from None
    if cls._positional is not None and cls._positional not in kwargs:
        raise ValueError(
            f"compressor {name!r} needs a {cls._positional}, e.g. {cls._example!r}; got {spec!r}"
        )
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"invalid spec {spec!r}: {exc}") from None
