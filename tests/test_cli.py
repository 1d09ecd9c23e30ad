"""The fl-gym command line, end to end on small runs."""

from __future__ import annotations

import os

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
    assert model.with_suffix(".pt").is_file() and model.with_suffix(".json").is_file()
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
    args = ["uav", "--controller", "hjb-full-info", "--seed", "4", "--gif", str(gif)]
    assert main([*args, "--config", "num_uavs=12", "max_steps=6"]) == 0
    out = capsys.readouterr().out
    env = uav_swarm_v0.parallel_env(config={"num_uavs": 12, "max_steps": 6})
    expected = run_episode(env, make_controller("hjb-full-info", env.config), 4)
    assert f"{expected.motion_energy_m2_s3:.4g}" in out
    assert "7 frames" in out and gif.read_bytes()[:6] == b"GIF89a"


def test_run_plays_the_vehicular_env_with_its_baselines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from fl_gym.baselines.vehicular import make_vehicular_baseline

    env_id = "fl_gym/VehicularURLLC-v1"
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
    assert main([*args, "--controller", "mfgfl-hf"]) == 0
    assert main([*args, "--controller", "straight-line"]) == 2
    assert "--training applies to the mean-field controllers" in capsys.readouterr().err


def test_piped_console_keeps_a_long_table_row_on_one_line() -> None:
    import io

    from rich.table import Table

    from fl_gym._console import make_console

    stream = io.StringIO()  # not a terminal, like a pipe
    table = Table(title="a table wider than 80 columns")
    cells = [f"column-{i}-value" for i in range(8)]
    for i in range(len(cells)):
        table.add_column(f"c{i}")
    table.add_row(*cells)
    make_console(file=stream).print(table)
    lines = stream.getvalue().splitlines()
    row = next(line for line in lines if "column-0-value" in line)
    assert all(cell in row for cell in cells)
    assert len(row) > 80
    # Every ruled line of the table has the row's width: nothing wrapped or padded to 80.
    assert {len(line) for line in lines[1:]} == {len(row)}


def test_spaces_print_on_one_line() -> None:
    from gymnasium import spaces

    from fl_gym._console import format_space

    for env_id in fl_gym.ENV_IDS:
        env = gym.make(env_id)
        for space in (env.action_space, env.observation_space):
            text = format_space(space)
            assert "\n" not in text and "  " not in text, (env_id, text)
        env.close()
    vehicular = gym.make("fl_gym/VehicularURLLC-v1")
    assert format_space(vehicular.action_space) == "MultiDiscrete([6, 10] * 20)"
    assert format_space(spaces.Box(-1.0, 1.0, (10,))) == "Box(-1.0, 1.0, (10,), float32)"
    box = spaces.Box(np.float32([0.0, -1.0]), np.float32([1.0, 1.0]), dtype=np.float32)
    assert format_space(box) == "Box([-1.0..0.0], 1.0, (2,), float32)"
    irregular = spaces.MultiDiscrete(np.arange(2, 22))
    assert format_space(irregular) == "MultiDiscrete([2, 3, 4, ..., 21] (20 values))"
    assert format_space(spaces.MultiDiscrete([3, 5, 4])) == "MultiDiscrete([3, 5, 4])"
    assert format_space(spaces.Discrete(4, start=1)) == "Discrete(4, start=1)"
    nested = spaces.Dict({"a": spaces.Discrete(2), "b": spaces.Tuple([spaces.MultiBinary(3)])})
    assert format_space(nested) == "Dict('a': Discrete(2), 'b': Tuple(MultiBinary(3)))"


