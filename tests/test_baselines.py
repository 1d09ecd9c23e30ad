"""Heuristic baselines: valid actions everywhere, plans that survive encoding, and each rule
checked against the simulator's own state (channel gains, staleness, batteries)."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

import fl_gym
from fl_gym.baselines import (
    BASELINES,
    BaselinePolicy,
    baseline_options,
    baselines_for,
    make_baseline,
    read_observation,
)
from fl_gym.baselines.features import STALENESS_SCALE_ROUNDS
from fl_gym.envs import OverTheAirFLEnv
from fl_gym.envs.rollout import rollout
from fl_gym.envs.wireless_fl.byzantine import ByzantineSelectionEnv
from fl_gym.envs.wireless_fl.env import CONTROLS, DEVICE_FEATURES, SERVER_FEATURES, WirelessFLEnv

# Fewer sub-channels than devices, so that selection rules really choose.
FEW_SUBCHANNELS = {"wireless.num_subchannels": 3}
# Batteries that empty after one to three uploads, so devices drop out within a few rounds.
SMALL_BATTERIES = {
    **FEW_SUBCHANNELS,
    "num_devices": 10,  # the family's default K (PrivateFL-v0 has 100)
    "wireless.battery_min_j": 0.002,
    "wireless.battery_max_j": 0.02,
}


def _applicable(env_id: str) -> list[str]:
    env = gym.make(env_id)
    names = baselines_for(env)
    env.close()
    return names


# The digital-upload environments (M sub-channels); the over-the-air environment and its
# policies are tested in tests/test_over_the_air_env.py.
# The wireless FL environments: the vehicular one has its own baselines
# (fl_gym/baselines/vehicular.py, tested in tests/test_vehicular_env.py).
FL_IDS = [i for i in fl_gym.ENV_IDS if isinstance(gym.make(i).unwrapped, WirelessFLEnv)]
DIGITAL_IDS = [i for i in FL_IDS if not isinstance(gym.make(i).unwrapped, OverTheAirFLEnv)]
DIGITAL_BASELINES = [
    name
    for name, cls in BASELINES.items()
    if not cls.over_the_air and not getattr(cls, "byzantine", False)
]
"""The digital baselines of every digital environment (the Byzantine defences apply to the
Byzantine environment alone, tested in tests/test_byzantine_env.py)."""
APPLICABLE = [(env_id, name) for env_id in DIGITAL_IDS for name in _applicable(env_id)]


def _make(env_id: str, overrides: dict | None = None) -> gym.Env:
    return gym.make(env_id, config=overrides)


def _expected_top(keys: list[np.ndarray], eligible: np.ndarray, m: int) -> np.ndarray:
    """Top-m eligible devices by keys (most significant first, larger better), lower index on ties,
    by sorting tuples in Python: an independent reimplementation of the ranking."""
    k = eligible.shape[0]
    ranked = sorted(
        (i for i in range(k) if eligible[i]),
        key=lambda i: (*(-float(key[i]) for key in keys), i),
    )
    mask = np.zeros(k, dtype=bool)
    mask[ranked[:m]] = True
    return mask


def _synthetic_obs(
    env: gym.Env,
    *,
    snr_db: np.ndarray | float = 20.0,
    battery: np.ndarray | float = 1.0,
    staleness: np.ndarray | int = 1,
    available: np.ndarray | bool = True,
    selected: np.ndarray | bool = False,
    round_index: int = 0,
) -> dict[str, np.ndarray]:
    """An observation built by hand with the environment's documented scalings."""
    k = env.unwrapped.num_devices
    cfg = env.unwrapped.config
    devices = np.zeros((k, len(DEVICE_FEATURES)), dtype=np.float32)
    col = DEVICE_FEATURES.index
    devices[:, col("snr_db")] = np.asarray(snr_db) / 30.0
    devices[:, col("battery")] = battery
    devices[:, col("staleness")] = np.minimum(np.asarray(staleness), 50) / 50.0
    devices[:, col("available")] = np.asarray(available, dtype=float)
    devices[:, col("selected")] = np.asarray(selected, dtype=float)
    devices[:, col("data_share")] = 1.0
    server = np.zeros(len(SERVER_FEATURES), dtype=np.float32)
    server[SERVER_FEATURES.index("round")] = round_index / cfg.max_rounds
    return {"devices": devices, "server": server}


def _cell(env: gym.Env):
    return env.unwrapped.federation.cell


