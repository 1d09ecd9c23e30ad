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
(b) The paper's Lyapunov joint power and resource-block allocation with the tail virtual queues
    against the same allocation driven by the queue alone, its average-queue baseline (paper: up
    to 60 % fewer vehicles with large queues and about half the power), over a sweep of V, and
    the experiments that explain the differences (load, clustering, thresholds of the tail
    queues); the number of clusters is chosen on tuning seeds disjoint from the evaluation seeds.

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
        self.tail_mean_bits: list[float] = []

    def step(self, env: Any, reward: Any, terminated: Any, truncated: Any, info: Any) -> None:
        super().step(env, reward, terminated, truncated, info)
        self.queue_bits.append(info["queue_bits"])
        self.tail_mean_bits.append(info["tail_mean_bits"])


POLICIES = ("vehicular-lyapunov", "vehicular-average-queue")
V_SWEEP = (0.03, 0.1, 0.3, 1.0)
"""Trade-off weights V of the policy comparison (the paper sweeps V too)."""
TUNING_SEEDS = (100, 101)
"""Seeds of the choice of the number of clusters; the evaluation uses seeds 0, 1, ..."""
CLUSTER_CHOICES = (2, 4, 6, 10)
HEAVY_LOAD = {"arrival_rate_packets_per_s": 1250.0}
"""The heavier load of the load experiment (the defaults carry 1,000 packets/s)."""


