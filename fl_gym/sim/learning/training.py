"""Batched local training: one SGD step of every participating client is one tensor computation.

Clients' samples live in one tensor, grouped by client (``offsets``/``counts``), so a minibatch for
all clients is a single gather. Clients may run different numbers of local steps in a round: the
loop runs ``max(local_steps)`` times and a client whose budget is spent is masked out of the update
(its row stops changing), never taken out by a Python loop over clients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fl_gym.sim.learning.models import BatchedMLP
from fl_gym.sim.learning.privacy import SampleLevelDP

__all__ = [
    "ClientTensors",
    "LocalTrainingResult",
    "TrainingGroup",
    "draw_round_indices",
    "local_sgd",
    "local_sgd_groups",
    "sample_minibatch",
]


@dataclass(frozen=True)
class ClientTensors:
    """All clients' training samples on one device, grouped by client.

    Attributes:
        x: ``(N, F)`` features, client 0's samples first, then client 1's, and so on.
        y: ``(N,)`` labels (``(N, C)`` targets for regression).
        offsets: ``(K,)`` index of each client's first sample in ``x``.
        counts: ``(K,)`` number of samples of each client (all >= 1).
    """

    x: torch.Tensor
    y: torch.Tensor
    offsets: torch.Tensor
    counts: torch.Tensor

    @property
    def num_clients(self) -> int:
        return int(self.counts.shape[0])

    @classmethod
    def from_arrays(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        client_indices: tuple[np.ndarray, ...] | list[np.ndarray],
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> ClientTensors:
        """Group samples by client.

        Args:
            x: ``(N, F)`` features.
            y: ``(N,)`` integer labels, or ``(N, C)`` real regression targets.
            client_indices: For each client, the indices of its samples in ``x``.
            device: Torch device of the tensors.
            dtype: Floating dtype of the features.

        Returns:
            The grouped tensors.
        """
        if len(client_indices) == 0:
            raise ValueError("client_indices is empty: a federation needs at least one client")
        sizes = np.array([len(idx) for idx in client_indices], dtype=np.int64)
        if np.any(sizes == 0):
            empty = np.flatnonzero(sizes == 0).tolist()
            raise ValueError(f"clients {empty} have no training samples; every client needs >= 1")
        order = np.concatenate([np.asarray(idx, dtype=np.int64) for idx in client_indices])
        # Integer labels (classification) stay int64; real targets (regression) take ``dtype``.
        label_dtype = dtype if np.issubdtype(np.asarray(y).dtype, np.floating) else torch.int64
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        return cls(
            x=torch.as_tensor(np.asarray(x)[order], dtype=dtype, device=device),
            y=torch.as_tensor(np.asarray(y)[order], dtype=label_dtype, device=device),
            offsets=torch.as_tensor(offsets, dtype=torch.int64, device=device),
            counts=torch.as_tensor(sizes, dtype=torch.int64, device=device),
        )


@dataclass(frozen=True)
class LocalTrainingResult:
    """What a round of local training returns.

    Attributes:
        params: ``(S, P)`` each participating client's parameters after its local steps.
        train_loss: ``(S,)`` mean minibatch loss over the steps each client took.
    """

    params: torch.Tensor
    train_loss: torch.Tensor


def sample_minibatch(
    data: ClientTensors,
    client_ids: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one minibatch per client, uniformly with replacement from the client's own samples.

    Args:
        data: All clients' samples.
        client_ids: ``(S,)`` clients to draw for.
        batch_size: Samples per client.
        generator: Source of the uniform draws (one ``(S, batch_size)`` draw per call).

    Returns:
        ``x (S, batch_size, F)`` and ``y (S, batch_size)``.
    """
    counts = data.counts[client_ids].unsqueeze(1)
    return _draw(data, data.offsets[client_ids].unsqueeze(1), counts, batch_size, generator)


