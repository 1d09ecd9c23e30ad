"""The conventions every environment family shares: errors, presets, policies, the rollout loop."""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import fl_gym
from fl_gym.baselines import POLICIES, POLICY_ALIASES, baselines_for, make_policy
from fl_gym.envs.registration import ENV_IDS
from fl_gym.envs.rollout import env_family, family_of_id, rollout

PETTINGZOO_MODULES = ("vehicular_v1", "uav_swarm_v0")
SMALL = {"uav_swarm_v0": {"num_uavs": 4, "max_steps": 3}}
ALL_ENVS = [*ENV_IDS, *PETTINGZOO_MODULES]


def _make(name: str, **kwargs: Any) -> Any:
    if name in PETTINGZOO_MODULES:
        return importlib.import_module(f"fl_gym.envs.{name}").parallel_env(**kwargs)
    return gym.make(name, **kwargs)


def _raw(env: Any) -> Any:
    return getattr(env, "unwrapped", env)


def _no_action(env: Any) -> Any:
    return env.action_space.sample() if isinstance(env, gym.Env) else {}


def test_the_list_holds_every_env_of_every_family() -> None:
    assert len(ENV_IDS) == 11
    assert sorted({family_of_id(name) for name in ALL_ENVS}) == ["uav", "vehicular", "wireless-fl"]


@pytest.mark.parametrize("name", ALL_ENVS)
def test_unknown_reset_option_is_the_same_message(name: str) -> None:
    """A Gymnasium env raises it; a PettingZoo env warns it, since PettingZoo's own
    ``parallel_api_test`` resets with ``options={"options": 1}`` and must pass."""
    env = _raw(_make(name, config=SMALL.get(name)))
    message = "unknown reset option(s) ['bogus']; allowed: ['config']"
    if isinstance(env, gym.Env):
        with pytest.raises(ValueError, match=re.escape(message)):
            env.reset(seed=0, options={"bogus": 1})
    else:
        with pytest.warns(UserWarning, match=re.escape(message)):
            env.reset(seed=0, options={"bogus": 1})
    env.reset(seed=0, options={"config": {}})  # the allowed option still works


@pytest.mark.parametrize("name", ALL_ENVS)
def test_step_before_reset_is_the_same_error(name: str) -> None:
    env = _raw(_make(name, config=SMALL.get(name)))
    with pytest.raises(RuntimeError, match=re.escape("call reset() before step()")):
        env.step(_no_action(env))


@pytest.mark.parametrize("name", ALL_ENVS)
def test_bad_render_mode_is_the_same_error(name: str) -> None:
    env = _raw(_make(name, config=SMALL.get(name)))
    modes = env.metadata["render_modes"]
    message = f"render_mode must be None or one of {modes}, got 'human-ish'"
    with pytest.raises(ValueError, match=re.escape(message)):
        _make(name, render_mode="human-ish")


@pytest.mark.parametrize("name", ALL_ENVS)
def test_render_modes_and_render_errors_are_the_same(name: str) -> None:
    env = _raw(_make(name, config=SMALL.get(name), render_mode="rgb_array"))
    assert env.metadata["render_modes"] == ["rgb_array", "human"]
    with pytest.raises(RuntimeError, match=re.escape("call reset() before render()")):
        env.render()
    silent = _raw(_make(name, config=SMALL.get(name)))
    silent.reset(seed=0)
    with pytest.warns(UserWarning, match=re.escape("render() called without a render_mode")):
        assert silent.render() is None


@pytest.mark.parametrize("name", ALL_ENVS)
def test_unknown_preset_and_unknown_config_key_are_the_same_errors(name: str) -> None:
    with pytest.raises(ValueError, match=r"unknown preset 'nowhere' for .*; allowed: \["):
        _make(name, preset="nowhere")
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['no_such_key'\] for .*"):
        _make(name, config={"no_such_key": 1})


@pytest.mark.parametrize("name", ALL_ENVS)
def test_presets_are_kebab_case(name: str) -> None:
    entry = next(e for e in fl_gym.catalogue() if e.name.removeprefix("fl_gym.envs.") == name)
    for preset in entry.presets:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", preset), preset


def test_former_uav_preset_names_are_aliases() -> None:
    from fl_gym.envs import uav_swarm_v0

    with pytest.warns(DeprecationWarning, match="'swarm-1k'"):
        old = uav_swarm_v0.parallel_env(preset="swarm_1k", config={"max_steps": 2})
    assert (
        old.config == uav_swarm_v0.parallel_env(preset="swarm-1k", config={"max_steps": 2}).config
    )


