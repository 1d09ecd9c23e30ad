"""A round with DP-SGD (per-example clipping and noise, batched) against a plain round.

K = 100 clients of the digits data (IID), an MLP with one hidden layer of 64 units, all clients
selected, 5 local SGD steps with batch 16, ideal channel: the same ``run_rounds`` call, once
with ``local_privacy=SampleLevelDP(1.1, 1.0)`` and once without. Per-example gradient norms come
from the layers' inputs and errors (no per-example gradient is materialised, no loop over
clients or examples), so the private round should cost well under twice the plain one. A
client-level DP round (``ClientLevelDP``: clipping and central noise) is timed too.

Run: ``python benchmarks/bench_privacy.py [--clients 100] [--repeats 40]``. The last line reads
``DP-SGD round vs plain round: <ratio>x``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch

from fl_gym.sim import Federation, FederationConfig, make_federated_dataset, run_rounds
from fl_gym.sim.learning.privacy import SampleLevelDP
from fl_gym.sim.privacy import ClientLevelDP


def _time_round(fed: Federation, repeats: int, **kwargs: object) -> float:
    rng = np.random.default_rng(1)
    plan = fed.plan(selected="all", local_steps=5)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_rounds([fed], [plan], [rng], **kwargs)  # type: ignore[arg-type]
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    data = make_federated_dataset("digits", args.clients, rng=rng)
    fed = Federation(data, FederationConfig(weighting="uniform"), rng=rng)
    # Interleave the settings so that machine load hits all of them alike.
    plain, private, client = [], [], []
    for _ in range(3):
        plain.append(_time_round(fed, args.repeats))
        private.append(_time_round(fed, args.repeats, local_privacy=SampleLevelDP(1.1, 1.0)))
        client.append(_time_round(fed, args.repeats, transforms=[ClientLevelDP(1.1, 0.5)]))
    p, s, c = statistics.median(plain), statistics.median(private), statistics.median(client)
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} thread(s), K = {args.clients}"
    )
    print(f"plain round: {p * 1e3:.2f} ms")
    print(f"DP-SGD round: {s * 1e3:.2f} ms")
    print(f"client-level DP round: {c * 1e3:.2f} ms ({c / p:.2f}x)")
    print(f"DP-SGD round vs plain round: {s / p:.2f}x")


if __name__ == "__main__":
    main()