# -- registry --------------------------------------------------------------------------------------


def test_registry_names_knobs_and_filter() -> None:
    for name, cls in BASELINES.items():
        assert cls.name == name
        assert cls.knobs and cls.knobs <= set(CONTROLS)
        assert issubclass(cls, BaselinePolicy)
        assert cls.__doc__ and len(cls.__doc__) > 100
    for env_id in FL_IDS:
        env = _make(env_id)
        controls = set(env.unwrapped.controls)
        ota = isinstance(env.unwrapped, OverTheAirFLEnv)
        byzantine = isinstance(env.unwrapped, ByzantineSelectionEnv)
        expected = [
            n
            for n, cls in BASELINES.items()
            if cls.knobs & controls
            and cls.over_the_air == ota
            and (byzantine or not getattr(cls, "byzantine", False))
        ]
        assert baselines_for(env) == expected
        assert baselines_for(env.unwrapped) == expected
    selection = [
        n
        for n, c in BASELINES.items()
        if c.knobs == {"selection"} and not c.over_the_air and not getattr(c, "byzantine", False)
    ]
    assert set(selection) == {
        "random",
        "round-robin",
        "full",
        "best-channel",
        "proportional-fair",
        "age-based",
        "energy-aware",
    }
    assert baselines_for(_make("fl_gym/PowerControl-v0")) == [
        "max-power",
        "min-power",
        "channel-inversion",
    ]
    assert baselines_for(_make("fl_gym/WirelessFL-v0")) == DIGITAL_BASELINES


def test_make_baseline_errors() -> None:
    env = _make("fl_gym/WirelessFL-v0")
    with pytest.raises(ValueError, match=r"unknown baseline 'nope'.*round-robin"):
        make_baseline("nope", env)
    with pytest.raises(TypeError, match=r"no option\(s\) \['sed'\].*seed"):
        make_baseline("random", env, sed=1)
    with pytest.raises(TypeError, match=r"no option\(s\) \['seed'\]"):
        make_baseline("round-robin", env, seed=1)
    with pytest.raises(ValueError, match="seed"):
        make_baseline("random", env, seed=-1)
    with pytest.raises(ValueError, match="window_rounds"):
        make_baseline("proportional-fair", env, window_rounds=0.5)
    with pytest.raises(ValueError, match="target_snr_db"):
        make_baseline("channel-inversion", env, target_snr_db=float("nan"))
    cfg = env.unwrapped.config
    levels = cfg.learning.compression_levels
    with pytest.raises(ValueError, match="level"):
        make_baseline("fixed-compression", env, level=len(levels))
    with pytest.raises(ValueError, match="not one of"):
        make_baseline("fixed-compression", env, level="no-such-operator")
    not_a_choice = max(cfg.local_step_choices) + 1
    with pytest.raises(ValueError, match="local_step_choices"):
        make_baseline("fixed-steps", env, steps=not_a_choice)
    with pytest.raises(TypeError, match="steps"):
        make_baseline("fixed-steps", env, steps=2.0)
    # A knob the environment does not control makes the baseline meaningless there.
    with pytest.raises(ValueError, match="does not control"):
        make_baseline("max-power", _make("fl_gym/ClientSelection-v0"))
    with pytest.raises(TypeError, match="wireless FL environment"):
        make_baseline("round-robin", gym.make("CartPole-v1"))
    with pytest.raises(TypeError, match="wireless FL environment"):
        baselines_for(gym.make("CartPole-v1"))


def test_options_are_applied() -> None:
    env = _make("fl_gym/WirelessFL-v0")
    cfg = env.unwrapped.config
    assert baseline_options("random") == {"seed": 0}
    assert set(baseline_options("channel-inversion")) == {"target_snr_db"}
    levels = cfg.learning.compression_levels
    last = len(levels) - 1
    assert make_baseline("fixed-compression", env, level=levels[last]).level == last
    steps = cfg.local_step_choices[0]
    obs, _ = env.reset(seed=0)
    plan = make_baseline("fixed-steps", env, steps=steps).plan(obs)
    assert set(plan.local_steps[plan.selected].tolist()) == {steps}
    plan = make_baseline("fixed-compression", env, level=last).plan(obs)
    assert set(plan.compression[plan.selected].tolist()) == {last}


# -- every baseline on every environment it applies to ---------------------------------------------


