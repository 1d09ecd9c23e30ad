"""The default scenario's trade-offs are real: energy is a binding constraint."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import fl_gym  # noqa: F401  (registers the environments)


@pytest.mark.parametrize("seed", [0, 1])
def test_full_participation_at_full_power_drains_the_batteries_within_an_episode(
    seed: int,
) -> None:
    # Everyone asks to upload every round (the M admitted go), at p_max by default; the accuracy
    # target is out of reach so that only the batteries can end the episode.
    env = gym.make("fl_gym/ClientSelection-v0", config={"target_accuracy": 1.0})
    env.reset(seed=seed)
    raw = env.unwrapped
    k = raw.num_devices
    rounds, terminated, truncated = 0, False, False
    while not (terminated or truncated):
        _, _, terminated, truncated, info = env.step(np.ones(k, dtype=np.float32))
        rounds += 1
    assert terminated and not truncated, "the time limit came before the batteries ran out"
    assert rounds < raw.config.max_rounds
    assert not raw.federation.cell.available.any()
    # Everything the batteries held was spent (up to the per-device empty floor).
    capacity = raw.federation.cell.battery_capacity_j.sum()
    assert info["energy_spent_j"] == pytest.approx(capacity, rel=1e-3)


def test_fewer_devices_per_round_last_longer() -> None:
    """Selecting 2 devices a round spends less per round than selecting M: the budget binds."""
    energy = {}
    for count in (2, 5):
        env = gym.make("fl_gym/ClientSelection-v0", config={"target_accuracy": 1.0})
        env.reset(seed=0)
        raw = env.unwrapped
        k, spent = raw.num_devices, []
        for r in range(10):
            scores = -np.ones(k, dtype=np.float32)
            scores[(np.arange(count) + r * count) % k] = 1.0
            *_, info = env.step(scores)
            spent.append(info["energy_j"])
        energy[count] = np.mean(spent)
    assert energy[2] < 0.6 * energy[5]
