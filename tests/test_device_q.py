"""Per-device Q-value selection: the device-choice wrapper, the Q policy, Double DQN, top-M play."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import DummyVecEnv
from torch.nn import functional

import fl_gym  # noqa: F401
from fl_gym.agents.device_q import DeviceChoiceWrapper, DeviceQPolicy, DoubleDQN, TopMQSelector
from fl_gym.envs.wireless_fl.env import DEVICE_FEATURES

CONFIG = {"num_devices": 8, "wireless.num_subchannels": 3}
AVAILABLE = DEVICE_FEATURES.index("available")


def _env(**overrides: object) -> gym.Env:
    return gym.make("fl_gym/ClientSelection-v0", config={**CONFIG, **overrides})


def _model(seed: int = 0) -> DoubleDQN:
    venv = DummyVecEnv([lambda: DeviceChoiceWrapper(_env())])
    return DoubleDQN(DeviceQPolicy, venv, learning_starts=0, buffer_size=100, seed=seed)


def test_wrapper_selects_the_named_device_and_m_minus_one_companions() -> None:
    env = DeviceChoiceWrapper(_env())
    assert env.action_space == gym.spaces.Discrete(8)
    env.reset(seed=3)
    for action in (0, 5, 7, 2):
        _, _, _, _, info = env.step(action)
        selected = env.last_selection
        assert selected is not None and selected[action] and selected.sum() == 3
        # The environment decodes the emitted scores into exactly this set.
        np.testing.assert_array_equal(info["selected"], selected)


def test_wrapper_without_companions_selects_one_device() -> None:
    env = DeviceChoiceWrapper(_env(), companions="none")
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.int64(4))
    np.testing.assert_array_equal(np.flatnonzero(info["selected"]), [4])


def test_wrapper_companions_follow_the_seed() -> None:
    def companions(seed: int) -> list[list[int]]:
        env = DeviceChoiceWrapper(_env())
        env.reset(seed=seed)
        sets = []
        for action in (1, 1, 1, 1):
            env.step(action)
            assert env.last_selection is not None
            sets.append(np.flatnonzero(env.last_selection).tolist())
        return sets

    assert companions(11) == companions(11)
    assert companions(11) != companions(12)


def test_wrapper_rejects_bad_actions_and_settings() -> None:
    env = DeviceChoiceWrapper(_env())
    env.reset(seed=0)
    for bad in (8, -1, 1.5, True):
        with pytest.raises(ValueError, match=r"device index in 0\.\.7"):
            env.step(bad)
    with pytest.raises(ValueError, match="companions"):
        DeviceChoiceWrapper(_env(), companions="all")
    with pytest.raises(ValueError, match="controls selection alone"):
        DeviceChoiceWrapper(gym.make("fl_gym/PowerControl-v0"))


def test_device_q_values_are_permutation_equivariant() -> None:
    model = _model()
    env = _env()
    obs, _ = env.reset(seed=1)
    env.step(np.where(np.arange(8) < 3, 1.0, -1.0))  # some devices now differ in their state
    obs, *_ = env.step(np.where(np.arange(8) >= 5, 1.0, -1.0))
    selector = TopMQSelector(model, env)
    q = selector.q_values(obs)
    perm = np.random.default_rng(0).permutation(8)
    permuted = {"devices": obs["devices"][perm], "server": obs["server"]}
    np.testing.assert_allclose(selector.q_values(permuted), q[perm], rtol=1e-5, atol=1e-6)
    assert np.unique(np.round(q, 6)).size > 1  # the devices are told apart


def test_top_m_selector_plays_the_m_highest_q_values_among_available() -> None:
    model = _model(seed=4)
    env = _env()
    obs, _ = env.reset(seed=2)
    selector = TopMQSelector(model, env)
    q = selector.q_values(obs)
    action, _ = selector.predict(obs)
    np.testing.assert_array_equal(np.flatnonzero(action > 0), np.sort(np.argsort(-q)[:3]))
    # The best device without energy is skipped for the fourth best.
    best = int(np.argmax(q))
    obs["devices"][best, AVAILABLE] = 0.0
    action, _ = selector.predict(obs)
    np.testing.assert_array_equal(np.flatnonzero(action > 0), np.sort(np.argsort(-q)[1:4]))
    # A batch of observations gives one action per row, and the environment plays them.
    batch = {key: np.stack([value, value]) for key, value in obs.items()}
    actions, _ = selector.predict(batch)
    assert actions.shape == (2, 8)
    _, _, _, _, info = env.step(actions[0])
    np.testing.assert_array_equal(info["selected"], actions[0] > 0)


def test_device_q_policy_needs_one_action_per_device() -> None:
    space = _env().observation_space
    with pytest.raises(ValueError, match=r"Discrete\(8\)"):
        DeviceQPolicy(space, gym.spaces.Discrete(5), lambda _: 1e-3)


def test_double_dqn_target_takes_the_online_argmax_valued_by_the_target_network() -> None:
    model = _model(seed=5)
    model.learning_rate = 0.0
    model.lr_schedule = lambda _: 0.0
    model.gamma = 0.9
    env = DeviceChoiceWrapper(_env())
    obs, _ = env.reset(seed=0)
    next_obs, *_ = env.step(2)
    # Make the target network differ from the online one, so the two targets differ.
    with torch.no_grad():
        for p in model.q_net_target.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    batch = {key: value[None] for key, value in obs.items()}
    nxt = {key: value[None] for key, value in next_obs.items()}
    for _ in range(4):  # one transition only: every sampled batch is that transition
        model.replay_buffer.add(
            batch, nxt, np.array([[2]]), np.array([-0.5]), np.array([0.0]), [{}]
        )
    model._setup_learn(1)
    model.train(gradient_steps=1, batch_size=4)
    with torch.no_grad():
        obs_t, _ = model.policy.obs_to_tensor(obs)
        next_t, _ = model.policy.obs_to_tensor(next_obs)
        online_next = model.q_net(next_t)[0]
        target_next = model.q_net_target(next_t)[0]
        value = model.q_net(obs_t)[0, 2]
    double = -0.5 + 0.9 * target_next[int(online_next.argmax())]
    vanilla = -0.5 + 0.9 * target_next.max()
    loss = model.logger.name_to_value["train/loss"]
    assert loss == pytest.approx(float(functional.smooth_l1_loss(value, double)), rel=1e-5)
    assert abs(float(double) - float(vanilla)) > 1e-4
