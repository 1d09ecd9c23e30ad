"""Reproduce the claims of Samarakoon et al. (IEEE Trans. Commun. 2020) on our vehicular system.

Writes its section of ``docs/reproductions.md`` (between ``<!-- BEGIN vehicular -->`` and
``<!-- END vehicular -->``; other sections are left as they are) and ``docs/img/vehicular_*.png``.
Every number comes from a run of :mod:`fl_gym.sim.vehicular.system` and
:mod:`fl_gym.sim.vehicular.tail`:

(a) Federated against centralised GPD estimation of the queue tail: vehicles collect their
    exceedances over ``q0`` under a fixed allocation policy; the centralised estimate pools every
    sample at the roadside unit (MLE), the federated one runs rounds of local gradient steps and
    sample-weighted averaging. Errors in ``sigma``, ``xi`` and in the tail probability
    ``Pr(Q > q0 + x)`` (x: the pooled 99th percentile of the exceedances) against the values
    exchanged (paper: close accuracy with up to 79 % less exchange).
(b) The Lyapunov tail policy against the average-queue policy (paper: up to 60 % fewer vehicles
    with large queues and about half the power).

Run: ``python benchmarks/reproduce_vehicular.py [--seeds 3] [--slots 2000]``.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from docblock import markers, write_block
from gymnasium.wrappers import TimeLimit

from fl_gym.baselines import make_policy
from fl_gym.envs.rollout import VehicularEpisodeRecorder, rollout
from fl_gym.envs.vehicular.env import VehicularURLLCEnv
from fl_gym.sim.vehicular.system import VehicularConfig, VehicularSystem
from fl_gym.sim.vehicular.tail import (
    fit_gpd_centralised,
    fit_gpd_federated,
    gpd_survival,
    pad_samples,
)

DOC = Path("docs/reproductions.md")
IMG = Path("docs/img")
BEGIN, END = markers("vehicular")
ROUNDS = (1, 2, 5, 10, 20, 50, 100)
TAIL_LOAD = {"num_pairs": 100, "num_resource_blocks": 20, "arrival_rate_packets_per_s": 1100.0}


def _collect_exceedances(seed: int, slots: int) -> tuple[list[np.ndarray], float, float]:
    """Exceedances per vehicle under queue-proportional power on the best block; also the
    pooled Pr(Q > q0) and the pooled 99th percentile of the exceedances."""
    cfg = VehicularConfig(**TAIL_LOAD)
    system = VehicularSystem(cfg)
    rng = np.random.default_rng(seed)
    system.reset(rng)
    top = cfg.num_power_levels - 1
    exceed = np.zeros((slots, cfg.num_pairs))
    for t in range(slots):
        ratio = np.minimum(system.queue_bits / cfg.queue_threshold_bits, 1.0)
        levels = np.ceil(top * ratio - 1e-12).astype(np.int64)
        blocks = np.argmax(system.own_gain, axis=1)
        exceed[t] = system.step(cfg.power_levels_w[levels], blocks, rng).exceedance_bits
    warm = slots // 10
    exceed = exceed[warm:]
    samples = [col[col > 0] for col in exceed.T]
    pooled = np.concatenate(samples)
    return samples, float((exceed > 0).mean()), float(np.quantile(pooled, 0.99))


FED_SETTINGS = ((1, 0.5), (5, 0.2))
"""(local steps, learning rate) of the federated runs shown."""


def tail_section(args: argparse.Namespace) -> tuple[list[str], dict[str, np.ndarray]]:
    curves: dict[str, list] = {"central": []}
    counts = []
    for seed in range(args.seeds):
        samples, p_exceed, x99 = _collect_exceedances(seed, args.tail_slots)
        pooled = np.concatenate(samples)
        k = len(samples)
        central = fit_gpd_centralised(pooled)
        curves["central"].append(pooled.size + 2 * k)  # every sample up, 2 parameters down
        p_central = p_exceed * float(gpd_survival(x99, central.scale, central.shape))
        padded = pad_samples(samples)
        active = int((padded[1].sum(axis=1) > 0).sum())
        for steps, lr in FED_SETTINGS:
            fed = fit_gpd_federated(padded, rounds=max(ROUNDS), local_steps=steps, learning_rate=lr)
            hist = fed.history[list(ROUNDS)]
            key = f"E={steps}"
            curves.setdefault(f"{key} exchanged", []).append(
                [2 * active + 3 * active * r + 2 * k * r for r in ROUNDS]
            )
            curves.setdefault(f"{key} xi", []).append(np.abs(hist[:, 1] - central.shape))
            curves.setdefault(f"{key} sigma", []).append(
                np.abs(hist[:, 0] - central.scale) / central.scale
            )
            p_fed = np.array([p_exceed * float(gpd_survival(x99, sg, xi)) for sg, xi in hist])
            curves.setdefault(f"{key} prob", []).append(np.abs(p_fed - p_central) / p_central)
            print(f"tail seed {seed} {key}: fed@{max(ROUNDS)} {fed.params}")
        counts.append((pooled.size, k, p_exceed, central.scale, central.shape, x99))
        print(f"tail seed {seed}: {pooled.size} exceedances, central {central}")
    arrays = {key: np.array(value, dtype=np.float64) for key, value in curves.items()}
    n_samples = np.mean([c[0] for c in counts])
    lines = [
        "### Federated against centralised tail estimation",
        "",
        f"K = {TAIL_LOAD['num_pairs']} pairs on N = {TAIL_LOAD['num_resource_blocks']} blocks "
        f"(Manhattan grid), {TAIL_LOAD['arrival_rate_packets_per_s']:.0f} packets/s of 1,600 bits "
        f"per transmitter, queue-proportional power on the best block, {args.tail_slots} slots "
        f"of 1 ms (first 10 % dropped), seeds 0-{args.seeds - 1}: on average {n_samples:.0f} "
        f"exceedances over q0 = 8,000 bits ({n_samples / TAIL_LOAD['num_pairs']:.0f} per "
        f"vehicle), Pr(Q > q0) = {np.mean([c[2] for c in counts]):.3f}. Centralised: every "
        "sample uploaded, GPD MLE (scipy); its estimates "
        + ", ".join(f"(sigma, xi) = ({c[3]:.0f} bits, {c[4]:.3f})" for c in counts)
        + ". Federated: E gradient steps per vehicle and round on (log sigma, xi), "
        "sample-weighted FedAvg; exchanged values = 2 per vehicle for the initial mean, then 3 up "
        "per vehicle and 2 down per vehicle per round; centralised = all samples up + 2 down per "
        "vehicle. Errors are against the centralised estimate, mean over seeds; the tail "
        "probability is Pr(Q > q0 + x) at the pooled 99th percentile x of the exceedances.",
        "",
        "| rounds | values exchanged | saved vs centralised | E = 1 (lr 0.5): err. xi / sigma "
        "/ tail prob. | E = 5 (lr 0.2): err. xi / sigma / tail prob. |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    central_mean = arrays["central"].mean()
    for i, r in enumerate(ROUNDS):
        ex = arrays["E=1 exchanged"][:, i].mean()
        cells = [
            f"{arrays[f'{key} xi'][:, i].mean():.3f} / "
            f"{arrays[f'{key} sigma'][:, i].mean() * 100:.1f} % / "
            f"{arrays[f'{key} prob'][:, i].mean() * 100:.1f} %"
            for key in ("E=1", "E=5")
        ]
        lines.append(
            f"| {r} | {ex:,.0f} | {(1 - ex / central_mean) * 100:.0f} % | {cells[0]} | {cells[1]} |"
        )
    lines += [f"| centralised | {central_mean:,.0f} | - | 0 | 0 |", ""]
    return lines, arrays


class _QueueRecorder(VehicularEpisodeRecorder):
    """The vehicular recorder, also keeping every slot's queues."""

    def start(self, env: Any, policy: Any, seed: int, observation: Any, info: Any) -> None:
        super().start(env, policy, seed, observation, info)
        self.queue_bits: list[np.ndarray] = []

    def step(self, env: Any, reward: Any, terminated: Any, truncated: Any, info: Any) -> None:
        super().step(env, reward, terminated, truncated, info)
        self.queue_bits.append(info["queue_bits"])


