"""Reproduce the communication-efficiency claims of the survey's Section III on our simulator.

Writes its section of ``docs/reproductions.md`` (between ``<!-- BEGIN communication -->`` and
``<!-- END communication -->``, so other reproduction scripts keep theirs) and the plots in
``docs/img/``. Every number comes from a real run of ``fl_gym.sim`` on the bundled digits data.

Run: ``python benchmarks/reproduce_communication.py [--seeds 3] [--rounds 60]``.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fl_gym.sim import Federation, FederationConfig, make_federated_dataset

DOC = Path("docs/reproductions.md")
IMG = Path("docs/img")
BEGIN, END = "<!-- BEGIN communication -->", "<!-- END communication -->"

Section = Callable[[argparse.Namespace], list[str]]


def _fedavg_run(spec: str, seed: int, rounds: int, local_steps: int = 5) -> tuple[list[float], int]:
    """Accuracy per round and total uploaded bits of FedAvg on digits (10 IID clients)."""
    rng = np.random.default_rng(seed)
    data = make_federated_dataset("digits", 10, rng=rng)
    fed = Federation(data, FederationConfig(compression_levels=(spec,)), rng=rng)
    accuracy, bits = [], 0
    for _ in range(rounds):
        report = fed.run_round(fed.plan(selected="all", local_steps=local_steps), rng)
        accuracy.append(report.accuracy)
        bits += int(report.bits_up.sum())
    return accuracy, bits


def compression_section(args: argparse.Namespace) -> list[str]:
    """DGC's compression ratio and the combined sparsification + quantisation ratio."""
    specs = [
        "none",
        "qsgd:16",
        "topk:0.1",
        "topk:0.01",
        "topk_qsgd:0.1,levels=4",
        "topk_qsgd:0.01,levels=4",
        "dgc:0.01",
        "dgc:0.001",
    ]
    results = {}
    for spec in specs:
        runs = [_fedavg_run(spec, seed, args.rounds) for seed in range(args.seeds)]
        acc = np.array([r[0] for r in runs])
        bits = np.mean([r[1] for r in runs])
        results[spec] = (acc, bits)
        print(f"compression {spec:26s} final {acc[:, -1].mean():.3f} bits {bits:.3g}")
    base_acc, base_bits = results["none"]
    lines = [
        "### Gradient compression (digits, 10 IID clients, FedAvg, 5 local steps)",
        "",
        f"{args.rounds} rounds, every client every round, seeds 0-{args.seeds - 1}; ratio = "
        "uncompressed bits / bits sent (index and norm overhead included, DGC's warm-up "
        "included); size = bits sent / uncompressed bits.",
        "",
        "| operator | final accuracy | accuracy gap | compression ratio | size |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for spec, (acc, bits) in results.items():
        final = acc[:, -1].mean()
        gap = base_acc[:, -1].mean() - final
        lines.append(
            f"| `{spec}` | {final:.3f} | {gap * 100:+.1f} pts | {base_bits / bits:.0f}x | "
            f"{bits / base_bits * 100:.2f}% |"
        )
    dgc_ratio = base_bits / results["dgc:0.001"][1]
    dgc_gap = (base_acc[:, -1].mean() - results["dgc:0.001"][0][:, -1].mean()) * 100
    combo = results["topk_qsgd:0.01,levels=4"][1] / base_bits * 100
    lines += [
        "",
        f"- **DGC** (paper: 270-600x with little or no accuracy loss): `dgc:0.001` reaches "
        f"{dgc_ratio:.0f}x here, {dgc_gap:.1f} points below uncompressed after "
        f"{args.rounds} rounds. Our model has 4,810 parameters, so 0.1% density is 5 values per "
        "client and round against 25,000 in the paper's networks; the warm-up rounds (25% "
        "down to 0.4%) dominate the bits, which is why the ratio sits below 1/0.001. More rounds "
        "close the accuracy gap (see `tests/test_federation.py`).",
        f"- **Sparsification + quantisation** (survey: about 2.5% of the original size): "
        f"`topk_qsgd:0.01,levels=4` sends {combo:.2f}% of the uncompressed bits; "
        f"`topk_qsgd:0.1,levels=4` {results['topk_qsgd:0.1,levels=4'][1] / base_bits * 100:.2f}%.",
        "",
    ]
    _plot_curves(
        {spec: acc for spec, (acc, _) in results.items()},
        IMG / "compression_accuracy.png",
        "FedAvg on digits with compressed uploads",
    )
    lines += ["![accuracy per round by operator](img/compression_accuracy.png)", ""]
    return lines


def _plot_curves(curves: dict[str, np.ndarray], path: Path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for name, acc in curves.items():
        ax.plot(np.arange(1, acc.shape[1] + 1), acc.mean(axis=0), label=name, lw=1.5)
    ax.set(xlabel="round", ylabel="test accuracy", title=title, ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def _budgeted_accuracy(policy_name: str, seed: int, limit: float, **options: float) -> float:
    """Final accuracy when every round costs c tau + b (c = 1, b = 10) of a budget."""
    import gymnasium as gym

    import fl_gym  # noqa: F401  (registers the environments)
    from fl_gym.baselines import make_baseline

    env = gym.make("fl_gym/AggregationFrequency-v0")
    policy = make_baseline(policy_name, env, **options)
    choices = env.unwrapped.config.local_step_choices
    obs, info = env.reset(seed=seed)
    spent, start = 0.0, True
    while True:
        action, _ = policy.predict(obs, episode_start=start)
        start = False
        cost = 1.0 * choices[int(action)] + 10.0
        exhausted = getattr(policy, "exhausted", None)
        if (exhausted is not None and exhausted()) or spent + cost > limit:
            break
        spent += cost
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    return float(info["accuracy"])


def adaptive_frequency_section(args: argparse.Namespace) -> list[str]:
    """Wang et al.'s adaptive tau against fixed tau under the same resource budget."""
    budget = 200.0
    taus = (1, 2, 5, 10, 20)
    rows = {}
    for seed in range(args.seeds):
        fixed = [_budgeted_accuracy("fixed-steps", seed, budget, steps=t) for t in taus]
        adaptive = _budgeted_accuracy("adaptive-frequency", seed, budget, budget=budget)
        rows[seed] = (fixed, adaptive)
        print(f"adaptive tau seed {seed}: fixed {np.round(fixed, 3)} adaptive {adaptive:.3f}")
    fixed = np.array([rows[s][0] for s in rows])
    adaptive = np.array([rows[s][1] for s in rows])
    best = fixed.mean(axis=0).argmax()
    lines = [
        "### Adaptive aggregation frequency (Wang et al., IEEE JSAC 2019)",
        "",
        f"`fl_gym/AggregationFrequency-v0` defaults, resource budget R = {budget:.0f} with cost "
        "1 per local step and 10 per aggregation; each controller plays until the budget is "
        f"spent; final test accuracy, mean over seeds 0-{args.seeds - 1}.",
        "",
        "| controller | " + " | ".join(f"tau = {t}" for t in taus) + " | adaptive |",
        "| --- |" + " ---: |" * (len(taus) + 1),
        "| final accuracy | "
        + " | ".join(f"{v:.3f}" for v in fixed.mean(axis=0))
        + f" | {adaptive.mean():.3f} |",
        "",
        f"Paper: the adaptive tau comes close to the best fixed tau. Here the best fixed tau is "
        f"{taus[best]} ({fixed.mean(axis=0)[best]:.3f}); the adaptive controller reaches "
        f"{adaptive.mean():.3f}, above the median fixed tau ({np.median(fixed.mean(axis=0)):.3f}) "
        "on every seed "
        + (
            "(checked)."
            if all(a >= np.median(f) for f, a in zip(fixed, adaptive, strict=True))
            else "except some (see the printed runs)."
        ),
        "",
    ]
    return lines


SECTIONS: dict[str, Section] = {
    "compression": compression_section,
    "adaptive": adaptive_frequency_section,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--sections", nargs="*", default=list(SECTIONS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    body: list[str] = []
    for name in args.sections:
        body += SECTIONS[name](args)
    header = [
        BEGIN,
        "## Communication efficiency (survey Section III)",
        "",
        f"Generated by `benchmarks/reproduce_communication.py` on {datetime.date.today()} "
        f"({platform.machine()}, torch {torch.__version__}, "
        f"{time.perf_counter() - start:.0f} s).",
        "",
    ]
    section = "\n".join([*header, *body, END])
    text = DOC.read_text() if DOC.exists() else "# Reproductions\n\n"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)
    print(section)


if __name__ == "__main__":
    main()