def test_eval_table_of_a_long_named_agent_is_not_wrapped(
    capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    import shutil
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[1] / "models" / "ClientSelection-v0_ppo"
    stem = tmp_path / "a-folder-name-long-enough-to-push-the-title-past-eighty" / "agent"
    stem.parent.mkdir()
    for suffix in (".pt", ".json"):
        shutil.copy(shipped.with_suffix(suffix), stem.with_suffix(suffix))
    env_id = "fl_gym/ClientSelection-v0"
    args = ["eval", env_id, "--policy", f"ppo:{stem}", "--seeds", "0-1"]
    assert main([*args, "--max-episode-steps", "2"]) == 0
    captured = capsys.readouterr()
    title = f"ppo:{stem} on {env_id}"
    assert len(title) > 80
    assert title in captured.out.splitlines()[0]
    body = captured.out.splitlines()[1:]
    assert len(body) == 8  # top rule, header, rule, 2 seeds, section rule, mean, bottom rule
    assert len({len(line) for line in body}) == 1
    assert captured.err == ""  # no progress bar when stderr is not a terminal


def test_bench_prints_plain_markdown_with_links_from_here(
    capsys: pytest.CaptureFixture[str], tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["bench", "--policies", "round-robin", "best-channel", "--seeds", "0-1"]
    assert main([*args, "--max-episode-steps", "2", "--out", "out/b"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    rows = [line for line in lines if line.startswith("| ")]
    assert len(rows) == 4  # header, rule, two policies
    assert all(line.endswith(" |") for line in rows)
    assert max(len(line) for line in rows) > 80
    image = "![accuracy and cumulative energy per round on fl_gym/ClientSelection-v0]"
    assert f"{image}(out/b/fl_gym_ClientSelection-v0.png)" in lines
    assert (tmp_path / "out/b/fl_gym_ClientSelection-v0.png").is_file()
    board = (tmp_path / "out/b/leaderboard.md").read_text()
    assert f"{image}(fl_gym_ClientSelection-v0.png)" in board
    assert "wrote " in captured.err and "wrote " not in captured.out


def test_bench_markdown_link_with_a_space_is_bracketed() -> None:
    from fl_gym.agents.bench import _link_target

    assert _link_target("my plots/a.png") == "<my plots/a.png>"
    assert _link_target("plots\\a.png") == "plots/a.png"


class _Terminal:
    """A stand-in for a terminal's stderr: rich draws its progress bars into it."""

    def __init__(self) -> None:
        import io

        self._buffer = io.StringIO()

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        return self._buffer.write(text)

    def flush(self) -> None:
        pass

    def getvalue(self) -> str:
        return self._buffer.getvalue()


@pytest.mark.parametrize("no_progress", [False, True])
def test_progress_goes_to_a_terminal_stderr_only(
    no_progress: bool, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    args = ["run", "fl_gym/VehicularURLLC-v1", "--policy", "vehicular-max-power", "--seed", "2"]
    args += ["--episodes", "2", "--config", "system.num_pairs=4"]
    assert main(args + (["--no-progress"] if no_progress else [])) == 0
    out = capsys.readouterr().out
    assert "vehicular-max-power (seed" not in out  # stdout holds the table alone
    drawn = terminal.getvalue()
    if no_progress:
        assert drawn == ""
    else:
        # The bar's first and last refreshes: description, then done/total and the unit.
        assert "vehicular-max-power" in drawn and "2/2" in drawn and "episodes" in drawn


def test_demo_plays_the_shipped_agent_beside_the_baselines(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    from pathlib import Path

    from fl_gym import cli
    from fl_gym.baselines import baselines_for

    played: list[list[str]] = []
    monkeypatch.setattr(
        cli.wireless_fl, "run_episodes", lambda args, env_id, names: played.append(names)
    )
    env_id = "fl_gym/ClientSelection-v0"
    baselines = baselines_for(gym.make(env_id))
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    main(["demo"])
    main(["demo", "--agents"])
    main(["demo", "--env", "fl_gym/PowerControl-v0"])  # the agent plays ClientSelection only
    monkeypatch.chdir(tmp_path)  # no models/ here
    main(["demo"])
    assert played[0] == [*baselines, cli.DEMO_AGENT] and cli.DEMO_AGENT == "ppo:" + (
        "models/ClientSelection-v0_ppo"
    )
    assert played[1] == baselines
    assert cli.DEMO_AGENT not in played[2]
    assert played[3] == baselines
    assert "playing the baselines only" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_plot_shows_the_agent(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    from pathlib import Path

    from fl_gym import cli

    plot = tmp_path / "demo.png"
    repo = Path(__file__).resolve().parents[1]
    old = Path.cwd()
    os.chdir(repo)
    try:
        assert main(["demo", "--episodes", "1", "--save-plot", str(plot)]) == 0
    finally:
        os.chdir(old)
    out = capsys.readouterr().out
    assert cli.DEMO_AGENT in out and plot.read_bytes()[:4] == b"\x89PNG"


def test_the_cli_is_a_package_that_runs_every_family_by_its_family() -> None:
    """``fl-gym run`` dispatches on the env's family (from the registry), never on an id."""
    import inspect

    from fl_gym import cli

    assert set(cli.RUN_BY_FAMILY) == {"wireless-fl", "vehicular", "uav"}
    for module in (cli, cli.wireless_fl, cli.vehicular, cli.uav, cli.agents, cli.catalogue):
        source = inspect.getsource(module)
        assert "args.env ==" not in source and "env_id ==" not in source, module.__name__


def test_run_flies_the_uav_swarm_through_the_rollout_loop(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from fl_gym.baselines import make_policy
    from fl_gym.envs import uav_swarm_v0

    args = ["run", "uav_swarm_v0", "--policy", "hjb-full-info", "--seed", "3"]
    assert main([*args, "--config", "num_uavs=6", "max_steps=4"]) == 0
    out = capsys.readouterr().out
    env = uav_swarm_v0.parallel_env(config={"num_uavs": 6, "max_steps": 4})
    expected = rollout(env, make_policy("hjb-full-info", env), seed=3, num_threads=None)
    assert f"{expected.bits_per_episode:.4g}" in out and f"{expected.mean_return:.4g}" in out
