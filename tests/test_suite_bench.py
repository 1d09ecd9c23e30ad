"""The suite leaderboard: episode rows, normalised scores, rliable's estimates and the report."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rliable", reason='the suite leaderboard needs "fl-gym[bench]"')

from rliable import metrics

import fl_gym.agents.suite_bench as suite_bench
from fl_gym.agents import train
from fl_gym.agents.suite_bench import (
    BoundViolation,
    EpisodeRow,
    check_bound,
    controller_specs,
    find_agents,
    read_rows,
    run_suite,
    write_rows,
)
from fl_gym.agents.suite_report import (
    BEST_HEURISTIC,
    RunInfo,
    bootstrap_interval,
    fast_probability_of_improvement,
    normalised_scores,
    normalisers,
    require_rliable,
    score_matrices,
    suite_markdown,
)
from fl_gym.benchmark import Task
from fl_gym.cli import main

TINY = Task(
    "tiny-selection",
    "fl_gym/ClientSelection-v0",
    {},
    "rounds-to-target",
    "Three rounds of client selection.",
    max_episode_steps=3,
)
SEEDS = [0, 1]


@pytest.fixture(scope="module")
def agents_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A suite's agents directory with one tiny PPO agent (128 steps) for the tiny task."""
    root = tmp_path_factory.mktemp("models")
    train(
        TINY.env_id,
        "ppo",
        128,
        seed=0,
        policy="mlp",
        algo_kwargs={"n_steps": 64, "batch_size": 64, "n_epochs": 1},
        save_path=root / TINY.name / "ppo-mlp-s0",
    )
    return root


@pytest.fixture(scope="module")
def rows(agents_dir: Path) -> list[EpisodeRow]:
    return run_suite([TINY], SEEDS, agents=find_agents(agents_dir, [TINY]))


def _info() -> RunInfo:
    return RunInfo(
        "fl-gym bench --suite TINY-1-v0 --seeds 0-1",
        "2026-01-01",
        "test machine",
        "TINY-1-v0",
        SEEDS,
        [{"name": TINY.name, "env_id": TINY.env_id, "metric": TINY.metric, "description": ""}],
    )


def _same(a: list[EpisodeRow], b: list[EpisodeRow]) -> bool:
    """Rows equal field by field, NaN equal to NaN."""
    return len(a) == len(b) and all(
        all(
            x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y))
            for x, y in zip(dataclasses.astuple(r), dataclasses.astuple(s), strict=True)
        )
        for r, s in zip(a, b, strict=True)
    )


# -- the rows --------------------------------------------------------------------------------------


def test_rows_cover_every_controller_and_seed_and_round_trip_the_csv(
    rows: list[EpisodeRow], agents_dir: Path, tmp_path: Path
) -> None:
    specs = controller_specs(TINY, find_agents(agents_dir, [TINY])[TINY.name])
    names = [s.name for s in specs]
    assert names[0] == "random-actions" and names[-2:] == ["mpc", "clairvoyant"]
    assert "round-robin" in names and "ppo-mlp-s0" in names and "ppo-mlp-sampled-s0" in names
    assert [(r.controller, r.eval_seed) for r in rows] == [(n, s) for n in names for s in SEEDS]
    assert all(r.task == TINY.name and r.rounds == 3 for r in rows)
    assert {r.kind for r in rows} == {"random", "heuristic", "agent", "planner", "bound"}
    for r in rows:
        assert np.isfinite(r.episode_return) and 0.0 <= r.accuracy <= 1.0 and r.energy_j > 0
    path = write_rows(rows, tmp_path / "results.csv")
    header = path.read_text().splitlines()[0].split(",")
    assert header == [
        "task", "controller", "kind", "family", "training_seed", "eval_seed",
        "episode_return", "metric", "accuracy", "energy_j", "rounds", "cpu_s",
    ]  # fmt: skip
    assert _same(read_rows(path), rows)


def test_a_shipped_agent_is_a_family_with_its_training_seed(rows: list[EpisodeRow]) -> None:
    agent = [r for r in rows if r.kind == "agent"]
    assert [(r.family, r.training_seed, r.eval_seed) for r in agent] == [
        ("ppo-mlp", 0, 0),
        ("ppo-mlp", 0, 1),
        ("ppo-mlp-sampled", 0, 0),
        ("ppo-mlp-sampled", 0, 1),
    ]
    assert all(r.training_seed is None for r in rows if r.kind != "agent")
    matrices = score_matrices(rows)
    assert matrices["ppo-mlp"].scores.shape == (2, 1)
    assert matrices["ppo-mlp"].runs == "1 training x 2 evaluation seeds"


