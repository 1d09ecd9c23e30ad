"""The RLlib example trains on a registered env and, parameter-shared, on a multi-agent env."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="Ray is not installed (extra fl-gym[ray])"
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))


@pytest.mark.parametrize(
    ("env", "env_config"),
    [
        ("fl_gym/ClientSelection-v0", {"num_devices": 4}),
        ("uav_swarm_v0", {"num_uavs": 6, "max_steps": 10}),
        ("vehicular_v0", {"system.num_pairs": 3}),
    ],
)
def test_one_rllib_iteration(env: str, env_config: dict) -> None:
    import ray
    from rllib_ppo import build_config

    ray.init(include_dashboard=False, log_to_driver=False, num_cpus=1)
    try:
        algo = build_config(env, env_config, batch_size=64).build_algo()
        result = algo.train()
        algo.stop()
    finally:
        ray.shutdown()
    assert result["num_env_steps_sampled_lifetime"] >= 64
    assert math.isfinite(result["env_runners"].get("episode_return_mean", 0.0))
