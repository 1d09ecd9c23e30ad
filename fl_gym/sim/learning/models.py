"""Batched models: the parameters of K clients are one stacked tensor.

Every model here is a multilayer perceptron over flat parameter vectors: row ``k`` of a ``(K, P)``
tensor holds client ``k``'s weights and biases, laid out layer by layer as ``W`` (``fan_in x
fan_out``, row-major) followed by ``b``. Logistic regression is the MLP without hidden layers.

Forward and backward passes are written out by hand with batched matrix products (``baddbmm`` /
``bmm``), so one local SGD step of all participating clients is a handful of tensor operations and
no autograd graph is built. ``tests/test_models.py`` checks the hand-written gradients against
autograd and against per-client ``torch.nn`` modules.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["LOSSES", "MODEL_NAMES", "BatchedMLP", "make_model", "regression_score"]

MODEL_NAMES = ("logreg", "mlp")

LayerBuffers = Callable[[str, int, tuple[int, ...], torch.Tensor], torch.Tensor]
"""``buffers(slot, K, shape, like)``: a ``(K, *shape)`` work tensor of ``like``'s dtype and
device for the named slot (see :meth:`BatchedMLP.logits`)."""
LOSSES = ("cross_entropy", "squared_error")
"""Training losses: softmax cross-entropy over classes, or least squares on real targets."""


@dataclass(frozen=True)
class _Layer:
    """Where one dense layer's weights and bias live in the flat parameter vector."""

    fan_in: int
    fan_out: int
    weight_offset: int

    @property
    def bias_offset(self) -> int:
        return self.weight_offset + self.fan_in * self.fan_out

    @property
    def end(self) -> int:
        return self.bias_offset + self.fan_out


