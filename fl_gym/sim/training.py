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

from fl_gym.sim.models import BatchedMLP

__all__ = ["ClientTensors", "LocalTrainingResult", "local_sgd", "sample_minibatch"]


@dataclass(frozen=True)
class ClientTensors:
    """All clients' training samples on one device, grouped by client.

    Attributes:
        x: ``(N, F)`` features, client 0's samples first, then client 1's, and so on.
        y: ``(N,)`` labels.
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
            y: ``(N,)`` integer labels.
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
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        return cls(
            x=torch.as_tensor(np.asarray(x)[order], dtype=dtype, device=device),
            y=torch.as_tensor(np.asarray(y)[order], dtype=torch.int64, device=device),
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
    with torch.no_grad():
        return _sgd_loop(
            model,
            global_params,
            data,
            client_ids,
            steps,
            batch_size,
            learning_rate,
            generator,
            weight_decay,
        )


def _sgd_loop(
    model: BatchedMLP,
    global_params: torch.Tensor,
    data: ClientTensors,
    client_ids: torch.Tensor,
    steps: torch.Tensor,
    batch_size: int,
    learning_rate: float,
    generator: torch.Generator,
    weight_decay: float,
) -> LocalTrainingResult:
    num = client_ids.shape[0]
    dtype = global_params.dtype
    loss_sum = torch.zeros(num, dtype=dtype, device=global_params.device)
    max_steps = int(steps.max())
    uniform = bool((steps == max_steps).all())
    tensors = model.split_repeated(global_params, num)
    offsets = data.offsets[client_ids].unsqueeze(1)
    counts = data.counts[client_ids].unsqueeze(1)
    # One draw for every step of the round: the generator fills the (T, S, B) tensor with the
    # same stream as T successive (S, B) draws, in fewer calls.
    all_idx = _draw_indices(offsets, counts, (max_steps, num, batch_size), generator)
    for t in range(max_steps):
        idx = all_idx[t]
        xb, yb = data.x[idx], data.y[idx]
        loss, grads = model.layer_loss_and_grad(tensors, xb, yb)
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
