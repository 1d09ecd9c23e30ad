"""Reproduce CodedFedL's headline (Prakash, Dhakal et al., IEEE JSAC 2020): coded federated
learning reaches a target accuracy in less wall-clock time than uncoded federated learning when
devices straggle.

Writes its section of ``docs/reproductions.md`` (between ``<!-- BEGIN coded -->`` and
``<!-- END coded -->``). Every number comes from a run of this script.

The paper's task and scheme, on our simulator's radio model:

* Data: scikit-learn's bundled digits, mapped by random Fourier features of the Gaussian kernel
  (the paper's kernel embedding; bandwidth by the median heuristic), one-hot labels, least
  squares trained by full-batch gradient descent: the paper's linear regression. Split over K
  devices in label-sorted shards (one or two digits each).
* Delays: each device computes its gradient (``C`` cycles per point at its CPU frequency) and
  uploads it (``q x classes`` float32) on its own sub-channel of a
  :class:`~fl_gym.sim.radio.cell.WirelessCell` (path loss, shadowing, Rayleigh fading drawn
  afresh every epoch): ``T_k = C l_k / f_k + bits / (B log2(1 + p g_k |h|^2 / (B N0)))``.
* Uncoded, wait for all: an epoch lasts ``max_k T_k`` and uses the full gradient.
* Uncoded, deadline: an epoch lasts ``t*``; the gradients that arrived are averaged.
* CodedFedL: each device uploads once, before training, ``G_k W_k (X_k, Y_k)`` with
  ``G_k`` i.i.d. N(0, 1) of ``c = delta m`` rows and ``W_k^2 = 1 - P_k(t*)``, ``P_k`` the
  closed-form probability that its gradient meets the deadline (the fading's exponential
  law); the server sums them into the global parity set. An epoch lasts ``t*``; the update is
  ``(sum of arrived gradients + coded gradient) / m``, unbiased for the full gradient. The
  deadline follows the paper's criterion with every device processing all its points (a
  simplification of its load allocation): the smallest ``t*`` at which the expected number of
  returned points plus ``c`` covers ``m``. The one-off parity upload is charged to the coded
  scheme's clock (devices upload on their sub-channels, in parallel, at ``p_max``).

Tuning seeds (the redundancy ``delta``, picked from a grid by time to target) are disjoint from
the evaluation seeds. Run: ``python benchmarks/reproduce_coded.py [--seeds 5]``.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from docblock import markers, write_block
from sklearn.datasets import load_digits

from fl_gym.sim.learning.coded import coded_gradient, encode, random_fourier_features
from fl_gym.sim.radio.cell import WirelessCell, WirelessConfig

DOC = Path("docs/reproductions.md")
BEGIN, END = markers("coded")

NUM_DEVICES = 20
NUM_FEATURES = 400
TARGET_ACCURACY = 0.95
MAX_EPOCHS = 600
CYCLES_PER_SAMPLE = 2e6
PAPER_SPEEDUP = 15.0
"""The paper's abstract: CodedFedL speeds up the overall training time by up to 15x against
the benchmark (uncoded) schemes (MNIST and Fashion-MNIST, its network parameters)."""
DELTAS = (0.05, 0.1, 0.2, 0.4)
TUNING_SEEDS = (1000, 1001)

CELL = WirelessConfig(
    num_subchannels=NUM_DEVICES,
    bandwidth_hz=20e6,
    doppler_hz=5.0,  # rounds 1 s apart: practically independent fading every epoch
    cycles_per_sample=CYCLES_PER_SAMPLE,
)


@dataclass
class Problem:
    """One seed's federated least-squares problem and its radio."""

    x: list[np.ndarray]
    y: list[np.ndarray]
    x_test: np.ndarray
    y_test: np.ndarray
    cell: WirelessCell
    rng: np.random.Generator
    step: float

    @property
    def sizes(self) -> np.ndarray:
        return np.array([len(x) for x in self.x])


def make_problem(seed: int) -> Problem:
    rng = np.random.default_rng(seed)
    digits = load_digits()
    x_all = digits.data / 16.0
    labels = digits.target
    order = rng.permutation(len(x_all))
    num_test = len(x_all) // 5
    test, train = order[:num_test], order[num_test:]
    # Median heuristic for the kernel bandwidth (no tuning).
    sample = x_all[train[:300]]
    dists = np.sqrt(((sample[:, None, :] - sample[None, :, :]) ** 2).sum(-1))
    sigma = float(np.median(dists[dists > 0]))
    z, mapping = random_fourier_features(x_all[train], NUM_FEATURES, sigma, rng)
    z_test = np.sqrt(2.0 / NUM_FEATURES) * np.cos(x_all[test] @ mapping[:-1] + mapping[-1])
    onehot = np.eye(10)[labels[train]]
    # Label-sorted shards: each device holds one or two digits, so a device that straggles
    # every epoch takes its classes with it unless its data are covered otherwise.
    by_label = np.lexsort((rng.permutation(len(train)), labels[train]))
    parts = np.array_split(by_label, NUM_DEVICES)
    cell = WirelessCell(CELL, NUM_DEVICES)
    cell.reset(rng)
    # Gradient descent on the mean squared loss at 1 / L (L the Hessian's largest eigenvalue).
    lam = float(np.linalg.eigvalsh(z.T @ z / len(z))[-1])
    return Problem(
        x=[z[p] for p in parts],
        y=[onehot[p] for p in parts],
        x_test=z_test,
        y_test=labels[test],
        cell=cell,
        rng=rng,
        step=1.0 / lam,
    )


