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
    exchanged (paper: close accuracy with up to 79 % less exchange). Ablations at the last round
    explain the gaps: the RSU averaging ``sigma`` linearly instead of ``log sigma`` (the
    coordinate the vehicles step in), and E = 5 on the same pooled samples shuffled i.i.d. across
    vehicles, once with the same per-vehicle counts and once merged into ten times fewer, ten
    times larger vehicles.
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
    GPDParams,
    fit_gpd_centralised,
    fit_gpd_federated,
    gpd_survival,
    local_gpd_steps,
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
MERGE = 10
"""Vehicles merged into one in the larger-vehicles ablation."""


def _linear_scale_rounds(
    padded: tuple[np.ndarray, np.ndarray], rounds: int, steps: int, lr: float
) -> GPDParams:
    """Ablation: the federated fit with the RSU averaging ``sigma`` itself (not ``log sigma``);
    same start, local steps and weights as :func:`fit_gpd_federated`."""
    x, mask = padded
    counts = mask.sum(axis=1)
    active = counts > 0
    x, mask, w = x[active], mask[active], counts[active] / counts[active].sum()
    sigma, xi = float(np.where(mask, x, 0.0).sum() / mask.sum()), 0.0
    for _ in range(rounds):
        s_k, xi_k = local_gpd_steps(x, mask, sigma, xi, steps=steps, learning_rate=lr)
        sigma, xi = float(w @ s_k), float(w @ xi_k)
    return GPDParams(sigma, xi)


def _shuffled(samples: list[np.ndarray], seed: int, merge: int = 1) -> list[np.ndarray]:
    """The pooled samples dealt i.i.d. to vehicles with the original counts (``merge`` > 1:
    consecutive groups of ``merge`` vehicles become one)."""
    counts = np.array([len(s) for s in samples])
    if merge > 1:
        counts = np.add.reduceat(counts, np.arange(0, counts.size, merge))
    pooled = np.random.default_rng(10_000 + seed).permutation(np.concatenate(samples))
    return np.split(pooled, np.cumsum(counts)[:-1])


def _errors(fit: GPDParams, central: GPDParams, p_exceed: float, x99: float) -> np.ndarray:
    """Relative error in sigma, absolute in xi, relative in the tail probability at x99."""
    p_central = float(gpd_survival(x99, central.scale, central.shape))
    p_fit = float(gpd_survival(x99, fit.scale, fit.shape))
    return np.array(
        [
            abs(fit.scale / central.scale - 1),
            abs(fit.shape - central.shape),
            abs(p_fit / p_central - 1),
        ]
    )


ABLATIONS = (
    ("E=1 linear sigma", "E = 1 (lr 0.5), the RSU averaging sigma instead of log sigma"),
    ("E=5 as collected", "E = 5 (lr 0.2), the vehicles' own samples (as in the table above)"),
    ("E=5 iid", "E = 5 (lr 0.2), pooled samples shuffled i.i.d., same per-vehicle counts"),
    (
        "E=5 iid merged",
        f"E = 5 (lr 0.2), pooled samples shuffled i.i.d., {MERGE}x fewer vehicles "
        f"with {MERGE}x the samples",
    ),
)


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
            if steps == 5:
                curves.setdefault("E=5 as collected", []).append(
                    _errors(fed.params, central, p_exceed, x99)
                )
        last = max(ROUNDS)
        fits = {
            "E=1 linear sigma": _linear_scale_rounds(padded, last, *FED_SETTINGS[0]),
            "E=5 iid": fit_gpd_federated(
                _shuffled(samples, seed), rounds=last, local_steps=5, learning_rate=0.2
            ).params,
            "E=5 iid merged": fit_gpd_federated(
                _shuffled(samples, seed, MERGE), rounds=last, local_steps=5, learning_rate=0.2
            ).params,
        }
        curves.setdefault("E=1 linear sigma signed", []).append(
            fits["E=1 linear sigma"].scale / central.scale - 1
        )
        for name, fit in fits.items():
            curves.setdefault(name, []).append(_errors(fit, central, p_exceed, x99))
            print(f"tail seed {seed} {name}: {fit}")
        sizes = np.array([len(s) for s in samples if len(s)])
        curves.setdefault("median count", []).append(float(np.median(sizes)))
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
    lines += [
        f"Ablations after {max(ROUNDS)} rounds (errors against the centralised MLE of the same "
        "pooled samples, mean over seeds; the shuffles are seeded apart from the data):",
        "",
        "| federated fit | err. sigma | err. xi | err. tail prob. |",
        "| --- | ---: | ---: | ---: |",
    ]
    rows = [("E = 1 (lr 0.5), the RSU averaging log sigma (as in the table above)", None)]
    rows += [(label, key) for key, label in ABLATIONS]
    for label, key in rows:
        if key is None:
            err = np.array([arrays[f"E=1 {n}"][:, -1].mean() for n in ("sigma", "xi", "prob")])
        else:
            err = arrays[key].mean(axis=0)
        lines.append(f"| {label} | {err[0] * 100:.2f} % | {err[1]:.4f} | {err[2] * 100:.2f} % |")
    lines.append("")
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