def _policy_run(
    name: str, seed: int, slots: int, system: dict[str, Any] | None = None, **options: Any
) -> tuple[float, float, float, float]:
    """Mean power (mW), time-average share of queues above q0, share of vehicles violating
    Pr(Q > q0) <= eps over the run, and the time-average conditional mean of the federated tail
    estimate over the target's, ``m1 / gamma1``."""
    config: dict[str, Any] = {"max_steps": slots, **(system or {})}
    env = TimeLimit(VehicularURLLCEnv(config=config), slots)
    policy = make_policy(name, env, **options)
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
        float(np.mean(recorder.tail_mean_bits[slots // 10 :]))
        / env.unwrapped.config.system.tail_mean_target_bits,
    )


def _runs(name: str, seeds: Any, slots: int, **options: Any) -> np.ndarray:
    """``(4,)`` mean over seeds of :func:`_policy_run`."""
    return np.mean([_policy_run(name, s, slots, **options) for s in seeds], axis=0)


def _at_power(table: np.ndarray, power_mw: float) -> float:
    """Large-queue share of a V sweep ``(V, 3)`` at a given power (log-log interpolation)."""
    order = np.argsort(table[:, 0])
    p, share = table[order, 0], np.maximum(table[order, 1], 1e-6)
    return float(np.exp(np.interp(np.log(power_mw), np.log(p), np.log(share))))


def _power_for(table: np.ndarray, share: float) -> float:
    """Power a V sweep needs for a given large-queue share (log-log interpolation)."""
    order = np.argsort(table[:, 1])
    s, p = np.maximum(table[order, 1], 1e-6), table[order, 0]
    return float(np.exp(np.interp(np.log(share), np.log(s), np.log(p))))


def policy_section(args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    seeds = range(args.seeds)
    tuning_slots = args.slots // 2
    tuning = {
        c: np.mean(
            [
                _runs(n, TUNING_SEEDS, tuning_slots, tradeoff_v=0.3, num_clusters=c)
                for n in POLICIES
            ],
            axis=0,
        )
        for c in CLUSTER_CHOICES
    }
    clusters = min(tuning, key=lambda c: tuning[c][1])
    print(
        "tuning (clusters: power, share, violators)", {c: np.round(t, 4) for c, t in tuning.items()}
    )
    results: dict[str, Any] = {
        name: np.array(
            [_runs(name, seeds, args.slots, tradeoff_v=v, num_clusters=clusters) for v in V_SWEEP]
        )
        for name in POLICIES
    }
    for name in POLICIES:
        print(name, np.round(results[name], 4))
    experiments = {
        "heavy": {
            name: _runs(
                name, seeds, args.slots, system=HEAVY_LOAD, tradeoff_v=0.3, num_clusters=clusters
            )
            for name in POLICIES
        },
        "no clusters": {
            name: _runs(name, seeds, args.slots, tradeoff_v=0.3, num_clusters=20)
            for name in POLICIES
        },
        "fixed target": _runs(
            "vehicular-lyapunov",
            seeds,
            args.slots,
            tradeoff_v=0.3,
            num_clusters=clusters,
            tail_thresholds="target",
        ),
    }
    print("experiments", experiments)
    results["experiments"] = experiments
    results["clusters"] = clusters
    results["tuning"] = tuning
    lines = [
        "### Lyapunov tail policy against the average-queue policy",
        "",
        f"`fl_gym/VehicularURLLC-v1` defaults (K = 20 pairs, N = 10 blocks, 1,000 packets/s of "
        f"1,600 bits, q0 = 8,000 bits, eps = 0.05), {args.slots} slots (first 10 % dropped), "
        f"evaluation seeds 0-{args.seeds - 1}, mean over seeds. Both policies are the paper's "
        "joint power and resource-block allocation (JPRA, `fl_gym.baselines.vehicular."
        "LyapunovJPRAPolicy`): spectral clustering of the pairs, blocks orthogonal inside a "
        "cluster with queue-proportional shares, and each slot the minimiser of the "
        "drift-plus-penalty bound `V p / p_max - beta s`; `vehicular-lyapunov` weighs the "
        "served bits by the queue and the virtual queues of the three tail constraints "
        "(thresholds from the federated GPD estimate), `vehicular-average-queue` by the queue "
        "alone (the paper's baseline). The number of clusters, "
        f"{clusters}, was chosen among {', '.join(map(str, CLUSTER_CHOICES))} on tuning seeds "
        f"{', '.join(map(str, TUNING_SEEDS))} (disjoint from the evaluation seeds; "
        f"{tuning_slots} slots, V = 0.3, fewest large queues over both policies: "
        + ", ".join(f"{c}: {t[1] * 100:.2f} %" for c, t in tuning.items())
        + "). Power: mean transmit power per pair. Large queues: time-average share of queues "
        "above q0 (the paper's 'VUEs with large queue lengths'); URLLC violators: share of "
        "vehicles with Pr(Q > q0) > eps over the run.",
        "",
        "| policy | V | power (mW) | large queues | URLLC violators |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name in POLICIES:
        for v, (p, share, viol, _) in zip(V_SWEEP, results[name], strict=True):
            lines.append(f"| `{name}` | {v} | {p:.2f} | {share * 100:.2f} % | {viol * 100:.1f} % |")
    lines += [
        "",
        "Experiments at V = 0.3 (same evaluation seeds):",
        "",
        "| experiment | policy | power (mW) | large queues | URLLC violators |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    labels = {
        "heavy": f"load {HEAVY_LOAD['arrival_rate_packets_per_s']:.0f} packets/s",
        "no clusters": "every pair its own cluster (all blocks)",
    }
    for key, label in labels.items():
        for name in POLICIES:
            p, share, viol, _ = experiments[key][name]
            lines.append(
                f"| {label} | `{name}` | {p:.2f} | {share * 100:.2f} % | {viol * 100:.1f} % |"
            )
    p, share, viol, _ = experiments["fixed target"]
    lines += [
        "| thresholds of Z1, Z2 from the target GPD, not the federated estimate | "
        f"`vehicular-lyapunov` | {p:.2f} | {share * 100:.2f} % | {viol * 100:.1f} % |",
        "",
    ]
    return lines, results


def _span(values: Any, scale: float = 100.0, digits: int = 0) -> str:
    """``"a-b"`` of the smallest and largest value (scaled), or one value if they round equal."""
    low, high = f"{min(values) * scale:.{digits}f}", f"{max(values) * scale:.{digits}f}"
    return low if low == high else f"{low}-{high}"


def _lyapunov_discussion(results: dict[str, Any]) -> str:
    """The paragraph on the paper's second claim, every number from ``results``."""
    lyap, avg = results["vehicular-lyapunov"], results["vehicular-average-queue"]
    exp = results["experiments"]
    reduction = 1.0 - lyap[:, 1] / avg[:, 1]
    ratio = lyap[:, 0] / avg[:, 0]
    best = int(np.argmax(reduction))
    inside = (lyap[:, 0] >= avg[:, 0].min()) & (lyap[:, 0] <= avg[:, 0].max())
    equal_power = [1.0 - lyap[i, 1] / _at_power(avg, lyap[i, 0]) for i in np.flatnonzero(inside)]
    reachable = (lyap[:, 1] >= avg[:, 1].min()) & (lyap[:, 1] <= avg[:, 1].max())
    extra_power = [
        _power_for(avg, lyap[i, 1]) / lyap[i, 0] - 1.0 for i in np.flatnonzero(reachable)
    ]
    heavy_l, heavy_a = exp["heavy"]["vehicular-lyapunov"], exp["heavy"]["vehicular-average-queue"]
    flat_l, flat_a = (
        exp["no clusters"]["vehicular-lyapunov"],
        exp["no clusters"]["vehicular-average-queue"],
    )
    v03 = V_SWEEP.index(0.3)
    fixed = exp["fixed target"]
    reproduced_reduction = reduction.max() >= 0.5
    text = (
        "- Paper: the tail-aware Lyapunov allocation has up to 60 % fewer vehicles with large "
        "queues and about half the power of the average-queue baseline. Here, at equal V, "
        f"`vehicular-lyapunov` has {_span(reduction)} % fewer queues above q0 than "
        f"`vehicular-average-queue` (most at V = {V_SWEEP[best]}: {lyap[best, 1] * 100:.2f} % "
        f"against {avg[best, 1] * 100:.2f} %, {reduction[best] * 100:.0f} % fewer) and "
        f"{_span(lyap[:, 2], digits=1)} % URLLC violators against {_span(avg[:, 2], digits=1)} %, "
        + (
            f"but it spends {_span(ratio, 1.0, 1)} times the baseline's power, not half. "
            if ratio.min() > 1.0
            else f"at {_span(ratio, 1.0, 1)} times the baseline's power. "
        )
        + (
            f"The reduction of large queues is reproduced in size (up to "
            f"{reduction.max() * 100:.0f} % at V = {V_SWEEP[best]}, the paper up to 60 %); the "
            "power saving is not. "
            if reproduced_reduction
            else "Neither the paper's reduction of large queues nor its power saving is "
            "reproduced at these V. "
        )
        + "Why the power goes the other way: in the same state the tail weight only adds to "
        "the queue weight (beta >= Q / q0) and the per-slot minimiser's power never decreases "
        "with beta (tests/test_vehicular_jpra.py), so at equal V the tail-aware policy can spend "
        "less only where the baseline's queues grow much longer"
        + (", and they do not here: even" if heavy_a[0] < heavy_l[0] else ", as they do")
        + f" at the heavier load of {HEAVY_LOAD['arrival_rate_packets_per_s']:.0f} packets/s "
        f"(second table), where the baseline has {heavy_a[1] * 100:.2f} % large queues and "
        f"{heavy_a[2] * 100:.0f} % violators against {heavy_l[1] * 100:.2f} % and "
        f"{heavy_l[2] * 100:.0f} % ({(1 - heavy_l[1] / heavy_a[1]) * 100:.0f} % fewer), it spends "
        f"{heavy_a[0]:.1f} mW against {heavy_l[0]:.1f} mW. Compared at equal power instead "
        "(log-log interpolation of the V sweep, plot), the tail-aware policy has "
        f"{_span(equal_power)} % fewer large queues, and the baseline needs "
        f"{_span(extra_power)} % more power to reach the tail-aware policy's large-queue share"
        + (
            ": a better trade-off, but far from half the power; most of the equal-V reduction "
            "comes from the tail weight moving the policy along the power-reliability curve. "
            if max(equal_power, default=0.0) < reduction.max() and max(extra_power, default=0) < 1
            else ". "
        )
        + "Resource blocks: with "
        "every pair its own cluster (all blocks open, the best one chosen each slot) the "
        f"policies have {lyap[v03, 1] * 100:.2f} % -> {flat_l[1] * 100:.2f} % and "
        f"{avg[v03, 1] * 100:.2f} % -> {flat_a[1] * 100:.2f} % large queues at V = 0.3 "
        f"(clustered with {results['clusters']} clusters -> not clustered): the tail-aware "
        "policy's lead does not come from the clustered allocation (without it the policy has "
        f"{(1 - flat_l[1] / flat_a[1]) * 100:.0f} % fewer large queues than the baseline)"
        + (
            ", and clustering gives neither policy fewer large queues in this environment, where "
            "a pair uses one block a slot (the paper spreads power over all the blocks a pair "
            "is given). "
            if flat_l[1] <= lyap[v03, 1] and flat_a[1] <= avg[v03, 1]
            else ". "
        )
        + "Thresholds: taking those of Z1 and "
        "Z2 from the target GPD rather than the federated estimate gives "
        f"{fixed[1] * 100:.2f} % large queues against {lyap[v03, 1] * 100:.2f} % at "
        f"{fixed[0]:.1f} against {lyap[v03, 0]:.1f} mW; over these runs the federated "
        f"estimate's conditional mean is {lyap[v03, 3]:.2f} times the target's "
        + (
            "(near the target, so which one sets the thresholds hardly matters here). "
            if abs(lyap[v03, 3] - 1.0) < 0.2
            else (
                "(the thresholds differ by that factor), yet the large-queue share hardly moves: "
                "the tail policy's lead does not hinge on where the thresholds of Z1 and Z2 sit "
                "in this scenario. "
            )
            if abs(fixed[1] / lyap[v03, 1] - 1.0) < 0.1
            else "(the thresholds differ by that factor, and so do the outcomes). "
        )
        + "What stays different from the paper's model: one block and "
        "discrete power levels per pair and slot (the paper water-fills over several blocks), "
        "clusters from the interference the receivers measured (the controllers see no "
        "positions; the paper clusters by position), and our channel, mobility and load."
    )
    return text


def _plot(curves: dict[str, np.ndarray], results: dict[str, Any]) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

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
    for name in POLICIES:
        table = results[name]
        right.semilogx(table[:, 0], table[:, 1] * 100, "o-", label=name)
    right.xaxis.set_minor_formatter(NullFormatter())
    right.set(
        xlabel="mean power per pair (mW)",
        ylabel="queues above q0 (%)",
        title=f"Power against large queues (V = {', '.join(map(str, V_SWEEP))})",
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


def _discussion(curves: dict[str, np.ndarray], results: dict[str, Any]) -> list[str]:
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
    return [
        "#### Against the paper",
        "",
        f"- Paper: FL tail estimates close to the centralised one with up to 79 % less exchanged "
        f"data. Here {fl_claim}. The saving depends on how many exceedances each vehicle holds "
        "(the centralised cost grows with them, the federated one with the rounds). "
        + _tail_explanation(curves),
        _lyapunov_discussion(results),
        "",
    ]


if __name__ == "__main__":
    main()
