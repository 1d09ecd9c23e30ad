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
from docblock import markers, write_block

from fl_gym.sim import (
    CSOverTheAir,
    Federation,
    FederationConfig,
    OverTheAir,
    make_federated_dataset,
)
from fl_gym.sim.radio.cell import WirelessCell, WirelessConfig

DOC = Path("docs/reproductions.md")
IMG = Path("docs/img")
BEGIN, END = markers("communication")

Section = Callable[[argparse.Namespace], list[str]]
LOCAL_STEPS = 5


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


# -- over-the-air communication gain ---------------------------------------------------------


def _ota_federation(num_devices: int, seed: int) -> tuple[Federation, np.random.Generator]:
    rng = np.random.default_rng(seed)
    data = make_federated_dataset("digits", num_devices, rng=rng)
    wireless = WirelessConfig(num_antennas=4, battery_min_j=1e3, battery_max_j=1e3)
    cell = WirelessCell(wireless, num_devices)
    return Federation(data, FederationConfig(), cell=cell, rng=rng), rng


def _digital_run(spec: str, num_devices: int, seed: int, rounds: int) -> tuple[float, float]:
    """Final accuracy and channel uses per round of error-free orthogonal digital FedAvg.

    A digital channel use carries one 32-bit word, so uses = bits sent / 32 (values and
    indices alike).
    """
    rng = np.random.default_rng(seed)
    data = make_federated_dataset("digits", num_devices, rng=rng)
    fed = Federation(data, FederationConfig(compression_levels=(spec,)), rng=rng)
    uses = 0.0
    for _ in range(rounds):
        report = fed.run_round(fed.plan(selected="all", local_steps=LOCAL_STEPS), rng)
        uses += float(report.bits_up.sum()) / 32.0
    return fed.accuracy, uses / rounds


def _ota_run(num_devices: int, seed: int, rounds: int) -> tuple[float, float, float]:
    """Final accuracy, channel uses per round and mean aggregation MSE of over-the-air FedAvg."""
    fed, rng = _ota_federation(num_devices, seed)
    uses, mse = 0.0, []
    for _ in range(rounds):
        report = fed.run_round(
            fed.plan(selected="all", local_steps=LOCAL_STEPS), rng, transport=OverTheAir()
        )
        uses += report.channel_uses
        mse.append(report.aggregation_mse)
    return fed.accuracy, uses / rounds, float(np.mean(mse))


def _cs_ota_run(
    num_devices: int, seed: int, rounds: int, density: float, measurement_ratio: float
) -> tuple[float, float]:
    """Final accuracy and channel uses per round of compressive-sensing over-the-air FedAvg
    (the pipeline's :class:`~fl_gym.sim.CSOverTheAir` transport).

    Every device sparsifies ``update + residual`` to ``density`` of its entries (top-k with
    error accumulation), all project with the shared matrix and transmit in analog over the
    same cell as :func:`_ota_run`, aligned by channel inversion to the weakest device's
    beamformed gain at full power; the server recovers the sum with NIHT.
    """
    fed, rng = _ota_federation(num_devices, seed)
    transport = CSOverTheAir(power_scale=1.0, density=density, measurement_ratio=measurement_ratio)
    for _ in range(rounds):
        fed.run_round(fed.plan(selected="all", local_steps=LOCAL_STEPS), rng, transport=transport)
    return fed.accuracy, float(transport.sizes(fed.num_params)[1])