@pytest.mark.parametrize(("env_id", "name"), APPLICABLE)
def test_short_episode_produces_valid_actions(env_id: str, name: str) -> None:
    env = _make(env_id, FEW_SUBCHANNELS)
    policy = make_baseline(name, env)
    obs, _ = env.reset(seed=3)
    episode_start = True
    for _ in range(5):
        action, state = policy.predict(obs, episode_start=episode_start)
        episode_start = False
        assert state is None
        assert env.action_space.contains(action), (action, env.action_space)
        obs, _, terminated, _, info = env.step(action)
        assert info["dropped_unavailable"] == []
        assert info["action_clipped"] is False
        assert info["selected"].sum() <= env.unwrapped.config.wireless.num_subchannels
        if terminated:
            break


@pytest.mark.parametrize("overrides", [FEW_SUBCHANNELS, SMALL_BATTERIES], ids=["few-m", "drained"])
@pytest.mark.parametrize(("env_id", "name"), APPLICABLE)
def test_decode_of_encoded_plan_reproduces_it(env_id: str, name: str, overrides: dict) -> None:
    """For the knobs an env controls the action carries the plan; for the others the plan holds
    the env's defaults, the round-robin selection included (replayed from observations)."""
    env = _make(env_id, overrides)
    unwrapped = env.unwrapped
    m = unwrapped.config.wireless.num_subchannels
    policy = make_baseline(name, env)
    obs, _ = env.reset(seed=1)
    saw_unavailable = False
    for _ in range(8):
        available = _cell(env).available.copy()
        saw_unavailable |= not available.all()
        plan = policy.plan(obs)
        if getattr(type(policy), "byzantine", False):  # a defence may leave devices out
            assert plan.selected.sum() <= min(m, available.sum())
        else:
            assert plan.selected.sum() == min(m, available.sum())
        assert not (plan.selected & ~available).any()
        action = policy._encode(plan)
        decoded, info = unwrapped.decode_action(action)
        assert info["dropped_unavailable"] == []
        np.testing.assert_array_equal(decoded.selected, plan.selected)
        np.testing.assert_allclose(decoded.power_w, plan.power_w, rtol=1e-5, atol=0.0)
        np.testing.assert_array_equal(decoded.compression, plan.compression)
        np.testing.assert_array_equal(decoded.local_steps, plan.local_steps)
        obs, _, terminated, _, step_info = env.step(action)
        np.testing.assert_array_equal(step_info["selected"], plan.selected)
        if terminated:
            break
    if overrides is SMALL_BATTERIES:
        assert saw_unavailable


# -- the rules, checked against the simulator's state ----------------------------------------------


def test_features_decode_the_simulator_state() -> None:
    env = _make("fl_gym/ClientSelection-v0", SMALL_BATTERIES)
    obs, _ = env.reset(seed=2)
    policy = make_baseline("round-robin", env)
    for _ in range(4):
        obs, _, _, _, info = env.step(policy.predict(obs)[0])
    fed = env.unwrapped.federation
    cell, cfg = fed.cell, env.unwrapped.config.wireless
    features = read_observation(obs)
    snr_db = 10 * np.log10(cfg.p_max_w * cell.channel_gain / cfg.noise_power_w)
    np.testing.assert_allclose(features.snr_db, snr_db, atol=1e-4)
    np.testing.assert_allclose(
        features.battery_fraction, cell.battery_j / cell.battery_capacity_j, atol=1e-6
    )
    np.testing.assert_array_equal(
        features.staleness_rounds,
        np.minimum(fed.rounds_since_delivery(), STALENESS_SCALE_ROUNDS),
    )
    np.testing.assert_array_equal(features.available, cell.available)
    np.testing.assert_array_equal(features.selected, info["selected"])
    np.testing.assert_array_equal(features.delivered, info["delivered"])
    assert features.round_fraction == pytest.approx(4 / env.unwrapped.config.max_rounds)
    assert features.accuracy == pytest.approx(info["accuracy"], abs=1e-6)
    se = np.log2(1 + 10 ** (features.snr_db / 10))
    np.testing.assert_allclose(features.spectral_efficiency, se, rtol=1e-12)


