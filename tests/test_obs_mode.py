"""``obs_mode="flat"``: the Dict observation as one 1-D Box, in every layer that reads it."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env
from gymnasium.wrappers import FlattenObservation

import fl_gym
from fl_gym.baselines import make_baseline, read_observation
from fl_gym.baselines.features import split_batch
from fl_gym.envs import OverTheAirFLEnv, VehicularURLLCEnv, WirelessFLEnv
from fl_gym.envs.obs_mode import flatten_observation, unflatten_observation
from fl_gym.envs.registration import _WIRELESS_FL_VARIANTS
from fl_gym.envs.wireless_fl.env import DEVICE_FEATURES, SERVER_FEATURES, observe_many

QUICK = {"config": {"target_accuracy": 0.85}, "max_episode_steps": 6}


def _concat(obs: dict[str, np.ndarray]) -> np.ndarray:
    """The flat layout computed another way: ravel the devices matrix, append the server."""
    return np.concatenate([obs["devices"].ravel(), obs["server"]])


def _bits(a: np.ndarray) -> np.ndarray:
    assert a.dtype == np.float32
    return a.view(np.uint32)


@pytest.mark.parametrize("env_id", fl_gym.ENV_IDS)
def test_flat_equals_concatenated_dict_bit_for_bit(env_id: str) -> None:
    dict_env = gym.make(env_id)
    flat_env = gym.make(env_id, obs_mode="flat")
    obs_d, _ = dict_env.reset(seed=5)
    obs_f, _ = flat_env.reset(seed=5)
    assert isinstance(dict_env.observation_space, spaces.Dict)
    box = flat_env.observation_space
    assert isinstance(box, spaces.Box) and box.dtype == np.float32
    devices, server = dict_env.observation_space["devices"], dict_env.observation_space["server"]
    assert box.shape == (devices.shape[0] * devices.shape[1] + server.shape[0],)
    assert np.array_equal(box.low, np.concatenate([devices.low.ravel(), server.low]))
    assert np.array_equal(box.high, np.concatenate([devices.high.ravel(), server.high]))
    space = dict_env.action_space
    space.seed(3)
    for _ in range(4):
        assert np.array_equal(_bits(obs_f), _bits(_concat(obs_d)))
        assert box.contains(obs_f)
        action = space.sample()
        obs_d, rew_d, term_d, trunc_d, _ = dict_env.step(action)
        obs_f, rew_f, term_f, trunc_f, _ = flat_env.step(action)
        assert (rew_d, term_d, trunc_d) == (rew_f, term_f, trunc_f)
    assert np.array_equal(_bits(obs_f), _bits(_concat(obs_d)))


@pytest.mark.parametrize("env_id", fl_gym.ENV_IDS)
def test_layout_is_exposed_and_matches_gymnasium_flatten(env_id: str) -> None:
    flat_env = gym.make(env_id, obs_mode="flat")
    dict_env = FlattenObservation(gym.make(env_id))
    inner = flat_env.unwrapped
    obs_f, _ = flat_env.reset(seed=2)
    obs_w, _ = dict_env.reset(seed=2)
    # Gymnasium's own flattening of the Dict (keys in order) is the same layout.
    assert np.array_equal(obs_f, obs_w)
    assert flat_env.observation_space == dict_env.observation_space
    k, f = inner.dict_observation_space["devices"].shape
    g = inner.dict_observation_space["server"].shape[0]
    assert inner.observation_slices == {
        "devices": slice(0, k * f),
        "server": slice(k * f, k * f + g),
    }
    names = inner.observation_feature_names
    assert len(names) == k * f + g and len(set(names)) == len(names)
    assert names[f + 1].startswith("devices[1].") and names[-g].startswith("server.")
    parts = unflatten_observation(obs_f, inner.dict_observation_space)
    assert np.array_equal(
        obs_f[inner.observation_slices["devices"]].reshape(k, f), parts["devices"]
    )
    assert np.array_equal(flatten_observation(parts), obs_f)


def test_feature_names_follow_the_documented_columns() -> None:
    env = WirelessFLEnv(obs_mode="flat", config={"num_devices": 3})
    names = env.observation_feature_names
    assert names[: len(DEVICE_FEATURES)] == tuple(f"devices[0].{n}" for n in DEVICE_FEATURES)
    assert names[-len(SERVER_FEATURES) :] == tuple(f"server.{n}" for n in SERVER_FEATURES)
    obs, _ = env.reset(seed=0)
    # The ``available`` entry of every device is 1 at the start, the ``round`` entry 0.
    available = [i for i, n in enumerate(names) if n.endswith(".available")]
    assert len(available) == 3 and np.all(obs[available] == 1.0)
    assert obs[names.index("server.round")] == 0.0


@pytest.mark.parametrize("cls", [WirelessFLEnv, OverTheAirFLEnv, VehicularURLLCEnv])
@pytest.mark.parametrize("bad", ["Flat", "box", None, 1])
def test_bad_obs_mode_is_a_value_error_naming_it(cls: type, bad: object) -> None:
    with pytest.raises(ValueError, match=r"obs_mode must be one of \['dict', 'flat'\], got") as e:
        cls(obs_mode=bad)
    assert repr(bad) in str(e.value)


def test_bad_obs_mode_through_make_and_make_vec() -> None:
    with pytest.raises(ValueError, match="'image'"):
        gym.make("fl_gym/PowerControl-v0", obs_mode="image")
    with pytest.raises(ValueError, match="'image'"):
        gym.make_vec("fl_gym/PowerControl-v0", num_envs=2, obs_mode="image")


@pytest.mark.parametrize("env_id", fl_gym.ENV_IDS)
def test_flat_envs_pass_the_checkers_without_the_shape_warning(env_id: str) -> None:
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    check_env(gym.make(env_id, obs_mode="flat").unwrapped, skip_render_check=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sb3_check_env(gym.make(env_id, obs_mode="flat"))
    assert not [w for w in caught if "unconventional shape" in str(w.message)]


@pytest.mark.parametrize("env_id", [*_WIRELESS_FL_VARIANTS, "fl_gym/OverTheAirFL-v0"])
def test_native_vector_env_stacks_flat_rows(env_id: str) -> None:
    """Across autoresets the flat vector env returns the dict one's rows, flattened."""
    kwargs = {"num_envs": 3, "vectorization_mode": "vector_entry_point", **QUICK}
    dict_vec = gym.make_vec(env_id, **kwargs)
    flat_vec = gym.make_vec(env_id, obs_mode="flat", **kwargs)
    assert flat_vec.single_observation_space == flat_vec.envs[0].observation_space
    assert flat_vec.observation_space.shape == (3, *flat_vec.single_observation_space.shape)
    obs_d, _ = dict_vec.reset(seed=4)
    obs_f, _ = flat_vec.reset(seed=4)
    space = dict_vec.action_space
    space.seed(0)
    ends = 0
    for _ in range(9):
        assert obs_f.shape == flat_vec.observation_space.shape
        assert np.array_equal(_bits(obs_f), _bits(flatten_observation(obs_d)))
        action = space.sample()
        obs_d, rew_d, term_d, trunc_d, _ = dict_vec.step(action)
        obs_f, rew_f, term_f, trunc_f, _ = flat_vec.step(action)
        assert np.array_equal(rew_d, rew_f) and np.array_equal(term_d | trunc_d, term_f | trunc_f)
        ends += int((term_d | trunc_d).sum())
    assert ends > 0  # the comparison crossed autoresets