def ota_section(args: argparse.Namespace) -> list[str]:
    """Communication gain of over-the-air and CS over-the-air against the number of devices."""
    device_counts = (5, 10, 20, 40)
    rounds = args.ota_rounds
    density, ratio = 0.01, 0.5
    schemes = (
        "digital",
        "digital top-k 1%",
        "over-the-air",
        f"CS over-the-air ({density:.0%}, s = {ratio:.0%} d)",
    )
    accuracy = {name: np.zeros((len(device_counts), args.seeds)) for name in schemes}
    uses = {name: np.zeros(len(device_counts)) for name in schemes}
    ota_mse = np.zeros(len(device_counts))
    for i, k in enumerate(device_counts):
        for seed in range(args.seeds):
            runs = {
                schemes[0]: _digital_run("none", k, seed, rounds),
                schemes[1]: _digital_run("topk:0.01", k, seed, rounds),
                schemes[3]: _cs_ota_run(k, seed, rounds, density, ratio),
            }
            acc, ota_uses, mse = _ota_run(k, seed, rounds)
            runs[schemes[2]] = (acc, ota_uses)
            ota_mse[i] += mse / args.seeds
            for name, (a, u) in runs.items():
                accuracy[name][i, seed] = a
                uses[name][i] += u / args.seeds
            print(f"K={k} seed {seed}: " + ", ".join(f"{n} {a:.3f}" for n, (a, _) in runs.items()))
    gain = {name: uses[schemes[0]] / uses[name] for name in schemes}
    _plot_gain(device_counts, gain, accuracy, IMG / "ota_gain.png")
    header = " | ".join(f"K = {k}" for k in device_counts)
    lines = [
        "### Over-the-air computation: communication gain against the number of devices",
        "",
        f"Digits, K IID devices, all devices every round, {LOCAL_STEPS} local steps, "
        f"{rounds} rounds, seeds 0-{args.seeds - 1}. Channel uses per round: orthogonal "
        "digital sends every device's words on its own resources (one 32-bit word per use, "
        "indices included), over-the-air sends one parameter per use for all devices together "
        "(d uses), CS over-the-air sends s measurements. Gain = digital uses / the scheme's. "
        "The analog schemes run over the default cell (radius 500 m, p_max 23 dBm, 4 BS "
        "antennas, 10 MHz, receiver noise included); the digital ones are error-free.",
        "",
        "| scheme | " + header + " |",
        "| --- |" + " ---: |" * len(device_counts),
    ]
    for name in schemes:
        lines.append(f"| {name}: gain | " + " | ".join(f"{g:,.0f}x" for g in gain[name]) + " |")
    for name in schemes:
        lines.append(
            f"| {name}: accuracy | "
            + " | ".join(f"{a:.3f}" for a in accuracy[name].mean(axis=1))
            + " |"
        )
    cs = schemes[3]
    lines += [
        "",
        f"- **Over-the-air** (survey: the gain grows with the number of devices): the gain is "
        f"exactly K ({', '.join(f'{g:.0f}x' for g in gain[schemes[2]])}), since all devices share "
        "the d channel uses. Its accuracy tracks error-free digital FedAvg "
        f"(largest gap {_largest_gap(accuracy[schemes[0]], accuracy[schemes[2]]):.1f} pts): "
        "the aggregation MSE per parameter "
        f"({', '.join(f'{m:.1e}' for m in ota_mse)}) is small next to the updates; it is "
        "set by the weakest transmitting device (the common receive scale), so it follows the "
        "cell's draw more than K.",
        f"- **CS over-the-air at 1% sparsity**: gain "
        f"{', '.join(f'{g:,.0f}x' for g in gain[cs])} (2K with s = d/2, the measurement ratio of "
        "Amiri and Gunduz's A-DSGD); accuracy "
        f"{', '.join(f'{a:.3f}' for a in accuracy[cs].mean(axis=1))} against digital "
        f"{', '.join(f'{a:.3f}' for a in accuracy[schemes[0]].mean(axis=1))}. The sum of K "
        "devices' 1%-sparse updates has a support of up to K% of d, which fewer measurements "
        "cannot resolve (at s = d/10 NIHT fails even without noise and accuracy falls to about "
        "0.7); the server recovers the s/5 largest entries of the sum with 30 NIHT iterations, and "
        "what it misses is lost (the devices' residuals hold only what their own top-k dropped).",
        "- These gains count channel uses against an error-free digital baseline. The section "
        "*Broadband analog aggregation and measured communication gains* "
        "(`benchmarks/reproduce_broadband.py`) measures latency, energy and accuracy of the "
        "schemes through one cell instead.",
        "",
        "![communication gain and accuracy against the number of devices](img/ota_gain.png)",
        "",
    ]
    return lines


def _largest_gap(reference: np.ndarray, other: np.ndarray) -> float:
    return float(100 * np.max(reference.mean(axis=1) - other.mean(axis=1)))


def _plot_gain(
    device_counts: tuple[int, ...],
    gain: dict[str, np.ndarray],
    accuracy: dict[str, np.ndarray],
    path: Path,
) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    for name in gain:
        left.plot(device_counts, gain[name], marker="o", label=name)
        right.plot(device_counts, accuracy[name].mean(axis=1), marker="o", label=name)
    left.set(xlabel="devices K", ylabel="communication gain", yscale="log", title="gain")
    right.set(xlabel="devices K", ylabel="test accuracy", title="accuracy after the rounds")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    right.legend(fontsize=7, loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


SECTIONS: dict[str, Section] = {
    "compression": compression_section,
    "adaptive": adaptive_frequency_section,
    "ota": ota_section,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--ota-rounds", type=int, default=30)
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
    write_block(DOC, "communication", section)
    print(section)


if __name__ == "__main__":
    main()
