"""Does a trained controller keep Byzantine devices out? The shipped agents of the suite's
Byzantine task against random actions and every defence, on evaluation seeds.

For every controller and evaluation seed it plays one episode of the task
(:mod:`fl_gym.benchmark`; ``fl_gym/ByzantineSelection-v1``) and counts, over the rounds of the
episode, the share of (Byzantine device, round) pairs in which the Byzantine device was
selected, the same share for the honest devices, the rounds to the target accuracy and the
return. The Byzantine set is the environment's truth (the adversary stage's), never shown to the
controllers. The agents are those ``benchmarks/train_suite.py`` ships for the task (training
seeds 0-2, disjoint from the evaluation seeds), each played with its deterministic action and
with actions sampled from its policy (see ``fl_gym.agents.suite_bench.SampledActions``).
Writes the ``byzantine-controller`` block of ``docs/reproductions.md``.

Run: ``python benchmarks/byzantine_controller.py [--suite NAME] [--task NAME] [--seeds 100-109]
[--no-write]``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from docblock import markers, write_block  # noqa: E402

import fl_gym  # noqa: E402, F401
from fl_gym.agents.evaluation import parse_seeds  # noqa: E402
from fl_gym.agents.suite_bench import RandomActions, SampledActions  # noqa: E402
from fl_gym.agents.training import load_agent  # noqa: E402
from fl_gym.baselines import baselines_for, make_policy  # noqa: E402
from fl_gym.benchmark import get_suite, make_task_env  # noqa: E402
from fl_gym.envs.rollout import FLEpisodeRecorder, rollout  # noqa: E402

DOC = Path(__file__).resolve().parent.parent / "docs" / "reproductions.md"


class DefenceRecorder(FLEpisodeRecorder):
    """The FL recorder plus the shares of Byzantine and honest devices selected."""

    def start(self, env: Any, policy: Any, seed: int, observation: Any, info: Any) -> None:
        super().start(env, policy, seed, observation, info)
        self.counts = np.zeros(4, dtype=np.int64)  # Byzantine selected / all, honest ditto

    def step(self, env: Any, reward: Any, terminated: Any, truncated: Any, info: Any) -> None:
        super().step(env, reward, terminated, truncated, info)
        unwrapped = env.unwrapped
        byzantine = unwrapped.adversary.byzantine_devices(unwrapped.federation)
        selected = np.asarray(info["selected"], dtype=bool)
        self.counts += [
            (selected & byzantine).sum(),
            byzantine.sum(),
            (selected & ~byzantine).sum(),
            (~byzantine).sum(),
        ]


def play(env: Any, policy: Any, seed: int, target: float) -> dict[str, float]:
    """One episode (:func:`fl_gym.envs.rollout.rollout`): return, rounds, rounds to target (NaN
    if missed), selection shares."""
    recorder = DefenceRecorder()
    episode = rollout(env, policy, seed=seed, recorder=recorder)
    reached = np.flatnonzero(np.asarray(episode.accuracy[1:]) >= target)
    counts = recorder.counts
    return {
        "return": sum(episode.rewards, 0.0),  # summed in order, as the rewards came
        "rounds": episode.rounds,
        "to_target": float(reached[0] + 1) if reached.size else float("nan"),
        "byzantine_selected": float(counts[0] / max(counts[1], 1)),
        "honest_selected": float(counts[2] / max(counts[3], 1)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", required=True)
    parser.add_argument("--task", default="byzantine-fedavg-server")
    parser.add_argument("--seeds", default="100-109")
    parser.add_argument("--agents", default=None, help="default models/<SUITE>/<task>")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    (task,) = [t for t in get_suite(args.suite) if t.name == args.task]
    seeds = parse_seeds(args.seeds)
    agents_dir = Path(args.agents or f"models/{args.suite}/{task.name}")
    env = make_task_env(task)
    target = float(env.unwrapped.config.target_accuracy)
    makers: dict[str, Any] = {"random actions": lambda s: RandomActions(env, s)}
    for name in baselines_for(env):
        makers[name] = lambda s, name=name: make_policy(name, env)
    families: dict[str, list[Path]] = {}
    for path in sorted(agents_dir.glob("*.pt")):
        family = path.stem.rsplit("-s", 1)[0]
        families.setdefault(family, []).append(path)
    agent_entries: dict[str, tuple[list[Any], bool]] = {}
    for family, paths in families.items():
        agents = [load_agent(p) for p in paths]
        agent_entries[f"{family} (trained, {len(paths)} seeds)"] = (agents, False)
        agent_entries[f"{family}, sampled actions (trained, {len(paths)} seeds)"] = (agents, True)
    rows: dict[str, list[dict[str, float]]] = {}
    start = time.time()
    for name, make in makers.items():
        rows[name] = [play(env, make(s), s, target) for s in seeds]
        print(f"{name}: {time.time() - start:.0f} s", flush=True)
    for name, (agents, sampled) in agent_entries.items():
        # Every training seed plays every evaluation seed; sampled actions are seeded per
        # (training seed, evaluation seed) as in fl-gym bench --suite.
        rows[name] = [
            play(
                env,
                SampledActions.for_episode(agent, s, agent.metadata["seed"]) if sampled else agent,
                s,
                target,
            )
            for agent in agents
            for s in seeds
        ]
        print(f"{name}: {time.time() - start:.0f} s", flush=True)

    def mean(name: str, key: str) -> float:
        return float(np.nanmean([r[key] for r in rows[name]]))

    lines = [
        "## A learned defence: keeping Byzantine devices out",
        "",
        f"Made by `python benchmarks/byzantine_controller.py --suite {args.suite} --task "
        f"{task.name} --seeds {args.seeds}` on {time.strftime('%Y-%m-%d')} "
        f"({platform.machine()}, {os.cpu_count()} CPUs). Task `{task.name}` of `{args.suite}`: "
        f"`{task.env_id}` with {dict(task.config)}. {task.description} Evaluation seeds "
        f"{seeds[0]}-{seeds[-1]}; trained agents: training seeds disjoint from them, every "
        "agent on every evaluation seed, with its deterministic (mean) action and with actions "
        "sampled from its policy. Byzantine / honest selected: "
        "share of (device, round) pairs in which a Byzantine / honest device was selected.",
        "",
        "| controller | return | rounds to target (reached) | Byzantine selected | "
        "honest selected |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    order = sorted(rows, key=lambda n: -mean(n, "return"))
    for name in order:
        reached = [r["to_target"] for r in rows[name] if not np.isnan(r["to_target"])]
        shown = (
            f"{np.mean(reached):.1f} ({len(reached)}/{len(rows[name])})"
            if reached
            else (f"- (0/{len(rows[name])})")
        )
        lines.append(
            f"| {name} | {mean(name, 'return'):.2f} | {shown} | "
            f"{mean(name, 'byzantine_selected'):.0%} | {mean(name, 'honest_selected'):.0%} |"
        )
    heuristics = [n for n in rows if n != "random actions" and " (trained" not in n]
    best = max(heuristics, key=lambda n: mean(n, "return"))
    lines.append("")
    for name in [n for n in order if " (trained" in n]:
        lines.append(
            f"{name}: selects Byzantine devices in {mean(name, 'byzantine_selected'):.0%} of "
            f"their rounds and honest ones in {mean(name, 'honest_selected'):.0%} (random "
            f"actions: {mean('random actions', 'byzantine_selected'):.0%} and "
            f"{mean('random actions', 'honest_selected'):.0%}); its mean return "
            f"{mean(name, 'return'):.2f} is "
            f"{'above' if mean(name, 'return') > mean(best, 'return') else 'below'} the best "
            f"defence's ({best}, {mean(best, 'return'):.2f})."
        )
    begin, end = markers("byzantine-controller")
    section = "\n".join([begin, *lines, end]) + "\n"
    print(section)
    if not args.no_write:
        write_block(DOC, "byzantine-controller", section)


if __name__ == "__main__":
    main()