def test_every_episode_is_the_one_its_seed_gives(rows: list[EpisodeRow]) -> None:
    """An episode played alone is the row the whole run made (order does not matter)."""
    specs = controller_specs(TINY)
    index = [s.name for s in specs].index("proportional-fair")
    again = suite_bench.play_episode(TINY, specs, index, 1)
    (kept,) = [r for r in rows if r.controller == "proportional-fair" and r.eval_seed == 1]
    assert again.episode_return == kept.episode_return and again.accuracy == kept.accuracy


def test_a_sampled_agent_replays_its_samples_and_leaves_torch_alone(
    rows: list[EpisodeRow], agents_dir: Path
) -> None:
    """The sampled family plays other actions than the deterministic one, the same ones again
    when replayed, and the caller's torch generator is where it was."""
    import torch

    specs = controller_specs(TINY, find_agents(agents_dir, [TINY])[TINY.name])
    index = [s.name for s in specs].index("ppo-mlp-sampled-s0")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    again = suite_bench.play_episode(TINY, specs, index, 0)
    np.testing.assert_array_equal(torch.rand(3), expected)
    (kept,) = [r for r in rows if r.controller == "ppo-mlp-sampled-s0" and r.eval_seed == 0]
    assert again.episode_return == kept.episode_return and again.energy_j == kept.energy_j
    (mean,) = [r for r in rows if r.controller == "ppo-mlp-s0" and r.eval_seed == 0]
    assert kept.energy_j != mean.energy_j  # other devices selected: the samples are used


def test_the_page_states_each_agent_familys_training_budget(
    rows: list[EpisodeRow], agents_dir: Path, tmp_path: Path
) -> None:
    from fl_gym.agents.suite_report import agent_budgets

    budgets = agent_budgets(find_agents(agents_dir, [TINY]))
    assert [(b["task"], b["family"], b["algo"], b["training_seeds"]) for b in budgets] == [
        (TINY.name, "ppo-mlp", "ppo", [0])
    ]
    assert budgets[0]["timesteps"] == 128 and budgets[0]["n_envs"] == 1
    info = dataclasses.replace(_info(), budgets=budgets)
    again = RunInfo.read(info.write(tmp_path / "results.json"))
    assert again.budgets == budgets
    page = suite_markdown(rows, again, out_dir=tmp_path, markdown_path=tmp_path / "lb.md", reps=50)
    assert f"| {TINY.name} | `ppo-mlp` | ppo | 0 | 128 | 1 |" in page


def test_a_controller_above_the_bound_raises(rows: list[EpisodeRow]) -> None:
    check_bound(rows)
    bound = next(r for r in rows if r.kind == "bound" and r.eval_seed == 1)
    cheat = dataclasses.replace(
        next(r for r in rows if r.controller == "round-robin" and r.eval_seed == 1),
        episode_return=bound.episode_return + 1e-3,
    )
    with pytest.raises(BoundViolation, match=r"tiny-selection, seed 1: round-robin"):
        check_bound([*rows, cheat])


