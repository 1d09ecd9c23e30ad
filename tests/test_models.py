"""Batched models and local training against autograd and per-client torch.nn references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fl_gym.sim.learning.models import BatchedMLP, make_model
from fl_gym.sim.learning.training import ClientTensors, local_sgd, sample_minibatch


def _random_clients(num_clients: int, num_features: int, num_classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, 40, size=num_clients)
    n = int(sizes.sum())
    x = rng.normal(size=(n, num_features)).astype(np.float32)
    y = rng.integers(0, num_classes, size=n)
    perm = rng.permutation(n)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    indices = [perm[bounds[i] : bounds[i + 1]] for i in range(num_clients)]
    return x, y, indices


@pytest.mark.parametrize("hidden", [(), (16,), (12, 8)])
def test_gradient_matches_autograd(hidden: tuple[int, ...]) -> None:
    model = BatchedMLP(7, 4, hidden)
    gen = torch.Generator().manual_seed(1)
    params = torch.stack([model.init_params(gen, dtype=torch.float64) for _ in range(5)])
    x = torch.randn(5, 9, 7, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (5, 9), generator=gen)
    loss, grad = model.loss_and_grad(params, x, y)

    p = params.clone().requires_grad_(True)
    logits = model.logits(p, x)
    ref_loss = nn.functional.cross_entropy(logits.reshape(-1, 4), y.reshape(-1), reduction="none")
    ref_loss = ref_loss.view(5, 9).mean(dim=1)
    ref_loss.sum().backward()
    torch.testing.assert_close(loss, ref_loss.detach())
    torch.testing.assert_close(grad, p.grad)


@pytest.mark.parametrize("hidden", [(), (10,)])
def test_module_round_trip_and_forward(hidden: tuple[int, ...]) -> None:
    model = BatchedMLP(6, 3, hidden)
    gen = torch.Generator().manual_seed(3)
    params = model.init_params(gen)
    module = model.to_module(params)
    torch.testing.assert_close(model.from_module(module), params)
    x = torch.randn(11, 6, generator=gen)
    torch.testing.assert_close(model.logits(params[None], x[None])[0], module(x))


def test_init_matches_linear_bounds() -> None:
    model = BatchedMLP(64, 10, (32,))
    params = model.init_params(torch.Generator().manual_seed(0))
    w1 = params[: 64 * 32]
    assert w1.abs().max() <= 1 / 8 and w1.abs().max() > 0.9 / 8
    w2 = params[64 * 32 + 32 : 64 * 32 + 32 + 320]
    assert w2.abs().max() <= 1 / np.sqrt(32)
    assert model.num_params == 64 * 32 + 32 + 32 * 10 + 10


def test_evaluate_k_models_equals_one_by_one() -> None:
    model = BatchedMLP(5, 3, (4,))
    gen = torch.Generator().manual_seed(0)
    params = torch.stack([model.init_params(gen) for _ in range(4)])
    x = torch.randn(50, 5, generator=gen)
    y = torch.randint(0, 3, (50,), generator=gen)
    loss, acc = model.evaluate(params, x, y)
    for k in range(4):
        logits = model.to_module(params[k])(x)
        ref_loss = nn.functional.cross_entropy(logits, y)
        ref_acc = (logits.argmax(1) == y).float().mean()
        l_k, a_k = model.evaluate(params[k], x, y)
        torch.testing.assert_close(loss[k], ref_loss)
        torch.testing.assert_close(l_k, ref_loss)
        assert float(acc[k]) == float(ref_acc) == float(a_k)


def test_sample_minibatch_stays_inside_each_client() -> None:
    x, y, indices = _random_clients(6, 3, 2)
    data = ClientTensors.from_arrays(x, y, indices)
    ids = torch.arange(6)
    gen = torch.Generator().manual_seed(0)
    seen = [set() for _ in range(6)]
    for _ in range(200):
        xb, _ = sample_minibatch(data, ids, 8, gen)
        for k in range(6):
            own = {tuple(row) for row in x[indices[k]].tolist()}
            batch = {tuple(row) for row in xb[k].tolist()}
            assert batch <= own
            seen[k] |= batch
    # uniform with replacement: 1600 draws cover every sample of clients with < 40 samples
    assert all(len(seen[k]) == len(indices[k]) for k in range(6))


@pytest.mark.parametrize("hidden", [(), (16,)])
def test_batched_training_equals_per_client_loop(hidden: tuple[int, ...]) -> None:
    num_clients, num_features, num_classes, batch, lr = 8, 5, 3, 4, 0.3
    x, y, indices = _random_clients(num_clients, num_features, num_classes)
    data = ClientTensors.from_arrays(x, y, indices, dtype=torch.float64)
    model = BatchedMLP(num_features, num_classes, hidden)
    global_params = model.init_params(torch.Generator().manual_seed(5), dtype=torch.float64)
    ids = torch.tensor([0, 2, 3, 5, 7])
    steps = torch.tensor([3, 1, 4, 4, 2])
    result = local_sgd(
        model,
        global_params,
        data,
        ids,
        steps,
        batch_size=batch,
        learning_rate=lr,
        generator=torch.Generator().manual_seed(9),
    )
    # Reference: one torch.nn module and optimiser per client, fed the same minibatches.
    replay = torch.Generator().manual_seed(9)
    batches = [sample_minibatch(data, ids, batch, replay) for _ in range(int(steps.max()))]
    for s, k in enumerate(ids.tolist()):
        module = model.to_module(global_params)
        opt = torch.optim.SGD(module.parameters(), lr=lr)
        losses = []
        for t in range(int(steps[s])):
            xb, yb = batches[t][0][s], batches[t][1][s]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(module(xb), yb)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        torch.testing.assert_close(result.params[s], model.from_module(module))
        assert result.train_loss[s].item() == pytest.approx(np.mean(losses))
        assert k == int(ids[s])


def test_local_sgd_rejects_bad_steps() -> None:
    x, y, indices = _random_clients(3, 2, 2)
    data = ClientTensors.from_arrays(x, y, indices)
    model = make_model("logreg", 2, 2)
    p = model.init_params(torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="local_steps must all be >= 1"):
        local_sgd(
            model,
            p,
            data,
            torch.tensor([0, 1]),
            torch.tensor([1, 0]),
            batch_size=2,
            learning_rate=0.1,
            generator=torch.Generator(),
        )


def test_bad_model_arguments() -> None:
    with pytest.raises(ValueError, match="unknown model 'cnn'"):
        make_model("cnn", 4, 2)
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        BatchedMLP(4, 1)
    model = BatchedMLP(4, 2)
    with pytest.raises(ValueError, match=r"params must have shape \(K, 10\)"):
        model.logits(torch.zeros(2, 9), torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match=r"x must have shape"):
        model.logits(torch.zeros(2, 10), torch.zeros(2, 3, 5))
    with pytest.raises(ValueError, match="no training samples"):
        ClientTensors.from_arrays(np.zeros((3, 2)), np.zeros(3), [np.array([0, 1]), np.array([])])


def test_training_one_client_leaves_the_global_model_alone() -> None:
    x, y, indices = _random_clients(3, 4, 2)
    data = ClientTensors.from_arrays(x, y, indices)
    model = make_model("mlp", 4, 2, hidden_units=(5,))
    global_params = model.init_params(torch.Generator().manual_seed(0))
    before = global_params.clone()
    out = local_sgd(
        model,
        global_params,
        data,
        torch.tensor([1]),
        torch.tensor([3]),
        batch_size=4,
        learning_rate=0.5,
        generator=torch.Generator().manual_seed(1),
    )
    assert torch.equal(global_params, before)
    assert not torch.equal(out.params[0], before)
