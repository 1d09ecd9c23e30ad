"""Steps per second of the native vector env against SyncVectorEnv, same process, one core.

For each env id and each E, ``gym.make_vec(id, num_envs=E, vectorization_mode="sync")`` and
``vectorization_mode="vector_entry_point"``
(:class:`fl_gym.envs.wireless_fl.vector.WirelessFLVectorEnv`) are
built side by side, reset with the same seed and driven by the same seeded random actions (drawn
before the clock starts), so both run the same trajectories (they are bit-identical; autoresets
included). Blocks of steps alternate between the two; the best block of each is reported (the
minimum time is the estimate of each one's cost on a shared machine) and the ratio of the two.
torch and the BLAS libraries run on one thread. ``--profile`` prints a cProfile listing of the
native env's steps.

``--floor`` measures the compute floor instead: the time the native env (and, for comparison,
SyncVectorEnv) spends in its batched products (``aten::bmm`` / ``aten::baddbmm`` of local
training and evaluation, summed by ``torch.profiler``), which no restructuring of the Python
around them removes, and the ratio to SyncVectorEnv that the native env would reach if
everything else cost nothing.

``--stages`` times the stages of a vector step instead, for SyncVectorEnv and the native env
side by side (wall time per vector step, best of ``--blocks`` blocks): the round pipeline's
stage functions and the environments' own work (decoding, resets, the observation), each timed
where it is entered first (a stage inside another is counted in the outer one).

``--device cuda`` runs both vector envs' environments on a GPU (the steps/s table).

Run: ``python benchmarks/bench_vector_env.py [--envs 4 16 64] [--steps 30] [--blocks 5]
[--floor | --stages] [--device cuda]``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import cProfile  # noqa: E402
import functools  # noqa: E402
import platform  # noqa: E402
import pstats  # noqa: E402
import time  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import fl_gym  # noqa: E402
from fl_gym.envs.wireless_fl import env as wireless_env  # noqa: E402
from fl_gym.sim import rounds  # noqa: E402

TARGET_RATIO = 4.0
ENV_IDS = ("fl_gym/WirelessFL-v0", "fl_gym/ClientSelection-v0")
MODES = ("sync", "vector_entry_point")


def measure(
    env_id: str,
    num_envs: int,
    steps: int,
    blocks: int,
    num_threads: int = 1,
    device: str = "cpu",
) -> dict[str, float]:
    """Best-block env steps per second of both vector envs (``num_envs * steps`` per block),
    their environments on ``num_threads`` torch threads."""
    vecs, actions = {}, {}
    for mode in MODES:
        vec = gym.make_vec(
            env_id,
            num_envs=num_envs,
            vectorization_mode=mode,
            num_threads=num_threads,
            device=device,
        )
        vec.reset(seed=0)
        space = vec.action_space
        space.seed(0)
        actions[mode] = [space.sample() for _ in range(steps * (blocks + 1))]
        vecs[mode] = vec
    best = dict.fromkeys(MODES, float("inf"))
    for block in range(blocks + 1):
        for mode in MODES:
            chunk = actions[mode][block * steps : (block + 1) * steps]
            start = time.perf_counter()
            for action in chunk:
                vecs[mode].step(action)
            if device.startswith("cuda"):
                torch.cuda.synchronize()  # the observations already waited; to be sure
            elapsed = time.perf_counter() - start
            if block > 0:  # the first block warms up
                best[mode] = min(best[mode], elapsed)
    for vec in vecs.values():
        vec.close()
    rates = {mode: num_envs * steps / best[mode] for mode in MODES}
    rates["ratio"] = rates["vector_entry_point"] / rates["sync"]
    return rates


PRODUCT_OPS = ("aten::bmm", "aten::baddbmm", "aten::mm", "aten::addmm", "aten::matmul")


def product_ms(
    env_id: str, num_envs: int, steps: int, num_threads: int = 1, mode: str = "vector_entry_point"
) -> float:
    """Milliseconds per native vector step spent inside the batched products (their own CPU
    time, as ``torch.profiler`` records it, its few microseconds per call included: the floor
    is overstated a little, never understated), after one warm-up block."""
    vec = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode=mode, num_threads=num_threads)
    vec.reset(seed=0)
    space = vec.action_space
    space.seed(0)
    actions = [space.sample() for _ in range(2 * steps)]
    for action in actions[:steps]:
        vec.step(action)
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities) as prof:
        for action in actions[steps:]:
            vec.step(action)
    vec.close()
    products_us = sum(
        event.self_cpu_time_total for event in prof.key_averages() if event.key in PRODUCT_OPS
    )
    return products_us / 1000.0 / steps


def floor_table(ids: list[str], envs: list[int], steps: int, blocks: int, threads: int) -> None:
    print(
        "| env | E | SyncVectorEnv (ms / E env steps) | its products (ms) | native (ms / vector "
        "step) | its products (ms) | products' share | ratio | ceiling (products only) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for env_id in ids:
        for num_envs in envs:
            r = measure(env_id, num_envs, steps, blocks, threads)
            sync_ms = 1000.0 * num_envs / r["sync"]
            native_ms = 1000.0 * num_envs / r["vector_entry_point"]
            sync_products = product_ms(env_id, num_envs, steps, threads, mode="sync")
            products = product_ms(env_id, num_envs, steps, threads)
            print(
                f"| {env_id} | {num_envs} | {sync_ms:.1f} | {sync_products:.1f} | "
                f"{native_ms:.1f} | {products:.1f} | {100 * products / native_ms:.0f}% | "
                f"{r['ratio']:.2f}x | {sync_ms / products:.1f}x |",
                flush=True,
            )


STAGES = (
    (rounds.DigitalUplink, "start", "start (validate, seed)"),
    (rounds, "train_rounds", "train"),
    (rounds, "compress_rounds", "compress"),
    (rounds.DigitalUplink, "deliver", "transport"),
    (rounds, "aggregate_rounds", "aggregate"),
    (rounds, "evaluate_models", "evaluate"),
    (rounds, "conclude_round", "conclude"),
    (wireless_env.WirelessFLEnv, "decode_action", "decode actions"),
    (wireless_env.WirelessFLEnv, "_finish_step", "reward, info, observe"),
    (wireless_env, "observe_many", "reward, info, observe"),
    (wireless_env.WirelessFLEnv, "reset", "autoresets"),
)
"""``(owner, attribute, label)`` of the functions ``--stages`` times. The pipeline calls its
stage functions through the module (and the transport through its class), so patching the
attribute times every call."""


@contextlib.contextmanager
def _stage_timers(totals: dict[str, float]):
    """Wrap every function of :data:`STAGES` in a timer adding its wall time to ``totals``
    (outermost call only); the originals are restored on exit."""
    active = [False]
    saved = []

    def timed(fn, label):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if active[0]:
                return fn(*args, **kwargs)
            active[0] = True
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[label] = totals.get(label, 0.0) + time.perf_counter() - start
                active[0] = False

        return wrapper

    try:
        for owner, name, label in STAGES:
            original = owner.__dict__[name]
            saved.append((owner, name, original))
            fn = original.__func__ if isinstance(original, staticmethod) else original
            setattr(owner, name, timed(fn, label))
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def stage_table(env_id: str, num_envs: int, steps: int, blocks: int, threads: int) -> None:
    """Per-stage milliseconds per vector step of both vector envs (best block of each)."""
    results = {}
    for mode in MODES:
        vec = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode=mode, num_threads=threads)
        vec.reset(seed=0)
        vec.action_space.seed(0)
        actions = [vec.action_space.sample() for _ in range(steps * (blocks + 1))]
        for action in actions[:steps]:
            vec.step(action)
        best: tuple[float, dict[str, float]] = (float("inf"), {})
        for block in range(1, blocks + 1):
            totals: dict[str, float] = {}
            with _stage_timers(totals):
                start = time.perf_counter()
                for action in actions[block * steps : (block + 1) * steps]:
                    vec.step(action)
                elapsed = time.perf_counter() - start
            if elapsed < best[0]:
                best = (elapsed, totals)
        vec.close()
        elapsed, totals = best
        totals["the rest"] = elapsed - sum(totals.values())
        totals["whole step"] = elapsed
        results[mode] = {label: 1000.0 * value / steps for label, value in totals.items()}
    print(f"{env_id}, E = {num_envs}, {threads} thread(s): ms per vector step")
    print()
    print("| stage | SyncVectorEnv | native | ratio |")
    print("| --- | ---: | ---: | ---: |")
    labels = [*dict.fromkeys(label for _, _, label in STAGES), "the rest", "whole step"]
    for label in labels:
        sync = results["sync"].get(label, 0.0)
        native = results["vector_entry_point"].get(label, 0.0)
        ratio = f"{sync / native:.2f}x" if native > 0.005 else "-"
        print(f"| {label} | {sync:.2f} | {native:.2f} | {ratio} |", flush=True)
    print()


def profile(env_id: str, num_envs: int, steps: int) -> None:
    vec = gym.make_vec(env_id, num_envs=num_envs)
    vec.reset(seed=0)
    space = vec.action_space
    space.seed(0)
    actions = [space.sample() for _ in range(steps)]
    profiler = cProfile.Profile()
    profiler.enable()
    for action in actions:
        vec.step(action)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--steps", type=int, default=30, help="vector steps per block")
    parser.add_argument("--blocks", type=int, default=5, help="timed blocks per env kind")
    parser.add_argument("--ids", nargs="+", default=list(ENV_IDS))
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--floor", action="store_true", help="the batched products' time and the ceiling ratio"
    )
    parser.add_argument("--stages", action="store_true", help="per-stage time of both vector envs")
    parser.add_argument(
        "--threads", type=int, default=1, help="the environments' torch threads (num_threads)"
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="the environments' torch device (e.g. cuda; the steps/s table only)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"torch {torch.__version__}, numpy {np.__version__}, gymnasium {gym.__version__}, "
        f"fl_gym {getattr(fl_gym, '__version__', '?')}; environments on {args.threads} torch "
        f"thread(s), device {args.device}"
        + (f" ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else "")
    )
    print()
    if args.floor:
        floor_table(args.ids, args.envs, args.steps, args.blocks, args.threads)
        return
    if args.stages:
        for env_id in args.ids:
            for num_envs in args.envs:
                stage_table(env_id, num_envs, args.steps, args.blocks, args.threads)
        return
    print("| env | E | SyncVectorEnv (env steps/s) | native (env steps/s) | ratio |")
    print("| --- | ---: | ---: | ---: | ---: |")
    results = {}
    for env_id in args.ids:
        for num_envs in args.envs:
            r = measure(env_id, num_envs, args.steps, args.blocks, args.threads, args.device)
            results[(env_id, num_envs)] = r
            print(
                f"| {env_id} | {num_envs} | {r['sync']:.0f} | {r['vector_entry_point']:.0f} | "
                f"{r['ratio']:.2f}x |",
                flush=True,
            )
    print()
    for (env_id, num_envs), r in results.items():
        if num_envs == 16:
            verdict = "meets" if r["ratio"] >= TARGET_RATIO else "misses"
            target = f"{TARGET_RATIO:.0f}x"
            print(f"{env_id} at E = 16: {r['ratio']:.2f}x ({verdict} the {target} target)")
    if args.profile:
        profile(args.ids[0], 16, args.steps)


if __name__ == "__main__":
    main()
