"""The robust rules alone, on the updates of real attacked rounds at K = 100.

The rounds of ``bench_robust.py`` (digits over K = 100 clients, default MLP, 5 local steps, 20 %
sign flip x4) are run and the updates each rule received are kept; then, on those updates:

- each rule's CPU time per call (one thread, the caches flushed by writing 64 MB before each
  call, as a round's training does) and the minor page faults of the call, the count of pages
  it touched for the first time (each costs about 1.5 us on a VM);
- variants of the geometric median that change its output (a looser stopping tolerance, fewer
  iterations, Weiszfeld iterations in float32 followed by one float64 step): time per call,
  iterations, and the relative distance ``||v - v_rule|| / ||v_rule||`` to the rule's result;
- for the weighted trimmed mean, the share of columns whose float64 weighted sum of kept values
  is exact (every term a multiple of ``2^L`` with the sum of magnitudes below ``2^(L + 53)``),
  so that any summation order gives the same bits.

Run: ``python benchmarks/bench_robust_rules.py [--rounds 10] [--repeats 60]``. Prints Markdown
tables. ``resource`` (page faults) is Unix-only.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import math  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from functools import partial  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_robust import setting  # noqa: E402

from fl_gym.sim.learning import aggregation as agg  # noqa: E402

Rule = Callable[[torch.Tensor, torch.Tensor], agg.AggregationResult]


def capture(rules: tuple[str, ...], rounds: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (updates, weights) that each rule received in ``rounds`` attacked rounds."""
    kept: list[tuple[torch.Tensor, torch.Tensor]] = []
    for name in rules:
        fed, pipeline, rng, plan = setting(name, "sign_flip", 5)
        rule = fed.aggregator

        def keep(updates: torch.Tensor, weights: torch.Tensor, rule: Rule = rule):
            kept.append((updates.clone(), weights.clone()))
            return rule(updates, weights)

        fed.aggregator = keep
        for _ in range(rounds):
            pipeline.run([fed], [plan], [rng])
    return kept


def geometric_median_float32(
    updates: torch.Tensor, weights: torch.Tensor, tol: float = 1e-6
) -> tuple[agg.AggregationResult, int]:
    """The geometric median's Weiszfeld iterations in float32 on the scaled rows (same start,
    smoothing and stopping rule), then one float64 step; and the number of iterations."""
    rows = agg._accept(updates, weights, weighted=True)
    x64, scale = agg._scaled64(rows.x)
    x32 = x64.to(torch.float32)
    alpha64 = rows.w.to(torch.float64)
    alpha = alpha64.to(torch.float32)
    median = agg._median_start(rows.x, scale).to(torch.float32)
    smoothing = 1e-6 / scale
    iterations = 0
    for _ in range(200):
        iterations += 1
        distance = torch.linalg.vector_norm(x32 - median, dim=1)
        beta = alpha / distance.clamp_min(smoothing)
        new_median = (beta @ x32) / beta.sum()
        step = float(torch.linalg.vector_norm(new_median - median))
        spread = float(agg._weighted_median_1d(distance.double(), alpha64))
        median = new_median
        if step <= tol * spread:
            break
    center = median.double()
    beta = alpha64 / torch.linalg.vector_norm(x64 - center, dim=1).clamp_min(smoothing)
    center = (beta @ x64) / beta.sum()
    return agg._result(rows, agg._back(center, scale, updates), updates), iterations + 1