class BatchedMLP:
    """A ReLU multilayer perceptron evaluated for K parameter sets at once.

    Args:
        num_features: Input dimension F.
        num_classes: Number of output classes C (softmax cross-entropy loss), or of real outputs
            with ``loss="squared_error"``.
        hidden_units: Widths of the hidden layers; ``()`` gives multinomial logistic regression
            (linear least squares with ``loss="squared_error"``).
        loss: ``"cross_entropy"`` (labels ``y (K, B)``) or ``"squared_error"``: the per-sample
            loss ``sum_o (out_o - y_o)^2`` on real targets ``y (K, B, C)`` (regression).
    """

    def __init__(
        self,
        num_features: int,
        num_classes: int,
        hidden_units: tuple[int, ...] = (),
        *,
        loss: str = "cross_entropy",
    ) -> None:
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; allowed: {', '.join(LOSSES)}")
        self.loss = loss
        if int(num_features) < 1:
            raise ValueError(f"num_features must be >= 1, got {num_features!r}")
        least = 1 if loss == "squared_error" else 2
        if int(num_classes) < least:
            raise ValueError(
                f"num_classes must be >= {least} for loss {loss!r}, got {num_classes!r}"
            )
        hidden = tuple(int(h) for h in hidden_units)
        if any(h < 1 for h in hidden):
            raise ValueError(f"hidden_units must all be >= 1, got {hidden_units!r}")
        self.num_features = int(num_features)
        self.num_classes = int(num_classes)
        self.hidden_units = hidden
        widths = (self.num_features, *hidden, self.num_classes)
        layers = []
        offset = 0
        for fan_in, fan_out in itertools.pairwise(widths):
            layer = _Layer(fan_in, fan_out, offset)
            layers.append(layer)
            offset = layer.end
        self._layers = tuple(layers)
        self.num_params = offset

    @property
    def tensor_sizes(self) -> tuple[int, ...]:
        """Sizes of the parameter tensors (each layer's weights, then its bias) in the order
        they take in the flat parameter vector; they sum to ``num_params``."""
        return tuple(
            size for layer in self._layers for size in (layer.fan_in * layer.fan_out, layer.fan_out)
        )

    def __repr__(self) -> str:
        return (
            f"BatchedMLP(num_features={self.num_features}, num_classes={self.num_classes}, "
            f"hidden_units={self.hidden_units}, num_params={self.num_params}, loss={self.loss!r})"
        )

    # -- parameters ----------------------------------------------------------------------------

    def init_params(
        self,
        generator: torch.Generator,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """One parameter vector (P,) with ``torch.nn.Linear``'s default initialisation.

        Weights and biases are uniform in ``[-1/sqrt(fan_in), 1/sqrt(fan_in)]``.
        """
        params = torch.empty(self.num_params, device=device, dtype=dtype)
        for layer in self._layers:
            bound = 1.0 / math.sqrt(layer.fan_in)
            params[layer.weight_offset : layer.end].uniform_(-bound, bound, generator=generator)
        return params

    def _unpack(self, params: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Views ``W (K, fan_in, fan_out)`` and ``b (K, fan_out)`` into ``params (K, P)``."""
        k = params.shape[0]
        out = []
        for layer in self._layers:
            w = params[:, layer.weight_offset : layer.bias_offset].view(
                k, layer.fan_in, layer.fan_out
            )
            b = params[:, layer.bias_offset : layer.end]
            out.append((w, b))
        return out

    def _check(self, params: torch.Tensor, x: torch.Tensor) -> None:
        if params.ndim != 2 or params.shape[1] != self.num_params:
            raise ValueError(
                f"params must have shape (K, {self.num_params}), got {tuple(params.shape)}"
            )
        if x.ndim != 3 or x.shape[0] != params.shape[0] or x.shape[2] != self.num_features:
            raise ValueError(
                f"x must have shape (K={params.shape[0]}, B, {self.num_features}), "
                f"got {tuple(x.shape)}"
            )

    # -- forward / backward --------------------------------------------------------------------

    def logits(
        self, params: torch.Tensor, x: torch.Tensor, *, buffers: LayerBuffers | None = None
    ) -> torch.Tensor:
        """Logits ``(K, B, C)`` of K models on their own inputs ``x (K, B, F)``.

        With ``buffers``, each layer's weights are first copied into ``buffers("weight<i>", K,
        (fan_in, fan_out), params)`` and its output written into ``buffers("out<i>", K, (B,
        fan_out), params)``: buffers whose rows start aligned make every row of a batched
        product the bits that model gets alone (see :func:`fl_gym.sim.rounds.evaluate_models`).
        """
        self._check(params, x)
        k, h = params.shape[0], x
        layers = self._unpack(params)
        for i, (w, b) in enumerate(layers):
            if buffers is None:
                h = torch.baddbmm(b.unsqueeze(1), h, w)
            else:
                weight = buffers(f"weight{i}", k, tuple(w.shape[1:]), params)
                weight.copy_(w)
                out = buffers(f"out{i}", k, (x.shape[1], w.shape[2]), params)
                h = torch.baddbmm(b.unsqueeze(1), h, weight, out=out)
            if i < len(layers) - 1:
                h = h.relu_()
        return h

    def split(self, params: torch.Tensor) -> list[torch.Tensor]:
        """Contiguous per-layer tensors ``[W_0 (K, in, out), b_0 (K, 1, out), W_1, b_1, ...]``.

        Training works on these (every gradient product writes a contiguous tensor) and
        :meth:`merge` packs them back into ``(K, P)``. Biases carry a unit middle axis so that
        they broadcast over a batch's examples as they are, with no view made at every step.
        """
        out = []
        for w, b in self._unpack(params):
            out.append(w.contiguous())
            out.append(b.unsqueeze(1).contiguous())
        return out

    def split_repeated(self, params: torch.Tensor, num: int) -> list[torch.Tensor]:
        """:meth:`split` of ``params (P,)`` repeated ``num`` times, with one copy per tensor."""
        out = []
        for layer in self._layers:
            w = params[layer.weight_offset : layer.bias_offset].view(1, layer.fan_in, layer.fan_out)
            b = params[layer.bias_offset : layer.end].view(1, 1, layer.fan_out)
            # clone, not contiguous(): for num == 1 the expanded view is already contiguous and
            # contiguous() would hand back the global parameters themselves.
            out.append(w.expand(num, -1, -1).clone(memory_format=torch.contiguous_format))
            out.append(b.expand(num, -1, -1).clone(memory_format=torch.contiguous_format))
        return out

    def merge(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """Inverse of :meth:`split`: one ``(K, P)`` tensor."""
        k = tensors[0].shape[0]
        return torch.cat([t.reshape(k, -1) for t in tensors], dim=1)

    def loss_and_grad(
        self, params: torch.Tensor, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean cross-entropy per model and its gradient with respect to ``params``.

        Args:
            params: ``(K, P)`` parameters.
            x: ``(K, B, F)`` inputs, one minibatch per model.
            y: ``(K, B)`` integer labels.

        Returns:
            ``loss (K,)`` and ``grad (K, P)``, each model's gradient of its own mean loss.
        """
        self._check(params, x)
        loss, grads = self.layer_loss_and_grad(self.split(params), x, y)
        return loss, self.merge(grads)

    def layer_loss_and_grad(
        self, tensors: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """:meth:`loss_and_grad` on the per-layer tensors of :meth:`split` (no checks)."""
        activations, h = self._forward(tensors, x)
        loss, error = self._loss_and_error(h, y)
        # The mean loss's gradient w.r.t. the outputs: each example's error over B.
        batch = x.shape[1]
        delta = error.mul_(2.0 / batch) if self.loss == "squared_error" else error.div_(batch)
        return loss, self._backward(tensors, activations, delta)

    def _forward(
        self, tensors: list[torch.Tensor], x: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Every layer's input (``x`` first) and the outputs of the batched forward pass."""
        num_layers = len(self._layers)
        activations = [x]
        h = x
        for i in range(num_layers):
            h = torch.baddbmm(tensors[2 * i + 1], h, tensors[2 * i])
            if i < num_layers - 1:
                h = h.relu_()
                activations.append(h)
        return activations, h

    def _loss_and_error(
        self, h: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss per model and each example's error at the outputs, up to the loss's
        constant factor: ``out - y`` (squared error, whose gradient is twice it) or
        ``softmax - onehot`` (cross-entropy). The error may reuse ``h``'s storage."""
        if self.loss == "squared_error":
            error = h - y
            return error.pow(2).sum(dim=2).mean(dim=1), error
        log_probs = _log_softmax(h)
        y_index = y.unsqueeze(2)
        loss = -log_probs.gather(2, y_index).squeeze(2).mean(dim=1)
        error = log_probs.exp_()
        error.scatter_add_(2, y_index, torch.full_like(y_index, -1, dtype=error.dtype))
        return loss, error

    def _backward(
        self, tensors: list[torch.Tensor], activations: list[torch.Tensor], delta: torch.Tensor
    ) -> list[torch.Tensor]:
        """Per-layer gradients from the gradient ``delta`` of the loss w.r.t. the outputs."""
        pairs: list[tuple[torch.Tensor, torch.Tensor]] = []  # last layer first
        for i in range(len(self._layers) - 1, -1, -1):
            a = activations[i]
            pairs.append((torch.bmm(a.transpose(1, 2), delta), delta.sum(dim=1, keepdim=True)))
            if i > 0:
                delta = torch.bmm(delta, tensors[2 * i].transpose(1, 2))
                # The ReLU derivative, fused (what autograd itself calls for relu).
                delta = torch.ops.aten.threshold_backward(delta, a, 0)
        return [grad for pair in reversed(pairs) for grad in pair]

    def layer_loss_and_clipped_grad(
        self, tensors: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, clip_norm: float
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """The mean of the per-example gradients, each clipped to norm ``clip_norm`` (DP-SGD).

        A dense layer's gradient for one example is the outer product ``a_i delta_i^T`` of its
        input and its output's error, whose Frobenius norm is ``||a_i|| ||delta_i||``
        (Goodfellow, "Efficient per-example gradient computations", 2015). The back-propagated
        errors are linear in the loss's error, so every example's full gradient norm comes from
        one ordinary backward pass, and the clipped sum is the same batched product with each
        example's error scaled by its factor ``min(1, C / ||g_i||)``: no per-example gradient
        is ever materialised and no loop runs over clients or examples.

        Args:
            tensors: Per-layer tensors of :meth:`split` (``K`` models).
            x: ``(K, B, F)`` inputs.
            y: ``(K, B)`` labels (``(K, B, C)`` targets for regression).
            clip_norm: The bound ``C`` on every example's gradient norm.

        Returns:
            ``loss (K,)`` (mean, unclipped), the clipped mean gradient per layer, and each
            example's gradient norm before clipping ``(K, B)``.
        """
        num_layers = len(self._layers)
        activations, h = self._forward(tensors, x)
        batch = x.shape[1]
        loss, delta = self._loss_and_error(h, y)
        if self.loss == "squared_error":
            delta = delta.mul_(2.0)  # per-example gradient of sum_o (out_o - y_o)^2
        deltas: list[torch.Tensor] = [torch.empty(0)] * num_layers
        norm_sq = torch.zeros(delta.shape[:2], dtype=delta.dtype, device=delta.device)
        for i in range(num_layers - 1, -1, -1):
            deltas[i] = delta
            delta_sq = delta.pow(2).sum(dim=2)
            # ||a_i delta_i^T||_F^2 (weights) + ||delta_i||^2 (bias).
            norm_sq += delta_sq * (activations[i].pow(2).sum(dim=2) + 1.0)
            if i > 0:
                delta = torch.bmm(delta, tensors[2 * i].transpose(1, 2))
                delta = torch.ops.aten.threshold_backward(delta, activations[i], 0)
        norms = norm_sq.sqrt_()
        factor = torch.clamp(clip_norm / torch.clamp(norms, min=1e-30), max=1.0) / batch
        grads: list[torch.Tensor] = [torch.empty(0)] * (2 * num_layers)
        for i in range(num_layers):
            # In place: every layer's error has already been propagated to the layer below.
            scaled = deltas[i].mul_(factor.unsqueeze(2))
            grads[2 * i] = torch.bmm(activations[i].transpose(1, 2), scaled)
            grads[2 * i + 1] = scaled.sum(dim=1, keepdim=True)
        return loss, grads, norms

    def evaluate(
        self, params: torch.Tensor, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss and accuracy of one or K models on a shared dataset.

        For regression (``loss="squared_error"``) the accuracy is :func:`regression_score`, the
        coefficient of determination clipped to [0, 1].

        Args:
            params: ``(P,)`` for one model or ``(K, P)`` for K models.
            x: ``(N, F)`` inputs shared by all models.
            y: ``(N,)`` labels (``(N, C)`` targets for regression).

        Returns:
            ``(loss, accuracy)``, scalars for ``(P,)`` params, ``(K,)`` tensors for ``(K, P)``.
        """
        single = params.ndim == 1
        p = params.unsqueeze(0) if single else params
        y_shape = (x.shape[0], self.num_classes) if self.loss == "squared_error" else (x.shape[0],)
        if x.ndim != 2 or x.shape[1] != self.num_features or tuple(y.shape) != y_shape:
            raise ValueError(
                f"x must be (N, {self.num_features}) and y {y_shape}, got {tuple(x.shape)} and "
                f"{tuple(y.shape)}"
            )
        with torch.no_grad():
            outputs = self.logits(p, x.unsqueeze(0).expand(p.shape[0], -1, -1))
            loss, accuracy = self.loss_and_accuracy(outputs, y.unsqueeze(0))
        if single:
            return loss[0], accuracy[0]
        return loss, accuracy

    def loss_and_accuracy(
        self, outputs: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss ``(K,)`` and accuracy ``(K,)`` of outputs ``(K, N, C)`` against ``y``
        (``(K, N)`` labels or ``(K, N, C)`` targets; a leading 1 broadcasts)."""
        if self.loss == "squared_error":
            error = (outputs - y).pow(2).sum(dim=2)
            loss = error.mean(dim=1)
            return loss, regression_score(error.sum(dim=1), y.expand_as(outputs))
        log_probs = _log_softmax(outputs)
        y_index = y.unsqueeze(2).expand(outputs.shape[0], -1, 1)
        loss = -log_probs.gather(2, y_index).squeeze(2).mean(dim=1)
        accuracy = (outputs.argmax(dim=2) == y).to(outputs.dtype).mean(dim=1)
        return loss, accuracy

    # -- interoperability ----------------------------------------------------------------------

    def to_module(self, params: torch.Tensor) -> nn.Sequential:
        """A ``torch.nn.Sequential`` holding a copy of one parameter vector ``(P,)``."""
        if params.shape != (self.num_params,):
            raise ValueError(f"params must have shape ({self.num_params},), got {params.shape}")
        modules: list[nn.Module] = []
        for i, layer in enumerate(self._layers):
            linear = nn.Linear(layer.fan_in, layer.fan_out, dtype=params.dtype)
            with torch.no_grad():
                w = params[layer.weight_offset : layer.bias_offset].view(
                    layer.fan_in, layer.fan_out
                )
                linear.weight.copy_(w.T)
                linear.bias.copy_(params[layer.bias_offset : layer.end])
            modules.append(linear)
            if i < len(self._layers) - 1:
                modules.append(nn.ReLU())
        return nn.Sequential(*modules).to(params.device)

    def from_module(self, module: nn.Sequential) -> torch.Tensor:
        """The flat parameter vector ``(P,)`` of a module built by :meth:`to_module`."""
        linears = [m for m in module if isinstance(m, nn.Linear)]
        if len(linears) != len(self._layers):
            raise ValueError(
                f"module has {len(linears)} linear layers, this model has {len(self._layers)}"
            )
        parts = []
        for linear in linears:
            parts.append(linear.weight.detach().T.reshape(-1))
            parts.append(linear.bias.detach().reshape(-1))
        return torch.cat(parts)


def regression_score(sum_squared_error: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The coefficient of determination clipped to [0, 1]: the accuracy of a regression.

    ``max(0, 1 - SSE / SST)`` with ``SST = sum_n |y_n - mean(y)|^2``: 1 for exact outputs, 0 for
    outputs no better than always answering the targets' mean. For localisation it is
    ``1 - (RMSE / RMSE of guessing the mean position)^2``.

    Args:
        sum_squared_error: ``(K,)`` squared error summed over samples and outputs.
        y: ``(K, N, C)`` the targets.

    Returns:
        ``(K,)`` scores.
    """
    total = (y - y.mean(dim=1, keepdim=True)).pow(2).sum(dim=(1, 2))
    score = 1.0 - sum_squared_error / total.clamp_min(torch.finfo(y.dtype).tiny)
    return score.clamp(0.0, 1.0)


def _log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """log_softmax over the last dim, by hand: torch's kernel is several times slower on a last
    dim of ~10 classes."""
    shifted = logits - logits.amax(dim=-1, keepdim=True)
    return shifted - shifted.exp().sum(dim=-1, keepdim=True).log_()


def make_model(
    name: str,
    num_features: int,
    num_classes: int,
    *,
    hidden_units: tuple[int, ...] = (64,),
    loss: str = "cross_entropy",
) -> BatchedMLP:
    """Build a batched model by name.

    Args:
        name: ``"logreg"`` (multinomial logistic regression) or ``"mlp"``.
        num_features: Input dimension.
        num_classes: Number of classes.
        hidden_units: Hidden layer widths of the MLP (ignored by ``"logreg"``).
        loss: ``"cross_entropy"`` or ``"squared_error"`` (see :class:`BatchedMLP`).

    Returns:
        The model.
    """
    if name == "logreg":
        return BatchedMLP(num_features, num_classes, (), loss=loss)
    if name == "mlp":
        if not hidden_units:
            raise ValueError("the 'mlp' model needs at least one hidden layer in hidden_units")
        return BatchedMLP(num_features, num_classes, tuple(hidden_units), loss=loss)
    raise ValueError(f"unknown model {name!r}; allowed: {', '.join(MODEL_NAMES)}")