def test_observe_many_flat_equals_each_env() -> None:
    envs = [WirelessFLEnv(obs_mode="flat", config=c) for c in ({}, {"max_rounds": 7})]
    mixed = [WirelessFLEnv(config={}), WirelessFLEnv(obs_mode="flat", config={"max_rounds": 7})]
    for e, env in enumerate(envs + mixed):
        env.reset(seed=e % 2)
    for t in range(3):
        for env in envs + mixed:
            env.action_space.seed(t)
            env.step(env.action_space.sample())
        for group in (envs, mixed):
            got = observe_many(group)
            for a, env in zip(got, group, strict=True):
                want = env.observe()  # the batch of one
                if env.obs_mode == "flat":
                    assert np.array_equal(_bits(a), _bits(want))
                else:
                    assert isinstance(a, dict) and np.array_equal(a["devices"], want["devices"])


def test_sb3_adapter_on_flat_observations() -> None:
    from stable_baselines3 import PPO

    from fl_gym.agents.training import _policy_for
    from fl_gym.agents.vec_adapter import make_native_vec_env

    venv = make_native_vec_env(
        "fl_gym/ClientSelection-v0",
        2,
        seed=0,
        monitor=False,
        obs_mode="flat",
        config={"target_accuracy": 0.8},
        max_episode_steps=3,
    )
    obs = venv.reset()
    assert obs.shape == (2, 107) and obs.dtype == np.float32
    terminal = None
    for _ in range(3):
        obs, _, dones, infos = venv.step(np.ones((2, 10), dtype=np.float32))
        if dones.any():
            terminal = infos[int(np.flatnonzero(dones)[0])]["terminal_observation"]
    assert terminal is not None and terminal.shape == (107,)
    policy, _, architecture = _policy_for("ppo", None, {}, venv.observation_space)
    assert (policy, architecture) == ("MlpPolicy", "mlp")
    with pytest.raises(ValueError, match="device-set"):
        _policy_for("ppo", "device-set", {}, venv.observation_space)
    venv.close()
    # PPO on flat observations: the native env and DummyVecEnv train the same weights.
    from stable_baselines3.common.env_util import make_vec_env

    env_kwargs = {"obs_mode": "flat", "config": {"target_accuracy": 0.8}, "max_episode_steps": 3}
    envs = [
        make_native_vec_env("fl_gym/ClientSelection-v0", 2, seed=5, **env_kwargs),
        make_vec_env("fl_gym/ClientSelection-v0", n_envs=2, seed=5, env_kwargs=env_kwargs),
    ]
    weights = []
    for vec in envs:
        model = PPO(policy, vec, n_steps=16, batch_size=16, n_epochs=1, seed=0)
        model.learn(32)
        weights.append(model.policy.state_dict())
        vec.close()
    for name, value in weights[0].items():
        torch.testing.assert_close(value, weights[1][name], rtol=0, atol=0, msg=name)


