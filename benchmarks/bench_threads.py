"""The torch thread policy: the README's SB3 snippet and a random policy, quiet and under load.

Three settings, measured in one process, one after the other, on the same seeds:

* ``torch default everywhere``: the environment built with ``num_threads=None`` and torch left
  at its default intra-op count (one per core): what library users got before the thread
  policy (the CLI already set one thread).
* ``env scoped (new default)``: the environment as ``gym.make`` builds it now (its rounds on one
  thread, the caller's count restored after each step); SB3's updates at torch's default.
* ``all on one thread``: as above with the caller on one thread too (what
  :func:`fl_gym.agents.train` does by default).

"Under load" runs as many busy-looping processes as there are cores beside the measurement (a
shared machine, or other env workers); they are stopped when the measurement ends. Each
measurement runs until its step count or its time budget is reached, whichever comes first, and
reports steps per second of wall-clock time.

Run: ``python benchmarks/bench_threads.py [--budget-s 20] [--steps 512]``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import gymnasium as gym
import torch

import fl_gym  # noqa: F401  (registers the environments)
from fl_gym.sim.threads import torch_threads

ENV_ID = "fl_gym/ClientSelection-v0"
ENV_KWARGS: dict[str, Any] = {"preset": "noniid-digits", "config": {"deadline_s": 0.5}}
SETTINGS: dict[str, tuple[int | None, int | None]] = {
    # name: (env num_threads, caller's scope)
    "torch default everywhere": (None, None),
    "env scoped (new default)": (1, None),
    "all on one thread": (1, 1),
}


def _spin(stop: Any) -> None:
    x = 0
    while not stop.is_set():
        x += 1


@contextmanager
def load(processes: int) -> Iterator[None]:
    """``processes`` busy-looping processes for the duration of the block."""
    stop = mp.Event()
    workers = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(processes)]
    for w in workers:
        w.start()
    try:
        yield
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=5)
            if w.is_alive():
                w.terminate()


def random_policy_rate(env_threads: int | None, steps: int, budget_s: float) -> float:
    """Steps per second of a random policy (resets included), until steps or budget."""
    env = gym.make(ENV_ID, num_threads=env_threads, **ENV_KWARGS)
    env.action_space.seed(0)
    env.reset(seed=0)
    start, done = time.perf_counter(), 0
    while done < steps and time.perf_counter() - start < budget_s:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        done += 1
        if terminated or truncated:
            env.reset()
    rate = done / (time.perf_counter() - start)
    env.close()
    return rate


def readme_snippet_rate(env_threads: int | None, steps: int, budget_s: float) -> float:
    """Training frames per second of the README's PPO snippet (n_steps 64 so that an update
    falls inside even a short budget), until steps or budget."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback

    class Budget(BaseCallback):
        def _on_training_start(self) -> None:
            self.start = time.perf_counter()

        def _on_step(self) -> bool:
            return time.perf_counter() - self.start < budget_s

    env = gym.make(ENV_ID, num_threads=env_threads, **ENV_KWARGS)
    model = PPO("MultiInputPolicy", env, n_steps=64, batch_size=64, seed=0, verbose=0)
    callback = Budget()
    model.learn(steps, callback=callback)
    rate = model.num_timesteps / (time.perf_counter() - callback.start)
    env.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=512)
    parser.add_argument("--budget-s", type=float, default=20.0)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {cores} cores, Python "
        f"{platform.python_version()}, torch {torch.__version__}, torch default threads "
        f"{torch.get_num_threads()}"
    )
    workloads: dict[str, Callable[[int | None, int, float], float]] = {
        "random policy steps/s": random_policy_rate,
        "README PPO snippet fps": readme_snippet_rate,
    }
    print("| machine state | workload | " + " | ".join(SETTINGS) + " | best / default |")
    print("| --- | --- | " + " | ".join("---:" for _ in SETTINGS) + " | ---: |")
    for state, processes in (("quiet", 0), (f"loaded ({cores} busy processes)", cores)):
        for name, workload in workloads.items():
            rates = []
            with load(processes):
                for env_threads, caller in SETTINGS.values():
                    with torch_threads(caller):
                        rates.append(workload(env_threads, args.steps, args.budget_s))
            cells = " | ".join(f"{r:.1f}" for r in rates)
            print(f"| {state} | {name} | {cells} | {max(rates) / rates[0]:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