# -- one registry --------------------------------------------------------------------------------


def test_every_policy_name_is_kebab_case_and_aliases_resolve_to_entries() -> None:
    for name in POLICIES:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", name), name
    assert POLICY_ALIASES["mfgfl_hf"] == "mfgfl-hf"
    assert all(target in POLICIES for target in POLICY_ALIASES.values())


@pytest.mark.parametrize("name", ALL_ENVS)
def test_baselines_for_every_env_build_with_make_policy_and_act(name: str) -> None:
    env = _make(name, config=SMALL.get(name))
    names = baselines_for(env)
    assert names and all(POLICIES[n].family == env_family(env) for n in names)
    policy = make_policy(names[0], env)
    obs, _ = env.reset(seed=0)
    action, state = policy.predict(obs, episode_start=np.ones(1, dtype=bool))
    assert state is None
    if isinstance(env, gym.Env):
        assert env.action_space.contains(action)
    else:
        assert set(action) == set(env.agents)
        assert all(env.action_space(a).contains(v) for a, v in action.items())


_ENVS_BY_NAME: dict[str, Any] = {}


def _env_for_policy(policy: str) -> Any:
    """An env of ``ALL_ENVS`` that ``policy`` plays (built once per env)."""
    for name in ALL_ENVS:
        if name not in _ENVS_BY_NAME:
            _ENVS_BY_NAME[name] = _make(name, config=SMALL.get(name))
        if policy in baselines_for(_ENVS_BY_NAME[name]):
            return _ENVS_BY_NAME[name]
    raise AssertionError(f"no env in {ALL_ENVS} is played by {policy!r}")


def test_every_policy_plays_some_env() -> None:
    for policy in POLICIES:
        _env_for_policy(policy)


@pytest.mark.parametrize("policy", list(POLICIES))
def test_an_unknown_policy_option_is_the_registrys_error(policy: str) -> None:
    env = _env_for_policy(policy)
    allowed = sorted(POLICIES[policy].options) or "none"
    message = f"has no option(s) ['bogus']; allowed: {allowed}"
    with pytest.raises(TypeError, match=re.escape(message)):
        make_policy(policy, env, bogus=1)


@pytest.mark.parametrize("policy", list(POLICIES))
def test_every_recorded_policy_option_takes_its_default(policy: str) -> None:
    env = _env_for_policy(policy)
    options = POLICIES[policy].options
    assert all(value is not inspect.Parameter.empty for value in options.values()), options
    built = make_policy(policy, env, **options)
    obs, _ = env.reset(seed=0)
    action, _ = built.predict(obs, episode_start=np.ones(1, dtype=bool))
    if isinstance(env, gym.Env):
        assert env.action_space.contains(action)
    else:
        assert set(action) == set(env.agents)
        assert all(env.action_space(a).contains(v) for a, v in action.items())


def test_uav_policies_record_their_controllers_options() -> None:
    from fl_gym.baselines.mean_field import MeanFieldConfig

    assert POLICIES["straight-line"].options == {"cruise_speed_mps": 8.0, "speed_gain_per_s": 2.0}
    assert POLICIES["hjb-full-info"].options["repulsion_radius_m"] == 3.0
    mean_field = POLICIES["mfgfl-hf"].options
    assert mean_field["seed"] == 0 and mean_field["cruise_speed_mps"] == 8.0
    assert mean_field["average_every_steps"] == MeanFieldConfig().average_every_steps
    assert "mean_field" not in mean_field and "averaging" not in mean_field  # the name fixes it


def test_make_policy_refuses_another_family() -> None:
    env = gym.make("fl_gym/ClientSelection-v0")
    with pytest.raises(ValueError, match="plays the uav envs, not wireless-fl ones; allowed here"):
        make_policy("straight-line", env)
    with pytest.raises(ValueError, match="unknown policy 'teleport'; allowed: "):
        make_policy("teleport", env)


def test_former_controller_names_resolve_to_the_same_entry() -> None:
    from fl_gym.envs import uav_swarm_v0

    env = uav_swarm_v0.parallel_env(config=SMALL["uav_swarm_v0"])
    with pytest.warns(DeprecationWarning, match="'hjb-full-info'"):
        old = make_policy("hjb_full_info", env)
    new = make_policy("hjb-full-info", env)
    assert type(old) is type(new) and old.name == new.name == "hjb-full-info"


# -- one rollout loop ----------------------------------------------------------------------------


