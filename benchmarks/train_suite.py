"""Train the shipped agents of a benchmark suite: every task, two algorithms, several seeds.

For every task of the suite (:mod:`fl_gym.benchmark`) and every training seed, trains

* **PPO** with the device-set policy (shared per-device encoder, self-attention, per-device
  action heads) on the Gymnasium tasks, and with parameter sharing over the agents on the
  multi-agent ones;
* one **off-policy** algorithm where Stable-Baselines3 has one for the action space: SAC (with
  the device-set feature extractor) for a ``Box`` action, DQN for a ``Discrete`` one; none for
  ``MultiDiscrete`` (SB3 has no off-policy algorithm for it).

Agents go to ``models/<SUITE>/<task>/<algo>-<policy>-s<seed>.pt`` (+ ``.json`` with the whole
configuration, the steps that ran and the CPU seconds they took), which is where
``fl-gym bench --suite`` finds them; SAC agents keep only their actor's weights
(``save_agent(..., acting_only=True)``: they play exactly as trained in a fraction of the
file). Training seeds are 0, 1, 2 (the training environments are
seeded ``seed .. seed + n_envs - 1``), disjoint from the evaluation seeds (100 and up).

The budget per agent is fixed below (:data:`BUDGET`) so that the whole suite trains on a
2-core machine in about an hour; every agent's metadata records the CPU seconds it took.

Run: ``python benchmarks/train_suite.py --suite NAME [--tasks ...] [--algos ppo offpolicy]
[--seeds 0-2] [--jobs 2]``. Existing agent files are kept unless ``--overwrite``. The
environments run in fl_gym's native vector env where the id has one, else in SB3's
``DummyVecEnv``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402
from gymnasium import spaces  # noqa: E402

import fl_gym  # noqa: E402, F401
from fl_gym.agents.evaluation import parse_seeds  # noqa: E402
from fl_gym.benchmark import Task, get_suite, make_task_env  # noqa: E402

MULTI_AGENT = ("vehicular_v1", "uav_swarm_v0")

BUDGET: dict[str, dict[str, Any]] = {
    "ppo": {
        "timesteps": 20_480,
        "n_envs": 8,
        # 8 envs x 64 steps = 512 transitions per update, 40 updates.
        "algo_kwargs": {"n_steps": 64, "batch_size": 128, "n_epochs": 10, "ent_coef": 0.01},
    },
    "sac": {
        "timesteps": 12_288,
        "n_envs": 8,
        # One gradient step per 16 transitions after 1,024 random ones; actor and critics share
        # the device-set encoder (trained by the critics' loss), a third of the cost.
        "policy_kwargs": {"share_features_extractor": True},
        "algo_kwargs": {
            "learning_starts": 1024,
            "train_freq": 8,
            "gradient_steps": 4,
            "batch_size": 128,
            "buffer_size": 50_000,
        },
    },
    "dqn": {
        "timesteps": 12_288,
        "n_envs": 8,
        "algo_kwargs": {
            "learning_starts": 1024,
            "train_freq": 8,
            "gradient_steps": 4,
            "batch_size": 128,
            "buffer_size": 50_000,
            "exploration_fraction": 0.3,
            "target_update_interval": 500,
        },
    },
}
"""Steps, parallel environments and SB3 arguments per algorithm (SB3 defaults otherwise)."""

MULTI_AGENT_PPO = {
    # 2 copies x 20 vehicles x 128 steps = 5,120 agent-steps per update, 100 updates.
    "vehicular_v1": {
        "timesteps": 512_000,
        "n_envs": 2,
        "algo_kwargs": {"n_steps": 128, "batch_size": 512, "n_epochs": 10},
    },
    # 1 copy x 100 UAVs x 128 steps = 12,800 agent-steps per update, 80 updates.
    "uav_swarm_v0": {
        "timesteps": 1_024_000,
        "n_envs": 1,
        "algo_kwargs": {"n_steps": 128, "batch_size": 1280, "n_epochs": 10},
    },
}
"""PPO on the multi-agent tasks (one policy for every agent; timesteps count agent-steps)."""


def off_policy_for(task: Task) -> str | None:
    """SAC for a Box action, DQN for a Discrete one, ``None`` otherwise (and multi-agent)."""
    if task.env_id in MULTI_AGENT:
        return None
    env = make_task_env(task)
    space = env.action_space
    env.close()
    if isinstance(space, spaces.Box):
        return "sac"
    if isinstance(space, spaces.Discrete):
        return "dqn"
    return None


def _vectorization(task: Task, asked: str) -> str:
    """``asked``, except ``"native"`` for an id without a native vector env: ``"dummy"``."""
    if task.env_id in MULTI_AGENT:
        return "dummy"
    if asked == "native" and gym.spec(task.env_id).vector_entry_point is None:
        return "dummy"
    return asked


def agent_path(out: Path, task: Task, algo: str, policy: str, seed: int) -> Path:
    return out / task.name / f"{algo}-{policy}-s{seed}"


def train_one(
    suite: str, task_name: str, algo: str, seed: int, out: str, vectorization: str
) -> dict[str, Any]:
    from fl_gym.agents.agent_files import ACTING_PREFIXES, save_agent
    from fl_gym.agents.training import train

    (task,) = [t for t in get_suite(suite) if t.name == task_name]
    multi = task.env_id in MULTI_AGENT
    budget = MULTI_AGENT_PPO[task.env_id] if multi else BUDGET[algo]
    if task.config.get("num_devices", 10) > 20:  # the device-set networks cost ~K per step
        budget = {**budget, "timesteps": budget["timesteps"] * 5 // 8}
    policy = "mlp" if multi else "device-set"
    path = agent_path(Path(out), task, algo, policy, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    start_wall, start_cpu = time.time(), time.process_time()
    agent = train(
        task.env_id,
        algo,
        budget["timesteps"],
        seed=seed,
        n_envs=budget["n_envs"],
        config=dict(task.config),
        policy=policy,
        policy_kwargs=budget.get("policy_kwargs"),
        algo_kwargs=dict(budget["algo_kwargs"]),
        save_path=path,
        vectorization=_vectorization(task, vectorization),
        max_episode_steps=None if multi else task.max_episode_steps,
    )
    cpu_s = time.process_time() - start_cpu
    if algo in ACTING_PREFIXES:
        # Ship what plays: the actor (the critics are for training only, and most of the file).
        save_agent(agent, path, acting_only=True)
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["training_cpu_s"] = round(cpu_s, 1)
    meta["benchmark_task"] = task.name
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return {
        "task": task.name,
        "algo": algo,
        "seed": seed,
        "cpu_s": cpu_s,
        "wall_s": time.time() - start_wall,
        "path": str(path),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", required=True)
    parser.add_argument("--tasks", nargs="*", default=None)
    parser.add_argument("--algos", nargs="*", default=["ppo", "offpolicy"])
    parser.add_argument("--seeds", default="0-2")
    parser.add_argument("--out", default=None, help="default models/<SUITE>")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--vectorization", default="native")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    out = Path(args.out or f"models/{args.suite}")
    tasks = [t for t in get_suite(args.suite) if args.tasks is None or t.name in args.tasks]
    jobs: list[tuple[Task, str, int]] = []
    for task in tasks:
        algos = []
        for algo in args.algos:
            name = off_policy_for(task) if algo == "offpolicy" else algo
            if name is not None and (name == "ppo" or task.env_id not in MULTI_AGENT):
                algos.append(name)
        for algo in algos:
            policy = "mlp" if task.env_id in MULTI_AGENT else "device-set"
            for seed in parse_seeds(args.seeds):
                if agent_path(out, task, algo, policy, seed).with_suffix(".pt").exists() and (
                    not args.overwrite
                ):
                    continue
                jobs.append((task, algo, seed))
    print(f"{len(jobs)} agents to train", flush=True)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [
            pool.submit(train_one, args.suite, task.name, algo, seed, str(out), args.vectorization)
            for task, algo, seed in jobs
        ]
        for future in futures:
            row = future.result()
            print(
                f"{row['task']} {row['algo']} s{row['seed']}: {row['cpu_s']:.0f} CPU s "
                f"({row['wall_s']:.0f} s wall) -> {row['path']}",
                flush=True,
            )


if __name__ == "__main__":
    main()