def _policy_run(name: str, seed: int, slots: int, v: float) -> tuple[float, float, float]:
    """Mean power (mW), time-average share of queues above q0, share of vehicles violating
    Pr(Q > q0) <= eps over the run."""
    env = TimeLimit(VehicularURLLCEnv(config={"max_steps": slots}), slots)
    policy = make_policy(name, env, tradeoff_v=v)
    q0 = env.unwrapped.config.system.queue_threshold_bits
    eps = env.unwrapped.config.system.tail_probability_target
    recorder = _QueueRecorder()
    episode = rollout(env, policy, seed=seed, recorder=recorder, num_threads=None)
    power = episode.mean_power_w
    over_arr = np.array([q > q0 for q in recorder.queue_bits][slots // 10 :])
    return (
        float(np.mean(power[slots // 10 :]) * 1e3),
        float(over_arr.mean()),
        float((over_arr.mean(axis=0) > eps).mean()),
    )


def policy_section(args: argparse.Namespace) -> tuple[list[str], dict[str, np.ndarray]]:
    settings = (0.3, 1.0, 3.0)
    results: dict[str, np.ndarray] = {}
    for name in ("vehicular-lyapunov", "vehicular-average-queue"):
        runs = np.array(
            [[_policy_run(name, s, args.slots, v) for s in range(args.seeds)] for v in settings]
        )
        results[name] = runs.mean(axis=1)  # (settings, 3)
        print(name, np.round(results[name], 4))
    lines = [
        "### Lyapunov tail policy against the average-queue policy",
        "",
        f"`fl_gym/VehicularURLLC-v1` defaults (K = 20 pairs, N = 10 blocks, 1,000 packets/s of "
        f"1,600 bits, q0 = 8,000 bits, eps = 0.05), {args.slots} slots (first 10 % dropped), "
        f"seeds 0-{args.seeds - 1}, mean over seeds. Power: mean transmit power per pair. "
        "Large queues: time-average share of queues above q0; URLLC violators: share of vehicles "
        "with Pr(Q > q0) > eps over the run.",
        "",
        "| policy | V | power (mW) | large queues | URLLC violators |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, table in results.items():
        for v, (p, share, viol) in zip(settings, table, strict=True):
            lines.append(f"| `{name}` | {v} | {p:.2f} | {share * 100:.2f} % | {viol * 100:.1f} % |")
    lines.append("")
    return lines, results


def _plot(curves: dict[str, np.ndarray], results: dict[str, np.ndarray]) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    ex = curves["E=1 exchanged"].mean(axis=0)
    floor = 1e-4  # log axes: exact agreement is drawn at the floor
    for key, style in (("E=1", "-"), ("E=5", ":")):
        for name, marker, label in (
            ("sigma", "o", "rel. error sigma"),
            ("xi", "s", "abs. error xi"),
            ("prob", "^", "rel. error tail prob."),
        ):
            values = np.maximum(curves[f"{key} {name}"].mean(axis=0), floor)
            left.loglog(ex, values, marker + style, label=f"{label}, {key}", ms=4)
    left.axvline(curves["central"].mean(), color="k", ls="--", label="centralised exchange")
    left.set(
        xlabel="values exchanged", ylabel="error vs centralised MLE", title="Federated GPD estimate"
    )
    left.grid(alpha=0.3, which="both")
    left.legend(fontsize=6)
    for name, table in results.items():
        right.plot(table[:, 0], table[:, 1] * 100, "o-", label=name)
    right.set(
        xlabel="mean power per pair (mW)",
        ylabel="queues above q0 (%)",
        title="Power against large queues (V = 0.3, 1, 3)",
    )
    right.grid(alpha=0.3)
    right.legend(fontsize=7)
    path = IMG / "vehicular_reproduction.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--slots", type=int, default=2000, help="slots of the policy runs")
    parser.add_argument("--tail-slots", type=int, default=6000, help="slots of tail data")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    tail_lines, curves = tail_section(args)
    policy_lines, results = policy_section(args)
    _plot(curves, results)
    body = tail_lines + policy_lines + _discussion(curves, results)
    header = [
        BEGIN,
        "## Vehicular URLLC (Samarakoon et al., IEEE Trans. Commun. 2020)",
        "",
        f"Generated by `benchmarks/reproduce_vehicular.py` on {datetime.date.today()} "
        f"({platform.machine()}, numpy {np.__version__}, {time.perf_counter() - start:.0f} s).",
        "",
    ]
    section = "\n".join(
        [*header, *body, "![vehicular reproduction](img/vehicular_reproduction.png)", "", END]
    )
    write_block(DOC, "vehicular", section)
    print(section)


def _discussion(curves: dict[str, np.ndarray], results: dict[str, np.ndarray]) -> list[str]:
    central = curves["central"].mean()
    ex = curves["E=1 exchanged"].mean(axis=0)
    err = curves["E=1 prob"].mean(axis=0)
    drift = curves["E=5 prob"].mean(axis=0)[-1]
    good = [i for i in range(len(ROUNDS)) if err[i] < 0.1]
    if good:
        i = good[0]
        fl_claim = (
            f"the federated estimate (E = 1) is within 10 % of the centralised tail probability "
            f"after "
            f"{ROUNDS[i]} round(s), having exchanged {ex[i]:,.0f} values, "
            f"{(1 - ex[i] / central) * 100:.0f} % less than the centralised fit ({central:,.0f}). "
            "This flatters the federated side: its starting point, the pooled mean with xi = 0 "
            "(the exponential MLE, 2 values per vehicle), is already close because these queue "
            "tails are nearly exponential (centralised xi near 0); the later rounds refine it "
            f"to {err[-1] * 100:.1f} %"
        )
    else:
        fl_claim = (
            "the federated estimate does not come within 10 % of the centralised tail "
            "probability within the rounds shown"
        )
    lyap, avg = results["vehicular-lyapunov"], results["vehicular-average-queue"]
    return [
        "#### Against the paper",
        "",
        f"- Paper: FL tail estimates close to the centralised one with up to 79 % less exchanged "
        f"data. Here {fl_claim}. The saving depends on how many exceedances each vehicle holds "
        "(the centralised cost grows with them, the federated one with the rounds). With E = 1 "
        "the weighted average of the vehicles' steps is a step on the pooled likelihood, so the "
        "federated estimate heads for the centralised MLE, up to a residual bias (last row: "
        f"{curves['E=1 sigma'].mean(axis=0)[-1] * 100:.1f} % in sigma, "
        f"{curves['E=1 xi'].mean(axis=0)[-1]:.3f} in xi) from the per-vehicle support "
        "projection and gradient clipping, which act on vehicles with few samples. With E = 5 it "
        "does not: the vehicles' exceedances are not identically "
        "distributed here (link qualities and interference differ), each vehicle drifts to its "
        "own, lighter tail, and the average of the parameters is not the pooled MLE (tail "
        f"probability still {drift * 100:.0f} % off after {ROUNDS[-1]} rounds; the paper "
        "assumes i.i.d. vehicles, and on i.i.d. data several local steps do converge, see "
        "tests/test_vehicular_tail.py).",
        f"- Paper: the tail-aware Lyapunov allocation has up to 60 % fewer vehicles with large "
        f"queues and about half the power of the average-queue baseline. Here, at V = 1, the "
        f"Lyapunov policy uses {lyap[1, 0]:.2f} mW against {avg[1, 0]:.2f} mW with "
        f"{lyap[1, 1] * 100:.2f} % against {avg[1, 1] * 100:.2f} % of queues above q0 and "
        f"{lyap[1, 2] * 100:.1f} % against {avg[1, 2] * 100:.1f} % URLLC violators. The claim "
        + (
            "is reproduced at this V"
            if lyap[1, 1] < avg[1, 1] and lyap[1, 0] < avg[1, 0]
            else "is not reproduced: neither curve of the V sweep (plot) dominates clearly, and "
            "the tail-aware policy buys its power saving with more large queues"
        )
        + ". Our policies are slot-by-slot "
        "drift-plus-penalty rules on a 1 ms simulator with block choice by estimated SINR, "
        "not the paper's exact JPRA solution; the average-queue target (q0 / 2) is our choice, "
        "and the comparison depends on it and on V: read the numbers as a comparison of two "
        "heuristics in our model, not as a replication of the paper's figures.",
        "",
    ]


if __name__ == "__main__":
    main()