def test_rollout_of_the_vehicular_envs_equals_a_hand_loop_in_both_forms() -> None:
    """Same seed, same policy: the loop's numbers are those of a plain loop, and the PettingZoo
    form (dict of agents) plays exactly the Gymnasium form's actions."""
    from fl_gym.envs import vehicular_v1

    config = {"system.num_pairs": 4, "max_steps": 12}
    genv = gym.make("fl_gym/VehicularURLLC-v1", config=config, max_episode_steps=12)
    policy = make_policy("vehicular-random-rb", genv, seed=3)
    episode = rollout(genv, policy, seed=5)
    hand = make_policy("vehicular-random-rb", genv, seed=3)
    obs, _ = genv.reset(seed=5)
    power, rewards, done = [], [], False
    while not done:
        obs, reward, terminated, truncated, info = genv.step(hand.predict(obs)[0])
        power.append(info["mean_power_w"])
        rewards.append(float(reward))
        done = terminated or truncated
    assert episode.mean_power_w == power and episode.rewards == rewards
    assert rollout(genv, policy, seed=5) == episode  # the policy restarts with the episode
    penv = vehicular_v1.parallel_env(config=config)
    pz = rollout(penv, make_policy("vehicular-random-rb", penv, seed=3), seed=5)
    assert pz.mean_power_w == episode.mean_power_w and pz.slots == episode.slots == 12
    assert pz.rewards == episode.rewards  # the mean of the agents' rewards is the env's reward


def test_run_episode_is_the_rollout_loop() -> None:
    from fl_gym.baselines.uav import run_episode
    from fl_gym.envs import uav_swarm_v0

    env = uav_swarm_v0.parallel_env(config={"num_uavs": 6, "max_steps": 5})
    a = run_episode(env, make_policy("hjb-full-info", env), seed=1)
    b = rollout(env, make_policy("hjb-full-info", env), seed=1, num_threads=None)
    assert a == b and a.steps == 5 and a.controller == "hjb-full-info"
    assert a.bits_per_episode == 5 * 6 * 5 * 64  # n (n - 1) 64 bits in each of the 5 steps


# -- reward weights at the env layer -------------------------------------------------------------


def test_uav_reward_weights_live_in_the_env_config_and_keys_stay_flat() -> None:
    from fl_gym.envs import uav_swarm_v0
    from fl_gym.envs.uav.env import UAVSwarmEnvConfig
    from fl_gym.sim.uav.swarm import UAVSwarmConfig

    assert not {"energy_weight", "collision_cost", "flocking_weight"} & set(
        UAVSwarmConfig.__dataclass_fields__
    )
    env = uav_swarm_v0.parallel_env(config={"num_uavs": 5, "collision_cost_per_pair": 2.5})
    assert isinstance(env.config, UAVSwarmEnvConfig)
    assert env.config.swarm.num_uavs == 5 and env.config.collision_cost_per_pair == 2.5
    dotted = uav_swarm_v0.parallel_env(config={"swarm.num_uavs": 5, "collision_cost_per_pair": 2.5})
    assert dotted.config == env.config
    with pytest.warns(DeprecationWarning, match="'energy_weight_per_m2_s3'"):
        old = uav_swarm_v0.parallel_env(config={"num_uavs": 5, "energy_weight": 0.5})
    assert old.config.energy_weight_per_m2_s3 == 0.5
    with pytest.raises(ValueError, match=r"collision_cost_per_pair.*-1\.0"):
        uav_swarm_v0.parallel_env(config={"collision_cost_per_pair": -1.0})
    # A swarm configuration object is the swarm part; the env's weights stay.
    swarm_only = uav_swarm_v0.parallel_env(config=UAVSwarmConfig(num_uavs=5))
    assert swarm_only.config == UAVSwarmEnvConfig(swarm=UAVSwarmConfig(num_uavs=5))


def test_uav_reward_weights_scale_their_terms_exactly() -> None:
    """Doubling a weight doubles its term, bit for bit, and leaves the others alone."""
    from fl_gym.envs import uav_swarm_v0

    def terms(**weights: float) -> list[dict[str, float]]:
        env = uav_swarm_v0.parallel_env(config={"num_uavs": 6, **weights})
        env.reset(seed=3)
        actions = {a: np.array([0.7, -0.4], np.float32) for a in env.agents}
        infos = env.step(actions)[4]
        return [infos[a]["reward_terms"] for a in env.possible_agents]

    base = terms()
    doubled = terms(energy_weight_per_m2_s3=0.01, flocking_weight_per_m2_s=0.01)
    for b, d in zip(base, doubled, strict=True):
        assert d["energy"] == 2 * b["energy"] != 0 and d["flocking"] == 2 * b["flocking"]
        assert d["progress"] == b["progress"] and d["time"] == b["time"]
