"""fl_gym.agents: device-set policies, training and loading, evaluation, the benchmark harness."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from scipy import stats

import fl_gym  # noqa: F401  (registers the environments)
from fl_gym.agents import (
    DeviceSetExtractor,
    DeviceSetPolicy,
    action_layout,
    bootstrap_ci,
    evaluate,
    interquartile_mean,
    leaderboard_markdown,
    load_agent,
    parse_seeds,
    run_benchmark,
    train,
)
from fl_gym.baselines import make_baseline
from fl_gym.envs.rollout import rollout

SMALL_PPO = {"n_steps": 32, "batch_size": 32, "n_epochs": 1}


def _policy(env_id: str, num_devices: int = 6, **extractor: object) -> DeviceSetPolicy:
    key = "system.num_pairs" if "Vehicular" in env_id else "num_devices"
    env = gym.make(env_id, config={key: num_devices})
    policy = DeviceSetPolicy(
        env.observation_space,
        env.action_space,
        lambda _: 3e-4,
        features_extractor_kwargs=extractor or None,
    )
    env.close()
    return policy.eval()


def _random_obs(space: spaces.Dict, batch: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "devices": torch.rand((batch, *space["devices"].shape), generator=g),
        "server": torch.rand((batch, *space["server"].shape), generator=g),
    }


def _distribution_params(policy: DeviceSetPolicy, obs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        features = policy.extract_features(obs, policy.pi_features_extractor)
        return policy.mlp_extractor.forward_actor(features)


# -- device-set policy ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env_id", "expected"),
    [
        ("fl_gym/ClientSelection-v0", (1, False, 0)),
        ("fl_gym/WirelessFL-v0", (3, False, 1)),
        ("fl_gym/OverTheAirFL-v0", (1, False, 1)),
        ("fl_gym/GradientCompression-v0", (None, True, 0)),
        ("fl_gym/AggregationFrequency-v0", (0, True, None)),
        ("fl_gym/VehicularURLLC-v1", ("pair", True, 0)),
    ],
)
def test_action_layout_of_every_env(env_id: str, expected: tuple) -> None:
    env = gym.make(env_id)
    k = env.observation_space["devices"].shape[0]
    layout = action_layout(env.action_space, k)
    per_device, device_major, num_global = expected
    if per_device is None:  # MultiDiscrete: one logit per level and device
        per_device = int(env.action_space.nvec[0])
    if per_device == "pair":  # a power level and a resource block per pair
        per_device = int(env.action_space.nvec[0] + env.action_space.nvec[1])
    if num_global is None:
        num_global = int(env.action_space.n)
    assert (layout.per_device, layout.device_major, layout.num_global) == (
        per_device,
        device_major,
        num_global,
    )
    env.close()


def test_action_layout_rejects_spaces_that_do_not_split() -> None:
    with pytest.raises(ValueError, match="cannot split"):
        action_layout(spaces.MultiDiscrete([2, 3, 2]), 3)
    with pytest.raises(ValueError, match="cannot split"):
        action_layout(spaces.MultiDiscrete([2, 3, 3, 2]), 2)
    with pytest.raises(ValueError, match="devices=Box"):
        DeviceSetExtractor(spaces.Box(-1, 1, (4,)))


@pytest.mark.parametrize("pooling", ["attention", "deepsets"])
@pytest.mark.parametrize(
    "env_id",
    [
        "fl_gym/WirelessFL-v0",
        "fl_gym/GradientCompression-v0",
        "fl_gym/AggregationFrequency-v0",
        "fl_gym/VehicularURLLC-v1",
    ],
)
def test_policy_is_equivariant_in_the_devices(env_id: str, pooling: str) -> None:
    policy = _policy(env_id, pooling=pooling)
    k = 6
    layout = policy._layout
    obs = _random_obs(policy.observation_space, batch=3, seed=1)
    perm = torch.tensor([4, 0, 5, 2, 1, 3])
    permuted = {"devices": obs["devices"][:, perm], "server": obs["server"]}
    out, out_perm = _distribution_params(policy, obs), _distribution_params(policy, permuted)
    device_part = layout.per_device * k
    if layout.per_device:
        if layout.device_major:
            a = out[:, :device_part].reshape(3, k, -1)
            b = out_perm[:, :device_part].reshape(3, k, -1)
        else:
            a = out[:, :device_part].reshape(3, -1, k).transpose(1, 2)
            b = out_perm[:, :device_part].reshape(3, -1, k).transpose(1, 2)
        torch.testing.assert_close(b, a[:, perm])
        # Not trivially equivariant: different devices get different outputs.
        assert not torch.allclose(a[:, 0], a[:, 1])
    torch.testing.assert_close(out_perm[:, device_part:], out[:, device_part:])
    with torch.no_grad():
        torch.testing.assert_close(policy.predict_values(permuted), policy.predict_values(obs))


def test_policy_weights_do_not_depend_on_the_number_of_devices() -> None:
    small = _policy("fl_gym/ClientSelection-v0", num_devices=6)
    large = _policy("fl_gym/ClientSelection-v0", num_devices=15)
    large.load_state_dict(small.state_dict())  # same shapes: raises otherwise
    obs = _random_obs(small.observation_space, batch=2, seed=3)
    # The 6-device cell padded with copies of its devices: the original devices' scores are
    # computed by the same weights in both networks, so they stay finite and well defined.
    big_obs = _random_obs(large.observation_space, batch=2, seed=4)
    assert _distribution_params(large, big_obs).shape == (2, 15)
    assert _distribution_params(small, obs).shape == (2, 6)


def test_initial_actions_are_small() -> None:
    policy = _policy("fl_gym/ClientSelection-v0")
    obs = _random_obs(policy.observation_space, batch=16, seed=0)
    assert float(_distribution_params(policy, obs).abs().max()) < 0.5


# -- training, saving, loading -------------------------------------------------------------------


def test_train_save_load_round_trip(tmp_path) -> None:
    agent = train(
        "fl_gym/ClientSelection-v0",
        "ppo",
        64,
        seed=3,
        algo_kwargs=SMALL_PPO,
        save_path=tmp_path / "agent",
    )
    assert (tmp_path / "agent.pt").is_file() and not (tmp_path / "agent.zip").exists()
    meta = json.loads((tmp_path / "agent.json").read_text())
    assert meta["env_id"] == "fl_gym/ClientSelection-v0"
    assert (meta["algo"], meta["seed"], meta["total_timesteps"]) == ("ppo", 3, 64)
    assert meta["policy"] == "device-set"
    assert {"fl_gym", "torch", "stable_baselines3", "gymnasium"} <= set(meta["versions"])
    loaded = load_agent(tmp_path / "agent.pt")
    assert isinstance(loaded.model.policy, DeviceSetPolicy)
    env = gym.make("fl_gym/ClientSelection-v0")
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(agent.predict(obs)[0], loaded.predict(obs)[0])
    # The saved agent plays through evaluate() exactly like the object in memory.
    by_path = evaluate(
        f"ppo:{tmp_path / 'agent'}", "fl_gym/ClientSelection-v0", [5], max_episode_steps=8
    )
    in_memory = evaluate(agent, "fl_gym/ClientSelection-v0", [5], max_episode_steps=8)
    assert by_path[0].episode_return == in_memory[0].episode_return


def test_same_seed_same_agent(tmp_path) -> None:
    a = train("fl_gym/AggregationFrequency-v0", "a2c", 20, seed=1, algo_kwargs={"n_steps": 5})
    b = train("fl_gym/AggregationFrequency-v0", "a2c", 20, seed=1, algo_kwargs={"n_steps": 5})
    for (name, x), (_, y) in zip(
        a.model.policy.state_dict().items(), b.model.policy.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)


# An easy setting in which the best action is known in closed form. Only the devices' compute
# energy is priced: the accuracy and time weights are 0, and a wide band in a small cell without
# shadowing makes the uploads' energy negligible, so a round costs about 1.4 x its local steps
# (the compute energy kappa C b f^2 per step, times 1,000 per joule) and the best action is 0
# (1 local step) in every state. Four-round episodes of logistic regression keep it fast.
EASY_ENV = "fl_gym/AggregationFrequency-v0"
EASY_CONFIG = {
    "accuracy_weight": 0.0,
    "energy_weight_per_j": 1000.0,
    "time_weight_per_s": 0.0,
    "learning.model": "logreg",
    "max_rounds": 4,
    "wireless.bandwidth_hz": 5e8,
    "wireless.cell_radius_m": 100.0,
    "wireless.shadowing_std_db": 0.0,
}
EASY_EVAL_SEEDS = (100, 101, 102)


def _easy_episode(act: Callable[[Any], Any], seed: int) -> tuple[float, list[int]]:
    """Return and actions of one episode of the easy setting, actions chosen by ``act(obs)``."""
    env = gym.make(EASY_ENV, config=EASY_CONFIG, max_episode_steps=4)
    obs, _ = env.reset(seed=seed)
    episode_return, actions = 0.0, []
    while True:
        action = int(act(obs))
        obs, reward, terminated, truncated, _ = env.step(action)
        episode_return += float(reward)
        actions.append(action)
        if terminated or truncated:
            env.close()
            return episode_return, actions


def test_ppo_learns_the_cheapest_aggregation_frequency() -> None:
    """PPO finds the known best action of an easy setting within 128 steps.

    Measured with this recipe (128 steps, rollouts of 32, 10 epochs, learning rate 3e-3,
    gamma 0: each round's reward is the consequence of its own action) over training seeds
    0-7: every seed's agent chose action 0 at every step of every evaluation episode, returns
    -5.5, -6.0 and -4.9 on evaluation seeds 100-102, where a uniformly random policy averages
    -42.6, -50.2 and -31.4 (10 episodes per seed) and always choosing 20 local steps gives
    about -110. With the default gamma 0.99, 2 of 6 seeds settled on a worse action than random
    in 256 steps, so the test would be flaky.
    """
    agent = train(
        EASY_ENV,
        "ppo",
        128,
        seed=0,
        config=EASY_CONFIG,
        algo_kwargs={
            "n_steps": 32,
            "batch_size": 32,
            "n_epochs": 10,
            "learning_rate": 3e-3,
            "gamma": 0.0,
        },
    )
    space = spaces.Discrete(5, seed=0)
    for seed in EASY_EVAL_SEEDS:
        learned, actions = _easy_episode(
            lambda obs: agent.predict(obs, deterministic=True)[0], seed
        )
        assert actions == [0, 0, 0, 0]
        # The same actions as the policy that always takes one local step: the same return.
        assert learned == _easy_episode(lambda _obs: 0, seed)[0]
        random_returns = [_easy_episode(lambda _obs: space.sample(), seed)[0] for _ in range(5)]
        assert learned > np.mean(random_returns) + 20.0


def test_dqn_and_mlp_policy_train_on_a_discrete_env() -> None:
    agent = train(
        "fl_gym/AggregationFrequency-v0",
        "dqn",
        40,
        algo_kwargs={"learning_starts": 10, "buffer_size": 100, "train_freq": 4},
    )
    assert isinstance(agent.model.policy.q_net.features_extractor, DeviceSetExtractor)
    mlp = train("fl_gym/ClientSelection-v0", "ppo", 32, policy="mlp", algo_kwargs=SMALL_PPO)
    assert not isinstance(mlp.model.policy, DeviceSetPolicy)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"env_id": "fl_gym/AggregationFrequency-v0", "algo": "sac"}, "sac needs a Box"),
        ({"env_id": "fl_gym/ClientSelection-v0", "algo": "dqn"}, "dqn needs a Discrete"),
        ({"env_id": "fl_gym/ClientSelection-v0", "algo": "trpo"}, "algo must be one of"),
        ({"env_id": "fl_gym/ClientSelection-v0", "policy": "cnn"}, "policy must be one of"),
        ({"env_id": "fl_gym/ClientSelection-v0", "total_timesteps": 0}, "total_timesteps"),
    ],
)
def test_train_rejects_bad_arguments(kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        train(**kwargs)


def test_load_agent_names_the_missing_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no trained agent"):
        load_agent(tmp_path / "nothing")


# -- evaluation ----------------------------------------------------------------------------------


def test_evaluate_matches_a_direct_rollout() -> None:
    env_id = "fl_gym/ClientSelection-v0"
    metrics = evaluate("round-robin", env_id, "2-3", max_episode_steps=12)
    env = gym.make(env_id, max_episode_steps=12)
    for m, seed in zip(metrics, (2, 3), strict=True):
        episode = rollout(env, make_baseline("round-robin", env), seed=seed)
        assert m.seed == seed
        assert m.episode_return == episode.episode_return
        assert m.final_accuracy == episode.final_accuracy
        assert m.energy_j == pytest.approx(episode.total_energy_j)
        assert m.rounds == episode.rounds
        target = env.unwrapped.config.target_accuracy
        assert m.rounds_to_target == episode.rounds_to(target)
        if m.rounds_to_target is not None:
            assert episode.accuracy[m.rounds_to_target] >= target


def test_evaluate_rejects_unknown_policies_and_wrong_env(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown policy 'nobody'"):
        evaluate("nobody", "fl_gym/ClientSelection-v0", [0], max_episode_steps=2)
    train("fl_gym/ClientSelection-v0", "ppo", 32, algo_kwargs=SMALL_PPO, save_path=tmp_path / "a")
    with pytest.raises(ValueError, match="trained on fl_gym/ClientSelection-v0"):
        evaluate(f"ppo:{tmp_path / 'a'}", "fl_gym/PowerControl-v0", [0], max_episode_steps=2)


@pytest.mark.parametrize(
    ("text", "seeds"),
    [("0-3", [0, 1, 2, 3]), ("5", [5]), ("0,3,7", [0, 3, 7]), ("0-2,10", [0, 1, 2, 10])],
)
def test_parse_seeds(text: str, seeds: list[int]) -> None:
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["3-1", "a", "", "-2", "1-"])
def test_parse_seeds_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="seeds"):
        parse_seeds(text)


# -- statistics and the benchmark ----------------------------------------------------------------


def test_bootstrap_ci_agrees_with_scipy() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=40)
    low, high = bootstrap_ci(x, resamples=20_000)
    reference = stats.bootstrap(
        (x,), np.mean, method="percentile", n_resamples=20_000, random_state=1
    ).confidence_interval
    assert low == pytest.approx(reference.low, abs=0.05)
    assert high == pytest.approx(reference.high, abs=0.05)
    assert low < x.mean() < high
    assert bootstrap_ci([2.5, 2.5, 2.5]) == (2.5, 2.5)


def test_interquartile_mean_is_the_mean_of_the_middle_half() -> None:
    x = [100.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, -50.0]
    assert interquartile_mean(x) == pytest.approx(np.mean([2.0, 3.0, 4.0, 5.0]))


def test_benchmark_uses_common_seeds_and_writes_everything(tmp_path) -> None:
    env_id = "fl_gym/ClientSelection-v0"
    config = {"max_rounds": 6}
    result = run_benchmark(
        [env_id], ["round-robin", "random"], "0-2", config=config, max_episode_steps=6
    )
    assert len(result.metrics) == 6
    for policy in ("round-robin", "random"):
        direct = evaluate(policy, env_id, "0-2", config=config, max_episode_steps=6)
        mine = [m for m in result.metrics if m.policy == policy]
        assert [m.episode_return for m in mine] == [m.episode_return for m in direct]
    csv_path = result.write_csv(tmp_path / "r.csv")
    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and {r["seed"] for r in rows} == {"0", "1", "2"}
    text = leaderboard_markdown(result)
    means = {
        p: np.mean([m.episode_return for m in result.metrics if m.policy == p])
        for p in ("round-robin", "random")
    }
    best = max(means, key=means.get)
    assert f"| 1 | `{best}` |" in text
    assert result.write_plots(tmp_path)[env_id].stat().st_size > 0


def test_benchmark_expands_baselines() -> None:
    result = run_benchmark(
        ["fl_gym/AggregationFrequency-v0"], ["baselines"], [0], max_episode_steps=2
    )
    assert {m.policy for m in result.metrics} == {"fixed-steps", "adaptive-frequency"}


def test_leaderboard_states_where_an_agent_stands() -> None:
    from fl_gym.agents.bench import BenchmarkResult
    from fl_gym.agents.evaluation import EpisodeMetrics

    def rows(policy: str, returns: list[float]) -> list[EpisodeMetrics]:
        return [
            EpisodeMetrics("e", policy, i, 0.9, 10, None, 1.0, 1.0, r)
            for i, r in enumerate(returns)
        ]

    result = BenchmarkResult(
        metrics=rows("ppo:m", [10.0, 10.5, 11.0])
        + rows("good", [10.2, 10.8, 11.1])
        + rows("bad", [1.0, 1.5, 2.0])
        + rows("best", [20.0, 20.5, 21.0]),
        seeds=[0, 1, 2],
    )
    text = leaderboard_markdown(result)
    assert "`ppo:m` ranks 3 of 4" in text
    assert "lies above those of `bad`" in text
    assert "overlaps `good`" in text
    assert "lies below `best`" in text


def test_training_on_the_native_vector_env_matches_dummy_vec_env() -> None:
    """The batched vector env is a drop-in: the same seeds give the same trained weights."""
    kwargs = {"n_envs": 2, "seed": 4, "algo_kwargs": SMALL_PPO}
    native = train("fl_gym/ClientSelection-v0", "ppo", 64, vectorization="native", **kwargs)
    dummy = train("fl_gym/ClientSelection-v0", "ppo", 64, vectorization="dummy", **kwargs)
    assert native.metadata["vectorization"] == "native"
    for (name, x), (_, y) in zip(
        native.model.policy.state_dict().items(),
        dummy.model.policy.state_dict().items(),
        strict=True,
    ):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)


def test_a_device_set_agent_plays_a_cell_with_more_devices(tmp_path) -> None:
    env_id = "fl_gym/ClientSelection-v0"
    train(
        env_id,
        "ppo",
        32,
        config={"num_devices": 6},
        algo_kwargs=SMALL_PPO,
        save_path=tmp_path / "six",
    )
    (m,) = evaluate(f"ppo:{tmp_path / 'six'}", env_id, [0], max_episode_steps=3)
    assert m.rounds == 3  # trained with 6 devices, played with the default 10
    env = gym.make(env_id)
    agent = load_agent(tmp_path / "six", env)
    obs, _ = env.reset(seed=0)
    assert agent.predict(obs)[0].shape == (10,)


@pytest.mark.parametrize("name", ["ClientSelection-v0_ppo", "ClientSelection-v0_ppo_mlp"])
def test_shipped_agents_load_and_play(name: str) -> None:
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "models" / name
    agent = load_agent(path)
    assert agent.metadata["env_id"] == "fl_gym/ClientSelection-v0"
    assert agent.metadata["total_timesteps"] == 100_352  # 98 rollouts of 4 x 256
    assert agent.metadata["requested_timesteps"] == 100_000
    (m,) = evaluate(f"ppo:{path}", "fl_gym/ClientSelection-v0", [0], max_episode_steps=3)
    assert m.rounds == 3 and np.isfinite(m.episode_return)


@pytest.mark.parametrize("vectorization", ["dummy", "native"])
def test_training_envs_truncate_at_the_episode_length_asked(vectorization: str) -> None:
    from fl_gym.agents.training import make_training_env

    vec = make_training_env(
        "fl_gym/ClientSelection-v0", n_envs=2, vectorization=vectorization, max_episode_steps=3
    )
    vec.reset()
    for _ in range(3):
        _, _, dones, infos = vec.step(np.zeros((2, *vec.action_space.shape), np.float32))
    assert dones.all() and all(info["TimeLimit.truncated"] for info in infos)
    vec.close()
    with pytest.raises(ValueError, match="max_episode_steps must be an integer >= 1"):
        make_training_env("fl_gym/ClientSelection-v0", max_episode_steps=0)
