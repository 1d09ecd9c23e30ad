"""The joint power and resource-block allocation of Samarakoon et al. (``vehicular-lyapunov``)
and its average-queue baseline: virtual queues, per-slot optimiser, clustering and blocks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import fl_gym  # noqa: F401  (registers the environments)
from fl_gym.baselines import make_policy
from fl_gym.baselines.vehicular import (
    AverageQueueJPRAPolicy,
    LyapunovJPRAPolicy,
    allocate_blocks,
    best_discrete_allocation,
    estimate_coupling,
    lindley_update,
    spectral_clusters,
)
from fl_gym.envs.vehicular.env import VehicularURLLCEnv


def test_lindley_update_matches_the_closed_form() -> None:
    rng = np.random.default_rng(0)
    increments = rng.normal(-0.1, 1.0, 200)
    z = np.zeros(())
    for n, y in enumerate(increments, start=1):
        z = lindley_update(z, np.asarray(y))
        suffix_sums = np.cumsum(increments[:n][::-1])
        assert float(z) == pytest.approx(max(0.0, suffix_sums.max()), abs=1e-9)


def test_virtual_queues_grow_by_the_stated_increments() -> None:
    env = VehicularURLLCEnv()
    obs, _ = env.reset(seed=0)
    cfg = env.config.system
    policy = LyapunovJPRAPolicy(env)
    g1, g2 = policy.tail_targets(obs["server"])
    sigma = float(obs["server"][0]) * cfg.tail_scale_target_bits
    assert g1 == pytest.approx(sigma / (1 - float(obs["server"][1])) / cfg.queue_threshold_bits)
    queue = np.linspace(0.0, 2.0, cfg.num_pairs)  # in units of q0
    z = np.zeros((3, cfg.num_pairs))
    for _ in range(7):
        z = policy.update_virtual_queues(z, queue, (g1, g2))
    x = np.maximum(queue - 1, 0)
    over = queue > 1
    eps = cfg.tail_probability_target
    np.testing.assert_allclose(z[0], np.where(over, 7 * (1 - eps), 0.0))
    np.testing.assert_allclose(z[1], np.where(over, 7 * np.maximum(x / g1 - 1, 0), 0.0))
    np.testing.assert_allclose(z[2], np.where(over, 7 * np.maximum(x**2 / g2 - 1, 0), 0.0))
    # The backlog weight: q (1 + 2 Z0) + 1{q > 1} (Z1 / g1 + 2 x Z2 / g2); the baseline's is q.
    beta = policy.backlog_weight(z, queue, (g1, g2))
    np.testing.assert_allclose(
        beta, queue * (1 + 2 * z[0]) + over * (z[1] / g1 + 2 * x * z[2] / g2)
    )
    np.testing.assert_allclose(
        AverageQueueJPRAPolicy(env).backlog_weight(z, queue, (g1, g2)), queue
    )


def _objective(weight, cinr, fraction, v, scale, level, block):  # one pair's bound term
    return v * fraction[level] - weight * scale * np.log2(1 + fraction[level] * cinr[block])


def test_per_slot_optimiser_equals_brute_force_over_joint_actions() -> None:
    rng = np.random.default_rng(3)
    fraction = np.array([0.0, 0.1, 0.35, 1.0])
    for _ in range(20):
        k, n = 3, 3
        weight = rng.exponential(1.0, k)
        cinr = rng.exponential(50.0, (k, n))
        allowed = rng.random((k, n)) < 0.6
        allowed[np.arange(k), rng.integers(0, n, k)] = True
        v, scale = 0.1, 0.0225
        levels, blocks = best_discrete_allocation(weight, cinr, allowed, fraction, v, scale)
        best, best_cost = None, np.inf
        choices = [(lv, b) for lv in range(len(fraction)) for b in range(n)]
        for joint in itertools.product(choices, repeat=k):
            if not all(allowed[j, b] for j, (_, b) in enumerate(joint)):
                continue
            cost = sum(
                _objective(weight[j], cinr[j], fraction, v, scale, lv, b)
                for j, (lv, b) in enumerate(joint)
            )
            if cost < best_cost - 1e-12:
                best, best_cost = joint, cost
        assert best is not None
        got = sum(
            _objective(weight[j], cinr[j], fraction, v, scale, levels[j], blocks[j])
            for j in range(k)
        )
        assert got == pytest.approx(best_cost, abs=1e-12)
        assert all(allowed[np.arange(k), blocks])


def test_fine_power_grid_gives_the_water_filling_level() -> None:
    # On one block the paper's water-filling is p / p_max = [beta s / (V ln 2) - 1 / cinr]
    # clipped to [0, 1]; a fine grid of levels must land on it.
    fraction = np.linspace(0.0, 1.0, 20001)
    weight = np.array([0.5, 2.0, 8.0, 0.01])
    cinr = np.array([[40.0], [3.0], [900.0], [10.0]])
    v, scale = 0.1, 0.0225
    levels, _ = best_discrete_allocation(weight, cinr, np.ones((4, 1), bool), fraction, v, scale)
    expected = np.clip(weight * scale / (v * np.log(2)) - 1 / cinr[:, 0], 0, 1)
    np.testing.assert_allclose(fraction[levels], expected, atol=1e-4)
    assert expected[0] > 0 and expected[1] < 1 and expected[2] == 1 and expected[3] == 0


def test_block_allocation_is_orthogonal_in_a_cluster_with_queue_shares() -> None:
    rng = np.random.default_rng(0)
    labels = np.array([0, 0, 0, 1, 1, 2])
    queue = np.array([0.0, 0.0, 8.0, 1.0, 1.0, 0.0])
    table = allocate_blocks(labels, queue, 10, rng, queue_offset=1.0)
    for cluster in np.unique(labels):
        np.testing.assert_array_equal(table[labels == cluster].sum(axis=0), np.ones(10))
    # Cluster 0: 1 block each, the 7 left in proportion to (1, 1, 9) by largest remainders.
    np.testing.assert_array_equal(table[:3].sum(axis=1), [2, 1, 7])
    np.testing.assert_array_equal(table[3:5].sum(axis=1), [5, 5])
    assert table[5].sum() == 10
    # More members than blocks: one block each, blocks reused at most twice.
    big = allocate_blocks(np.zeros(5, dtype=np.int64), np.zeros(5), 3, rng)
    np.testing.assert_array_equal(big.sum(axis=1), np.ones(5))
    assert big.sum(axis=0).max() == 2


def test_coupling_estimate_recovers_cross_gains() -> None:
    rng = np.random.default_rng(1)
    k, n = 6, 3
    gains = rng.exponential(1.0, (k, k))
    np.fill_diagonal(gains, 0.0)
    gram, cross = np.zeros((k, k)), np.zeros((k, k))
    for _ in range(3000):
        x = np.zeros((n, k))
        x[rng.integers(0, n, k), np.arange(k)] = rng.choice([0.25, 0.5, 1.0], k)
        faded = gains * rng.exponential(1.0, (k, k))  # Rayleigh fading on every link
        y = x @ faded
        gram += x.T @ x
        cross += x.T @ y
    np.testing.assert_allclose(estimate_coupling(gram, cross), gains, atol=0.1)


def test_spectral_clusters_find_interfering_groups() -> None:
    affinity = np.full((6, 6), 0.01)
    affinity[:3, :3] = affinity[3:, 3:] = 5.0
    labels = spectral_clusters(affinity, 2, np.random.default_rng(0))
    assert len(set(labels[:3])) == 1 and len(set(labels[3:])) == 1 and labels[0] != labels[3]


def test_policy_keeps_blocks_orthogonal_in_clusters_and_is_reproducible() -> None:
    env = VehicularURLLCEnv(config={"max_steps": 120})
    runs = []
    for _ in range(2):
        policy = make_policy("vehicular-lyapunov", env, allocation_interval_slots=40, seed=3)
        assert isinstance(policy, LyapunovJPRAPolicy)
        obs, _ = env.reset(seed=5)
        actions = []
        for t in range(120):
            action, _ = policy.predict(obs, episode_start=t == 0)
            obs, reward, *_ = env.step(action)
            assert np.isfinite(reward)
            actions.append(action)
            memory = policy._memories[0]
            levels, blocks = env.decode_action(action)
            assert memory["allowed"][np.arange(env.num_pairs), blocks].all()
            if t >= 40:  # clustered: no two pairs of a cluster on one block
                labels = memory["labels"]
                used = blocks[levels > 0]
                owners = labels[levels > 0]
                assert len(set(zip(owners.tolist(), used.tolist(), strict=True))) == used.size
        assert len(np.unique(memory["labels"])) > 1
        runs.append(np.array(actions))
    np.testing.assert_array_equal(runs[0], runs[1])


def test_bad_options_name_the_value() -> None:
    env = VehicularURLLCEnv()
    for key, value in (
        ("tradeoff_v", -1.0),
        ("num_clusters", 0),
        ("interference_memory", 1.0),
        ("coupling_memory", 0.0),
    ):
        with pytest.raises(ValueError, match=key):
            LyapunovJPRAPolicy(env, **{key: value})


def test_per_slot_power_never_decreases_with_the_backlog_weight() -> None:
    # Why the tail-aware weight (>= the queue's) never spends less power in the same state.
    rng = np.random.default_rng(7)
    fraction = np.array([0.0, 1e-3, 4e-3, 0.016, 0.063, 0.2, 1.0])
    cinr = rng.exponential(100.0, (50, 4))
    allowed = rng.random((50, 4)) < 0.7
    allowed[:, 0] = True
    previous = np.zeros(50)
    for weight in np.geomspace(1e-3, 1e3, 60):
        levels, blocks = best_discrete_allocation(
            np.full(50, weight), cinr, allowed, fraction, 0.1, 0.0225
        )
        assert np.all(fraction[levels] >= previous)
        previous = fraction[levels]
        on = levels > 0  # a transmitting pair uses its best allowed block
        best = np.argmax(np.where(allowed, cinr, -1.0), axis=1)
        np.testing.assert_array_equal(blocks[on], best[on])
    assert previous.min() > 0


def test_policy_plays_the_pettingzoo_env_like_the_gymnasium_one() -> None:
    from fl_gym.envs import vehicular_v1

    config = {"max_steps": 60}
    penv = vehicular_v1.parallel_env(config=config)
    genv = VehicularURLLCEnv(config=config)
    ppol = make_policy("vehicular-lyapunov", penv, allocation_interval_slots=20)
    gpol = make_policy("vehicular-lyapunov", genv, allocation_interval_slots=20)
    observations, _ = penv.reset(seed=2)
    obs, _ = genv.reset(seed=2)
    for t in range(60):
        actions = ppol.predict(observations, episode_start=t == 0)[0]
        action = gpol.predict(obs, episode_start=t == 0)[0]
        levels, blocks = genv.decode_action(action)
        for k, name in enumerate(penv.agents):
            np.testing.assert_array_equal(actions[name], [levels[k], blocks[k]])
        observations, *_ = penv.step(actions)
        obs, *_ = genv.step(action)
