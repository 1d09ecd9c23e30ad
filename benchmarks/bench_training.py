"""Batched local training against a loop of per-client torch.nn modules, in one process.

K = 100 clients of the digits data (IID), an MLP with one hidden layer of 64 units, 5 local SGD
steps with batch 16. The reference does the same work the way FL code usually does: for each
client, load the global weights into its own ``torch.nn.Module``, run ``torch.optim.SGD`` on its
minibatches, read the weights back. Both run on the same thread count; the reference's modules and
optimisers are built outside the timed region, so the ratio is, if anything, flattering to it.

Run: ``python benchmarks/bench_training.py [--clients 100] [--repeats 60]``. The last line reads
``batched vs per-client loop: <ratio>x``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch
from torch import nn

from fl_gym.sim import make_federated_dataset, make_model
from fl_gym.sim.learning.training import ClientTensors, local_sgd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--local-steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    data = make_federated_dataset("digits", args.clients, rng=rng)
    model = make_model("mlp", data.num_features, data.num_classes, hidden_units=(64,))
    clients = ClientTensors.from_arrays(data.x_train, data.y_train, data.client_indices)
    global_params = model.init_params(torch.Generator().manual_seed(0))
    ids = torch.arange(args.clients)
    steps = torch.full((args.clients,), args.local_steps)
    lr = 0.1

    def batched() -> torch.Tensor:
        gen = torch.Generator().manual_seed(1)
        return local_sgd(
            model,
            global_params,
            clients,
            ids,
            steps,
            batch_size=args.batch_size,
            learning_rate=lr,
            generator=gen,
        ).params

    client_x = [
        torch.as_tensor(data.x_train[idx], dtype=torch.float32) for idx in data.client_indices
    ]
    client_y = [torch.as_tensor(data.y_train[idx]) for idx in data.client_indices]
    modules = [model.to_module(global_params) for _ in range(args.clients)]
    optimisers = [torch.optim.SGD(m.parameters(), lr=lr) for m in modules]
    loss_fn = nn.CrossEntropyLoss()
    # torch.nn.Linear stores weights as (out, in): convert the global model once, untimed.
    global_vector = torch.nn.utils.parameters_to_vector(modules[0].parameters()).detach().clone()

    def per_client_loop() -> torch.Tensor:
        gen = torch.Generator().manual_seed(1)
        out = []
        for k in range(args.clients):
            module, opt = modules[k], optimisers[k]
            torch.nn.utils.vector_to_parameters(global_vector, module.parameters())
            n = client_x[k].shape[0]
            for _ in range(args.local_steps):
                idx = torch.randint(0, n, (args.batch_size,), generator=gen)
                opt.zero_grad()
                loss = loss_fn(module(client_x[k][idx]), client_y[k][idx])
                loss.backward()
                opt.step()
            out.append(torch.nn.utils.parameters_to_vector(module.parameters()))
        return torch.stack(out)

    # Alternate blocks of calls so that drift in machine load hits both alike; within a block
    # each approach runs back to back, as it would in a training run. The minimum over all
    # calls is the least noisy estimate of each one's cost on a shared machine.
    t_batched: list[float] = []
    t_loop: list[float] = []
    block = max(1, args.repeats // 6)
    for _ in range(6):
        for fn, times in ((batched, t_batched), (per_client_loop, t_loop)):
            fn()  # warm-up after the switch
            for _ in range(block):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
    min_b, min_l = min(t_batched), min(t_loop)
    med_b, med_l = statistics.median(t_batched), statistics.median(t_loop)
    print(f"machine: {platform.machine()} {platform.processor() or ''} ".strip())
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(
        f"K={args.clients} clients, {model!r}, {args.local_steps} local steps, "
        f"batch {args.batch_size}"
    )
    print(
        f"batched local_sgd:      {min_b * 1e3:8.2f} ms per round (min; median {med_b * 1e3:.2f})"
    )
    print(
        f"per-client module loop: {min_l * 1e3:8.2f} ms per round (min; median {med_l * 1e3:.2f})"
    )
    print(f"ratio of medians: {med_l / med_b:.1f}x")
    print(f"batched vs per-client loop: {min_l / min_b:.1f}x")


if __name__ == "__main__":
    main()