def test_round_robin_covers_every_device_cyclically() -> None:
    env = _make("fl_gym/ClientSelection-v0", FEW_SUBCHANNELS)
    k, m = env.unwrapped.num_devices, env.unwrapped.config.wireless.num_subchannels
    policy = make_baseline("round-robin", env)
    obs, _ = env.reset(seed=0)
    covered = np.zeros(k, dtype=bool)
    rounds = math.ceil(k / m)
    for t in range(rounds):
        assert _cell(env).available.all()
        action, _ = policy.predict(obs)
        obs, _, _, _, info = env.step(action)
        expected = np.zeros(k, dtype=bool)
        expected[(t * m + np.arange(m)) % k] = True
        np.testing.assert_array_equal(info["selected"], expected)
        covered |= info["selected"]
    assert covered.all()


def test_round_robin_memory_restarts_with_each_episode() -> None:
    env = _make("fl_gym/ClientSelection-v0", FEW_SUBCHANNELS)
    m = env.unwrapped.config.wireless.num_subchannels
    policy = make_baseline("round-robin", env)
    first = np.arange(env.unwrapped.num_devices) < m
    for seed in (0, 1):
        # No episode_start: the round counter of the fresh observation (0) restarts the cycle.
        obs, _ = env.reset(seed=seed)
        np.testing.assert_array_equal(policy.plan(obs).selected, first)
        obs, *_ = env.step(policy.predict(obs)[0])
        assert not np.array_equal(policy.plan(obs).selected, first)
    policy.reset()
    np.testing.assert_array_equal(policy.plan(obs).selected, first)


def test_best_channel_picks_the_top_gains() -> None:
    env = _make("fl_gym/ClientSelection-v0", SMALL_BATTERIES)
    m = env.unwrapped.config.wireless.num_subchannels
    policy = make_baseline("best-channel", env)
    obs, _ = env.reset(seed=4)
    for _ in range(6):
        cell = _cell(env)
        expected = _expected_top([cell.channel_gain], cell.available, m)
        action, _ = policy.predict(obs)
        obs, _, terminated, _, info = env.step(action)
        np.testing.assert_array_equal(info["selected"], expected)
        if terminated:
            break


@pytest.mark.parametrize("target_snr_db", [None, 20.0])
def test_channel_inversion_equalises_received_snr(target_snr_db: float | None) -> None:
    env = _make("fl_gym/PowerControl-v0")
    cfg = env.unwrapped.config
    kwargs = {} if target_snr_db is None else {"target_snr_db": target_snr_db}
    target = baseline_options("channel-inversion")["target_snr_db"]
    target = target if target_snr_db is None else target_snr_db
    policy = make_baseline("channel-inversion", env, **kwargs)
    obs, _ = env.reset(seed=5)
    p_max, p_min = cfg.wireless.p_max_w, 10 ** ((cfg.power_min_dbm - 30) / 10)
    inverted = 0
    for _ in range(3):
        plan = policy.plan(obs)
        decoded, _ = env.unwrapped.decode_action(env.unwrapped.encode_plan(plan))
        gain = _cell(env).channel_gain
        sel = decoded.selected
        power = decoded.power_w[sel]
        received_snr_db = 10 * np.log10(power * gain[sel] / cfg.wireless.noise_power_w)
        at_max = np.isclose(power, p_max, rtol=1e-5)
        at_min = np.isclose(power, p_min, rtol=1e-5)
        inside = ~at_max & ~at_min
        np.testing.assert_allclose(received_snr_db[inside], target, atol=1e-3)
        assert np.all(received_snr_db[at_max] <= target + 1e-3)
        assert np.all(received_snr_db[at_min] >= target - 1e-3)
        inverted += int(inside.sum())
        obs, *_ = env.step(env.unwrapped.encode_plan(plan))
    assert inverted >= 3  # the scenario really exercises the inversion


def test_age_based_picks_the_stalest() -> None:
    env = _make("fl_gym/ClientSelection-v0", FEW_SUBCHANNELS)
    m = env.unwrapped.config.wireless.num_subchannels
    policy = make_baseline("age-based", env)
    obs, _ = env.reset(seed=6)
    for _ in range(8):
        fed, cell = env.unwrapped.federation, _cell(env)
        age = np.minimum(fed.rounds_since_delivery(), STALENESS_SCALE_ROUNDS)
        expected = _expected_top([age, cell.channel_gain], cell.available, m)
        plan = policy.plan(obs)
        np.testing.assert_array_equal(plan.selected, expected)
        others = cell.available & ~plan.selected
        assert age[plan.selected].min() >= age[others].max()
        obs, *_ = env.step(env.unwrapped.encode_plan(plan))


