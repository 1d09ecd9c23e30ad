"""A new transport is one class in one file: it runs in the single environment and in the native
vector environment without a change to either, through public names only."""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.wrappers import TimeLimit

from fl_gym.envs.wireless_fl.env import WirelessFLEnv
from fl_gym.envs.wireless_fl.vector import WirelessFLVectorEnv
from fl_gym.sim.learning.federation import Federation
from fl_gym.sim.plan import RoundPlan
from fl_gym.sim.rounds import Delivery, PendingUpdates, RoundStart, Transport, start_round

JOULES_PER_BIT = 1e-9


class LossyUplink(Transport):
    """Every selected device uploads; each update arrives with probability ``arrival``, drawn
    from the round's generator; transmitting costs ``JOULES_PER_BIT`` per bit sent."""

    name = "lossy"
    compresses = True

    def __init__(self, arrival: float) -> None:
        self.arrival = arrival

    def start(
        self, fed: Federation, plan: RoundPlan, rng: np.random.Generator, allow_empty: bool
    ) -> RoundStart:
        fed.check_plan(plan, allow_empty, subchannels=False)
        return start_round(fed, plan, rng)

    def deliver(
        self,
        feds: Sequence[Federation],
        starts: Sequence[RoundStart],
        pendings: Sequence[PendingUpdates],
        rngs: Sequence[np.random.Generator],
    ) -> list[Delivery]:
        out = []
        for fed, pending, rng in zip(feds, pendings, rngs, strict=True):
            k, ids = fed.num_clients, pending.client_ids
            arrived = rng.random(ids.shape[0]) < self.arrival
            transmit = np.zeros(k)
            transmit[ids] = pending.bits * JOULES_PER_BIT
            lost = np.zeros(k, dtype=bool)
            lost[ids[~arrived]] = True
            out.append(
                Delivery(
                    arrived=arrived,
                    energy_compute_j=np.zeros(k),
                    energy_transmit_j=transmit,
                    latency_s=np.zeros(k),
                    packet_error=np.full(k, 1.0 - self.arrival),
                    straggler=np.zeros(k, dtype=bool),
                    packet_lost=lost,
                    round_time_s=0.01,
                    channel_uses=float(ids.shape[0]),
                )
            )
        return out


class LossyEnv(WirelessFLEnv):
    arrival = 0.7

    def make_transport(self) -> Transport:
        return LossyUplink(self.arrival)


class LossyVectorEnv(WirelessFLVectorEnv):
    env_class = LossyEnv


def _equal(a: object, b: object) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)  # type: ignore[union-attr]
    return np.array_equal(a, b)  # type: ignore[arg-type]


def test_the_native_vector_env_runs_a_new_transport_as_sync_does() -> None:
    native = LossyVectorEnv(num_envs=3, max_episode_steps=4)
    assert isinstance(native.pipeline.transport, LossyUplink)
    sync = gym.vector.SyncVectorEnv([lambda: TimeLimit(LossyEnv(), 4) for _ in range(3)])
    sync.action_space.seed(5)
    assert _equal(native.reset(seed=11)[0], sync.reset(seed=11)[0])
    lost = 0
    for _ in range(10):  # two autoresets per environment
        action = sync.action_space.sample()
        ours, theirs = native.step(action), sync.step(action)
        for mine, other in zip(ours[:4], theirs[:4], strict=True):
            assert _equal(mine, other)
        reports = [env._last_report for env in native.envs]
        lost += sum(int(r.packet_lost.sum()) for r in reports if r is not None)
    assert lost > 0  # the transport's losses were exercised
    native.close()
    sync.close()


def test_the_transport_decides_what_arrives_and_what_it_costs() -> None:
    env = LossyEnv()
    env.reset(seed=0)
    fed = env.federation
    assert fed is not None
    selected = np.ones(env.num_devices, dtype=bool)
    start = fed.params.clone()
    env.arrival = 0.0
    env.pipeline.transport = LossyUplink(0.0)
    report = env.pipeline.run([fed], [fed.plan(selected=selected)], [env.np_random])[0]
    # Nothing arrived: the model did not move, and each device paid for the bits it sent.
    assert not report.delivered.any() and report.packet_lost.all()
    assert np.array_equal(fed.params.numpy(), start.numpy())
    np.testing.assert_array_equal(report.energy_transmit_j, report.bits_up * JOULES_PER_BIT)
    env.pipeline.transport = LossyUplink(1.0)
    report = env.pipeline.run([fed], [fed.plan(selected=selected)], [env.np_random])[0]
    assert report.delivered.all() and not np.array_equal(fed.params.numpy(), start.numpy())


def test_start_round_seeds_the_round_from_the_given_generator() -> None:
    env = LossyEnv()
    env.reset(seed=0)
    fed = env.federation
    assert fed is not None
    plan = fed.plan(selected=[1, 3], local_steps=2)
    a = start_round(fed, plan, np.random.default_rng(4))
    b = start_round(fed, plan, np.random.default_rng(4))
    assert a.client_ids.tolist() == [1, 3] and a.local_steps.tolist() == [2, 2]
    assert a.generator.initial_seed() == b.generator.initial_seed()
    with pytest.raises(TypeError, match=r"numpy\.random\.Generator"):
        start_round(fed, plan, 4)  # type: ignore[arg-type]
