"""The torch thread policy: fl_gym's work runs on one intra-op thread, the caller's count stays."""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import fl_gym
from fl_gym.envs import uav_swarm_v0, vehicular_v1
from fl_gym.envs.wireless_fl.env import WirelessFLEnv
from fl_gym.sim.threads import check_num_threads, torch_threads

CALLER_THREADS = 2


@pytest.fixture
def caller_threads() -> Any:
    """Run the test with the caller on two threads, and put back what was there before."""
    before = torch.get_num_threads()
    torch.set_num_threads(CALLER_THREADS)
    yield CALLER_THREADS
    torch.set_num_threads(before)


def test_scope_sets_and_restores(caller_threads: int) -> None:
    with torch_threads(1):
        assert torch.get_num_threads() == 1
        with torch_threads(3):
            assert torch.get_num_threads() == 3
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == caller_threads
    with torch_threads(None):
        assert torch.get_num_threads() == caller_threads
    with pytest.raises(RuntimeError), torch_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == caller_threads


@pytest.mark.parametrize("bad", [0, -1, 1.0, "1", True])
def test_bad_num_threads_named(bad: Any) -> None:
    with pytest.raises(ValueError, match="num_threads must be an integer >= 1 or None"):
        check_num_threads(bad)
    with pytest.raises(ValueError, match=repr(bad).replace("(", r"\(").replace(")", r"\)")):
        gym.make("fl_gym/ClientSelection-v0", num_threads=bad)


class _Probe(WirelessFLEnv):
    """Records torch's thread count inside the simulated round."""

    seen: list[int]

    def _play_round(self, plan: Any) -> Any:
        self.seen.append(torch.get_num_threads())
        return super()._play_round(plan)


@pytest.mark.parametrize(("num_threads", "inside"), [(1, 1), (3, 3), (None, CALLER_THREADS)])
def test_round_runs_on_the_env_threads(
    caller_threads: int, num_threads: int | None, inside: int
) -> None:
    env = _Probe(controls=("selection",), num_threads=num_threads)
    env.seen = []
    env.reset(seed=0)
    assert torch.get_num_threads() == caller_threads
    env.step(env.action_space.sample())
    assert env.seen == [inside]
    assert torch.get_num_threads() == caller_threads


@pytest.mark.parametrize("env_id", fl_gym.ENV_IDS)
def test_every_env_restores_the_caller_threads(caller_threads: int, env_id: str) -> None:
    env = gym.make(env_id, num_threads=1)
    assert env.unwrapped.num_threads == 1
    env.reset(seed=0)
    env.action_space.seed(0)
    env.step(env.action_space.sample())
    assert torch.get_num_threads() == caller_threads
    env.close()


@pytest.mark.parametrize("module", [vehicular_v1, uav_swarm_v0])
def test_parallel_envs_restore_the_caller_threads(caller_threads: int, module: Any) -> None:
    env = module.parallel_env(num_threads=1)
    assert env.num_threads == 1
    env.reset(seed=0)
    env.step({a: env.action_space(a).sample() for a in env.agents})
    assert torch.get_num_threads() == caller_threads


def test_vector_env_steps_on_one_thread(caller_threads: int) -> None:
    envs = gym.make_vec(
        "fl_gym/ClientSelection-v0", num_envs=2, vectorization_mode="vector_entry_point"
    )
    envs.reset(seed=0)
    envs.step(np.ones((2, 10), dtype=np.float32))
    assert envs.unwrapped.num_threads == 1
    assert torch.get_num_threads() == caller_threads
    envs.close()


def test_train_updates_on_one_thread_and_restores(
    caller_threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stable_baselines3 import PPO

    from fl_gym.agents import train

    seen: list[int] = []
    update = PPO.train

    def recorded(self: PPO) -> None:
        seen.append(torch.get_num_threads())
        update(self)

    monkeypatch.setattr(PPO, "train", recorded)
    kwargs: dict[str, Any] = {
        "algo_kwargs": {"n_steps": 8, "batch_size": 8, "n_epochs": 1},
        "config": {"max_rounds": 4},
    }
    train("fl_gym/AggregationFrequency-v0", "ppo", 16, **kwargs)
    assert seen == [1, 1]
    assert torch.get_num_threads() == caller_threads
    train("fl_gym/AggregationFrequency-v0", "ppo", 8, num_threads=None, **kwargs)
    assert seen == [1, 1, caller_threads]


def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_single_blas_thread_scopes_and_restores() -> None:
    from threadpoolctl import threadpool_limits

    from fl_gym.sim.threads import single_blas_thread

    with threadpool_limits(3, user_api="blas"):
        with single_blas_thread():
            assert set(_blas_threads()) == {1}
        assert set(_blas_threads()) == {3}


def test_single_blas_thread_nested_and_concurrent_scopes() -> None:
    """Nested scopes keep the pin until the outer one ends. Scopes on two Python threads take
    turns: the main thread's scope, entered while a worker's is inside, waits for it and then
    runs pinned itself (a scope that relied on the worker's limit would run on the caller's
    count, since OpenBLAS ignores a count set from a worker once the main thread has set one),
    and the caller's count is back after both."""
    import threading

    from threadpoolctl import threadpool_limits

    from fl_gym.sim.threads import single_blas_thread

    with threadpool_limits(3, user_api="blas"):
        with single_blas_thread():
            with single_blas_thread():
                assert set(_blas_threads()) == {1}
            assert set(_blas_threads()) == {1}
        assert set(_blas_threads()) == {3}

        inside, left = threading.Event(), threading.Event()

        def worker() -> None:
            with single_blas_thread():
                inside.set()
                time.sleep(0.2)
            left.set()

        thread = threading.Thread(target=worker)
        thread.start()
        assert inside.wait(10)
        with single_blas_thread():
            assert left.is_set()  # it waited for the worker's scope to end
            assert set(_blas_threads()) == {1}
        thread.join(10)
        assert set(_blas_threads()) == {3}


def test_beamformer_design_independent_of_blas_threads() -> None:
    """The SLSQP refinement gave other bits on other OpenBLAS thread counts (measured: 8 of 24
    designs of an OverTheAirFL-v0 episode differed between 1 and 2 threads), so the same seed
    gave another trajectory under ``OMP_NUM_THREADS=1`` or on a machine with more cores."""
    from threadpoolctl import threadpool_limits

    from fl_gym.sim.radio.over_the_air import receive_beamformer

    designs: dict[int, list[np.ndarray]] = {}
    for threads in (1, 2, 4, 8):
        draws = np.random.default_rng(7)
        with threadpool_limits(threads, user_api="blas"):
            designs[threads] = []
            for _ in range(12):
                k, n = int(draws.integers(3, 11)), 4
                h = draws.normal(size=(k, n)) + 1j * draws.normal(size=(k, n))
                h *= 10.0 ** draws.uniform(-6.0, -4.0, size=(k, 1))
                design = receive_beamformer(h, draws.uniform(10.0, 200.0, size=k))
                designs[threads].append(
                    np.concatenate([design.beamformer.view(np.float64), [design.min_gain]])
                )
    for threads in (2, 4, 8):
        for one, other in zip(designs[1], designs[threads], strict=True):
            assert np.array_equal(one, other), f"{threads} BLAS threads changed the design"
