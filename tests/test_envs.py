"""Registry-wide tests of the Gymnasium environments, after Gymnasium's ``tests/envs/test_envs.py``.

Every id registered under ``fl_gym/`` goes through the API checks (Gymnasium's and SB3's env
checkers, same-seed determinism, pickling, finite observations and rewards, rejection of bad
actions and configurations, SB3 PPO training on the env's own transitions), and every
versioned PettingZoo module of ``fl_gym.envs`` (found by scanning the package) through
PettingZoo's ``parallel_api_test``, ``parallel_seed_test`` and AEC ``api_test``, same-seed
determinism and pickling. The environments built on
:class:`~fl_gym.envs.wireless_fl.env.WirelessFLEnv` are also checked for their physics and semantics
against the simulator's state: energy leaves the batteries exactly as reported, an idle round
changes nothing, a tight deadline makes every device a straggler, exhausted devices cannot be
selected, and the episode ends when it should.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import inspect
import pickle
import pkgutil
import re
import subprocess
import sys
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.envs.registration import EnvSpec, load_env_creator
from gymnasium.utils.env_checker import check_env, data_equivalence
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import fl_gym
import fl_gym.envs
from fl_gym.envs import (
    DEVICE_FEATURES,
    PRESETS,
    SERVER_FEATURES,
    OverTheAirFLEnv,
    WirelessFLEnv,
    make_config,
)
from fl_gym.sim.plan import RoundPlan
from fl_gym.sim.radio.cell import dbm_to_w

SEED = 0
NUM_STEPS = 8

FL_GYM_SPECS: list[EnvSpec] = [
    spec for env_id, spec in sorted(gym.registry.items()) if env_id.startswith("fl_gym/")
]
ALL_IDS = [spec.id for spec in FL_GYM_SPECS]


def _is_wireless_fl(spec: EnvSpec) -> bool:
    creator = load_env_creator(spec.entry_point) if isinstance(spec.entry_point, str) else None
    return inspect.isclass(creator) and issubclass(creator, WirelessFLEnv)


WIRELESS_FL_IDS = [spec.id for spec in FL_GYM_SPECS if _is_wireless_fl(spec)]
# Spaces and controls are set in __init__, so building (not resetting) an env is cheap.
_RAW_ENVS = {env_id: gym.make(env_id).unwrapped for env_id in WIRELESS_FL_IDS}
SELECTION_IDS = [env_id for env_id, raw in _RAW_ENVS.items() if "selection" in raw.controls]
# Digital uploads on M sub-channels, per-device power and compression (over the air is tested in
# tests/test_over_the_air_env.py for what differs).
DIGITAL_IDS = [i for i, raw in _RAW_ENVS.items() if not isinstance(raw, OverTheAirFLEnv)]
BOX_WIRELESS_FL_IDS = [
    env_id for env_id, raw in _RAW_ENVS.items() if isinstance(raw.action_space, spaces.Box)
]

# Small batteries: devices run dry within a few rounds, so an episode ends by exhaustion.
SMALL_BATTERIES = {"battery_min_j": 0.01, "battery_max_j": 0.02}
# SB3's checker recommends flat observations; the (K, F) device matrix is the documented design
# (MultiInputPolicy flattens it), so this one warning is expected.
SB3_EXPECTED_WARNING = "unconventional shape"

COL = {name: i for i, name in enumerate(DEVICE_FEATURES)}
SERVER_COL = {name: i for i, name in enumerate(SERVER_FEATURES)}


# -- helpers ---------------------------------------------------------------------------------------


def _rollout(env: gym.Env, seed: int, num_steps: int, action_seed: int) -> list[Any]:
    """Reset with ``seed`` and step with actions sampled from a space seeded by ``action_seed``."""
    obs, info = env.reset(seed=seed)
    env.action_space.seed(action_seed)
    records: list[Any] = [(obs, info)]
    for _ in range(num_steps):
        action = env.action_space.sample()
        obs, reward, terminated, truncated, info = env.step(action)
        records.append((action, obs, reward, terminated, truncated, info))
        if terminated or truncated:
            break
    return records


def _rng_states() -> tuple[Any, ...]:
    return torch.get_rng_state(), np.random.get_state()[1].copy()  # noqa: NPY002


def _assert_obs_finite_and_inside(env: gym.Env, obs: Any) -> None:
    for key, value in obs.items():
        assert np.all(np.isfinite(value)), f"non-finite entries in obs[{key!r}]"
    assert env.observation_space.contains(obs), "observation outside observation_space"


def _unwrapped(env: gym.Env) -> WirelessFLEnv:
    raw = env.unwrapped
    assert isinstance(raw, WirelessFLEnv)
    return raw


def _snapshot(env: gym.Env) -> dict[str, Any]:
    """The simulator state a step may change: model, batteries, availability."""
    fed = _unwrapped(env).federation
    assert fed is not None and fed.cell is not None
    return {
        "params": fed.params.clone(),
        "battery_j": np.array(fed.cell.battery_j),
        "available": np.array(fed.cell.available),
    }


def _plan_action(env: gym.Env, selected: np.ndarray) -> Any:
    """The action of ``env`` for: ``selected`` devices at p_max, default compression and steps."""
    raw = _unwrapped(env)
    cfg = raw.config
    plan = RoundPlan(
        selected,
        cfg.default_local_steps,
        cfg.default_compression,
        np.full(raw.num_devices, cfg.wireless.p_max_w),
    )
    return raw.encode_plan(plan)


def _check_step(env: gym.Env, before: dict[str, Any], previous_accuracy: float, out: Any) -> None:
    """Assert the physics and bookkeeping of one step against the simulator's state."""
    obs, reward, terminated, truncated, info = out
    raw = _unwrapped(env)
    cfg = raw.config
    cell = raw.federation.cell
    selected, delivered = info["selected"], info["delivered"]
    compute_j, transmit_j = info["energy_compute_j"], info["energy_transmit_j"]

    _assert_obs_finite_and_inside(env, obs)
    assert isinstance(reward, float) and np.isfinite(reward)
    assert isinstance(terminated, bool) and isinstance(truncated, bool)

    # Who may take part: available devices only, at most one per sub-channel.
    assert not np.any(selected & ~before["available"]), "an exhausted device was selected"
    if not isinstance(raw, OverTheAirFLEnv):  # over the air, everyone shares the band
        assert selected.sum() <= cfg.wireless.num_subchannels
    assert set(info["dropped_unavailable"]) <= set(np.flatnonzero(~before["available"]).tolist())
    assert not np.any(delivered & ~selected) and not np.any(info["straggler"] & ~selected)
    assert not np.any(delivered & info["straggler"]) and not np.any(delivered & info["packet_lost"])
    assert np.all(compute_j[~selected] == 0.0) and np.all(transmit_j[~selected] == 0.0)

    # Energy is conserved: what each battery lost is what the report says the device spent.
    battery_j = np.asarray(cell.battery_j)
    assert np.all(battery_j >= 0.0)
    np.testing.assert_allclose(before["battery_j"] - battery_j, compute_j + transmit_j, atol=1e-12)
    assert info["energy_j"] == pytest.approx(float((compute_j + transmit_j).sum()), abs=1e-12)
    spent_total_j = float((np.asarray(cell.battery_capacity_j) - battery_j).sum())
    assert info["energy_spent_j"] == pytest.approx(spent_total_j, rel=1e-9, abs=1e-12)
    assert np.all(info["latency_s"] <= cfg.wireless.deadline_s * (1 + 1e-12))
    assert 0.0 <= info["round_time_s"] <= cfg.wireless.deadline_s * (1 + 1e-12)

    # The model moves only when something was aggregated (late updates and coded stand-ins
    # move it too).
    if not delivered.any() and cfg.learning.stragglers == "drop":
        assert torch.equal(raw.federation.params, before["params"])

    # Reward: the documented closed form of the mode, with the weights read from the
    # configuration (tests/test_reward_modes.py covers the penalties and budgets).
    missed = info["reward_terms"].get("target_missed", 0.0)
    if cfg.reward_mode == "time-to-accuracy":
        expected = cfg.favor_base ** (info["accuracy"] - cfg.target_accuracy) - 1.0 + missed
    elif cfg.reward_mode == "energy-to-accuracy":
        expected = -cfg.energy_weight_per_j * info["energy_j"] + missed
    elif cfg.reward_mode == "accuracy-at-budget":
        over = (info["energy_spent_j"] > cfg.energy_budget_j > 0) or (
            raw._elapsed_time_s > cfg.time_budget_s > 0
        )
        expected = 0.0 if over else cfg.accuracy_weight * (info["accuracy"] - previous_accuracy)
    else:
        expected = (
            cfg.accuracy_weight * (info["accuracy"] - previous_accuracy)
            - cfg.energy_weight_per_j * info["energy_j"]
            - cfg.time_weight_per_s * info["round_time_s"]
        )
    if "epsilon_round" in info:  # the private env: minus the epsilon the round spent
        expected -= cfg.privacy_weight_per_epsilon * min(info["epsilon_round"], cfg.epsilon_budget)
    assert reward == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert reward == pytest.approx(sum(info["reward_terms"].values()), rel=1e-12, abs=1e-12)

    # The observation reports the simulator's state.
    devices, server = obs["devices"], obs["server"]
    capacity_j = np.asarray(cell.battery_capacity_j)
    np.testing.assert_allclose(devices[:, COL["battery"]], battery_j / capacity_j, atol=1e-6)
    np.testing.assert_array_equal(devices[:, COL["available"]], cell.available.astype(np.float32))
    np.testing.assert_array_equal(devices[:, COL["selected"]], selected.astype(np.float32))
    np.testing.assert_array_equal(devices[:, COL["delivered"]], delivered.astype(np.float32))
    assert server[SERVER_COL["accuracy"]] == pytest.approx(info["accuracy"], abs=1e-6)
    assert server[SERVER_COL["round"]] == pytest.approx(info["round"] / cfg.max_rounds, abs=1e-6)
    assert server[SERVER_COL["energy_spent"]] == pytest.approx(
        spent_total_j / capacity_j.sum(), abs=1e-6
    )
    assert server[SERVER_COL["available_share"]] == pytest.approx(cell.available.mean(), abs=1e-6)

    # Episode end: target accuracy reached (a budget overspent in "accuracy-at-budget") or
    # nobody has energy left.
    if cfg.reward_mode == "accuracy-at-budget":
        reached = (info["energy_spent_j"] > cfg.energy_budget_j > 0) or (
            raw._elapsed_time_s > cfg.time_budget_s > 0
        )
    else:
        reached = info["accuracy"] >= cfg.target_accuracy
    budget_spent = bool(info.get("privacy_budget_spent", False))  # the private env's third end
    diverged = bool(info.get("diverged", False))
    assert terminated == (reached or not cell.available.any() or budget_spent or diverged)


