"""Cost of Byzantine attacks and robust aggregation: one FL round at K = 100, against a plain one.

One round through the simulator alone (:class:`fl_gym.sim.Federation` and
:class:`fl_gym.sim.rounds.RoundPipeline`, no environment, ideal channel): the digits data set
split IID over K = 100 clients, the default MLP (64 -> 64 -> 10, 4,810 parameters), every client
selected, ``--local-steps`` SGD steps of batch 16, no compression. The plain round aggregates
with FedAvg and has no transform; each attacked round adds the adversary stage (20 % of the
devices Byzantine, sign flip scaled by 4, or the attack given) and aggregates with one robust
rule. Rounds of all settings alternate in blocks (the median per setting is reported), on one
torch thread, so drift in the load of a shared machine hits every setting alike.

Run: ``python benchmarks/bench_robust.py [--rounds 20] [--blocks 5] [--local-steps 1]
[--clock wall|cpu]``. It prints a Markdown table of milliseconds per round and the ratio to the
plain round. ``--clock cpu`` times each round by the CPU time of the benchmark's thread
(``time.thread_time``) instead of the wall clock: on a loaded shared machine the wall clock
counts the time other processes hold the core, the thread's CPU time does not (cache and memory
contention still show in both).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fl_gym.sim.learning.adversary import AdversaryConfig, ByzantineTransform  # noqa: E402
from fl_gym.sim.learning.data import make_federated_dataset  # noqa: E402
from fl_gym.sim.learning.federation import Federation, FederationConfig  # noqa: E402
from fl_gym.sim.rounds import RoundPipeline  # noqa: E402

RULES = (
    "median",
    "trimmed_mean",
    "geometric_median",
    "krum",
    "multi_krum",
    "centered_clipping",
    "norm_clipping",
)


def setting(
    aggregator: str, attack: str | None, local_steps: int
) -> tuple[Federation, RoundPipeline, np.random.Generator, object]:
    rng = np.random.default_rng(0)
    data = make_federated_dataset("digits", num_clients=100, rng=rng)
    fed = Federation(data, FederationConfig(aggregator=aggregator), rng=rng)
    transforms = (
        ()
        if attack is None
        else (ByzantineTransform(AdversaryConfig(attack=attack, fraction=0.2)),)
    )
    plan = fed.plan(selected="all", local_steps=local_steps)
    return fed, RoundPipeline(transforms=transforms), rng, plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--local-steps", type=int, default=1)
    parser.add_argument("--attack", default="sign_flip")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = parser.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.thread_time
    torch.set_num_threads(1)
    names = ["plain", *RULES]
    runs = {
        "plain": setting("fedavg", None, args.local_steps),
        **{rule: setting(rule, args.attack, args.local_steps) for rule in RULES},
    }
    times: dict[str, list[float]] = {name: [] for name in names}
    for name in names:  # warm-up
        fed, pipeline, rng, plan = runs[name]
        pipeline.run([fed], [plan], [rng])
    for _ in range(args.blocks):
        for name in names:
            fed, pipeline, rng, plan = runs[name]
            for _ in range(args.rounds):
                start = clock()
                pipeline.run([fed], [plan], [rng])
                times[name].append(clock() - start)
    plain = statistics.median(times["plain"])
    print(
        f"K = 100, {args.local_steps} local step(s), attack {args.attack} (20 %), "
        f"{args.blocks} x {args.rounds} rounds per setting, {args.clock} clock; "
        f"torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}\n"
    )
    print("| setting | ms / round | ratio to plain |")
    print("| --- | ---: | ---: |")
    for name in names:
        median = statistics.median(times[name])
        label = "plain (FedAvg, no attack)" if name == "plain" else f"{args.attack} + {name}"
        print(f"| {label} | {1e3 * median:.2f} | {median / plain:.2f}x |")
    worst = max(statistics.median(times[n]) for n in RULES) / plain
    print(f"\nworst ratio: {worst:.2f}x")


if __name__ == "__main__":
    main()
