"""The RLlib example trains on a registered env and, parameter-shared, on a multi-agent env."""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(
        importlib.util.find_spec("ray") is None, reason="Ray is not installed (extra fl-gym[ray])"
    ),
]

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env", "env_config"),
    [
        ("fl_gym/ClientSelection-v0", {"num_devices": 4}),
        ("uav_swarm_v0", {"num_uavs": 6, "max_steps": 10}),
        ("vehicular_v1", {"system.num_pairs": 3}),
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


@pytest.mark.slow
def test_sampling_is_spread_over_env_runners() -> None:
    import ray
    from rllib_ppo import build_config

    ray.init(include_dashboard=False, log_to_driver=False, num_cpus=3)
    try:
        algo = build_config("fl_gym/ClientSelection-v0", {"num_devices": 4}, 64, 2).build_algo()
        runners = algo.env_runner_group
        assert runners.num_healthy_remote_workers() == 2
        result = algo.train()
        # Each remote runner sampled in its own process (not the driver's).
        pids = runners.foreach_env_runner(lambda runner: os.getpid(), local_env_runner=False)
        algo.stop()
    finally:
        ray.shutdown()
    assert len(set(pids)) == 2 and os.getpid() not in pids
    assert result["num_env_steps_sampled_lifetime"] >= 64


@pytest.mark.parametrize(("cpus", "runners"), [(0, 0), (1, 0), (2, 0), (3, 2), (16, 15), (3.5, 2)])
def test_default_env_runners_leave_one_cpu_for_the_learner(cpus: float, runners: int) -> None:
    from rllib_ppo import default_env_runners

    assert default_env_runners({"CPU": cpus}) == runners
    assert default_env_runners({}) == 0


def test_example_reports_an_unreachable_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    import ray
    from rllib_ppo import main

    with pytest.raises(SystemExit) as info:
        main(["fl_gym/ClientSelection-v0", "--address", "127.0.0.1:1"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2
    assert err.startswith(
        "rllib_ppo.py: error: could not connect to a Ray cluster at 127.0.0.1:1: "
    )
    assert err.endswith("; start one with ray start --head or omit --address")
    assert "\n" not in err
    assert not ray.is_initialized()


@pytest.mark.slow
def test_example_refuses_more_env_runners_than_the_cluster_has(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import ray
    from rllib_ppo import main

    with pytest.raises(SystemExit) as info:
        main(["fl_gym/ClientSelection-v0", "--num-cpus", "2", "--env-runners", "2"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--env-runners 2 needs 3 CPUs" in err and "the cluster has 2; use at most 1" in err
    assert not ray.is_initialized()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--env-runners", "-1"], "argument --env-runners: expected an integer >= 0, got '-1'"),
        (["--iterations", "0"], "argument --iterations: expected an integer >= 1, got '0'"),
        (["--address", "auto", "--num-cpus", "2"], "--num-cpus sizes a local Ray instance"),
    ],
)
def test_example_rejects_bad_options(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from rllib_ppo import main

    with pytest.raises(SystemExit) as info:
        main(["fl_gym/ClientSelection-v0", *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
