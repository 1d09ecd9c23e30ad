"""Golden trajectories: every environment's observations, rewards, infos and final model, recorded.

Each registered Gymnasium environment and both PettingZoo environments are played from two seeds
with a fixed sequence of actions drawn from a seeded action space (so the actions do not depend
on the environment's own randomness), across one episode end and reset. Everything numeric that
comes back is kept: observations, rewards, terminated / truncated flags, every numeric entry of
``info`` (nested dicts flattened to ``a.b`` keys), and for the FL environments the global model's
parameters at the end. ``tests/test_golden.py`` replays the same calls and compares bit for bit:
a change of dynamics must bump the environment's version and re-record (``python
tests/golden/trajectories.py [ID ...]``), a restructuring must leave these files untouched.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import fl_gym
from fl_gym._platform import cpu_model
from fl_gym.envs import uav_swarm_v0, vehicular_v1

DIRECTORY = Path(__file__).resolve().parent
SEEDS = (0, 1)
STEPS = 12
MAX_EPISODE_STEPS = 7
"""Episodes are truncated here, so every recording crosses one reset."""
PARALLEL = {
    # Frequent tail rounds and a low q0, so that the federated tail estimate moves within STEPS.
    "vehicular_v1": (
        vehicular_v1,
        {
            "config": {
                "num_pairs": 6,
                "num_resource_blocks": 3,
                "fl_interval_slots": 3,
                "system.queue_threshold_bits": 1600.0,
            }
        },
    ),
    "uav_swarm_v0": (uav_swarm_v0, {"config": {"num_uavs": 12}}),
}


def file_for(name: str, kernel: str | None = None) -> Path:
    """The recording of ``name``, or its variant for the OpenBLAS ``kernel`` family."""
    stem = name.replace("/", "_")
    return DIRECTORY / (f"{stem}.npz" if kernel is None else f"{stem}@{kernel}.npz")


def variants(name: str) -> dict[str, Path]:
    """The kernel variants recorded for ``name``: OpenBLAS kernel family -> file."""
    stem = name.replace("/", "_")
    return {p.stem.split("@", 1)[1]: p for p in sorted(DIRECTORY.glob(f"{stem}@*.npz"))}


_SAME_KERNELS = {"Zen": "Haswell"}


def blas_kernel() -> str:
    """The OpenBLAS kernel family numpy and scipy run on (e.g. ``Haswell``, ``SkylakeX``).

    The over-the-air beamformer's SLSQP refinement runs on it, and its iterates, so the
    trajectory, follow the kernel's rounding: an AMD Zen machine (Haswell kernels) and an
    Intel Xeon with AVX-512 (SkylakeX kernels) part after a few rounds. Where an environment is
    that sensitive, a variant recorded under the other family (``OPENBLAS_CORETYPE=Haswell``)
    sits beside the main file.
    """
    from threadpoolctl import threadpool_info

    found = [
        str(lib.get("architecture"))
        for lib in threadpool_info()
        if lib["internal_api"] == "openblas"
    ]
    # OpenBLAS's Zen target runs the Haswell kernels. Measured with the code before the beamformer
    # ran on one BLAS thread: an AMD EPYC's recording and an Intel Xeon's replay agreed to 1e-5
    # under OPENBLAS_CORETYPE=Haswell, and were 4e-4 apart under its own SkylakeX kernels.
    kinds = sorted({_SAME_KERNELS.get(kind, kind) for kind in found})
    return "+".join(kinds) or "none"


def machine() -> str:
    """What the bits depend on besides the code: CPU, torch and numpy builds."""
    python = sys.version.split()[0]
    return f"{cpu_model()} | torch {torch.__version__} | numpy {np.__version__} | python {python}"


def _numeric(prefix: str, value: Any) -> Iterator[tuple[str, np.ndarray]]:
    if isinstance(value, dict):
        for key in sorted(value, key=str):
            yield from _numeric(f"{prefix}.{key}", value[key])
        return
    if isinstance(value, (list, tuple)) and not value:
        yield prefix, np.zeros(0)
        return
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        return
    if arr.dtype.kind in "biuf":
        yield prefix, arr


def _store(out: dict[str, np.ndarray], prefix: str, value: Any) -> None:
    for key, arr in _numeric(prefix, value):
        out[key] = arr


def record_gymnasium(env_id: str) -> dict[str, np.ndarray]:
    """One env id's trajectories: ``{"s{seed}/t{step}/...": array}``."""
    out: dict[str, np.ndarray] = {}
    for seed in SEEDS:
        env = gym.make(env_id, max_episode_steps=MAX_EPISODE_STEPS)
        space = env.action_space
        space.seed(1000 + seed)
        obs, info = env.reset(seed=seed)
        _store(out, f"s{seed}/reset/obs", obs)
        _store(out, f"s{seed}/reset/info", info)
        for t in range(STEPS):
            action = space.sample()
            obs, reward, terminated, truncated, info = env.step(action)
            key = f"s{seed}/t{t:02d}"
            out[f"{key}/action"] = np.asarray(action)
            _store(out, f"{key}/obs", obs)
            out[f"{key}/reward"] = np.asarray(reward, dtype=np.float64)
            out[f"{key}/done"] = np.array([terminated, truncated])
            _store(out, f"{key}/info", info)
            if terminated or truncated:
                obs, info = env.reset()
                _store(out, f"{key}/reset/obs", obs)
        federation = getattr(env.unwrapped, "federation", None)
        if federation is not None:
            out[f"s{seed}/final_params"] = federation.params.detach().cpu().numpy().copy()
        env.close()
    return out


