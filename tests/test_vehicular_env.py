"""The vehicular URLLC environments (PettingZoo vehicular_v1, Gymnasium VehicularURLLC-v1) and
their baselines."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence
from pettingzoo.test import parallel_api_test, parallel_seed_test

import fl_gym  # noqa: F401  (registers the environments)
from fl_gym.baselines.vehicular import (
    VEHICULAR_BASELINES,
    DriftPlusPenaltyTailPolicy,
    make_vehicular_baseline,
)
from fl_gym.envs import vehicular_v1
from fl_gym.envs.vehicular.env import REWARD_TERMS, VehicularURLLCEnv, make_urllc_config

ENV_ID = "fl_gym/VehicularURLLC-v1"


def test_pettingzoo_api_and_seed_tests() -> None:
    parallel_api_test(vehicular_v1.parallel_env(), num_cycles=150)
    parallel_seed_test(vehicular_v1.parallel_env)
    parallel_seed_test(lambda: vehicular_v1.parallel_env(preset="freeway"))
    aec = vehicular_v1.env()
    aec.reset(seed=0)
    assert aec.agents == aec.possible_agents


def test_spaces_are_shared_and_state_is_complete() -> None:
    env = vehicular_v1.parallel_env(config={"num_pairs": 7, "num_resource_blocks": 3})
    obs, _ = env.reset(seed=0)
    spaces_seen = {id(env.observation_space(a)) for a in env.possible_agents}
    assert len(spaces_seen) == 1 and len({id(env.action_space(a)) for a in env.agents}) == 1
    assert env.action_space("pair_0").nvec.tolist() == [6, 3]
    assert env.observation_space("pair_0").shape == (1 + 2 * 3 + 4,)
    state = env.state()
    assert env.state_space.contains(state) and state.shape == (7 * 7 + 4,)
    # The state is the agents' rows in order, then the server vector they all share.
    rows = np.stack([obs[a] for a in env.agents])
    np.testing.assert_array_equal(state[:-4].reshape(7, 7), rows[:, :7])
    np.testing.assert_array_equal(state[-4:], rows[0, 7:])


def _pz_rollout(seed: int, steps: int = 30) -> list[object]:
    env = vehicular_v1.parallel_env(config={"fl_interval_slots": 5})
    obs, _ = env.reset(seed=seed)
    actions_rng = np.random.default_rng(5)
    out: list[object] = [obs]
    for _ in range(steps):
        acts = {
            a: np.array([actions_rng.integers(0, 6), actions_rng.integers(0, 10)])
            for a in env.agents
        }
        out.append(env.step(acts))
    return out


def test_same_seed_same_actions_bit_identical() -> None:
    a, b, c = _pz_rollout(1), _pz_rollout(1), _pz_rollout(2)
    assert data_equivalence(a, b, exact=True)
    assert not data_equivalence(a, c, exact=True)


def test_episode_truncates_at_max_steps() -> None:
    env = vehicular_v1.parallel_env(config={"max_steps": 3})
    env.reset(seed=0)
    for t in range(3):
        _, _, term, trunc, _ = env.step({a: np.array([1, 0]) for a in env.agents})
        assert not any(term.values()) and all(trunc.values()) == (t == 2)
    assert env.agents == []
    with pytest.raises(ValueError, match="reset"):
        env.step({})


def test_observation_reward_and_tail_match_the_simulator() -> None:
    env = vehicular_v1.parallel_env(config={"fl_interval_slots": 4, "num_pairs": 12})
    obs, _ = env.reset(seed=3)
    game = env.game
    cfg = env.config.system
    n = cfg.num_resource_blocks
    row = obs["pair_4"]
    snr_db = 10 * np.log10(cfg.p_max_w * game.system.own_gain[4] / cfg.noise_power_w)
    np.testing.assert_allclose(row[1 : 1 + n], snr_db / 30, rtol=1e-5)
    levels = np.arange(12) % cfg.num_power_levels
    for t in range(1, 13):
        actions = {f"pair_{k}": np.array([levels[k], k % n]) for k in range(12)}
        obs, rewards, _, _, infos = env.step(actions)
        report = game.last_report
        q = game.system.queue_bits
        assert obs["pair_4"][0] == pytest.approx(q[4] / cfg.queue_threshold_bits, rel=1e-6)
        np.testing.assert_array_equal(report.power_w, cfg.power_levels_w[levels])
        x = np.maximum(q - cfg.queue_threshold_bits, 0.0)
        g1, g2 = cfg.tail_mean_target_bits, cfg.tail_second_moment_target_bits2
        penalty = (x > 0) + np.maximum(x / g1 - 1, 0) + np.maximum(x**2 / g2 - 1, 0)
        penalty = np.minimum(penalty, env.config.penalty_cap)
        expected = -report.power_w / cfg.p_max_w - penalty
        for k in range(12):
            assert rewards[f"pair_{k}"] == pytest.approx(expected[k], rel=1e-9, abs=1e-12)
            terms = infos[f"pair_{k}"]["reward_terms"]
            assert set(terms) == set(REWARD_TERMS)
            assert sum(terms.values()) == pytest.approx(rewards[f"pair_{k}"], abs=1e-12)
        # The federated round runs every 4 slots and is what the agents see.
        assert game.fl_rounds <= t // 4
        assert obs["pair_0"][-4] == pytest.approx(game.tail.scale / cfg.tail_scale_target_bits)
        assert obs["pair_0"][-3] == pytest.approx(game.tail.shape, abs=1e-6)
        assert obs["pair_0"][-2] == pytest.approx(t / env.config.max_steps)


def test_tail_estimate_learns_from_exceedances() -> None:
    """Silent transmitters let every queue grow: the exceedances fill the buffers and the
    federated rounds move the estimate away from its prior."""
    env = vehicular_v1.parallel_env(config={"fl_interval_slots": 5, "num_pairs": 8})
    env.reset(seed=0)
    prior = env.game.tail
    for _ in range(40):
        env.step({a: np.array([0, 0]) for a in env.agents})
    assert env.game.fl_rounds > 0 and env.game.tail != prior
    active_rounds = env.game.fl_rounds
    assert env.game.values_exchanged <= active_rounds * (3 * 8 + 2 * 8)
    assert env.game.values_exchanged >= active_rounds * (3 + 2 * 8)


def test_bad_actions_raise_and_leave_env_usable() -> None:
    env, twin = vehicular_v1.parallel_env(), vehicular_v1.parallel_env()
    env.reset(seed=0)
    twin.reset(seed=0)
    good = {a: np.array([2, 1]) for a in env.agents}
    cases = [
        ({**good, "pair_0": np.array([6, 0])}, ValueError, r"pair_0.*0\.\.5.*6"),
        ({**good, "pair_3": np.array([0, -1])}, ValueError, "-1"),
        ({**good, "pair_1": np.array([0, 1, 2])}, ValueError, "shape"),
        ({**good, "pair_2": np.array([np.nan, 1.0])}, ValueError, "nan"),
        ({**good, "pair_2": "ab"}, TypeError, "action"),
        ({**good, "car_9": np.array([0, 0])}, ValueError, "car_9"),
        ([np.array([0, 0])], TypeError, "dict"),
    ]
    for actions, error, pattern in cases:
        with pytest.raises(error, match=pattern):
            env.step(actions)  # type: ignore[arg-type]
        assert data_equivalence(env.step(good), twin.step(good), exact=True)


def test_config_errors_name_the_key_and_value() -> None:
    for overrides, pattern in [
        ({"no_such_field": 1}, "no_such_field"),
        ({"system": {"no_such_field": 1}}, r"system\.no_such_field"),
        ({"num_pairs": 0}, "num_pairs.*0"),
        ({"system.rb_bandwidth_hz": -5.0}, r"rb_bandwidth_hz.*-5\.0"),
        ({"fl_interval_slots": 0}, "fl_interval_slots.*0"),
        ({"power_weight": float("nan")}, "power_weight.*nan"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            vehicular_v1.parallel_env(config=overrides)
        with pytest.raises(ValueError, match=pattern):
            gym.make(ENV_ID, config=overrides)
    env = vehicular_v1.parallel_env()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="num_pairs"):
        env.reset(options={"config": {"num_pairs": 3}})
    env.reset(seed=0, options={"config": {"queue_threshold_bits": 4000.0}})
    assert env.config.system.queue_threshold_bits == 4000.0 and len(env.agents) == 20
    assert make_urllc_config("freeway").system.layout == "freeway"


def test_gymnasium_and_pettingzoo_envs_agree() -> None:
    """The same seed and allocation give the same slot in both forms."""
    genv = gym.make(ENV_ID)
    penv = vehicular_v1.parallel_env()
    gobs, _ = genv.reset(seed=4)
    pobs, _ = penv.reset(seed=4)
    for _ in range(12):
        action = genv.action_space.sample()
        np.testing.assert_array_equal(
            np.stack([pobs[a] for a in penv.agents])[:, :21], gobs["devices"]
        )
        gobs, reward, *_ = genv.step(action)
        pobs, rewards, *_ = penv.step(
            {a: action[2 * k : 2 * k + 2] for k, a in enumerate(penv.agents)}
        )
        assert reward == pytest.approx(np.mean(list(rewards.values())), rel=1e-12)


# -- baselines ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(VEHICULAR_BASELINES))
def test_baselines_give_valid_actions_in_both_forms(name: str) -> None:
    genv = gym.make(ENV_ID)
    policy = make_vehicular_baseline(name, genv)
    assert policy.name == name
    obs, _ = genv.reset(seed=0)
    start = True
    for _ in range(20):
        action, state = policy.predict(obs, episode_start=start)
        start = False
        assert state is None and genv.action_space.contains(action)
        obs, reward, *_ = genv.step(action)
        assert np.isfinite(reward)
    # A batch of two observations gives a batch of two actions.
    batch = {k: np.stack([v, v]) for k, v in obs.items()}
    actions, _ = policy.predict(batch, episode_start=np.array([True, True]))
    assert actions.shape == (2, genv.action_space.shape[0])
    # The PettingZoo form: one action per agent, inside its space; same decisions as predict.
    penv = vehicular_v1.parallel_env()
    pobs, _ = penv.reset(seed=0)
    p_policy = make_vehicular_baseline(name, penv)
    g_policy = make_vehicular_baseline(name, genv)
    gobs, _ = genv.reset(seed=0)
    for t in range(5):
        acts, _ = p_policy.predict(pobs, episode_start=t == 0)
        gact, _ = g_policy.predict(gobs, episode_start=t == 0)
        assert all(penv.action_space(a).contains(v) for a, v in acts.items())
        np.testing.assert_array_equal(np.concatenate([acts[a] for a in penv.agents]), gact)
        pobs, *_ = penv.step(acts)
        gobs, *_ = genv.step(gact)


def test_baseline_rules() -> None:
    env = VehicularURLLCEnv()
    obs, _ = env.reset(seed=0)
    cfg = env.config.system
    top = cfg.num_power_levels - 1
    levels, blocks = env.decode_action(
        make_vehicular_baseline("vehicular-max-power", env).predict(obs)[0]
    )
    assert np.all(levels == top)
    # The best block is the one with the highest SNR over (1 + last interference).
    n = cfg.num_resource_blocks
    snr = 10 ** (3 * obs["devices"][:, 1 : 1 + n].astype(np.float64))
    inr = 10 ** (3 * obs["devices"][:, 1 + n :].astype(np.float64)) - 1
    np.testing.assert_array_equal(blocks, np.argmax(snr / (1 + inr), axis=1))
    # Empty queues at reset: queue-proportional and Lyapunov stay silent.
    for name in (
        "vehicular-queue-proportional",
        "vehicular-lyapunov",
        "vehicular-average-queue",
        "vehicular-drift-plus-penalty",
        "vehicular-drift-plus-penalty-average-queue",
    ):
        levels, _ = env.decode_action(make_vehicular_baseline(name, env).predict(obs)[0])
        assert np.all(levels == 0), name
    # Queue-proportional: ceil((L - 1) min(Q / q0, 1)).
    devices = obs["devices"].copy()
    devices[:, 0] = np.linspace(0, 1.5, cfg.num_pairs)
    policy = make_vehicular_baseline("vehicular-queue-proportional", env)
    levels, _ = env.decode_action(policy.predict({**obs, "devices": devices})[0])
    expected = np.ceil(top * np.minimum(devices[:, 0].astype(np.float64), 1.0) - 1e-12)
    np.testing.assert_array_equal(levels, expected)
    # Random blocks are reproducible by seed.
    a = make_vehicular_baseline("vehicular-random-rb", env, seed=1).predict(obs)[0]
    b = make_vehicular_baseline("vehicular-random-rb", env, seed=1).predict(obs)[0]
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="nope"):
        make_vehicular_baseline("nope", env)
    with pytest.raises(TypeError, match="vehicular"):
        DriftPlusPenaltyTailPolicy(gym.make("fl_gym/PowerControl-v0"))


def test_lyapunov_virtual_queues_raise_power_for_long_queues() -> None:
    env = VehicularURLLCEnv()
    obs, _ = env.reset(seed=0)
    cfg = env.config.system
    policy = DriftPlusPenaltyTailPolicy(env, tradeoff_v=1.0)
    devices = copy.deepcopy(obs["devices"])
    devices[:, 0] = 3.0  # every queue at 3 q0
    levels_first, _ = env.decode_action(
        policy.predict({**obs, "devices": devices}, episode_start=True)[0]
    )
    for _ in range(20):  # the constraint stays violated: the virtual queues grow
        levels_later, _ = env.decode_action(policy.predict({**obs, "devices": devices})[0])
    memory = policy._memories[0]["z"]
    np.testing.assert_allclose(memory[0], 21 * (1 - cfg.tail_probability_target))
    assert levels_later.mean() >= levels_first.mean() and levels_later.mean() > 0


def test_the_old_versions_say_which_one_replaces_them() -> None:
    from pettingzoo.utils.deprecated_module import DeprecatedEnv

    from fl_gym.envs import vehicular_v0

    with pytest.raises(DeprecatedEnv, match="vehicular_v1"):
        vehicular_v0.parallel_env()
    with pytest.raises(gym.error.DeprecatedEnv, match="VehicularURLLC-v1"):
        gym.make("fl_gym/VehicularURLLC-v0")