@pytest.mark.parametrize(
    ("env_id", "baseline"),
    [
        ("fl_gym/ClientSelection-v0", "proportional-fair"),
        ("fl_gym/WirelessFL-v0", "energy-aware"),
    ],
)
def test_baseline_acts_the_same_on_flat_and_dict(env_id: str, baseline: str) -> None:
    dict_env = gym.make(env_id)
    flat_env = gym.make(env_id, obs_mode="flat")
    pd, pf = make_baseline(baseline, dict_env), make_baseline(baseline, flat_env)
    obs_d, _ = dict_env.reset(seed=1)
    obs_f, _ = flat_env.reset(seed=1)
    for _ in range(5):
        act_d, _ = pd.predict(obs_d)
        act_f, _ = pf.predict(obs_f)
        assert np.array_equal(act_d, act_f)
        obs_d, *_ = dict_env.step(act_d)
        obs_f, *_ = flat_env.step(act_f)


def test_baseline_acts_the_same_on_flat_and_dict_vector_envs() -> None:
    env_id = "fl_gym/ClientSelection-v0"
    kwargs = {"num_envs": 3, "vectorization_mode": "vector_entry_point", **QUICK}
    dict_vec, flat_vec = (
        gym.make_vec(env_id, **kwargs),
        gym.make_vec(env_id, obs_mode="flat", **kwargs),
    )
    pd = make_baseline("round-robin", dict_vec.envs[0])
    pf = make_baseline("round-robin", flat_vec.envs[0])
    obs_d, _ = dict_vec.reset(seed=0)
    obs_f, _ = flat_vec.reset(seed=0)
    for _ in range(8):
        act_d, _ = pd.predict(obs_d)
        act_f, _ = pf.predict(obs_f)
        assert act_f.shape == (3, 10) and np.array_equal(act_d, act_f)
        obs_d, *_ = dict_vec.step(act_d)
        obs_f, *_ = flat_vec.step(act_f)


def test_read_observation_reads_flat_rows() -> None:
    env = WirelessFLEnv(obs_mode="flat")
    obs, _ = env.reset(seed=0)
    obs, *_ = env.step(env.action_space.sample())
    parts = unflatten_observation(obs, env.dict_observation_space)
    from_flat, from_dict = read_observation(obs, 10), read_observation(parts, 10)
    for name, value in vars(from_dict).items():
        assert np.array_equal(getattr(from_flat, name), value), name
    batch = split_batch(np.stack([obs, obs]))
    assert batch is not None and len(batch) == 2
    assert np.array_equal(batch[1]["devices"], parts["devices"].astype(np.float64))
    assert split_batch(obs) is None
    with pytest.raises(TypeError, match=r"shape \(K \* 10 \+ 7,\).*of shape \(106,\)"):
        read_observation(obs[:-1])
    with pytest.raises(ValueError, match="must have shape"):
        read_observation(obs, num_devices=9)