def upload_bits(num_classes: int = 10) -> float:
    return NUM_FEATURES * num_classes * 32.0


def epoch_delays(problem: Problem) -> np.ndarray:
    """Each device's compute + upload time this epoch (then the channel moves on)."""
    cell = problem.cell
    compute_s, _ = cell.compute_cost(1, 1)
    compute_s = compute_s * problem.sizes
    rate = cell.achievable_rate_bps(cell.config.p_max_w)
    delays = compute_s + np.divide(
        upload_bits(), rate, out=np.full(NUM_DEVICES, np.inf), where=rate > 0
    )
    cell.advance(problem.rng)
    return delays


def return_probability(problem: Problem, deadline_s: float) -> np.ndarray:
    """Closed-form ``P(T_k <= t)``: Rayleigh fading (one antenna) makes ``|h|^2`` Exp(1)."""
    cell, cfg = problem.cell, problem.cell.config
    compute_s = cell.compute_cost(1, 1)[0] * problem.sizes
    left = deadline_s - compute_s
    b = cfg.subchannel_bandwidth_hz
    with np.errstate(over="ignore", divide="ignore"):
        exponent = upload_bits() / (b * np.maximum(left, 1e-300))
        needed_snr = np.where(left > 0, 2.0**exponent - 1, np.inf)
    mean_snr = cfg.p_max_w * cell.large_scale_gain / (b * cfg.noise_psd_w_per_hz)
    return np.where(left > 0, np.exp(-needed_snr / mean_snr), 0.0)


def coded_deadline(problem: Problem, delta: float) -> float:
    """The smallest ``t`` with ``sum_k l_k P_k(t) + delta m >= m`` (bisection)."""
    m = problem.sizes.sum()
    lo, hi = 0.0, 1.0
    while (problem.sizes * return_probability(problem, hi)).sum() + delta * m < m:
        hi *= 2.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if (problem.sizes * return_probability(problem, mid)).sum() + delta * m >= m:
            hi = mid
        else:
            lo = mid
    return hi


def accuracy(theta: np.ndarray, problem: Problem) -> float:
    return float(((problem.x_test @ theta).argmax(1) == problem.y_test).mean())


def run(problem: Problem, scheme: str, delta: float = 0.1) -> tuple[float, float, float]:
    """Train to the target; returns (wall-clock seconds to target or inf, setup seconds,
    deadline)."""
    m = problem.sizes.sum()
    theta = np.zeros((NUM_FEATURES, 10))
    clock = setup_s = deadline = 0.0
    coded = None
    if scheme in ("coded", "deadline"):
        deadline = coded_deadline(problem, delta)
    if scheme == "coded":
        p = return_probability(problem, deadline)
        c = max(1, round(delta * m))
        generator = torch.Generator().manual_seed(int(problem.rng.integers(2**63 - 1)))
        for k in range(NUM_DEVICES):
            w = torch.full((problem.sizes[k],), float(np.sqrt(1.0 - p[k])), dtype=torch.float64)
            part = encode(
                torch.as_tensor(problem.x[k]), torch.as_tensor(problem.y[k]), c, generator, w
            )
            coded = part if coded is None else coded + part
        # One-off upload of c (q + classes) float32 per device, in parallel on the sub-channels.
        cell = problem.cell
        rate = cell.achievable_rate_bps(cell.config.p_max_w)
        setup_s = float((c * (NUM_FEATURES + 10) * 32.0 / rate).max())
        clock = setup_s
    for _ in range(MAX_EPOCHS):
        delays = epoch_delays(problem)
        if scheme == "wait-all":
            arrived = np.ones(NUM_DEVICES, dtype=bool)
            clock += float(delays.max())
        else:
            arrived = delays <= deadline
            clock += deadline
        grad = np.zeros_like(theta)
        for k in np.flatnonzero(arrived):
            grad += problem.x[k].T @ (problem.x[k] @ theta - problem.y[k])
        if scheme == "deadline":
            points = problem.sizes[arrived].sum()
            grad = grad * (m / points) if points else grad
        if scheme == "coded":
            grad += coded_gradient(torch.as_tensor(theta), coded).numpy()
        theta = theta - problem.step * grad / m
        if accuracy(theta, problem) >= TARGET_ACCURACY:
            return clock, setup_s, deadline
    return float("inf"), setup_s, deadline