def test_agents_trained_for_another_task_are_refused(agents_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / TINY.name
    folder.mkdir()
    for suffix in (".pt", ".json"):
        shutil.copy(agents_dir / TINY.name / f"ppo-mlp-s0{suffix}", folder / f"ppo-mlp-s0{suffix}")
    meta = json.loads((folder / "ppo-mlp-s0.json").read_text())
    meta["config"] = {"num_devices": 20}
    (folder / "ppo-mlp-s0.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="trained with config"):
        find_agents(tmp_path, [TINY])
    (folder / "ppo-mlp-s0.json").rename(folder / "agent.json")
    with pytest.raises(ValueError, match="<algo>-<policy>-s<seed>"):
        find_agents(tmp_path, [TINY])


# -- scores and estimates --------------------------------------------------------------------------


def test_random_scores_zero_and_the_bound_one(rows: list[EpisodeRow]) -> None:
    low = np.mean([r.episode_return for r in rows if r.controller == "random-actions"])
    high = np.mean([r.episode_return for r in rows if r.controller == "clairvoyant"])
    assert high > low
    scores = normalised_scores(rows)
    for r, s in zip(rows, scores, strict=True):
        assert s == pytest.approx((r.episode_return - low) / (high - low), abs=1e-12)
    by = lambda name: [s for r, s in zip(rows, scores, strict=True) if r.controller == name]  # noqa: E731
    assert np.mean(by("random-actions")) == pytest.approx(0.0, abs=1e-12)
    assert np.mean(by("clairvoyant")) == pytest.approx(1.0, abs=1e-12)
    norm = normalisers(rows)[TINY.name]
    heuristics = {r.controller for r in rows if r.kind == "heuristic"}
    best = max(
        heuristics,
        key=lambda h: np.mean([r.episode_return for r in rows if r.controller == h]),
    )
    assert norm.best_heuristic == best and norm.has_bound and norm.top == "clairvoyant"
    assert np.allclose(score_matrices(rows)[BEST_HEURISTIC].scores[:, 0], by(best))


def test_without_a_bound_the_best_heuristic_scores_one(rows: list[EpisodeRow]) -> None:
    no_planner = [r for r in rows if r.kind not in ("planner", "bound")]
    norm = normalisers(no_planner)[TINY.name]
    assert not norm.has_bound and norm.top == norm.best_heuristic
    scores = normalised_scores(no_planner)
    best = [s for r, s in zip(no_planner, scores, strict=True) if r.family == norm.top]
    assert np.mean(best) == pytest.approx(1.0, abs=1e-12)


def test_iqm_is_the_mean_of_the_middle_half() -> None:
    scores = np.array([[0.0, 10.0], [1.0, 2.0], [3.0, -5.0], [4.0, 100.0]])
    middle = np.sort(scores.ravel())[2:6]  # 8 scores: drop the 2 lowest and the 2 highest
    point, low, high = bootstrap_interval(
        scores, lambda x: float(metrics.aggregate_iqm(x)), reps=300
    )
    assert point == pytest.approx(middle.mean()) == pytest.approx(2.5)
    assert low <= point <= high


def test_probability_of_improvement_matches_rliable_and_is_one_half_over_itself() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3))
    y = np.round(rng.normal(size=(4, 3)), 1)
    x[0] = y[0]  # ties count half
    assert fast_probability_of_improvement(x, y) == pytest.approx(
        metrics.probability_of_improvement(x, y)
    )
    assert fast_probability_of_improvement(x, x) == 0.5
    assert metrics.probability_of_improvement(x, x) == 0.5
    assert bootstrap_interval([x, x], fast_probability_of_improvement, reps=200)[0] == 0.5
    assert fast_probability_of_improvement(x + 100.0, x) == 1.0


def test_bootstrap_is_reproducible_and_leaves_the_global_generator_alone() -> None:
    np.random.seed(123)  # noqa: NPY002
    before = np.random.get_state()  # noqa: NPY002
    x = np.random.default_rng(1).normal(size=(5, 2))
    first = bootstrap_interval(x, np.mean, reps=200)
    assert bootstrap_interval(x, np.mean, reps=200) == first
    after = np.random.get_state()  # noqa: NPY002
    assert before[0] == after[0] and np.array_equal(before[1], after[1])


# -- the report and the command --------------------------------------------------------------------


def test_report_states_what_the_numbers_say(rows: list[EpisodeRow], tmp_path: Path) -> None:
    md = suite_markdown(rows, _info(), out_dir=tmp_path, markdown_path=tmp_path / "lb.md", reps=200)
    assert (tmp_path / "performance_profiles.png").stat().st_size > 0
    assert "![performance profiles" in md and "(performance_profiles.png)" in md
    table = next(line for line in md.splitlines() if line.startswith("| `clairvoyant` | bound |"))
    assert "| 1.00 |" in table  # the bound's normalised mean score
    assert "| `random-actions` | random |" in md and "| 0.00 |" in md
    sentence = next(line for line in md.splitlines() if line.startswith("`ppo-mlp`"))
    assert "training seeds 0; 2 runs" in sentence and "best heuristic" in sentence
    assert "P(improvement over" in sentence and "of the headroom" in sentence
    agent = score_matrices(rows)["ppo-mlp"].scores
    best = score_matrices(rows)[BEST_HEURISTIC].scores
    poi = metrics.probability_of_improvement(agent, best)
    row = next(line for line in md.splitlines() if line.startswith("| `ppo-mlp` | 1 |"))
    assert f"| {poi:.2f} [" in row


