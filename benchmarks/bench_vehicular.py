"""Steps per second of the vehicular URLLC system and environments with 100 and 1,000 pairs.

Three levels, each on one core (torch, used by the federated rounds' FedAvg, and the BLAS
libraries on one thread): the simulator alone (:class:`fl_gym.sim.vehicular.system.VehicularSystem`,
one slot per step), the Gymnasium environment (``VehicularURLLCEnv``: slot, rewards, federated
tail round every 10 slots, observation) and the PettingZoo environment (``vehicular_v1``, the
same plus the per-agent dicts). Actions are drawn before the clock starts (uniform power levels
and blocks); after a warm-up, the median of a few timed blocks is reported, with steps per
CPU-second beside the wall-clock rate (the development machines are shared). Resource blocks
N = K / 10 (10 pairs per block): 10 blocks at 100 pairs, 100 at 1,000.

Run: ``python benchmarks/bench_vehicular.py [--pairs 100 1000] [--steps 300] [--blocks 3]``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fl_gym.envs import vehicular_v1  # noqa: E402
from fl_gym.envs.vehicular.env import VehicularURLLCEnv  # noqa: E402
from fl_gym.sim.vehicular.system import VehicularConfig, VehicularSystem  # noqa: E402


def _time_blocks(step: Callable[[int], None], steps: int, blocks: int) -> tuple[float, float]:
    """Median wall-clock and CPU steps per second over ``blocks`` blocks of ``steps`` steps."""
    wall, cpu = [], []
    for _ in range(blocks):
        w0, c0 = time.perf_counter(), time.process_time()
        for t in range(steps):
            step(t)
        wall.append(steps / (time.perf_counter() - w0))
        cpu.append(steps / max(time.process_time() - c0, 1e-9))
    return statistics.median(wall), statistics.median(cpu)


def bench(pairs: int, steps: int, blocks: int) -> dict[str, tuple[float, float]]:
    n = max(pairs // 10, 1)
    system_cfg = VehicularConfig(num_pairs=pairs, num_resource_blocks=n)
    rng = np.random.default_rng(0)
    levels = rng.integers(0, system_cfg.num_power_levels, (steps, pairs))
    chosen = rng.integers(0, n, (steps, pairs))
    out = {}

    system = VehicularSystem(system_cfg)
    system.reset(np.random.default_rng(1))
    sim_rng = np.random.default_rng(2)
    power = system_cfg.power_levels_w[levels]
    for t in range(20):
        system.step(power[t], chosen[t], sim_rng)
    out["simulator"] = _time_blocks(
        lambda t: system.step(power[t], chosen[t], sim_rng), steps, blocks
    )

    overrides = {"num_pairs": pairs, "num_resource_blocks": n, "max_steps": 10**6}
    env = VehicularURLLCEnv(config=overrides)
    env.reset(seed=0)
    actions = np.empty((steps, 2 * pairs), dtype=np.int64)
    actions[:, 0::2], actions[:, 1::2] = levels, chosen
    for t in range(20):
        env.step(actions[t])
    out["gymnasium env"] = _time_blocks(lambda t: env.step(actions[t]), steps, blocks)

    penv = vehicular_v1.parallel_env(config=overrides)
    penv.reset(seed=0)
    agents = list(penv.agents)
    dicts = [
        dict(zip(agents, np.stack([levels[t], chosen[t]], axis=1), strict=True))
        for t in range(steps)
    ]
    for t in range(20):
        penv.step(dicts[t])
    out["pettingzoo env"] = _time_blocks(lambda t: penv.step(dicts[t]), steps, blocks)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, nargs="*", default=[100, 1000])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--blocks", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}"
    )
    print("| pairs K | blocks N | level | steps/s | steps per CPU-s | ms/step |")
    print("| ---: | ---: | --- | ---: | ---: | ---: |")
    for pairs in args.pairs:
        steps = args.steps if pairs <= 100 else max(args.steps // 5, 20)
        for level, (wall, cpu) in bench(pairs, steps, args.blocks).items():
            print(
                f"| {pairs} | {max(pairs // 10, 1)} | {level} | {wall:.0f} | {cpu:.0f} | "
                f"{1e3 / wall:.2f} |"
            )


if __name__ == "__main__":
    main()
