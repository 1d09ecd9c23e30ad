"""The Ray backend of the benchmark: agents travel as bytes, results equal the local backend's."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fl_gym.agents import evaluate_episodes, run_benchmark
from fl_gym.agents.agent_files import AgentFiles
from fl_gym.agents.bench import _job

REPO = Path(__file__).resolve().parents[1]
AGENT = "models/ClientSelection-v0_ppo"  # device-set policy
AGENT_MLP = "models/ClientSelection-v0_ppo_mlp"
ENV_ID = "fl_gym/ClientSelection-v0"

needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="Ray is not installed (extra fl-gym[ray])"
)


@pytest.fixture
def in_repo() -> Iterator[Path]:
    """Run the test from the repository root (agent paths relative to it), then go back."""
    before = os.getcwd()
    os.chdir(REPO)
    try:
        yield REPO
    finally:
        os.chdir(before)


@pytest.mark.parametrize("path", [AGENT, AGENT_MLP])
def test_agent_job_plays_from_bytes_where_the_path_does_not_exist(
    path: str, in_repo: Path, tmp_path: Path
) -> None:
    policy = f"ppo:{path}"
    files = AgentFiles.read(path)
    expected = evaluate_episodes(policy, ENV_ID, [3], max_episode_steps=4)
    os.chdir(tmp_path)  # a worker's folder: the relative path leads nowhere
    assert not Path(path + ".pt").exists()
    metrics, episodes = _job(ENV_ID, policy, 3, None, None, 4, files)
    assert (metrics, episodes) == expected
    assert metrics[0].policy == policy


def test_agent_files_missing_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no trained agent at .*nothing\.pt"):
        AgentFiles.read(str(tmp_path / "nothing"))


@pytest.mark.ray
@pytest.mark.slow
@needs_ray
def test_ray_backend_is_byte_identical_to_local_on_a_cluster_started_elsewhere(
    in_repo: Path, tmp_path: Path
) -> None:
    import ray

    # The cluster starts in another folder, so its workers resolve relative paths there (as on a
    # cluster started by `ray start` anywhere): only the bytes sent by the driver can work.
    cluster_dir = tmp_path / "cluster"
    cluster_dir.mkdir()
    os.chdir(cluster_dir)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        os.chdir(in_repo)

        @ray.remote(num_cpus=1)
        def worker_cwd() -> str:
            return os.getcwd()

        assert Path(ray.get(worker_cwd.remote())) == cluster_dir
        policies = ["round-robin", f"ppo:{AGENT}", f"ppo:{AGENT_MLP}.pt"]
        kwargs = {"seeds": "0-1", "max_episode_steps": 4}
        remote = run_benchmark([ENV_ID], policies, backend="ray", **kwargs)
    finally:
        ray.shutdown()
    local = run_benchmark([ENV_ID], policies, **kwargs)
    assert remote.metrics == local.metrics
    assert remote.episodes == local.episodes
    local_csv = local.write_csv(tmp_path / "local.csv").read_bytes()
    assert remote.write_csv(tmp_path / "remote.csv").read_bytes() == local_csv
    assert {m.policy for m in remote.metrics} == set(policies)


@pytest.mark.ray
@needs_ray
@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1:1", "nothing answers at 127.0.0.1:1"),
        ("nonsense", "an address looks like HOST:PORT"),
    ],
)
def test_connect_ray_names_the_address_in_one_line(address: str, reason: str) -> None:
    import ray

    from fl_gym.agents.bench import RayConnectionError, connect_ray

    assert not ray.is_initialized()
    with pytest.raises(RayConnectionError) as info:
        connect_ray(address)
    message = str(info.value)
    assert message.startswith(f"could not connect to a Ray cluster at {address}: {reason}")
    assert "\n" not in message
    assert not ray.is_initialized()


@pytest.mark.ray
@needs_ray
def test_connect_ray_auto_without_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray
    from ray._private import services

    from fl_gym.agents.bench import RayConnectionError, connect_ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if services.find_gcs_addresses():
        pytest.skip("a Ray instance runs on this machine; 'auto' would join it")
    with pytest.raises(RayConnectionError, match=r"^could not connect to a Ray cluster at auto: "):
        connect_ray("auto")
    assert not ray.is_initialized()


@pytest.mark.ray
@needs_ray
def test_cli_bench_reports_an_unreachable_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    from fl_gym.cli import main

    code = main(
        [
            "bench",
            "--envs",
            ENV_ID,
            "--policies",
            "round-robin",
            "--seeds",
            "0",
            "--backend",
            "ray",
            "--ray-address",
            "127.0.0.1:1",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("fl-gym: error: could not connect to a Ray cluster at 127.0.0.1:1: ")
    assert err.endswith("; start one with ray start --head or omit --ray-address")
    assert "\n" not in err and "Traceback" not in err
