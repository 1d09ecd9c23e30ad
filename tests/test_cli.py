"""The fl-gym command line, end to end on small runs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import fl_gym
from fl_gym.baselines import make_baseline
from fl_gym.cli import main
from fl_gym.envs.rollout import rollout


def test_list_names_every_env_preset_and_baseline(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for env_id in fl_gym.ENV_IDS:
        assert env_id in out
    for name in ("iid-digits", "noniid-digits", "synthetic-1-1", "cell-edge", "large-k"):
        assert name in out
    assert "proportional-fair" in out and "channel-inversion" in out


def test_run_reports_the_rollout_numbers(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    plot = tmp_path / "run.png"
    args = ["run", "fl_gym/ClientSelection-v0", "--policy", "best-channel", "--seed", "3"]
    args += ["--config", "deadline_s=0.5", "--save-plot", str(plot)]
    assert main(args) == 0
    out = capsys.readouterr().out
    env = gym.make("fl_gym/ClientSelection-v0", config={"deadline_s": 0.5})
    expected = rollout(env, make_baseline("best-channel", env), seed=3)
    assert f"{expected.episode_return:.2f}" in out
    assert f"{expected.final_accuracy:.3f}" in out
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "fl_gym/Nope-v0", "--policy", "random"], "Nope"),
        (["run", "fl_gym/ClientSelection-v0", "--policy", "nope"], "nope"),
        (
            ["run", "fl_gym/ClientSelection-v0", "--policy", "random", "--config", "bogus=1"],
            "bogus",
        ),
        (
            ["run", "fl_gym/ClientSelection-v0", "--policy", "random", "--config", "oops"],
            "KEY=VALUE",
        ),
        (["run", "fl_gym/ClientSelection-v0", "--policy", "max-power"], "max-power"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_fedavg_prints_round_by_round_accuracy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fedavg", "--rounds", "3", "--clients", "4"]) == 0
    out = capsys.readouterr().out
    accuracies = [
        float(line.split("accuracy ")[1].split()[0])
        for line in out.splitlines()
        if line.startswith("round ")
    ]
    assert len(accuracies) == 4  # the initial model and 3 rounds
    assert accuracies[-1] > accuracies[0] + 0.2
    assert np.isfinite(accuracies).all()


def test_train_eval_bench_end_to_end(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    from fl_gym.agents import evaluate

    env_id = "fl_gym/ClientSelection-v0"
    model = tmp_path / "models" / "cs_ppo"
    args = ["train", env_id, "--timesteps", "32", "--seed", "2", "--save", str(model)]
    args += ["--algo-kwargs", "n_steps=32", "batch_size=32", "n_epochs=1", "--no-progress"]
    assert main(args) == 0
    assert model.with_suffix(".zip").is_file() and model.with_suffix(".json").is_file()
    assert f"ppo:{model}" in capsys.readouterr().out

    args = ["eval", env_id, "--policy", f"ppo:{model}", "--seeds", "1-2"]
    assert main([*args, "--max-episode-steps", "3"]) == 0
    out = capsys.readouterr().out
    for m in evaluate(f"ppo:{model}", env_id, "1-2", max_episode_steps=3):
        assert f"{m.episode_return:.2f}" in out

    out_dir = tmp_path / "bench"
    args = ["bench", "--envs", env_id, "--policies", "round-robin", f"ppo:{model}"]
    args += ["--seeds", "0-1", "--out", str(out_dir), "--max-episode-steps", "3"]
    args += ["--markdown", str(tmp_path / "docs" / "board.md"), "--note", "PPO: 32 steps."]
    assert main(args) == 0
    board = (tmp_path / "docs" / "board.md").read_text()
    assert "PPO: 32 steps." in board
    assert "](../bench/fl_gym_ClientSelection-v0.png)" in board
    assert "`round-robin`" in board and f"`ppo:{model}`" in board
    assert len((out_dir / "results.csv").read_text().splitlines()) == 1 + 4
    assert (out_dir / "fl_gym_ClientSelection-v0.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "fl_gym/ClientSelection-v0", "--algo", "dqn", "--timesteps", "8"], "dqn needs"),
        (["eval", "fl_gym/ClientSelection-v0", "--policy", "ppo:/nonexistent/agent"], "no trained"),
        (["eval", "fl_gym/ClientSelection-v0", "--policy", "oracle"], "unknown policy"),
        (["bench", "--seeds", "9-1"], "seeds"),
    ],
)
def test_agent_commands_report_bad_input(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_uav_command_matches_run_episode_and_writes_a_gif(
    capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    from fl_gym.baselines.uav import make_controller, run_episode
    from fl_gym.envs import uav_swarm_v0

    gif = tmp_path / "swarm.gif"
    args = ["uav", "--controller", "hjb_full_info", "--seed", "4", "--gif", str(gif)]
    assert main([*args, "--config", "num_uavs=12", "max_steps=6"]) == 0
    out = capsys.readouterr().out
    env = uav_swarm_v0.parallel_env(config={"num_uavs": 12, "max_steps": 6})
    expected = run_episode(env, make_controller("hjb_full_info", env.config), 4)
    assert f"{expected.motion_energy_m2_s3:.4g}" in out
    assert "7 frames" in out and gif.read_bytes()[:6] == b"GIF89a"


def test_run_plays_the_vehicular_env_with_its_baselines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from fl_gym.baselines.vehicular import make_vehicular_baseline

    env_id = "fl_gym/VehicularURLLC-v0"
    args = ["run", env_id, "--policy", "vehicular-max-power", "--seed", "2"]
    assert main([*args, "--config", "system.num_pairs=4"]) == 0
    out = capsys.readouterr().out
    env = gym.make(env_id, config={"system.num_pairs": 4})
    policy = make_vehicular_baseline("vehicular-max-power", env)
    obs, _ = env.reset(seed=2)
    total, done = 0.0, False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(policy.predict(obs)[0])
        total += float(reward)
        done = terminated or truncated
    assert f"{total:.2f}" in out
    assert main(["list"]) == 0
    assert "vehicular-lyapunov" in capsys.readouterr().out


def test_uav_training_option(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["uav", "--config", "num_uavs=6", "max_steps=3", "--training", "pde"]
    assert main([*args, "--controller", "mfgfl_hf"]) == 0
    assert main([*args, "--controller", "straight_line"]) == 2
    assert "--training applies to the mean-field controllers" in capsys.readouterr().err