def _tail_explanation(curves: dict[str, np.ndarray]) -> str:
    """Why the federated estimates end where they do, each reason with the run that shows it."""
    sigma1, xi1 = (curves[f"E=1 {n}"].mean(axis=0)[-1] for n in ("sigma", "xi"))
    linear = curves["E=1 linear sigma"].mean(axis=0)
    own, iid, merged = (
        curves[k].mean(axis=0) for k in ("E=5 as collected", "E=5 iid", "E=5 iid merged")
    )
    median = float(np.mean(curves["median count"]))
    return (
        "With E = 1 every vehicle starts the round from the same point, so the sample-weighted "
        "average of the vehicles' (log sigma, xi) after one step is a step on the pooled "
        "likelihood and the estimate heads for the centralised MLE: after "
        f"{ROUNDS[-1]} rounds it is {sigma1 * 100:.2f} % off in sigma and {xi1:.4f} in xi. "
        "Averaging sigma itself instead (ablation) adds a Jensen term, the mean of exp minus the "
        "exp of the mean of the vehicles' log sigma, every round and moves the fixed point "
        f"{'above' if np.mean(curves['E=1 linear sigma signed']) > 0 else 'below'} the MLE: "
        f"{linear[0] * 100:.2f} % in sigma and {linear[1]:.4f} in xi (the server rule of "
        "VehicularURLLC-v0). With E = 5 the vehicles "
        "drift towards their own MLEs between averages, and the average of those is not the "
        f"pooled MLE ({own[0] * 100:.1f} % in sigma, {own[1]:.3f} in xi, tail probability "
        f"{own[2] * 100:.0f} % off after {ROUNDS[-1]} rounds). Two causes, separated by "
        "dealing the same pooled samples i.i.d. to the vehicles. With the same counts (median "
        f"{median:.0f} per vehicle) the drift is still {iid[0] * 100:.1f} % in sigma, "
        f"{iid[1]:.3f} in xi and {iid[2] * 100:.0f} % in the tail probability: per-vehicle "
        f"MLEs on about {median:.0f} samples are noisy and biased (the GPD MLE is biased in small "
        f"samples). Merged into {MERGE}x fewer, larger vehicles the same data drifts only "
        f"{merged[0] * 100:.2f} %, {merged[1]:.4f} and {merged[2] * 100:.1f} %, so this part "
        "shrinks as each vehicle holds more. "
        + (
            "The rest of the gap on the collected samples comes from the vehicles' different "
            "tails (link qualities and interference differ), which pull each vehicle's steps "
            "towards its own MLE."
            if own[2] > iid[2]
            else "The collected samples drift no more than the shuffled ones: the vehicles' "
            "different tails add nothing measurable here."
        )
    )


def _discussion(curves: dict[str, np.ndarray], results: dict[str, np.ndarray]) -> list[str]:
    central = curves["central"].mean()
    ex = curves["E=1 exchanged"].mean(axis=0)
    err = curves["E=1 prob"].mean(axis=0)
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
        "(the centralised cost grows with them, the federated one with the rounds). "
        + _tail_explanation(curves),
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
