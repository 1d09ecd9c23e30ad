"""Steps per second of the UAV swarm environment ``uav_swarm_v0`` at 100, 1,000 and 10,000 UAVs.

The parallel environment on its presets (``default``, ``swarm-1k``, ``swarm-10k``), on one core
(torch and the BLAS libraries on one thread), driven by uniform random actions in ``[-1, 1]^2``.
The action dicts are built before the clock starts (a caller that already has its actions as an
array pays ``dict(zip(env.agents, actions))``, about 0.1 ms per 1,000 agents, on top). After a
warm-up, blocks of steps are timed; an episode that ends (truncation at ``max_steps``) is reset
outside the timed region. Each size runs ``--blocks`` blocks and the median block is reported,
with steps per CPU-second (process time) beside the wall-clock rate, as the development machines
are shared. Target: >= 200 steps/s at 1,000 UAVs.

Run: ``python benchmarks/bench_uav.py [--blocks 3] [--sizes 100 1000 10000] [--profile]``. It
prints a Markdown table; ``--profile`` adds a cProfile listing of the 1,000-UAV steps.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import cProfile  # noqa: E402
import io  # noqa: E402
import platform  # noqa: E402
import pstats  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fl_gym.envs import uav_swarm_v0  # noqa: E402

TARGET_STEPS_PER_S_1K = 200.0
PRESETS = {100: "default", 1_000: "swarm-1k", 10_000: "swarm-10k"}
STEPS_PER_BLOCK = {100: 1_000, 1_000: 300, 10_000: 30}


def _actions(env: uav_swarm_v0.UAVSwarmEnv, rng: np.random.Generator, count: int) -> list[dict]:
    values = rng.uniform(-1, 1, (count, len(env.agents), 2)).astype(np.float32)
    return [dict(zip(env.agents, v, strict=True)) for v in values]


def time_block(
    env: uav_swarm_v0.UAVSwarmEnv, steps: int, rng: np.random.Generator
) -> tuple[float, float]:
    """Wall and CPU seconds of ``steps`` steps (resets and action building not counted)."""
    wall = cpu = 0.0
    done = 0
    while done < steps:
        if not env.agents:
            env.reset()
        chunk = min(steps - done, env.config.swarm.max_steps - env.swarm.steps)
        actions = _actions(env, rng, chunk)
        for action in actions:
            if len(action) != len(env.agents):  # someone arrived: rebuild outside the clock
                break
            w0, c0 = time.perf_counter(), time.process_time()
            env.step(action)
            wall += time.perf_counter() - w0
            cpu += time.process_time() - c0
            done += 1
            if not env.agents:
                break
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1_000, 10_000])
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"# {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}, "
        "torch and BLAS on 1 thread"
    )
    print()
    print("| UAVs | preset | steps/s | steps per CPU-s | ms/step | blocks (steps/s) |")
    print("| ---: | --- | ---: | ---: | ---: | --- |")
    results = {}
    for n in args.sizes:
        preset = PRESETS.get(n)
        env = uav_swarm_v0.parallel_env(preset=preset, config=None if preset else {"num_uavs": n})
        rng = np.random.default_rng(0)
        env.reset(seed=0)
        time_block(env, max(3, STEPS_PER_BLOCK.get(n, 100) // 10), rng)  # warm-up
        steps = STEPS_PER_BLOCK.get(n, 100)
        rates, cpu_rates = [], []
        for _ in range(args.blocks):
            wall, cpu = time_block(env, steps, rng)
            rates.append(steps / wall)
            cpu_rates.append(steps / max(cpu, 1e-9))
        rate = statistics.median(rates)
        results[n] = rate
        print(
            f"| {n:,} | {preset or 'custom'} | {rate:.0f} | {statistics.median(cpu_rates):.0f} "
            f"| {1e3 / rate:.2f} | {', '.join(f'{r:.0f}' for r in rates)} |"
        )
    if 1_000 in results:
        verdict = "meets" if results[1_000] >= TARGET_STEPS_PER_S_1K else "misses"
        print(
            f"\n1,000 UAVs: {results[1_000]:.0f} steps/s, {verdict} the "
            f"{TARGET_STEPS_PER_S_1K:.0f} steps/s target"
        )
    if args.profile:
        env = uav_swarm_v0.parallel_env(preset="swarm-1k")
        env.reset(seed=0)
        rng = np.random.default_rng(1)
        profiler = cProfile.Profile()
        profiler.enable()
        time_block(env, 300, rng)
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
        print(out.getvalue())


if __name__ == "__main__":
    main()