def _speedup(value: float) -> str:
    return (
        "unbounded (the uncoded run never reached the target)"
        if np.isinf(value)
        else (f"{value:.2f}x")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()

    tuning = {}
    for delta in DELTAS:
        times = [run(make_problem(s), "coded", delta)[0] for s in TUNING_SEEDS]
        tuning[delta] = float(np.mean(times))
        print(f"tuning delta={delta}: mean time to target {tuning[delta]:.1f} s")
    delta = min(tuning, key=tuning.get)

    rows = []
    for seed in range(args.seeds):
        wait_all = run(make_problem(seed), "wait-all")[0]
        greedy, _, deadline = run(make_problem(seed), "deadline", delta)
        coded, setup_s, _ = run(make_problem(seed), "coded", delta)
        rows.append((seed, wait_all, greedy, coded, setup_s, deadline))
        print(
            f"seed {seed}: wait-all {wait_all:.1f} s, deadline {greedy:.1f} s, "
            f"coded {coded:.1f} s (setup {setup_s:.1f} s, t* {deadline:.3f} s)"
        )
    arr = np.array([r[1:] for r in rows])
    speed_all = arr[:, 0] / arr[:, 2]
    speed_greedy = arr[:, 1] / arr[:, 2]
    elapsed = time.perf_counter() - started

    lines = [
        BEGIN,
        "## Coded federated learning (Prakash, Dhakal et al., IEEE JSAC 2020)",
        "",
        f"Written by `benchmarks/reproduce_coded.py` on {datetime.date.today().isoformat()} "
        f"({platform.machine()}, {elapsed:.0f} s on one core). Least squares on "
        f"{NUM_FEATURES} random Fourier features of the digits (the paper's kernel linear "
        f"regression), {NUM_DEVICES} devices holding label-sorted shards (one or two digits "
        "each), full-batch gradient descent at step 1/L, "
        f"gradient uploads of {upload_bits() / 1e3:.0f} kbit on 1 MHz sub-channels of the "
        "default cell (path loss, 8 dB shadowing, Rayleigh fading afresh every epoch), "
        f"{CYCLES_PER_SAMPLE:.0e} cycles per point. Wall-clock time until test accuracy "
        f"reaches {TARGET_ACCURACY:.2f}; CodedFedL's clock includes its one-off parity upload. "
        f"The redundancy delta = c/m = {delta} was chosen from {list(DELTAS)} on tuning seeds "
        f"{list(TUNING_SEEDS)} (mean times {', '.join(f'{tuning[d]:.1f} s' for d in DELTAS)});"
        f" evaluation seeds 0..{args.seeds - 1}.",
        "",
        "| seed | wait for all (s) | uncoded, deadline t* (s) | CodedFedL (s) | of which parity "
        "upload (s) | t* (s) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for seed, wait_all, greedy, coded, setup_s, deadline in rows:
        lines.append(
            f"| {seed} | {wait_all:.1f} | {greedy:.1f} | {coded:.1f} | {setup_s:.1f} | "
            f"{deadline:.3f} |"
        )
    lines += [
        "",
        f"Speed-up of CodedFedL to {TARGET_ACCURACY:.2f} accuracy against waiting for all "
        f"devices: median {np.median(speed_all):.1f}x, range {speed_all.min():.1f}-"
        f"{speed_all.max():.1f}x over the {args.seeds} seeds. Against the uncoded scheme with "
        f"the same deadline: median {_speedup(np.median(speed_greedy))}, range "
        f"{speed_greedy.min():.2f}-{_speedup(speed_greedy.max())}"
        + (
            f"; that scheme never reached the target within {MAX_EPOCHS} epochs on "
            f"{int(np.isinf(arr[:, 1]).sum())} seed(s)"
            if np.isinf(arr[:, 1]).any()
            else ""
        )
        + f". The paper reports speed-ups of up to {PAPER_SPEEDUP:.0f}x against its "
        "benchmark schemes (MNIST / Fashion-MNIST, its own network parameters and load "
        "allocation); our largest, against waiting for all devices, is "
        f"{speed_all.max():.1f}x; it varies by seed with the slowest device's delays "
        "(waiting for all pays for every deep fade). Against the uncoded deadline scheme "
        "CodedFedL is not always faster: on some seeds its parity upload costs more than the "
        "epochs it saves.",
        "",
        "What differs from the paper: every device processes all its points (no per-device "
        "load), the deadline comes from the paper's expected-return criterion rather than its "
        "full optimisation, the digits stand in for MNIST, and compute delays are "
        "deterministic (the fading alone makes uploads random). Privacy: the parity data are "
        "Gaussian projections of the raw data, `X~^T X~ / c` estimates the weighted Gram "
        "matrix `X^T W^2 X`; sharing them leaks far more than gradients do.",
        END,
    ]
    write_block(DOC, "coded", "\n".join(lines) + "\n")
    print(f"wrote {DOC} ({elapsed:.0f} s)")


if __name__ == "__main__":
    main()