def _run_checked_episode(env: gym.Env, seed: int, max_steps: int = 200) -> tuple[int, Any]:
    """Random actions to the end of the episode, every step checked; returns (steps, last step)."""
    _, info = env.reset(seed=seed)
    env.action_space.seed(seed)
    accuracy = info["accuracy"]
    out: Any = None
    for step in range(1, max_steps + 1):
        before = _snapshot(env)
        out = env.step(env.action_space.sample())
        _check_step(env, before, accuracy, out)
        accuracy = out[4]["accuracy"]
        if out[2] or out[3]:
            return step, out
    raise AssertionError(f"episode did not end within {max_steps} steps")


# -- registry --------------------------------------------------------------------------------------


def test_env_ids_match_the_registry() -> None:
    registered = {env_id for env_id in gym.registry if env_id.startswith("fl_gym/")}
    assert registered == set(fl_gym.ENV_IDS)
    assert len(fl_gym.ENV_IDS) == len(set(fl_gym.ENV_IDS))


def test_every_env_class_is_registered() -> None:
    """A new environment class in fl_gym.envs cannot be forgotten by the registration."""
    entry_points = {load_env_creator(spec.entry_point) for spec in FL_GYM_SPECS}
    for module_info in pkgutil.iter_modules(fl_gym.envs.__path__, "fl_gym.envs."):
        module = importlib.import_module(module_info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            is_env = issubclass(cls, gym.Env) and not issubclass(cls, gym.Wrapper)
            if is_env and cls.__module__ == module.__name__ and not inspect.isabstract(cls):
                assert cls in entry_points, f"{cls.__module__}.{cls.__qualname__} is not registered"


def test_registration_is_idempotent() -> None:
    before = {env_id: gym.registry[env_id] for env_id in fl_gym.ENV_IDS}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fl_gym.register_envs()
        importlib.reload(fl_gym)
    assert {env_id: gym.registry[env_id] for env_id in fl_gym.ENV_IDS} == before


@pytest.mark.parametrize("env_id", WIRELESS_FL_IDS)
def test_time_limit_matches_config(env_id: str) -> None:
    spec = gym.spec(env_id)
    assert spec.max_episode_steps == make_config().max_rounds
    env = gym.make(env_id, max_episode_steps=3, config={"target_accuracy": 1.0})
    env.reset(seed=SEED)
    ends = [env.step(env.action_space.sample())[2:4] for _ in range(3)]
    assert ends == [(False, False), (False, False), (False, True)]


@pytest.mark.slow  # a fresh interpreter importing torch: 5.7 s in the default run
def test_make_with_module_prefix_in_fresh_interpreter() -> None:
    code = (
        "import sys, gymnasium as gym\n"
        "assert 'fl_gym' not in sys.modules\n"
        "env = gym.make('fl_gym:fl_gym/WirelessFL-v0')\n"
        "obs, _ = env.reset(seed=0)\n"
        "env.step(env.action_space.sample())\n"
        "print(obs['devices'].shape[0] == env.unwrapped.num_devices)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


# -- API checkers ----------------------------------------------------------------------------------


def _rendering_available() -> bool:
    return (
        importlib.util.find_spec("fl_gym.envs.wireless_fl.rendering") is not None
        and importlib.util.find_spec("matplotlib") is not None
    )


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_gymnasium_env_checker(env_id: str) -> None:
    env = gym.make(env_id)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped, skip_render_check=not _rendering_available())
        # The passive checker wrapped around gym.make's env must not complain either.
        env.reset(seed=SEED)
        env.step(env.action_space.sample())
    # The checker builds every declared render mode; "human" on this display-less machine says
    # once per process that it cannot show its frames (tests/test_human_render.py).
    assert [str(w.message) for w in caught if "render_mode='human'" not in str(w.message)] == []
    env.close()


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_sb3_env_checker(env_id: str) -> None:
    env = gym.make(env_id)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sb3_check_env(env.unwrapped, warn=True)
    unexpected = [str(w.message) for w in caught if SB3_EXPECTED_WARNING not in str(w.message)]
    assert unexpected == []
    env.close()


# -- determinism, pickling -------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_same_seed_same_trajectory(env_id: str) -> None:
    first = _rollout(gym.make(env_id), SEED, NUM_STEPS, action_seed=7)
    # A reused env (played with another seed first) and disturbed global RNGs change nothing.
    reused = gym.make(env_id)
    _rollout(reused, SEED + 1, 3, action_seed=3)
    torch.manual_seed(1234)
    np.random.seed(1234)  # noqa: NPY002 - disturbs the legacy global state on purpose
    states = _rng_states()
    second = _rollout(reused, SEED, NUM_STEPS, action_seed=7)
    assert data_equivalence(first, second, exact=True)
    # Nothing in the environment draws from (or reseeds) the global generators.
    after = _rng_states()
    assert torch.equal(states[0], after[0]) and np.array_equal(states[1], after[1])


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_different_seeds_differ(env_id: str) -> None:
    a = _rollout(gym.make(env_id), SEED, 3, action_seed=7)
    b = _rollout(gym.make(env_id), SEED + 1, 3, action_seed=7)
    assert not data_equivalence(a[0][0], b[0][0], exact=True), "reset observations are equal"
    assert not data_equivalence(a, b, exact=True)


@pytest.mark.parametrize("env_id", ALL_IDS)
@pytest.mark.parametrize("clone", ["pickle", "deepcopy"])
@pytest.mark.parametrize("steps_before", [0, 2])
def test_copied_env_steps_identically(env_id: str, clone: str, steps_before: int) -> None:
    env = gym.make(env_id)
    env.reset(seed=SEED)
    env.action_space.seed(SEED)
    for _ in range(steps_before):  # copy right after reset and mid-episode
        env.step(env.action_space.sample())
    twin = pickle.loads(pickle.dumps(env)) if clone == "pickle" else copy.deepcopy(env)
    env.action_space.seed(5)
    for _ in range(NUM_STEPS):
        action = env.action_space.sample()
        mine, theirs = env.step(action), twin.step(action)
        assert data_equivalence(mine, theirs, exact=True)
        if mine[2] or mine[3]:
            break
    # The copy carries the configuration: both start the next episode alike.
    assert data_equivalence(env.reset(seed=SEED + 3), twin.reset(seed=SEED + 3), exact=True)


# -- PettingZoo modules ----------------------------------------------------------------------------

# Every versioned module of fl_gym.envs (``<name>_v<N>``), found by scanning the package: a new
# multi-agent environment goes through the tests below without being listed anywhere.
PETTINGZOO_MODULES = sorted(
    f"fl_gym.envs.{info.name}"
    for info in pkgutil.iter_modules(fl_gym.envs.__path__)
    if not info.ispkg and re.fullmatch(r"\w+_v\d+", info.name)
)
# Small configurations keep the PettingZoo tests fast (a few agents, short episodes).
PETTINGZOO_SMALL_CONFIGS: dict[str, dict[str, Any]] = {
    "fl_gym.envs.vehicular_v1": {"system.num_pairs": 4, "max_steps": 30},
    "fl_gym.envs.uav_swarm_v0": {"swarm.num_uavs": 6, "swarm.max_steps": 30},
}


def _pz_module(name: str) -> Any:
    module = importlib.import_module(name)
    assert name in PETTINGZOO_SMALL_CONFIGS, (
        f"{name}: add a small configuration to PETTINGZOO_SMALL_CONFIGS in tests/test_envs.py"
    )
    return module


def _pz_parallel(name: str) -> Any:
    return _pz_module(name).parallel_env(config=PETTINGZOO_SMALL_CONFIGS[name])


def _pz_rollout(env: Any, seed: int, num_steps: int, action_seed: int) -> list[Any]:
    """Reset a parallel env with ``seed``; step every live agent with seeded sampled actions."""
    obs, infos = env.reset(seed=seed)
    records: list[Any] = [(obs, infos)]
    for i, agent in enumerate(env.possible_agents):
        env.action_space(agent).seed(action_seed + i)
    for _ in range(num_steps):
        if not env.agents:
            break
        actions = {agent: env.action_space(agent).sample() for agent in env.agents}
        records.append((actions, *env.step(actions)))
    return records


def test_pettingzoo_modules_are_found() -> None:
    assert PETTINGZOO_MODULES == ["fl_gym.envs.uav_swarm_v0", "fl_gym.envs.vehicular_v1"]
    assert set(PETTINGZOO_SMALL_CONFIGS) == set(PETTINGZOO_MODULES)


@pytest.mark.parametrize("name", PETTINGZOO_MODULES)
def test_pettingzoo_module_entry_points(name: str) -> None:
    module = _pz_module(name)
    par = _pz_parallel(name)
    assert isinstance(par, module.raw_env)
    assert par.metadata["name"] == name.rsplit(".", 1)[-1]
    aec = module.env(config=PETTINGZOO_SMALL_CONFIGS[name])
    aec.reset(seed=SEED)
    assert aec.possible_agents == par.possible_agents


@pytest.mark.parametrize("name", PETTINGZOO_MODULES)
def test_pettingzoo_parallel_api_test(name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the API test warns of live/dead agent mismatches
        # ... and resets with options={"options": 1}, which the envs warn of and ignore.
        warnings.filterwarnings("ignore", "unknown reset option", UserWarning)
        parallel_api_test(_pz_parallel(name), num_cycles=60)


@pytest.mark.parametrize("name", PETTINGZOO_MODULES)
def test_pettingzoo_parallel_seed_test(name: str) -> None:
    parallel_seed_test(lambda: _pz_parallel(name), num_cycles=40)


@pytest.mark.parametrize("name", PETTINGZOO_MODULES)
def test_pettingzoo_aec_api_test(name: str) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "unknown reset option", UserWarning)
        # PettingZoo suggests Box or Discrete; vehicular_v1's MultiDiscrete is its documented space.
        warnings.filterwarnings("ignore", "Action space for each agent probably", UserWarning)
        api_test(_pz_module(name).env(config=PETTINGZOO_SMALL_CONFIGS[name]), num_cycles=40)


@pytest.mark.parametrize("name", PETTINGZOO_MODULES)
def test_pettingzoo_same_seed_same_trajectory(name: str) -> None:
    first = _pz_rollout(_pz_parallel(name), SEED, NUM_STEPS, action_seed=7)
    # A reused env (played with another seed first) and disturbed global RNGs change nothing.
    reused = _pz_parallel(name)
    _pz_rollout(reused, SEED + 1, 3, action_seed=3)
    torch.manual_seed(1234)
    np.random.seed(1234)  # noqa: NPY002 - disturbs the legacy global state on purpose
    states = _rng_states()
    second = _pz_rollout(reused, SEED, NUM_STEPS, action_seed=7)
    assert data_equivalence(first, second, exact=True)
    after = _rng_states()
    assert torch.equal(states[0], after[0]) and np.array_equal(states[1], after[1])
    other = _pz_rollout(_pz_parallel(name), SEED + 1, NUM_STEPS, action_seed=7)
    assert not data_equivalence(first[0][0], other[0][0], exact=True)


@pytest.mark.parametrize("name", PETTINGZOO_MODULES)
@pytest.mark.parametrize("clone", ["pickle", "deepcopy"])
@pytest.mark.parametrize("steps_before", [0, 2])
def test_pettingzoo_copied_env_steps_identically(name: str, clone: str, steps_before: int) -> None:
    env = _pz_parallel(name)
    _pz_rollout(env, SEED, steps_before, action_seed=SEED)  # copy after reset and mid-episode
    twin = pickle.loads(pickle.dumps(env)) if clone == "pickle" else copy.deepcopy(env)
    spaces_of = {agent: env.action_space(agent) for agent in env.possible_agents}
    for i, space in enumerate(spaces_of.values()):
        space.seed(5 + i)
    for _ in range(NUM_STEPS):
        actions = {agent: spaces_of[agent].sample() for agent in env.agents}
        mine, theirs = env.step(actions), twin.step(actions)
        assert data_equivalence(mine, theirs, exact=True)
        assert twin.agents == env.agents
        if not env.agents:
            break
    # The copy carries the configuration: both start the next episode alike.
    assert data_equivalence(env.reset(seed=SEED + 3), twin.reset(seed=SEED + 3), exact=True)
    assert data_equivalence(env.state(), twin.state(), exact=True)


# -- finite observations and rewards ---------------------------------------------------------------


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_random_episode_is_finite(env_id: str) -> None:
    env = gym.make(env_id)
    obs, _ = env.reset(seed=SEED)
    _assert_obs_finite_and_inside(env, obs)
    env.action_space.seed(SEED)
    for _ in range(env.spec.max_episode_steps):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        _assert_obs_finite_and_inside(env, obs)
        assert np.isfinite(reward)
        if terminated or truncated:
            break
    assert terminated or truncated


@pytest.mark.parametrize("env_id", WIRELESS_FL_IDS)
def test_random_episode_physics(env_id: str) -> None:
    """Every step of a default random episode keeps the physics and bookkeeping invariants."""
    env = gym.make(env_id)
    steps, (_, _, terminated, truncated, _) = _run_checked_episode(env, SEED)
    assert steps <= env.spec.max_episode_steps and (terminated or truncated)


@pytest.mark.parametrize("env_id", WIRELESS_FL_IDS)
def test_batteries_run_out(env_id: str) -> None:
    """With tiny batteries the episode ends because nobody has energy left."""
    # The private env's privacy budget would end the episode first: out of the way.
    unlimited = (
        {"epsilon_budget": 1e6} if hasattr(_RAW_ENVS[env_id].config, "epsilon_budget") else {}
    )
    env = gym.make(env_id, config={**SMALL_BATTERIES, "target_accuracy": 1.0, **unlimited})
    _, (obs, _, terminated, truncated, info) = _run_checked_episode(env, SEED)
    cell = _unwrapped(env).federation.cell
    assert terminated and not truncated
    assert not cell.available.any() and info["accuracy"] < 1.0
    assert np.all(obs["devices"][:, COL["available"]] == 0.0)
    floor_share = cell.config.battery_floor_j / np.asarray(cell.battery_capacity_j)
    assert np.all(obs["devices"][:, COL["battery"]] <= floor_share + 1e-6)
    assert obs["server"][SERVER_COL["available_share"]] == 0.0
    # Every joule of every battery was spent, and the counter says so.
    total_j = float(np.asarray(cell.battery_capacity_j).sum())
    assert info["energy_spent_j"] == pytest.approx(total_j, rel=1e-3)


# -- env-level semantics ---------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", SELECTION_IDS)
@pytest.mark.parametrize("score", [-1.0, 0.0])
def test_selecting_nobody_changes_nothing(env_id: str, score: float) -> None:
    env = gym.make(env_id)
    _, reset_info = env.reset(seed=SEED)
    raw = _unwrapped(env)
    action = np.asarray(_plan_action(env, np.zeros(raw.num_devices, dtype=bool)))
    action[raw.codec.slices["selection"]] = score  # a score must be > 0 to select
    before = _snapshot(env)
    out = env.step(action)
    _check_step(env, before, reset_info["accuracy"], out)
    _, reward, _, _, info = out
    assert not info["selected"].any() and not info["delivered"].any()
    assert torch.equal(raw.federation.params, before["params"])
    assert np.all(info["energy_transmit_j"] == 0.0) and np.all(info["energy_compute_j"] == 0.0)
    np.testing.assert_array_equal(raw.federation.cell.battery_j, before["battery_j"])
    assert info["accuracy"] == reset_info["accuracy"] and info["round_time_s"] == 0.0
    assert reward == 0.0


@pytest.mark.parametrize("env_id", WIRELESS_FL_IDS)
def test_tight_deadline_makes_everyone_a_straggler(env_id: str) -> None:
    env = gym.make(env_id, config={"deadline_s": 1e-3})
    _, info = env.reset(seed=SEED)
    env.action_space.seed(SEED)
    accuracy = info["accuracy"]
    for _ in range(3):
        before = _snapshot(env)
        out = env.step(_plan_action(env, before["available"]))
        _check_step(env, before, accuracy, out)
        info = out[4]
        assert info["selected"].any()
        np.testing.assert_array_equal(info["straggler"], info["selected"])
        assert not info["delivered"].any()
        assert torch.equal(_unwrapped(env).federation.params, before["params"])
        assert info["round_time_s"] == pytest.approx(1e-3)
        assert info["accuracy"] == accuracy


@pytest.mark.parametrize("env_id", SELECTION_IDS)
@pytest.mark.parametrize("num_selected", [1, 2])
def test_lost_updates_leave_the_model_unchanged(env_id: str, num_selected: int) -> None:
    """Local training works on copies: a straggler's training never reaches the global model."""
    env = gym.make(env_id, config={"deadline_s": 1e-3})
    _, info = env.reset(seed=SEED)
    selected = np.arange(_unwrapped(env).num_devices) < num_selected
    before = _snapshot(env)
    out = env.step(_plan_action(env, selected))
    _check_step(env, before, info["accuracy"], out)
    np.testing.assert_array_equal(out[4]["straggler"], selected)
    assert out[4]["train_loss"][:num_selected].min() > 0.0  # they did train
    assert torch.equal(_unwrapped(env).federation.params, before["params"])


@pytest.mark.parametrize("env_id", SELECTION_IDS)
def test_exhausted_device_is_dropped(env_id: str) -> None:
    env = gym.make(env_id, config={**SMALL_BATTERIES, "target_accuracy": 1.0})
    _, info = env.reset(seed=SEED)
    raw = _unwrapped(env)
    k = raw.num_devices
    only_first = np.zeros(k, dtype=bool)
    only_first[0] = True
    accuracy = info["accuracy"]
    # Drain device 0 alone; nobody else spends anything.
    full_j = np.array(raw.federation.cell.battery_j)
    for _ in range(100):
        before = _snapshot(env)
        out = env.step(_plan_action(env, only_first))
        _check_step(env, before, accuracy, out)
        accuracy = out[4]["accuracy"]
        if not raw.federation.cell.available[0]:
            break
    assert not raw.federation.cell.available[0] and not out[2]
    np.testing.assert_array_equal(raw.federation.cell.battery_j[1:], full_j[1:])

    first_two = np.zeros(k, dtype=bool)
    first_two[:2] = True
    before = _snapshot(env)
    out = env.step(_plan_action(env, first_two))
    _check_step(env, before, accuracy, out)
    info = out[4]
    assert info["dropped_unavailable"] == [0]
    np.testing.assert_array_equal(np.flatnonzero(info["selected"]), [1])
    assert info["energy_compute_j"][0] == 0.0 and info["energy_transmit_j"][0] == 0.0
    assert raw.federation.cell.battery_j[0] == before["battery_j"][0]
    # The decoded plan says the same before any step is taken.
    plan, decode_info = raw.decode_action(_plan_action(env, first_two))
    assert decode_info["dropped_unavailable"] == [0] and not plan.selected[0]


@pytest.mark.parametrize("env_id", WIRELESS_FL_IDS)
def test_terminates_on_target_accuracy(env_id: str) -> None:
    target = 0.2
    env = gym.make(env_id, config={"target_accuracy": target})
    _, info = env.reset(seed=SEED)
    accuracies = [info["accuracy"]]
    for _ in range(30):
        before = _snapshot(env)
        out = env.step(_plan_action(env, before["available"]))
        _check_step(env, before, accuracies[-1], out)
        accuracies.append(out[4]["accuracy"])
        if out[2]:
            break
    assert out[2] and not out[3] and accuracies[-1] >= target
    assert all(a < target for a in accuracies[1:-1]), "did not terminate when the target was hit"


# -- bad actions -----------------------------------------------------------------------------------


def _bad_actions(space: spaces.Space) -> list[tuple[str, Any, type[Exception], str]]:
    """(label, action, expected exception, regex its message must match) for ``space``."""
    dict_action = {"action": space.sample()}
    cases: list[tuple[str, Any, type[Exception], str]] = [
        ("string", "abc", TypeError, "action"),
        ("dict", dict_action, TypeError, "action"),
        ("ragged", [[0], [0, 1]], TypeError, "action"),
    ]
    if isinstance(space, spaces.Discrete):
        n = int(space.n)
        cases += [
            ("nan", float("nan"), ValueError, "nan"),
            ("wrong shape", np.zeros(2, dtype=np.int64), ValueError, r"shape \(2,\)"),
            ("above range", n, ValueError, rf"{n - 1}\D.*{n}"),
            ("below range", -1, ValueError, rf"{n - 1}\D.*-1"),
        ]
    elif isinstance(space, spaces.MultiDiscrete):
        nvec = np.asarray(space.nvec)
        high, low = nvec.copy(), np.zeros_like(nvec)
        low[-1] = -1
        cases += [
            ("nan", np.full(nvec.shape, np.nan), ValueError, "nan"),
            ("wrong shape", np.zeros(nvec.size + 1, dtype=np.int64), ValueError, "shape"),
            ("above range", high, ValueError, rf"{int(nvec.max()) - 1}\D.*{int(nvec.max())}"),
            ("below range", low, ValueError, "-1"),
        ]
    elif isinstance(space, spaces.Box):
        nan_action = space.sample()
        nan_action[0] = np.nan
        cases += [
            ("nan", nan_action, ValueError, r"non-finite.*\[0\]"),
            ("inf", np.full(space.shape, np.inf, dtype=space.dtype), ValueError, "non-finite"),
            ("wrong shape", np.zeros(space.shape[0] + 1, np.float32), ValueError, "shape"),
            ("numeric string", "0.5", TypeError, "action"),
            ("complex", np.full(space.shape, 0.5 + 1j), TypeError, "action"),
            ("None", None, TypeError, "action"),
        ]
    return cases


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_bad_actions_raise_and_leave_env_usable(env_id: str) -> None:
    env, twin = gym.make(env_id), gym.make(env_id)
    env.reset(seed=SEED)
    twin.reset(seed=SEED)
    env.action_space.seed(SEED)
    for label, action, error, pattern in _bad_actions(env.action_space):
        with pytest.raises(error, match=pattern):
            env.step(action)
        valid = env.action_space.sample()
        mine, theirs = env.step(valid), twin.step(valid)
        assert data_equivalence(mine, theirs, exact=True), f"state changed by the {label} action"
        if mine[2] or mine[3]:
            env.reset(seed=SEED)
            twin.reset(seed=SEED)


@pytest.mark.parametrize("env_id", BOX_WIRELESS_FL_IDS)
def test_box_actions_outside_bounds_are_clipped(env_id: str) -> None:
    env, twin = gym.make(env_id), gym.make(env_id)
    env.reset(seed=SEED)
    twin.reset(seed=SEED)
    rng = np.random.default_rng(SEED)
    for _ in range(3):
        wide = rng.uniform(-3.0, 3.0, env.action_space.shape).astype(np.float32)
        wide[0] = 2.5  # at least one entry out of bounds
        obs, reward, terminated, truncated, info = env.step(wide)
        obs2, reward2, terminated2, truncated2, info2 = twin.step(np.clip(wide, -1.0, 1.0))
        assert info["action_clipped"] is True and info2["action_clipped"] is False
        info.pop("action_clipped")
        info2.pop("action_clipped")
        assert data_equivalence(
            (obs, reward, terminated, truncated, info),
            (obs2, reward2, terminated2, truncated2, info2),
            exact=True,
        )
    # The bounds themselves are inside the space: no clipping reported.
    for bound in (-1.0, 1.0):
        info = env.step(np.full(env.action_space.shape, bound, dtype=np.float32))[4]
        assert info["action_clipped"] is False


# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", ALL_IDS)
@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"no_such_field": 1}, "no_such_field"),
        ({"wireless.no_such_field": 1}, "no_such_field"),
        ({"learning": {"no_such_field": 1}}, "no_such_field"),
    ],
)
def test_unknown_config_key(env_id: str, overrides: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        gym.make(env_id, config=overrides)
    env = gym.make(env_id)
    env.reset(seed=SEED)
    with pytest.raises(ValueError, match=named):
        env.reset(options={"config": overrides})


BAD_VALUES = [
    ({"deadline_s": -1.0}, r"deadline_s.*-1\.0"),
    ({"wireless.deadline_s": float("nan")}, "deadline_s.*nan"),
    ({"num_devices": 0}, "num_devices.*0"),
    ({"num_devices": 2.5}, r"num_devices.*2\.5"),
    ({"target_accuracy": 1.5}, r"target_accuracy.*1\.5"),
    ({"target_accuracy": "high"}, "target_accuracy.*'high'"),
    ({"partition": "weird"}, "partition.*'weird'"),
    ({"learning.model": "cnn"}, "model.*'cnn'"),
    ({"local_step_choices": (0, 1)}, r"local_step_choices.*\(0, 1\)"),
    ({"local_step_choices": (1.5, 2)}, r"local_step_choices.*1\.5"),
    ({"local_step_choices": "12"}, "local_step_choices.*'12'"),
    ({"default_compression": 1.5}, r"default_compression.*1\.5"),
    ({"default_compression": 9}, "default_compression.*9"),
    ({"power_min_dbm": float("-inf")}, "power_min_dbm.*-inf"),
    ({"power_min_dbm": "low"}, "power_min_dbm.*'low'"),
    ({"synthetic_iid": "yes"}, "synthetic_iid.*'yes'"),
    ({"battery_min_j": 0.5, "battery_max_j": 0.1}, r"battery_min_j.*0\.5"),
]


@pytest.mark.parametrize(("overrides", "pattern"), BAD_VALUES)
def test_bad_config_value_names_field_and_value(overrides: dict[str, Any], pattern: str) -> None:
    env_id = "fl_gym/WirelessFL-v0"
    with pytest.raises(ValueError, match=pattern):
        gym.make(env_id, config=overrides)
    env = gym.make(env_id)
    env.reset(seed=SEED)
    config_before = _unwrapped(env).config
    with pytest.raises(ValueError, match=pattern):
        env.reset(options={"config": overrides})
    assert _unwrapped(env).config == config_before


@pytest.mark.parametrize("env_id", WIRELESS_FL_IDS)
def test_reset_options_config(env_id: str) -> None:
    env = gym.make(env_id)
    env.reset(seed=SEED)
    # A new configuration holds for this and the following episodes.
    for options in ({"config": {"deadline_s": 1e-3}}, None):
        env.reset(seed=SEED, options=options)
        assert _unwrapped(env).config.wireless.deadline_s == 1e-3
        info = env.step(_plan_action(env, _snapshot(env)["available"]))[4]
        assert info["selected"].any() and not info["delivered"].any()
        np.testing.assert_array_equal(info["straggler"], info["selected"])
    # It is the same as building the env with that configuration, as a dict or a dataclass.
    expected = _rollout(env, SEED, 3, action_seed=1)
    base = _unwrapped(env).default_config()
    for config in ({"deadline_s": 1e-3}, make_config(None, {"deadline_s": 1e-3}, base=base)):
        fresh = gym.make(env_id, config=config)
        assert data_equivalence(_rollout(fresh, SEED, 3, action_seed=1), expected, exact=True)
    defaults = make_config(None, None, base=base)  # the env's own defaults
    env.reset(seed=SEED, options={"config": defaults})
    assert _unwrapped(env).config == defaults
    # Anything that would reshape the spaces is refused.
    with pytest.raises(ValueError, match="num_devices"):
        env.reset(options={"config": {"num_devices": _unwrapped(env).num_devices + 1}})
    with pytest.raises(ValueError, match="no_such_option"):
        env.reset(options={"no_such_option": 1})


@pytest.mark.parametrize("preset", sorted(WirelessFLEnv.available_presets()))
def test_every_preset_builds_and_steps(preset: str) -> None:
    env = gym.make("fl_gym/WirelessFL-v0", preset=preset)
    expected = make_config(preset)
    assert _unwrapped(env).config == expected
    obs, info = env.reset(seed=SEED)
    assert obs["devices"].shape == (expected.num_devices, len(DEVICE_FEATURES))
    assert env.action_space.shape == (3 * expected.num_devices + 1,)
    before = _snapshot(env)
    _check_step(env, before, info["accuracy"], env.step(env.action_space.sample()))
    # Overrides apply on top of the preset.
    env = gym.make("fl_gym/WirelessFL-v0", preset=preset, config={"deadline_s": 0.5})
    assert _unwrapped(env).config.num_devices == expected.num_devices
    assert _unwrapped(env).config.wireless.deadline_s == 0.5


def test_unknown_preset() -> None:
    with pytest.raises(ValueError, match="no-such-preset"):
        gym.make("fl_gym/WirelessFL-v0", preset="no-such-preset")


# -- action <-> plan -------------------------------------------------------------------------------


def _expected_plan(raw: WirelessFLEnv, plan: RoundPlan) -> RoundPlan:
    """What decoding ``raw.encode_plan(plan)`` must give: controlled knobs from the plan, others
    at their documented defaults (round-robin from a fresh reset: the first M devices)."""
    cfg = raw.config
    k, m = raw.num_devices, cfg.wireless.num_subchannels
    controls = raw.controls
    selected = plan.selected if "selection" in controls else np.arange(k) < m
    # Powers beyond the action's range map to its nearest end (0 W of an unselected device to
    # power_min_dbm, which matters where the default selection picks that device).
    p_min_w, p_max_w = float(dbm_to_w(cfg.power_min_dbm)), cfg.wireless.p_max_w
    power_w = np.clip(plan.power_w, p_min_w, p_max_w) if "power" in controls else p_max_w
    compression = plan.compression if "compression" in controls else cfg.default_compression
    steps = int(plan.local_steps.max()) if "frequency" in controls else cfg.default_local_steps
    return RoundPlan(selected, steps, compression, power_w)


def _assert_plans_equal(actual: RoundPlan, expected: RoundPlan) -> None:
    np.testing.assert_array_equal(actual.selected, expected.selected)
    np.testing.assert_array_equal(actual.local_steps, expected.local_steps)
    np.testing.assert_array_equal(actual.compression, expected.compression)
    np.testing.assert_allclose(actual.power_w, expected.power_w, rtol=1e-5)


@pytest.mark.parametrize("env_id", DIGITAL_IDS)
def test_encode_decode_round_trip(env_id: str) -> None:
    env = gym.make(env_id)
    env.reset(seed=SEED)
    raw = _unwrapped(env)
    cfg = raw.config
    k, levels = raw.num_devices, cfg.num_compression_levels
    p_min_dbm, p_max_dbm = cfg.power_min_dbm, cfg.wireless.p_max_dbm
    selected = np.zeros(k, dtype=bool)
    selected[[0, 2, k - 1]] = True
    power_w = np.zeros(k)
    power_w[[0, 2, k - 1]] = dbm_to_w(np.array([p_max_dbm, (p_min_dbm + p_max_dbm) / 2, p_min_dbm]))
    compression = np.zeros(k, dtype=np.int64)
    compression[[0, 2, k - 1]] = [levels - 1, levels // 2, 0]
    plans = [
        RoundPlan(selected, cfg.local_step_choices[-1], compression, power_w),
        # The complement, cut to the M devices that can upload in one round.
        RoundPlan(
            _first(~selected, cfg.wireless.num_subchannels),
            cfg.local_step_choices[0],
            levels - 1,
            np.full(k, power_w[2]),
        ),
    ]
    for plan in plans:
        action = raw.encode_plan(plan)
        assert env.action_space.contains(action)
        decoded, info = raw.decode_action(action)
        assert info["action_clipped"] is False and info["dropped_unavailable"] == []
        _assert_plans_equal(decoded, _expected_plan(raw, plan))


def _first(mask: np.ndarray, m: int) -> np.ndarray:
    """The first ``m`` True entries of ``mask``."""
    out = np.zeros_like(mask)
    out[np.flatnonzero(mask)[:m]] = True
    return out


@pytest.mark.parametrize("env_id", DIGITAL_IDS)
def test_encode_maps_to_nearest_representable_plan(env_id: str) -> None:
    env = gym.make(env_id)
    env.reset(seed=SEED)
    raw = _unwrapped(env)
    cfg = raw.config
    k = raw.num_devices
    choices = cfg.local_step_choices
    wanted_steps = max(choices) + 1000  # above every choice: the largest is nearest
    too_low_w = dbm_to_w(cfg.power_min_dbm - 10.0)  # below the lowest power the action reaches
    everyone_who_fits = _first(np.ones(k, dtype=bool), cfg.wireless.num_subchannels)
    plan = RoundPlan(everyone_who_fits, wanted_steps, 0, np.full(k, too_low_w))
    decoded, _ = raw.decode_action(raw.encode_plan(plan))
    if "power" in raw.controls:
        sel = decoded.selected
        np.testing.assert_allclose(decoded.power_w[sel], dbm_to_w(cfg.power_min_dbm), rtol=1e-5)
    if "frequency" in raw.controls:
        assert int(decoded.local_steps.max()) == max(choices)


@pytest.mark.parametrize("env_id", WIRELESS_FL_IDS)
def test_decode_encode_is_a_projection(env_id: str) -> None:
    """Re-encoding a decoded action decodes to the same plan (decoding is idempotent)."""
    env = gym.make(env_id)
    env.reset(seed=SEED)
    raw = _unwrapped(env)
    env.action_space.seed(SEED)
    for _ in range(20):
        plan, _ = raw.decode_action(env.action_space.sample())
        again, _ = raw.decode_action(raw.encode_plan(plan))
        _assert_plans_equal(again, plan)


# -- SB3 PPO ---------------------------------------------------------------------------------------


def _as_env_action(space: spaces.Space, stored: np.ndarray) -> Any:
    """The action the env received for an entry of SB3's rollout buffer (Box actions are stored
    before SB3 clips them to the bounds)."""
    if isinstance(space, spaces.Box):
        return np.clip(stored, space.low, space.high).astype(space.dtype)
    if isinstance(space, spaces.Discrete):
        return int(stored[0])
    return stored.astype(space.dtype)


@pytest.mark.parametrize("env_id", ALL_IDS)
@pytest.mark.parametrize("n_envs", [1, 2])
def test_sb3_ppo_learns_from_the_envs_own_transitions(env_id: str, n_envs: int) -> None:
    """SB3 PPO takes every env as is (one env with no wrapper, or SB3's vectorised form), and
    what it trains on is exactly the env's: replaying the rollout buffer's actions in fresh envs
    reset with the seeds SB3 used gives the buffer's observations and rewards, bit for bit."""
    from stable_baselines3.common.env_util import make_vec_env

    train_env = gym.make(env_id) if n_envs == 1 else make_vec_env(env_id, n_envs, seed=SEED)
    n_steps = 32
    model = PPO(
        "MultiInputPolicy",
        train_env,
        n_steps=n_steps,
        batch_size=32,
        n_epochs=1,
        seed=SEED,
        device="cpu",
    )
    initial = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(total_timesteps=n_steps * n_envs)
    trained = list(model.policy.parameters())
    assert all(torch.isfinite(p).all() for p in trained)
    assert any(not torch.equal(a, b) for a, b in zip(initial, trained, strict=True))
    buffer = model.rollout_buffer
    # Training flattened observations and actions env by env, (n_steps, n_envs, ...) ->
    # (n_envs * n_steps, ...); rewards and episode starts keep their (n_steps, n_envs) shape.
    assert buffer.full and buffer.generator_ready
    for i in range(n_envs):
        env = gym.make(env_id)
        obs, _ = env.reset(seed=SEED + i)  # SB3 seeds the i-th env's first reset with seed + i
        episode_start = True
        for t in range(n_steps):
            row = i * n_steps + t
            assert buffer.episode_starts[t, i] == episode_start
            for key, value in obs.items():
                np.testing.assert_array_equal(buffer.observations[key][row], value)
            action = _as_env_action(env.action_space, buffer.actions[row])
            obs, reward, terminated, truncated, _ = env.step(action)
            if not truncated:  # SB3 adds the bootstrapped value to a truncated step's reward
                assert buffer.rewards[t, i] == np.float32(reward)
            episode_start = terminated or truncated
            if episode_start:  # SB3 resets without a seed: the env's generator carries on
                obs, _ = env.reset()
    # The trained policy acts inside the action space.
    obs, _ = env.reset(seed=SEED)
    assert env.action_space.contains(model.predict(obs, deterministic=True)[0])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env_id", "preset"),
    [
        (env_id, preset)
        for env_id in WIRELESS_FL_IDS
        for preset in sorted(load_env_creator(gym.spec(env_id).entry_point).available_presets())
        if preset in PRESETS
    ],
)
def test_preset_random_episode_physics(env_id: str, preset: str) -> None:
    env = gym.make(env_id, preset=preset, config=SMALL_BATTERIES)
    check_env(env.unwrapped, skip_render_check=True)
    _run_checked_episode(env, SEED)
