"""A federated-GP localisation round against a digits-MLP round, K = 100 clients, one process.

The localisation round is one round of federated maximum likelihood of the GP hyperparameters
(:func:`fl_gym.sim.localization.gp.fit_federated`): all K clients' kernel matrices factored by
one batched Cholesky, their log marginal likelihoods and gradients in one backward pass, the
weighted average and the server's Adam step. The reference is one round of the digits federation
(:class:`fl_gym.sim.learning.federation.Federation`, MLP with 64 hidden units, every client
selected, 5 local steps of batch 16, ideal channel): local training, aggregation and test
evaluation. A DNN round on the localisation data (two hidden layers of 64, same settings) is
timed beside them. Timings alternate between the kinds; the medians are compared.

Run: ``python benchmarks/bench_localization.py [--clients 100] [--samples 40] [--repeats 30]``.
The last line reads ``GP localisation round / digits-MLP round: <ratio>x``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from fl_gym.sim import Federation, FederationConfig, make_federated_dataset
from fl_gym.sim.localization.gp import fit_federated
from fl_gym.sim.localization.scenario import make_localization_data


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--samples", type=int, default=40, help="GP samples per client")
    parser.add_argument("--rounds", type=int, default=10, help="rounds per timing")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    k, rounds = args.clients, args.rounds

    digits = make_federated_dataset("digits", k, rng=np.random.default_rng(0))
    digits_fed = Federation(digits, FederationConfig(), rng=np.random.default_rng(1))
    digits_plan = digits_fed.plan(local_steps=5)
    loc = make_localization_data("indoor", k, args.samples, 400, np.random.default_rng(2))
    dnn_fed = Federation(
        loc.federated_dataset(),
        FederationConfig(hidden_units=(64, 64)),
        rng=np.random.default_rng(3),
    )
    dnn_plan = dnn_fed.plan(local_steps=5)
    aps = loc.scenario.ap_positions
    area = loc.scenario.config.area_m
    rng = np.random.default_rng(4)

    def digits_rounds() -> None:
        for _ in range(rounds):
            digits_fed.run_round(digits_plan, rng)

    def dnn_rounds() -> None:
        for _ in range(rounds):
            dnn_fed.run_round(dnn_plan, rng)

    def gp_rounds() -> None:
        fit_federated(loc.train_positions, loc.train_rss, aps, area_m=area, rounds=rounds)

    kinds = {
        "digits MLP": digits_rounds,
        "localisation DNN": dnn_rounds,
        "localisation GP": gp_rounds,
    }
    for fn in kinds.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in kinds}
    for _ in range(args.repeats):
        for name, fn in kinds.items():
            times[name].append(_timed(fn) / rounds)
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s)"
    )
    print(f"K = {k} clients; GP: {args.samples} samples x {aps.shape[0]} APs per client")
    for name, values in times.items():
        print(f"{name:>17}: median {1e3 * statistics.median(values):7.2f} ms per round")
    ratio = statistics.median(times["localisation GP"]) / statistics.median(times["digits MLP"])
    print(f"GP localisation round / digits-MLP round: {ratio:.2f}x")


if __name__ == "__main__":
    main()