def test_proportional_fair_shares_static_channels_equally() -> None:
    """Static channels: PF serves never-served devices best channel first, then gives every
    device the same share of the rounds, unlike best-channel which always picks the best."""
    env = _make("fl_gym/ClientSelection-v0", {"num_devices": 4, "wireless.num_subchannels": 1})
    snr_db = np.array([0.0, 10.0, 20.0, 30.0])
    pf = make_baseline("proportional-fair", env, window_rounds=10)
    best = make_baseline("best-channel", env)
    selected = np.zeros(4, dtype=bool)
    picks = []
    for t in range(400):
        obs = _synthetic_obs(env, snr_db=snr_db, selected=selected, round_index=t)
        selected = pf.plan(obs).selected
        picks.append(int(np.flatnonzero(selected)[0]))
        assert np.flatnonzero(best.plan(obs).selected).tolist() == [3]
    assert picks[:4] == [3, 2, 1, 0]
    shares = np.bincount(picks[100:], minlength=4) / len(picks[100:])
    np.testing.assert_allclose(shares, 0.25, atol=0.03)


def test_proportional_fair_ratio_by_hand() -> None:
    """Two rounds computed by hand: W = 2, device 1 served in round 0."""
    env = _make("fl_gym/ClientSelection-v0", {"num_devices": 3, "wireless.num_subchannels": 1})
    pf = make_baseline("proportional-fair", env, window_rounds=2)
    snr0 = np.array([10.0, 20.0, 15.0])
    plan = pf.plan(_synthetic_obs(env, snr_db=snr0))
    assert np.flatnonzero(plan.selected).tolist() == [1]  # all unserved: best rate
    # Round 1: R = 0.5 * r0 * served = [0, 0.5 log2(101), 0]; device 1's ratio is finite and
    # the two unserved devices come first, the better of them (device 0 now at 25 dB) wins.
    snr1 = np.array([25.0, 40.0, 12.0])
    plan = pf.plan(_synthetic_obs(env, snr_db=snr1, selected=plan.selected, round_index=1))
    assert np.flatnonzero(plan.selected).tolist() == [0]
    # Round 2: R = [0.5 * log2(1 + 10^2.5), 0.25 log2(101), 0]; device 2 never served wins.
    snr2 = np.array([25.0, 40.0, 5.0])
    obs = _synthetic_obs(env, snr_db=snr2, selected=plan.selected, round_index=2)
    assert np.flatnonzero(pf.plan(obs).selected).tolist() == [2]
    # Round 3: everyone served once. R after round 2's update:
    r = lambda db: math.log2(1 + 10 ** (db / 10))  # noqa: E731
    average = np.array([0.5 * (0.5 * r(25.0)), 0.5 * (0.5 * (0.5 * r(20.0))), 0.5 * r(5.0)])
    snr3 = np.array([25.0, 40.0, 5.0])
    ratio = np.array([r(s) for s in snr3]) / average
    obs = _synthetic_obs(env, snr_db=snr3, selected=np.array([0, 0, 1], bool), round_index=3)
    assert np.flatnonzero(pf.plan(obs).selected).tolist() == [int(np.argmax(ratio))]


def test_energy_aware_score_and_full_participation() -> None:
    env = _make("fl_gym/ClientSelection-v0", {"num_devices": 5, "wireless.num_subchannels": 2})
    snr_db = np.array([5.0, 30.0, 12.0, 25.0, 40.0])
    battery = np.array([1.0, 0.1, 0.8, 0.3, 0.9])
    available = np.array([True, True, True, True, False])
    obs = _synthetic_obs(env, snr_db=snr_db, battery=battery, available=available)
    score = battery * np.log2(1 + 10 ** (snr_db / 10))
    expected = _expected_top([score], available, 2)
    plan = make_baseline("energy-aware", env).plan(obs)
    np.testing.assert_array_equal(plan.selected, expected)
    # The rule differs from both pure criteria here.
    assert not np.array_equal(expected, _expected_top([snr_db], available, 2))
    assert not np.array_equal(expected, _expected_top([battery], available, 2))
    # Full participation: the lowest available indices, at most M.
    obs = _synthetic_obs(env, available=np.array([False, True, False, True, True]))
    assert np.flatnonzero(make_baseline("full", env).plan(obs).selected).tolist() == [1, 3]