def record_parallel(name: str) -> dict[str, np.ndarray]:
    """One PettingZoo env's trajectories (agents in ``possible_agents`` order)."""
    module, kwargs = PARALLEL[name]
    out: dict[str, np.ndarray] = {}
    for seed in SEEDS:
        env = module.parallel_env(**kwargs)
        agents = list(env.possible_agents)
        space = env.action_space(agents[0])
        space.seed(1000 + seed)
        obs, _ = env.reset(seed=seed)
        out[f"s{seed}/reset/obs"] = np.stack([obs[a] for a in agents])
        for t in range(STEPS):
            if not env.agents:
                obs, _ = env.reset()
                out[f"s{seed}/t{t:02d}/reset/obs"] = np.stack([obs[a] for a in agents])
            actions = {a: space.sample() for a in env.agents}
            obs, rewards, terms, truncs, infos = env.step(actions)
            key = f"s{seed}/t{t:02d}"
            live = [a for a in agents if a in obs]
            out[f"{key}/agents"] = np.array([agents.index(a) for a in live])
            out[f"{key}/obs"] = np.stack([obs[a] for a in live])
            out[f"{key}/reward"] = np.array([rewards[a] for a in live], dtype=np.float64)
            out[f"{key}/done"] = np.array([[terms[a], truncs[a]] for a in live])
            for a in live[:2]:
                _store(out, f"{key}/info/{a}", infos[a])
            out[f"{key}/state"] = np.asarray(env.state())
        env.close()
    return out


def names() -> list[str]:
    return [*fl_gym.ENV_IDS, *PARALLEL]


def record(name: str) -> dict[str, np.ndarray]:
    return record_parallel(name) if name in PARALLEL else record_gymnasium(name)


def main(args: list[str]) -> None:
    """Record the named environments (``python tests/golden/trajectories.py fl_gym/X-v0``), or
    every one when none is named; with ``--variant``, as the variant for this process's
    OpenBLAS kernel family (e.g. under ``OPENBLAS_CORETYPE=Haswell``)."""
    variant = "--variant" in args
    selected = [a for a in args if a != "--variant"]
    unknown = sorted(set(selected) - set(names()))
    if unknown:
        raise SystemExit(f"unknown environments {unknown}; known: {names()}")
    kernel = blas_kernel()
    for name in selected or names():
        data = record(name)
        path = file_for(name, kernel if variant else None)
        np.savez_compressed(
            path, __machine__=np.array(machine()), __blas__=np.array(kernel), **data
        )
        print(f"{path.name}: {len(data)} arrays")


if __name__ == "__main__":
    main(sys.argv[1:])