def _draw(
    data: ClientTensors,
    offsets: torch.Tensor,
    counts: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    idx = _draw_indices(offsets, counts, (counts.shape[0], batch_size), generator)
    return data.x[idx], data.y[idx]


def _draw_indices(
    offsets: torch.Tensor,
    counts: torch.Tensor,
    shape: tuple[int, ...],
    generator: torch.Generator,
) -> torch.Tensor:
    """Uniform sample indices of shape ``shape`` whose last two axes are (clients, batch)."""
    u = torch.rand(shape, generator=generator, device=counts.device, dtype=torch.float64)
    # float64 keeps floor(u * n) < n for any realistic n; the clamp guards the last ulp.
    return torch.minimum((u * counts).long(), counts - 1).add_(offsets)


def draw_round_indices(
    data: ClientTensors,
    client_ids: torch.Tensor,
    max_steps: int,
    batch_size: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """The minibatch sample indices of every step of a round, as :func:`local_sgd` draws them.

    Args:
        data: All clients' samples.
        client_ids: ``(S,)`` the participating clients.
        max_steps: The round's largest local step count ``T``.
        batch_size: Minibatch size per client and step.
        generator: Source of the uniform draws.

    Returns:
        ``(T, S, B)`` int64 indices into ``data.x``.
    """
    offsets = data.offsets[client_ids].unsqueeze(1)
    counts = data.counts[client_ids].unsqueeze(1)
    # One draw for every step of the round: the generator fills the (T, S, B) tensor with the
    # same stream as T successive (S, B) draws, in fewer calls.
    return _draw_indices(offsets, counts, (max_steps, client_ids.shape[0], batch_size), generator)


def local_sgd(
    model: BatchedMLP,
    global_params: torch.Tensor,
    data: ClientTensors,
    client_ids: torch.Tensor,
    local_steps: torch.Tensor,
    *,
    batch_size: int,
    learning_rate: float,
    generator: torch.Generator,
    weight_decay: float = 0.0,
    privacy: SampleLevelDP | None = None,
) -> LocalTrainingResult:
    """Run local minibatch SGD for several clients at once, starting from the global model.

    Args:
        model: The batched model.
        global_params: ``(P,)`` the model every client starts from.
        data: All clients' samples.
        client_ids: ``(S,)`` int64 indices of the participating clients.
        local_steps: ``(S,)`` int64 steps per client, each >= 1.
        batch_size: Minibatch size per client and step.
        learning_rate: SGD step size.
        generator: Torch generator for the minibatch draws.
        weight_decay: L2 coefficient added to the gradient.
        privacy: DP-SGD (per-example clipping and Gaussian noise every step, the noise drawn
            from ``generator`` after the minibatch indices), or ``None`` for plain SGD.

    Returns:
        The clients' parameters after their steps and their mean training loss.
    """
    if client_ids.ndim != 1 or local_steps.shape != client_ids.shape:
        raise ValueError(
            f"client_ids and local_steps must both be (S,), got {tuple(client_ids.shape)} and "
            f"{tuple(local_steps.shape)}"
        )
    num = client_ids.shape[0]
    dtype, device = global_params.dtype, global_params.device
    loss_sum = torch.zeros(num, dtype=dtype, device=device)
    if num == 0:
        return LocalTrainingResult(global_params.new_zeros((0, model.num_params)), loss_sum)
    if int(local_steps.min()) < 1:
        raise ValueError(f"local_steps must all be >= 1, got min {int(local_steps.min())}")
    steps = local_steps.to(device)
    all_idx = draw_round_indices(data, client_ids, int(steps.max()), batch_size, generator)
    with torch.no_grad():
        return _sgd_loop(
            model,
            global_params,
            data,
            client_ids,
            steps,
            learning_rate,
            weight_decay,
            all_idx,
            privacy,
            generator,
        )


def _sgd_loop(
    model: BatchedMLP,
    global_params: torch.Tensor,
    data: ClientTensors,
    client_ids: torch.Tensor,
    steps: torch.Tensor,
    learning_rate: float,
    weight_decay: float,
    all_idx: torch.Tensor,
    privacy: SampleLevelDP | None = None,
    generator: torch.Generator | None = None,
) -> LocalTrainingResult:
    """One federation's clients' local SGD on pre-drawn minibatch indices ``(T, S, B)``
    (with ``privacy``, DP-SGD steps whose noise comes from ``generator``)."""
    num = client_ids.shape[0]
    dtype = global_params.dtype
    loss_sum = torch.zeros(num, dtype=dtype, device=global_params.device)
    max_steps = int(steps.max())
    uniform = bool((steps == max_steps).all())
    tensors = model.split_repeated(global_params, num)
    # Every step's minibatches gathered at once (the same rows as data.x[all_idx[t]]), by
    # index_select, which is several times faster than advanced indexing.
    flat = all_idx.reshape(-1)
    xs = data.x.index_select(0, flat).view(*all_idx.shape, -1)
    # (T, S, B) labels, or (T, S, B, C) regression targets.
    ys = data.y.index_select(0, flat).view(*all_idx.shape, *data.y.shape[1:])
    # unbind: every step's views in one call rather than two indexings per step.
    for t, (xb, yb) in enumerate(zip(xs.unbind(0), ys.unbind(0), strict=True)):
        if privacy is None:
            loss, grads = model.layer_loss_and_grad(tensors, xb, yb)
        else:
            loss, grads = _private_grad(model, tensors, xb, yb, privacy, generator)
        if uniform:
            step_scale = None
            loss_sum.add_(loss)
        else:
            active = (steps > t).to(dtype)
            step_scale = active * learning_rate
            loss_sum.add_(loss * active)
        if weight_decay:
            torch._foreach_add_(grads, tensors, alpha=weight_decay)
        if step_scale is None:
            torch._foreach_sub_(tensors, grads, alpha=learning_rate)
        else:
            # A client whose steps are spent has scale 0: masked, not looped over.
            for tensor, grad in zip(tensors, grads, strict=True):
                shape = (num,) + (1,) * (grad.ndim - 1)
                tensor.sub_(grad.mul_(step_scale.view(shape)))
    return LocalTrainingResult(model.merge(tensors), loss_sum / steps.to(dtype))


def _private_grad(
    model: BatchedMLP,
    tensors: list[torch.Tensor],
    xb: torch.Tensor,
    yb: torch.Tensor,
    privacy: SampleLevelDP,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A DP-SGD step's gradient: the clipped mean plus ``N(0, (z C / B)^2)`` per coordinate."""
    loss, grads, _ = model.layer_loss_and_clipped_grad(tensors, xb, yb, privacy.clip_norm)
    std = privacy.noise_std(xb.shape[1])
    if std > 0.0:
        if generator is None:
            raise ValueError("DP-SGD noise needs a torch generator")
        # One draw for all layers, split: fewer calls than one draw per layer.
        sizes = [grad.numel() for grad in grads]
        noise = torch.randn(
            sum(sizes), generator=generator, dtype=grads[0].dtype, device=grads[0].device
        )
        for grad, part in zip(grads, noise.split(sizes), strict=True):
            grad.add_(part.view(grad.shape), alpha=std)
    return loss, grads


@dataclass(frozen=True)
class TrainingGroup:
    """One federation's share of a :func:`local_sgd_groups` call.

    Attributes:
        global_params: ``(P,)`` the model this group's clients start from.
        data: This group's clients' samples.
        client_ids: ``(S,)`` int64 indices of the participating clients into ``data``.
        local_steps: ``(S,)`` int64 steps per client, each >= 1 (ignored when ``S == 0``).
        indices: ``(T, S, B)`` minibatch indices into ``data.x`` drawn by
            :func:`draw_round_indices` with ``T = max(local_steps)``; ``None`` when ``S == 0``.
    """

    global_params: torch.Tensor
    data: ClientTensors
    client_ids: torch.Tensor
    local_steps: torch.Tensor
    indices: torch.Tensor | None


def local_sgd_groups(
    model: BatchedMLP,
    groups: list[TrainingGroup],
    *,
    learning_rate: float,
    weight_decay: float = 0.0,
) -> list[LocalTrainingResult]:
    """:func:`local_sgd` of several federations' clients in one batched computation.

    The federations share the model's architecture and the optimiser's settings but not their
    global models, data or randomness: every row starts from its own group's global model and
    trains on its own group's pre-drawn minibatches. Each group's result is bit for bit what
    :func:`local_sgd` returns for it alone with the generator the indices were drawn from (the
    batched products compute every row independently of the others; a group whose clients run
    different step counts is masked exactly as :func:`local_sgd` masks it, and a group whose
    round is over simply drops out of the batch).

    Args:
        model: The batched model (one architecture for every group).
        groups: The federations' clients, start models and minibatch indices.
        learning_rate: SGD step size.
        weight_decay: L2 coefficient added to the gradient.

    Returns:
        One :class:`LocalTrainingResult` per group, in the order of ``groups``.
    """
    results: list[LocalTrainingResult | None] = [None] * len(groups)
    live: list[int] = []
    for i, group in enumerate(groups):
        num = group.client_ids.shape[0]
        if group.client_ids.ndim != 1 or group.local_steps.shape != group.client_ids.shape:
            raise ValueError(
                f"group {i}: client_ids and local_steps must both be (S,), got "
                f"{tuple(group.client_ids.shape)} and {tuple(group.local_steps.shape)}"
            )
        if num == 0:
            empty = group.global_params.new_zeros((0, model.num_params))
            results[i] = LocalTrainingResult(empty, group.global_params.new_zeros(0))
            continue
        low, high = int(group.local_steps.min()), int(group.local_steps.max())
        if low < 1:
            raise ValueError(f"group {i}: local_steps must all be >= 1, got min {low}")
        if group.indices is None or group.indices.shape[:2] != (high, num):
            shape = None if group.indices is None else tuple(group.indices.shape)
            raise ValueError(
                f"group {i}: indices must be (T, S, B) = ({high}, {num}, B), got {shape}"
            )
        live.append(i)
    if not live:
        return results  # type: ignore[return-value]
    # Longest round first, so that the rows still training at step t are a prefix of the batch.
    order = sorted(live, key=lambda i: -int(groups[i].indices.shape[0]))  # type: ignore[union-attr]
    batch_sizes = {int(groups[i].indices.shape[2]) for i in live}  # type: ignore[union-attr]
    with torch.no_grad():
        if len(live) == 1:
            # One group is one federation's round: local_sgd's own loop on its indices.
            g = groups[live[0]]
            steps = g.local_steps.to(g.global_params.device)
            trained = [
                _sgd_loop(
                    model,
                    g.global_params,
                    g.data,
                    g.client_ids,
                    steps,
                    learning_rate,
                    weight_decay,
                    g.indices,  # type: ignore[arg-type]
                )
            ]
        elif len(batch_sizes) == 1 and _rows_aligned(model, batch_sizes.pop()):
            trained = _sgd_groups_loop(
                model, [groups[i] for i in order], learning_rate, weight_decay
            )
        else:
            trained = [
                _sgd_groups_loop(model, [groups[i]], learning_rate, weight_decay)[0] for i in order
            ]
    for i, result in zip(order, trained, strict=True):
        results[i] = result
    return results  # type: ignore[return-value]


def _rows_aligned(model: BatchedMLP, batch_size: int) -> bool:
    """Whether every batched product of a local step writes rows that start 16-byte aligned.

    MKL's batched products can give a row whose output starts off a 16-byte boundary a result
    that differs in the last bit from the same product alone (measured with float32 on AVX-512,
    e.g. ``(S, 15, 64) @ (S, 64, 10)``); batching is exact when every output row's size in
    elements is a multiple of 4, as with the default batch size 16.
    """
    sizes = []
    for layer in model._layers:
        sizes += [batch_size * layer.fan_out, batch_size * layer.fan_in]
        sizes.append(layer.fan_in * layer.fan_out)
    return all(size % 4 == 0 for size in sizes)


def _sgd_groups_loop(
    model: BatchedMLP,
    groups: list[TrainingGroup],
    learning_rate: float,
    weight_decay: float,
) -> list[LocalTrainingResult]:
    sizes = [int(g.client_ids.shape[0]) for g in groups]
    ends = np.cumsum(sizes).tolist()
    lengths = [int(g.indices.shape[0]) for g in groups]  # type: ignore[union-attr]
    num = ends[-1]
    first = groups[0].global_params
    dtype, device = first.dtype, first.device
    starts = torch.cat(
        [g.global_params.unsqueeze(0).expand(s, -1) for g, s in zip(groups, sizes, strict=True)]
    )
    tensors = model.split(starts)
    steps = torch.cat([g.local_steps.to(device) for g in groups])
    # local_sgd's two update paths round differently (sub with alpha against a masked product),
    # so each row follows the path its own group would take alone.
    masked_groups = [bool((g.local_steps != n).any()) for g, n in zip(groups, lengths, strict=True)]
    masked = torch.cat(
        [
            torch.full((s,), m, dtype=torch.bool, device=device)
            for s, m in zip(sizes, masked_groups, strict=True)
        ]
    )
    # (T_g, S_g, B, F) and (T_g, S_g, B) each: the same rows as g.data.x[g.indices], gathered by
    # index_select, which is several times faster than advanced indexing.
    flat = [g.indices.reshape(-1) for g in groups]  # type: ignore[union-attr]
    xs = [
        g.data.x.index_select(0, f).view(*g.indices.shape, -1)  # type: ignore[union-attr]
        for g, f in zip(groups, flat, strict=True)
    ]
    ys = [
        # (T_g, S_g, B) labels, or (T_g, S_g, B, C) regression targets.
        g.data.y.index_select(0, f).view(*g.indices.shape, *g.data.y.shape[1:])  # type: ignore[union-attr]
        for g, f in zip(groups, flat, strict=True)
    ]
    # Blocks of groups that train for the same number of steps: the rows still training at
    # step t are the first blocks' rows.
    block_lengths, block_ends, block_masked = [lengths[0]], [ends[0]], [masked_groups[0]]
    for n, end, m in zip(lengths[1:], ends[1:], masked_groups[1:], strict=True):
        if n == block_lengths[-1]:
            block_ends[-1] = end
            block_masked[-1] = block_masked[-1] or m
        else:
            block_lengths.append(n)
            block_ends.append(end)
            block_masked.append(m)
    if len(block_lengths) < len(groups):
        # One (T, S, B, F) batch per block instead of a concatenation per step.
        xs, ys, begin = list(xs), list(ys), 0
        merged_x, merged_y = [], []
        for n in block_lengths:
            count = lengths[begin:].count(n)  # sorted: the same lengths are adjacent
            merged_x.append(xs[begin] if count == 1 else torch.cat(xs[begin : begin + count], 1))
            merged_y.append(ys[begin] if count == 1 else torch.cat(ys[begin : begin + count], 1))
            begin += count
        xs, ys = merged_x, merged_y
    loss_sum = torch.zeros(num, dtype=dtype, device=device)
    for t in range(block_lengths[0]):
        live = sum(1 for n in block_lengths if n > t)
        rows = block_ends[live - 1]
        xb = xs[0][t] if live == 1 else torch.cat([x[t] for x in xs[:live]])
        yb = ys[0][t] if live == 1 else torch.cat([y[t] for y in ys[:live]])
        view = tensors if rows == num else [tensor[:rows] for tensor in tensors]
        loss, grads = model.layer_loss_and_grad(view, xb, yb)
        if weight_decay:
            torch._foreach_add_(grads, view, alpha=weight_decay)
        if not any(block_masked[:live]):
            loss_sum[:rows].add_(loss)
            torch._foreach_sub_(view, grads, alpha=learning_rate)
            continue
        row_masked = masked[:rows]
        active = (steps[:rows] > t).to(dtype)
        loss_sum[:rows].add_(torch.where(row_masked, loss * active, loss))
        step_scale = active * learning_rate
        for tensor, grad in zip(view, grads, strict=True):
            shape = (rows,) + (1,) * (grad.ndim - 1)
            plain = torch.sub(tensor, grad, alpha=learning_rate)
            scaled = tensor - grad * step_scale.view(shape)
            tensor.copy_(torch.where(row_masked.view(shape), scaled, plain))
    params = model.merge(tensors)
    mean_loss = loss_sum / steps.to(dtype)
    out = []
    begin = 0
    for end in ends:
        out.append(LocalTrainingResult(params[begin:end], mean_loss[begin:end]))
        begin = end
    return out
