"""Agent files load without running code: .pt weights + a JSON spec; SB3 zips only on request."""

from __future__ import annotations

import base64
import json
import pathlib
import pickle
import zipfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

import fl_gym
from fl_gym._platform import cpu_model
from fl_gym.agents import (
    DeviceSetPolicy,
    UntrustedAgentError,
    evaluate,
    load_agent,
    save_agent,
    train,
)
from fl_gym.agents.agent_files import AgentFiles, space_from_json, space_to_json
from fl_gym.cli import main
from fl_gym.sim.threads import torch_threads

MODELS = Path(__file__).resolve().parents[1] / "models"
SMALL_PPO = {"n_steps": 32, "batch_size": 32, "n_epochs": 1}
CLIENT_SELECTION = "fl_gym/ClientSelection-v0"


class _TouchOnUnpickle:
    """Unpickling this calls ``pathlib.Path.touch(marker)``: a stand-in for any payload."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _crafted_zip(stem: Path, marker: Path) -> None:
    """An SB3-looking ``stem.zip`` (+ fl_gym's ``stem.json``) whose data entry holds a payload.

    SB3 writes objects in the zip's ``data`` entry as base64 cloudpickle under ``:serialized:``
    and unpickles them on load.
    """
    payload = base64.b64encode(pickle.dumps(_TouchOnUnpickle(marker))).decode()
    data = {"policy_class": {":type:": "<class 'type'>", ":serialized:": payload}}
    with zipfile.ZipFile(stem.with_suffix(".zip"), "w") as archive:
        archive.writestr("data", json.dumps(data))
    meta = {"env_id": CLIENT_SELECTION, "algo": "ppo", "policy": "device-set"}
    stem.with_suffix(".json").write_text(json.dumps(meta))


def _observations(space: gym.Space, env_id: str, count: int = 6) -> list[Any]:
    """Observations of a real episode and random points of the space."""
    env = gym.make(env_id)
    obs, _ = env.reset(seed=7)
    out = [obs]
    rng = np.random.default_rng(0)
    for _ in range(2):
        obs, *_ = env.step(env.action_space.sample())
        out.append(obs)
    env.close()
    space.seed(int(rng.integers(2**31)))
    return out + [space.sample() for _ in range(count - len(out))]


def _assert_same_actions(a: Any, b: Any, observations: list[Any]) -> None:
    for obs in observations:
        x, y = a.predict(obs, deterministic=True)[0], b.predict(obs, deterministic=True)[0]
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes()  # bit for bit


# -- crafted files do not run their payload -------------------------------------------------------


def test_a_crafted_zip_does_not_run_its_payload_without_the_opt_in(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    _crafted_zip(tmp_path / "agent", marker)
    for load in (
        lambda: load_agent(tmp_path / "agent"),
        lambda: load_agent(tmp_path / "agent.zip"),
        lambda: evaluate(f"ppo:{tmp_path / 'agent'}", CLIENT_SELECTION, [0], max_episode_steps=1),
        lambda: AgentFiles.read(tmp_path / "agent"),
    ):
        with pytest.raises(UntrustedAgentError, match="trust_pickle=True") as info:
            load()
        assert "--trust-pickle" in str(info.value) and "unpickles" in str(info.value)
        assert not marker.exists()
    # The file is a real threat: with the opt-in, SB3 unpickles it and the payload runs.
    with pytest.raises(Exception):  # noqa: B017  (the payload is no SB3 model: loading fails after)
        load_agent(tmp_path / "agent", trust_pickle=True)
    assert marker.is_file()


@pytest.mark.parametrize("command", ["eval", "bench"])
def test_the_cli_refuses_a_crafted_zip_and_names_the_flag(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "payload-ran"
    _crafted_zip(tmp_path / "agent", marker)
    policy = f"ppo:{tmp_path / 'agent'}"
    if command == "eval":
        args = ["eval", CLIENT_SELECTION, "--policy", policy, "--seeds", "0"]
    else:
        args = ["bench", "--envs", CLIENT_SELECTION, "--policies", policy, "--seeds", "0"]
        args += ["--out", str(tmp_path / "bench")]
    assert main([*args, "--max-episode-steps", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--trust-pickle" in err and str(tmp_path / "agent.zip") in err
    assert not marker.exists()


def test_crafted_weights_do_not_run_their_payload_either(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    agent = train(CLIENT_SELECTION, "ppo", 32, algo_kwargs=SMALL_PPO, save_path=tmp_path / "a")
    assert agent.path is not None
    torch.save({"weights": _TouchOnUnpickle(marker)}, tmp_path / "a.pt")
    meta = json.loads((tmp_path / "a.json").read_text())
    del meta["weights_sha256"]  # as a forger would, so that only torch's loader stands in the way
    (tmp_path / "a.json").write_text(json.dumps(meta))
    with pytest.raises(pickle.UnpicklingError):
        load_agent(tmp_path / "a")
    assert not marker.exists()


def test_weights_that_do_not_match_their_json_are_refused(tmp_path: Path) -> None:
    train(CLIENT_SELECTION, "ppo", 32, algo_kwargs=SMALL_PPO, save_path=tmp_path / "a")
    train(CLIENT_SELECTION, "ppo", 32, seed=1, algo_kwargs=SMALL_PPO, save_path=tmp_path / "b")
    (tmp_path / "a.pt").write_bytes((tmp_path / "b.pt").read_bytes())
    with pytest.raises(ValueError, match="SHA-256 differs"):
        load_agent(tmp_path / "a")


# -- a loaded agent acts as the saved one, bit for bit --------------------------------------------


@pytest.mark.parametrize(
    ("env_id", "algo", "policy", "algo_kwargs"),
    [
        (CLIENT_SELECTION, "ppo", "device-set", SMALL_PPO),
        (CLIENT_SELECTION, "ppo", "mlp", SMALL_PPO),
        (CLIENT_SELECTION, "sac", "device-set", {"learning_starts": 8, "batch_size": 8}),
        ("fl_gym/AggregationFrequency-v0", "dqn", "mlp", {"learning_starts": 8}),
    ],
)
def test_a_saved_agent_acts_exactly_as_the_trained_one(
    env_id: str, algo: str, policy: str, algo_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    agent = train(
        env_id, algo, 32, seed=2, policy=policy, algo_kwargs=algo_kwargs, save_path=tmp_path / "x"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "x.pt"]
    before = torch.get_rng_state()
    loaded = load_agent(tmp_path / "x")
    assert torch.equal(torch.get_rng_state(), before)  # loading leaves torch's generator alone
    assert type(loaded.model) is type(agent.model)
    assert type(loaded.model.policy) is type(agent.model.policy)
    if algo == "ppo" and policy == "device-set":
        assert isinstance(loaded.model.policy, DeviceSetPolicy)
    saved, rebuilt = agent.model.policy.state_dict(), loaded.model.policy.state_dict()
    assert list(saved) == list(rebuilt)
    for name in saved:
        assert torch.equal(saved[name], rebuilt[name]), name
    _assert_same_actions(agent, loaded, _observations(agent.model.observation_space, env_id))


def test_a_trusted_sb3_zip_loads_as_before_and_converts(tmp_path: Path) -> None:
    agent = train(CLIENT_SELECTION, "ppo", 32, algo_kwargs=SMALL_PPO)
    agent.model.save(str(tmp_path / "old.zip"))  # the format fl_gym saved before
    (tmp_path / "old.json").write_text(json.dumps(agent.metadata))
    with pytest.raises(UntrustedAgentError):
        load_agent(tmp_path / "old")
    trusted = load_agent(tmp_path / "old", trust_pickle=True)
    save_agent(trusted, tmp_path / "new")
    converted = load_agent(tmp_path / "new")
    observations = _observations(agent.model.observation_space, CLIENT_SELECTION)
    _assert_same_actions(agent, trusted, observations)
    _assert_same_actions(agent, converted, observations)
    (m_zip,) = evaluate(
        f"ppo:{tmp_path / 'old'}", CLIENT_SELECTION, [1], max_episode_steps=3, trust_pickle=True
    )
    (m_pt,) = evaluate(f"ppo:{tmp_path / 'new'}", CLIENT_SELECTION, [1], max_episode_steps=3)
    assert m_zip.episode_return == m_pt.episode_return


def test_a_device_set_agent_built_from_its_spec_plays_more_devices(tmp_path: Path) -> None:
    six = train(
        CLIENT_SELECTION,
        "ppo",
        32,
        config={"num_devices": 6},
        algo_kwargs=SMALL_PPO,
        save_path=tmp_path / "six",
    )
    env = gym.make(CLIENT_SELECTION)
    on_ten = load_agent(tmp_path / "six", env)
    obs, _ = env.reset(seed=0)
    assert on_ten.predict(obs)[0].shape == (10,)
    # The same weights on the recorded six-device spaces act as the trained agent.
    space = six.model.observation_space
    space.seed(3)
    _assert_same_actions(six, load_agent(tmp_path / "six"), [space.sample() for _ in range(3)])


def test_policy_kwargs_that_json_cannot_record_are_refused_before_training(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match=r"policy_kwargs\['activation_fn'\]"):
        train(
            CLIENT_SELECTION,
            "ppo",
            32,
            policy_kwargs={"activation_fn": lambda: None},
            save_path=tmp_path / "a",
        )
    assert not list(tmp_path.iterdir())


def test_a_class_in_policy_kwargs_is_recorded_by_name(tmp_path: Path) -> None:
    kwargs = {"activation_fn": torch.nn.ReLU, "net_arch": [16]}
    agent = train(
        CLIENT_SELECTION,
        "ppo",
        32,
        policy="mlp",
        policy_kwargs=kwargs,
        algo_kwargs=SMALL_PPO,
        save_path=tmp_path / "a",
    )
    meta = json.loads((tmp_path / "a.json").read_text())
    assert meta["policy_kwargs_spec"] == {"activation_fn": "ReLU", "net_arch": [16]}
    loaded = load_agent(tmp_path / "a")
    assert loaded.model.policy.activation_fn is torch.nn.ReLU
    _assert_same_actions(
        agent, loaded, _observations(agent.model.observation_space, CLIENT_SELECTION)
    )


# -- spaces as JSON -------------------------------------------------------------------------------


def test_every_registered_space_round_trips_through_strict_json() -> None:
    for env_id in fl_gym.ENV_IDS:
        for obs_mode in ("dict", "flat"):
            try:
                env = gym.make(env_id, obs_mode=obs_mode)
            except TypeError:
                env = gym.make(env_id)
            for space in (env.observation_space, env.action_space):
                text = json.dumps(space_to_json(space), allow_nan=False)
                assert space_from_json(json.loads(text)) == space, (env_id, space)
            env.close()


def test_spaces_with_infinite_and_uneven_bounds_round_trip() -> None:
    box = spaces.Box(
        np.array([-np.inf, 0.0, 1e-7], dtype=np.float32),
        np.array([np.inf, 1.5, 3.0], dtype=np.float32),
    )
    space = spaces.Dict(
        {
            "box": box,
            "tuple": spaces.Tuple([spaces.Discrete(4, start=-1), spaces.MultiBinary([2, 3])]),
            "md": spaces.MultiDiscrete([3, 5]),
        }
    )
    text = json.dumps(space_to_json(space), allow_nan=False)
    assert space_from_json(json.loads(text)) == space


# -- the shipped agents ---------------------------------------------------------------------------


def test_shipped_agents_are_weights_and_a_spec_not_pickles() -> None:
    assert not list(MODELS.glob("*.zip"))
    for name in ("ClientSelection-v0_ppo", "ClientSelection-v0_ppo_mlp"):
        meta = json.loads((MODELS / f"{name}.json").read_text())
        assert meta["format"] == "fl_gym-agent/1"
        assert (meta["total_timesteps"], meta["requested_timesteps"]) == (100_352, 100_000)
        torch.load(MODELS / f"{name}.pt", weights_only=True)


ACTIONS_RECORDED_ON = "AMD EPYC"
"""The CPU model name the first actions below were recorded on (that machine's whole
``/proc/cpuinfo`` model name, as the golden trajectories record it)."""


@pytest.mark.parametrize(
    ("name", "first_action"),
    [
        # The first action at reset(seed=0), as the agents' original SB3 .zip files gave it on
        # one torch thread (the attention's sums may round differently on more threads).
        (
            "ClientSelection-v0_ppo",
            [-1, -1, -1, -0.6406638, -0.18515675, -1, -1, -1, -0.93715644, -0.812422],
        ),
        (
            "ClientSelection-v0_ppo_mlp",
            [
                -0.43313923,
                0.24490114,
                0.28364283,
                0.57802427,
                -0.20255606,
                0.41879916,
                -0.21537931,
                0.30950648,
                0.8914532,
                0.39370757,
            ],
        ),
    ],
)
def test_shipped_agents_act_as_their_zip_files_did(name: str, first_action: list[float]) -> None:
    agent = load_agent(MODELS / name)
    env = gym.make(CLIENT_SELECTION)
    obs, _ = env.reset(seed=0)
    with torch_threads(1):
        action = agent.predict(obs)[0]
    want = np.array(first_action, dtype=np.float32)
    if cpu_model() == ACTIONS_RECORDED_ON:
        np.testing.assert_array_equal(action, want)
    else:
        # Another CPU model rounds the float32 products differently (measured on an Intel Xeon:
        # at most 3.6e-7 apart); a wrongly loaded agent is off by orders of magnitude more.
        np.testing.assert_allclose(action, want, rtol=0.0, atol=1e-5)


def test_an_acting_only_sac_file_plays_as_the_whole_agent_and_is_smaller(tmp_path: Path) -> None:
    agent = train(
        CLIENT_SELECTION,
        "sac",
        64,
        seed=1,
        algo_kwargs={"learning_starts": 32, "batch_size": 16, "train_freq": 16},
    )
    whole = save_agent(agent, tmp_path / "whole")
    acting = save_agent(agent, tmp_path / "acting", acting_only=True)
    assert json.loads(acting.with_suffix(".json").read_text())["weights"] == "acting"
    assert acting.with_suffix(".pt").stat().st_size < whole.with_suffix(".pt").stat().st_size / 2
    env = gym.make(CLIENT_SELECTION)
    obs, _ = env.reset(seed=3)
    a_whole, _ = load_agent(whole).predict(obs, deterministic=True)
    a_acting, _ = load_agent(acting).predict(obs, deterministic=True)
    np.testing.assert_array_equal(a_whole, a_acting)
    # The critics are not in the file; a file missing part of the actor is refused.
    state = torch.load(acting.with_suffix(".pt"), weights_only=True)
    assert state and all(k.startswith("actor.") for k in state)
    broken = dict(list(state.items())[1:])
    buffer = tmp_path / "broken.pt"
    torch.save(broken, buffer)
    files = AgentFiles.read(acting)
    files = type(files)(**{**files.__dict__, "weights": buffer.read_bytes()})
    with pytest.raises(ValueError, match="do not fit"):
        files.load()


def test_acting_only_is_refused_where_the_whole_policy_acts(tmp_path: Path) -> None:
    agent = train(CLIENT_SELECTION, "ppo", 32, algo_kwargs=SMALL_PPO)
    with pytest.raises(ValueError, match="acting_only applies to"):
        save_agent(agent, tmp_path / "ppo", acting_only=True)