def weiszfeld_iterations(call: Callable[[], object]) -> int:
    """Iterations of a geometric-median call (one median of distances per iteration)."""
    count = 0
    median_1d = agg._weighted_median_1d

    def counted(values: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        nonlocal count
        count += 1
        return median_1d(values, w)

    agg._weighted_median_1d = counted
    try:
        call()
    finally:
        agg._weighted_median_1d = median_1d
    return count


def exact_share(updates: torch.Tensor, weights: torch.Tensor, trim_ratio: float) -> float:
    """Share of columns whose weighted float64 sum of kept values (the trimmed mean's) is exact
    in any order: terms ``w_k x_k / s`` all multiples of ``2^L`` (``L`` the lowest set bit of
    any term) and the sum of their magnitudes below ``2^(L + 53)``."""
    w = weights.to(torch.float32)
    w = (w / w.max() / (w / w.max()).sum()).double().numpy()
    x = updates.numpy()
    n = x.shape[0]
    trim = min(math.floor(trim_ratio * n + 1e-9), (n - 1) // 2)
    rows = np.argsort(x, axis=0, kind="stable")[trim : n - trim]
    largest = float(np.abs(x).max())
    scale = math.ldexp(1.0, math.frexp(largest)[1]) if largest else 1.0
    terms = w[rows] * np.take_along_axis(x, rows, axis=0).astype(np.float64) / scale
    exact = 0
    for column in terms.T:
        nonzero = column[column != 0]
        if nonzero.size == 0:
            exact += 1
            continue
        mantissa, exponent = np.frexp(np.abs(nonzero))
        integer = (mantissa * 2.0**53).astype(np.int64)
        trailing = np.log2((integer & -integer).astype(np.float64)).astype(np.int64)
        lowest = int((exponent - 53 + trailing).min())
        exact += bool(np.abs(nonzero).sum() < 2.0 ** (lowest + 53))
    return exact / terms.shape[1]


def timed(call: Callable[[], object], flush: np.ndarray) -> tuple[float, int]:
    """CPU seconds and minor page faults of one call, the caches flushed first."""
    flush += 1.0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.process_time()
    call()
    seconds = time.process_time() - start
    return seconds, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=60)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = capture(("trimmed_mean", "median", "geometric_median"), args.rounds)
    flush = np.zeros(8 << 20)  # 64 MB
    rules: dict[str, Rule] = {
        "median": agg.coordinate_median,
        "trimmed_mean": agg.trimmed_mean,
        "geometric_median": agg.geometric_median,
        "krum": agg.krum,
        "multi_krum": agg.multi_krum,
        "centered_clipping": agg.centered_clipping,
        "norm_clipping": agg.norm_clipping,
        "fedavg": agg.fedavg,
    }
    print(f"{len(data)} attacked rounds' updates (K = 100, d = {data[0][0].shape[1]})\n")
    print("| rule | ms / call | page faults / call |")
    print("| --- | ---: | ---: |")
    for name, rule in rules.items():
        runs = [timed(partial(rule, *data[i % len(data)]), flush) for i in range(args.repeats)]
        seconds, faults = zip(*runs, strict=True)
        print(f"| {name} | {1e3 * np.median(seconds):.2f} | {np.median(faults):.0f} |")

    variants: dict[str, Rule] = {
        "present (float64, tol 1e-10)": agg.geometric_median,
        "tol 1e-6": lambda u, w: agg.geometric_median(u, w, tol=1e-6),
        "tol 1e-4": lambda u, w: agg.geometric_median(u, w, tol=1e-4),
        "max_iter 5": lambda u, w: agg.geometric_median(u, w, max_iter=5),
        "max_iter 3": lambda u, w: agg.geometric_median(u, w, max_iter=3),
        "float32 iterations (tol 1e-6), then one float64 step": lambda u, w: (
            geometric_median_float32(u, w)[0]
        ),
    }
    print("\n| geometric-median variant | ms / call | iterations (median, max) |", end="")
    print(" rel. difference (median, max) |")
    print("| --- | ---: | ---: | ---: |")
    for name, rule in variants.items():
        seconds = [
            timed(partial(rule, *data[i % len(data)]), flush)[0] for i in range(args.repeats)
        ]
        iterations, differences = [], []
        for updates, weights in data:
            reference = agg.geometric_median(updates, weights).aggregate.double()
            if name.startswith("float32"):
                result, count = geometric_median_float32(updates, weights)
            else:
                count = weiszfeld_iterations(partial(rule, updates, weights))
                result = rule(updates, weights)
            gap = torch.linalg.vector_norm(result.aggregate.double() - reference)
            differences.append(float(gap / torch.linalg.vector_norm(reference)))
            iterations.append(count)
        print(
            f"| {name} | {1e3 * np.median(seconds):.2f} | {int(np.median(iterations))}, "
            f"{max(iterations)} | {np.median(differences):.1e}, {max(differences):.1e} |"
        )

    shares = [exact_share(updates, weights, 0.1) for updates, weights in data]
    print(
        f"\ntrimmed mean (trim 0.1): columns with an exact float64 weighted sum: "
        f"{100 * np.mean(shares):.1f} % (per round {100 * min(shares):.1f}-"
        f"{100 * max(shares):.1f} %)"
    )


if __name__ == "__main__":
    main()
