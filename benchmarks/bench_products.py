"""The batched products of one local SGD step, as the model computes them and in the transposed
layout, same process, one thread.

``BatchedMLP`` (64 features, 64 hidden units, 10 classes, minibatch 16) runs five ``bmm`` per
local step for ``N`` clients at once. The two whose output has the 10 classes as its last
dimension (the output layer's forward ``h @ W2`` and its weight gradient ``h^T @ delta``) run
at a fraction of the others' rate with MKL on this machine; the same products computed
transposed (``W2^T @ h^T`` and ``delta^T @ h``, read back through a transposed view) give the
same values to rounding but not the same bits. This benchmark measures both layouts and says
whether their bits agree, the input to a future model version (a change of bits is a change of
dynamics: a new env version).

Run: ``python benchmarks/bench_products.py [--rows 80] [--reps 2000]``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import torch  # noqa: E402


def best_us(fn: Callable[[], torch.Tensor], reps: int, blocks: int = 5) -> float:
    """Best mean microseconds per call over ``blocks`` blocks of ``reps`` calls."""
    for _ in range(max(10, reps // 20)):
        fn()
    best = float("inf")
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - start) / reps)
    return 1e6 * best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=80, help="clients N in the batch")
    parser.add_argument("--reps", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    n, b, f, h, c = args.rows, 16, 64, 64, 10
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, b, f, generator=gen)
    w1 = torch.randn(n, f, h, generator=gen)
    hidden = torch.randn(n, b, h, generator=gen).relu_()
    w2 = torch.randn(n, h, c, generator=gen)
    delta = torch.randn(n, b, c, generator=gen)
    dh = torch.randn(n, b, h, generator=gen)
    cases = [
        ("forward, hidden layer  x @ W1", lambda: torch.bmm(x, w1), None),
        (
            "forward, output layer  h @ W2",
            lambda: torch.bmm(hidden, w2),
            lambda: torch.bmm(w2.transpose(1, 2), hidden.transpose(1, 2)).transpose(1, 2),
        ),
        (
            "gradient of W2  h^T @ delta",
            lambda: torch.bmm(hidden.transpose(1, 2), delta),
            lambda: torch.bmm(delta.transpose(1, 2), hidden).transpose(1, 2),
        ),
        ("back-propagation  delta @ W2^T", lambda: torch.bmm(delta, w2.transpose(1, 2)), None),
        ("gradient of W1  x^T @ dh", lambda: torch.bmm(x.transpose(1, 2), dh), None),
    ]
    print(
        f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, one thread; "
        f"N = {n} clients, minibatch {b}, {f}-{h}-{c} MLP"
    )
    print()
    print("| product | as computed (us) | GFLOP/s | transposed (us) | speed-up | same bits |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    total = total_t = 0.0
    for name, fn, transposed in cases:
        out = fn()
        inner = {"x @ W1": f, "h @ W2": h, "h^T @ delta": b, "delta @ W2^T": c, "x^T @ dh": b}
        k = next(v for key, v in inner.items() if key in name)
        flops = 2.0 * n * out.shape[1] * out.shape[2] * k
        us = best_us(fn, args.reps)
        total += us
        if transposed is None:
            total_t += us
            print(f"| {name} | {us:.1f} | {flops / us / 1e3:.1f} | - | - | - |")
            continue
        us_t = best_us(transposed, args.reps)
        total_t += us_t
        same = torch.equal(out, transposed())
        print(
            f"| {name} | {us:.1f} | {flops / us / 1e3:.1f} | {us_t:.1f} | {us / us_t:.2f}x | "
            f"{'yes' if same else 'no'} |"
        )
    print(f"| all five | {total:.1f} | | {total_t:.1f} | {total / total_t:.2f}x | |")


if __name__ == "__main__":
    main()