def test_from_results_makes_the_same_page(
    rows: list[EpisodeRow], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fl_gym.benchmark

    played: list[int] = []

    def replay(tasks, seeds, **kwargs):  # the fixture's rows stand for the episodes
        played.append(len(tasks))
        return rows

    monkeypatch.setattr(fl_gym.benchmark, "get_suite", lambda name: (TINY,))
    monkeypatch.setattr(suite_bench, "run_suite", replay)
    out, md = tmp_path / "board", tmp_path / "board" / "leaderboard.md"
    common = ["--out", str(out), "--markdown", str(md), "--reps", "200", "--no-progress"]
    assert main(["bench", "--suite", "TINY-1-v0", "--seeds", "0-1", *common]) == 0
    direct = md.read_text()
    assert played == [1] and (out / "results.csv").is_file() and (out / "results.json").is_file()
    md.unlink()
    assert main(["bench", "--from-results", str(out / "results.csv"), *common]) == 0
    assert md.read_text() == direct
    assert "fl-gym bench --suite TINY-1-v0 --seeds 0-1" in direct


def test_the_command_stops_on_a_row_above_the_bound_and_keeps_the_rows(
    rows: list[EpisodeRow],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import fl_gym.benchmark

    bound = next(r for r in rows if r.kind == "bound" and r.eval_seed == 0)
    cheat = dataclasses.replace(rows[0], episode_return=bound.episode_return + 1.0)
    monkeypatch.setattr(fl_gym.benchmark, "get_suite", lambda name: (TINY,))
    monkeypatch.setattr(suite_bench, "run_suite", lambda *a, **k: [cheat, *rows[1:]])
    args = ["bench", "--suite", "TINY-1-v0", "--seeds", "0-1", "--out", str(tmp_path)]
    assert main([*args, "--no-progress"]) == 1
    assert "random-actions" in capsys.readouterr().err
    assert len(read_rows(tmp_path / "results.csv")) == len(rows)
    assert not (tmp_path / "leaderboard.md").exists()


def test_the_suite_command_without_rliable_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "rliable", None)
    with pytest.raises(ImportError, match=r"fl-gym\[bench\]"):
        require_rliable()
    assert main(["bench", "--suite", "FLW-7-v0"]) == 2
    assert 'pip install "fl-gym[bench]"' in capsys.readouterr().err


@pytest.mark.slow
def test_rows_do_not_depend_on_the_number_of_processes(rows: list[EpisodeRow]) -> None:
    no_agent = [r for r in rows if r.kind != "agent"]
    two = run_suite([TINY], SEEDS, jobs=2)
    strip = lambda rs: [dataclasses.replace(r, cpu_s=0.0) for r in rs]  # noqa: E731
    assert _same(strip(two), strip(no_agent))


@pytest.mark.slow
def test_a_multi_agent_task_has_no_planner_rows_and_plays_a_shared_agent(tmp_path: Path) -> None:
    from fl_gym.agents.suite_bench import RandomActions
    from fl_gym.benchmark import make_task_env

    task = Task(
        "swarm", "uav_swarm_v0", {"num_uavs": 4}, "collisions-per-uav-step", "", 10, planning=False
    )
    train(
        task.env_id,
        "ppo",
        64,
        seed=0,
        policy="mlp",
        config=dict(task.config),
        algo_kwargs={"n_steps": 16, "batch_size": 16, "n_epochs": 1},
        save_path=tmp_path / task.name / "ppo-mlp-s0",
    )
    rows = run_suite([task], [0], agents=find_agents(tmp_path, [task]))
    assert {r.kind for r in rows} == {"random", "heuristic", "agent"}
    assert all(np.isfinite(r.episode_return) and 0 < r.rounds <= 10 for r in rows)
    assert all(0.0 <= r.metric <= 1.0 for r in rows)
    norm = normalisers(rows)[task.name]
    assert not norm.has_bound and norm.top == norm.best_heuristic
    # The return of a multi-agent task sums the rewards over agents and steps.
    env = make_task_env(task)
    observations, _ = env.reset(seed=0)
    policy, total = RandomActions(env, 0), 0.0
    while env.agents:
        actions, _ = policy.predict({a: observations[a] for a in env.agents})
        observations, rewards, *_ = env.step(actions)
        total += sum(float(v) for v in rewards.values())
    (random_row,) = [r for r in rows if r.kind == "random"]
    assert random_row.episode_return == pytest.approx(total, rel=1e-12)