def test_random_is_seeded_and_never_picks_exhausted_devices() -> None:
    env = _make("fl_gym/ClientSelection-v0", SMALL_BATTERIES)
    k, m = env.unwrapped.num_devices, env.unwrapped.config.wireless.num_subchannels
    a = make_baseline("random", env, seed=7)
    b = make_baseline("random", env, seed=7)
    c = make_baseline("random", env, seed=8)
    obs, _ = env.reset(seed=0)
    differs, saw_unavailable, counts = False, False, np.zeros(k)
    for _ in range(30):
        available = _cell(env).available.copy()
        saw_unavailable |= not available.all()
        action_a, _ = a.predict(obs)
        np.testing.assert_array_equal(action_a, b.predict(obs)[0])
        differs |= not np.array_equal(action_a, c.predict(obs)[0])
        obs, _, terminated, _, info = env.step(action_a)
        assert not (info["selected"] & ~available).any()
        assert info["selected"].sum() == min(m, available.sum())
        counts += info["selected"]
        if terminated:
            break
    assert saw_unavailable and differs
    assert (counts > 0).sum() > m  # not a fixed subset


# -- the SB3 calling convention --------------------------------------------------------------------


@pytest.mark.parametrize("name", DIGITAL_BASELINES)
def test_predict_on_a_batch_equals_single_calls(name: str) -> None:
    envs = [_make("fl_gym/WirelessFL-v0", FEW_SUBCHANNELS) for _ in range(2)]
    observations = [env.reset(seed=seed)[0] for seed, env in enumerate(envs)]
    batched = make_baseline(name, envs[0])
    # A randomised policy draws for the batch's observations in order, like one policy called
    # on them in turn; the others keep one memory per environment, like one policy per env.
    singles = (
        [make_baseline(name, envs[0])] * 2
        if name == "random"
        else [make_baseline(name, envs[0]) for _ in envs]
    )
    episode_start = np.ones(2, dtype=bool)
    for _ in range(3):
        stacked = {key: np.stack([o[key] for o in observations]) for key in observations[0]}
        actions, _ = batched.predict(stacked, episode_start=episode_start)
        expected = [
            policy.predict(obs, episode_start=start)[0]
            for policy, obs, start in zip(singles, observations, episode_start, strict=True)
        ]
        episode_start = np.zeros(2, dtype=bool)
        assert actions.shape == (2, *envs[0].action_space.shape)
        np.testing.assert_array_equal(actions, np.stack(expected))
        observations = [env.step(act)[0] for env, act in zip(envs, actions, strict=True)]


def test_predict_discrete_and_multidiscrete_batches() -> None:
    for env_id, name in (
        ("fl_gym/AggregationFrequency-v0", "fixed-steps"),
        ("fl_gym/GradientCompression-v0", "fixed-compression"),
    ):
        env = _make(env_id)
        obs, _ = env.reset(seed=0)
        policy = make_baseline(name, env)
        single, _ = policy.predict(obs, episode_start=np.ones(1, dtype=bool))
        assert env.action_space.contains(single)
        stacked = {key: np.stack([obs[key]] * 3) for key in obs}
        actions, _ = policy.predict(stacked)
        assert actions.shape == (3, *env.action_space.shape)
        assert all(env.action_space.contains(a) for a in actions)
        np.testing.assert_array_equal(actions[0], single)
    with pytest.raises(ValueError, match="episode_start"):
        policy.predict(stacked, episode_start=np.ones(2, dtype=bool))
    with pytest.raises(ValueError, match="shape"):
        policy.plan({"devices": obs["devices"][:2], "server": obs["server"]})
    with pytest.raises(TypeError, match="devices"):
        policy.plan(obs["devices"])


def test_sb3_evaluate_policy_matches_rollouts() -> None:
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    env_kwargs = {"config": FEW_SUBCHANNELS}
    venv = make_vec_env(
        "fl_gym/ClientSelection-v0", n_envs=2, env_kwargs={**env_kwargs, "max_episode_steps": 4}
    )
    venv.seed(10)
    policy = make_baseline("proportional-fair", venv.envs[0])
    rewards, lengths = evaluate_policy(policy, venv, n_eval_episodes=2, return_episode_rewards=True)
    assert lengths == [4, 4]
    env = gym.make("fl_gym/ClientSelection-v0", max_episode_steps=4, **env_kwargs)
    reference = [
        rollout(env, make_baseline("proportional-fair", env), seed=s).episode_return
        for s in (10, 11)
    ]
    # The Monitor wrapper rounds episode returns to 6 decimals.
    np.testing.assert_allclose(sorted(rewards), sorted(reference), rtol=0, atol=1e-5)
