"""Steps per second of the registered environments, and one FL round as K grows to 10,000.

(a) Throughput. Every registered environment on its defaults, driven by random actions (drawn
from its action space, seeded, before the clock starts), on one core: torch and the BLAS
libraries on one thread (``--pin`` also pins the process to one CPU). After a
warm-up, a block of steps is timed call by call; an episode that ends is reset and the reset is
timed apart, so the table shows steps per second with and without reset time. Blocks of all
environments alternate (the median of the blocks is reported) so that drift in the load of a
shared machine hits every environment alike; steps per CPU-second (process time) are shown
beside wall-clock rates, as they do not count time lost to other processes. Random actions are
not free: WirelessFL-v0's random frequency value picks among ``local_step_choices`` uniformly
(mean 7.6 local steps, against the default 5), and random scores select about half of the
devices; the table reports both means.

(b) K-scaling. One FL round through the simulator alone (:class:`fl_gym.sim.Federation`, no
environment) with K = 10 ... 10,000 clients, each in a fresh subprocess so that its peak memory
is its own: logistic regression (d = 60, C = 10, 610 parameters), every client selected, 5 local
SGD steps of batch 16, no compression, FedAvg, a wireless cell with ``num_subchannels = K`` and
1 MHz per sub-channel (``bandwidth_hz = K * 1e6``, the per-device bandwidth of the defaults) at
``p_max``. The data follow FedProx's IID synthetic recipe (``generate_iid.py``: one shared
``W``, ``b`` with N(0, 1) entries, ``x ~ N(0, diag(j^-1.2))``, ``y = argmax(x W + b)``) with 50
training samples per client (FedProx's smallest user) and a fixed 10,000-sample test set, split
IID. ``synthetic_fedprox(..., iid=True)`` itself is not used here: its log-normal user sizes
(``int(LogNormal(4, 2)) + 50``, mean ~450, heaviest of 10,000 users typically > 10^5 samples)
would make data generation, not the round, dominate time and memory at K = 10,000. The time is
the median over the timed rounds after one warm-up round; memory is the resident set:
``ru_maxrss`` of the worker (setup included) and, on Linux, the peak during the rounds alone
(``/proc/self/clear_refs`` resets the high-water mark after setup).

Run: ``python benchmarks/bench_envs.py [--steps 500] [--blocks 3] [--clients 10 100 1000 10000]
[--profile]``. It prints Markdown tables; the last lines state WirelessFL-v0's steps per second.
``--profile`` adds a cProfile listing of WirelessFL-v0's steps.
"""

from __future__ import annotations

import os

# One thread for every math library, set before numpy and torch load them.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import cProfile  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import pstats  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

TARGET_STEPS_PER_S = 250.0
TARGET_ROUND_S = 2.0
TARGET_ROUND_MB = 2048.0
MAIN_ENV = "fl_gym/WirelessFL-v0"


def one_core(pin: bool) -> str:
    """Run torch on one thread and, with ``pin``, this process on one CPU; say what was done.

    Pinning is off by default: on a shared machine the scheduler then moves the single busy
    thread to whichever core is free, while a pinned process waits whenever its core is taken.
    """
    torch.set_num_threads(1)
    if not pin:
        return "torch and BLAS on 1 thread, process not pinned"
    if not hasattr(os, "sched_setaffinity"):
        return "torch and BLAS on 1 thread, process not pinned (no sched_setaffinity)"
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return f"torch and BLAS on 1 thread, process pinned to CPU {cpu}"


# -- (a) environment throughput ------------------------------------------------------------------


@dataclass
class BlockResult:
    """Timing of one block of steps of one environment.

    Attributes:
        steps: Steps timed.
        step_s: Wall-clock time inside ``step`` calls.
        step_cpu_s: CPU time of this process inside ``step`` calls: unlike wall-clock time it
            does not count the time another process holds the core.
        reset_s: Time inside the ``reset`` calls of episodes that ended in the block.
        resets: Episodes that ended (and were reset) in the block.
        selected: Mean number of devices selected per step.
        local_steps: Mean local SGD steps of the selected devices per step.
    """

    steps: int
    step_s: float
    step_cpu_s: float
    reset_s: float
    resets: int
    selected: float
    local_steps: float


class EnvRunner:
    """One environment driven by pre-drawn random actions, block after block."""

    def __init__(self, env_id: str, seed: int) -> None:
        import gymnasium as gym

        import fl_gym  # noqa: F401  (registers the environments)

        self.env_id = env_id
        self.env = gym.make(env_id)
        self.env.reset(seed=seed)
        self.env.action_space.seed(seed)

    def run(self, steps: int) -> BlockResult:
        """Time ``steps`` steps (and the resets of the episodes that end)."""
        env = self.env
        actions = [env.action_space.sample() for _ in range(steps)]
        step_s = step_cpu_s = reset_s = 0.0
        resets = 0
        selected = local_steps = 0.0
        clock, cpu_clock = time.perf_counter, time.process_time
        for action in actions:
            start, cpu_start = clock(), cpu_clock()
            _, _, terminated, truncated, info = env.step(action)
            stop, cpu_stop = clock(), cpu_clock()
            step_s += stop - start
            step_cpu_s += cpu_stop - cpu_start
            chosen = info["selected"]
            selected += float(chosen.sum())
            local_steps += float(info["local_steps"][chosen].mean()) if chosen.any() else 0.0
            if terminated or truncated:
                start = clock()
                env.reset()
                reset_s += clock() - start
                resets += 1
        return BlockResult(
            steps, step_s, step_cpu_s, reset_s, resets, selected / steps, local_steps / steps
        )


@dataclass
class EnvResult:
    """Median over blocks of one environment's throughput."""

    env_id: str
    steps_per_s: float
    steps_per_s_no_reset: float
    steps_per_cpu_s: float
    ms_per_step: float
    ms_per_reset: float
    steps_per_episode: float
    selected: float
    local_steps: float
    block_rates: list[float]


def bench_envs(env_ids: tuple[str, ...], steps: int, warmup: int, blocks: int) -> list[EnvResult]:
    """Throughput of each environment; blocks of the environments alternate."""
    runners = [EnvRunner(env_id, seed=i) for i, env_id in enumerate(env_ids)]
    for runner in runners:
        runner.run(warmup)
    per_env: dict[str, list[BlockResult]] = {env_id: [] for env_id in env_ids}
    for _ in range(blocks):
        for runner in runners:
            per_env[runner.env_id].append(runner.run(steps))
    results = []
    for env_id, done in per_env.items():
        with_reset = [b.steps / (b.step_s + b.reset_s) for b in done]
        total_resets = sum(b.resets for b in done)
        total_steps = sum(b.steps for b in done)
        results.append(
            EnvResult(
                env_id=env_id,
                steps_per_s=statistics.median(with_reset),
                steps_per_s_no_reset=statistics.median(b.steps / b.step_s for b in done),
                steps_per_cpu_s=statistics.median(b.steps / b.step_cpu_s for b in done),
                ms_per_step=1e3 * statistics.median(b.step_s / b.steps for b in done),
                ms_per_reset=1e3 * sum(b.reset_s for b in done) / max(total_resets, 1),
                steps_per_episode=total_steps / max(total_resets, 1),
                selected=statistics.fmean(b.selected for b in done),
                local_steps=statistics.fmean(b.local_steps for b in done),
                block_rates=with_reset,
            )
        )
    return results


def profile_env(env_id: str, steps: int, top: int = 30) -> str:
    """cProfile listing (by own time) of ``steps`` random steps of ``env_id``."""
    runner = EnvRunner(env_id, seed=0)
    runner.run(50)
    profiler = cProfile.Profile()
    profiler.enable()
    runner.run(steps)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


# -- (b) one round as K grows --------------------------------------------------------------------


def iid_synthetic(
    num_clients: int,
    rng: np.random.Generator,
    *,
    samples_per_client: int = 50,
    num_test: int = 10_000,
    dimension: int = 60,
    num_classes: int = 10,
):
    """FedProx's IID synthetic distribution with equal client sizes, split IID.

    Args:
        num_clients: Number of clients ``K``.
        rng: Source of every draw.
        samples_per_client: Training samples of each client.
        num_test: Size of the global test set.
        dimension: Feature dimension ``d``.
        num_classes: Number of classes ``C``.

    Returns:
        The :class:`~fl_gym.sim.learning.data.FederatedDataset`.
    """
    from fl_gym.sim import federate, from_arrays

    weights = rng.standard_normal((dimension, num_classes)).astype(np.float32)
    biases = rng.standard_normal(num_classes).astype(np.float32)
    feature_std = np.arange(1, dimension + 1, dtype=np.float32) ** -0.6  # sqrt(j^-1.2)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        # float32 from the start: 500,000 x 60 samples stay at 120 MB.
        x = rng.standard_normal((n, dimension), dtype=np.float32)
        x *= feature_std
        return x, np.argmax(x @ weights + biases, axis=1).astype(np.int64)

    x, y = draw(samples_per_client * num_clients)
    x_test, y_test = draw(num_test)
    pooled = from_arrays(
        x, y, x_test=x_test, y_test=y_test, num_classes=num_classes, name="synthetic_iid"
    )
    return federate(pooled, num_clients, partition="iid", rng=rng)


def _rss_mb() -> float:
    """Current resident set of this process in MB (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except OSError:
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _max_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of the resident set (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _vm_hwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10
    return float("nan")


def round_worker(
    num_clients: int, rounds: int, local_steps: int, seed: int, pin: bool
) -> dict[str, float]:
    """Build a K-client federation and time its rounds (run in a fresh process).

    Returns:
        Times in seconds and memory in MB: ``round_s`` (median), ``round_min_s``,
        ``setup_s``, ``baseline_mb`` (after imports), ``peak_mb`` (``ru_maxrss``, setup
        included), ``round_peak_mb`` (high-water mark during the rounds, NaN if unknown).
    """
    from fl_gym.sim import Federation, FederationConfig
    from fl_gym.sim.radio.cell import WirelessCell, WirelessConfig

    one_core(pin)
    baseline_mb = _rss_mb()
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    data = iid_synthetic(num_clients, rng)
    federation = Federation(
        data,
        FederationConfig(model="logreg", compression_levels=("none",)),
        cell=WirelessCell(
            WirelessConfig(num_subchannels=num_clients, bandwidth_hz=num_clients * 1e6),
            num_clients,
        ),
        rng=rng,
    )
    setup_s = time.perf_counter() - start
    del data  # the federation holds its own tensors
    can_reset = _reset_peak_rss()
    times = []
    delivered = []
    for i in range(rounds + 1):
        cell = federation.cell
        # Everyone with energy left; batteries outlast these few rounds by far.
        plan = federation.plan(selected=cell.available.copy(), local_steps=local_steps)
        start = time.perf_counter()
        report = federation.run_round(plan, rng)
        elapsed = time.perf_counter() - start
        if i > 0:  # the first round is the warm-up
            times.append(elapsed)
            delivered.append(report.num_delivered / num_clients)
    return {
        "clients": num_clients,
        "params": federation.num_params,
        "round_s": statistics.median(times),
        "round_min_s": min(times),
        "setup_s": setup_s,
        "baseline_mb": baseline_mb,
        "peak_mb": _max_rss_mb(),
        "round_peak_mb": _vm_hwm_mb() if can_reset else float("nan"),
        "delivered": statistics.fmean(delivered),
        "accuracy": report.accuracy,
    }


def bench_rounds(
    clients: list[int], rounds: int, local_steps: int, pin: bool
) -> list[dict[str, float]]:
    """Run :func:`round_worker` for each K in a fresh subprocess."""
    results = []
    for k in clients:
        command = [
            sys.executable,
            os.path.abspath(__file__),
            "--round-worker",
            str(k),
            "--rounds",
            str(rounds),
            "--local-steps",
            str(local_steps),
        ] + (["--pin"] if pin else [])
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"round worker for K = {k} failed:\n{done.stderr}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


# -- report --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500, help="timed steps per block")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--clients", type=int, nargs="*", default=[10, 100, 1_000, 10_000])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per K")
    parser.add_argument("--local-steps", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="cProfile WirelessFL-v0")
    parser.add_argument("--pin", action="store_true", help="pin the process to one CPU")
    parser.add_argument("--round-worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.round_worker is not None:
        result = round_worker(
            args.round_worker, args.rounds, args.local_steps, seed=0, pin=args.pin
        )
        print(json.dumps(result))
        return

    from fl_gym.envs import ENV_IDS

    pinning = one_core(args.pin)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}; "
        f"Python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}"
    )
    print(f"one core: {pinning}")
    print()

    rounds = (
        bench_rounds(args.clients, args.rounds, args.local_steps, args.pin) if args.clients else []
    )
    if rounds:
        print(
            f"## One FL round against K (logistic regression, {rounds[0]['params']} parameters, "
            f"all clients, {args.local_steps} local steps of batch 16; median of {args.rounds})"
        )
        print()
        print(
            "| K | round (s, median) | round (s, min) | per client (us) | setup (s) "
            "| RSS after imports (MB) | peak RSS (MB) | peak RSS in rounds (MB) | delivered |"
        )
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in rounds:
            print(
                f"| {r['clients']:,} | {r['round_s']:.4f} | {r['round_min_s']:.4f} "
                f"| {1e6 * r['round_s'] / r['clients']:.0f} | {r['setup_s']:.2f} "
                f"| {r['baseline_mb']:.0f} | {r['peak_mb']:.0f} | {r['round_peak_mb']:.0f} "
                f"| {r['delivered']:.0%} |"
            )
        largest = max(rounds, key=lambda r: r["clients"])
        print()
        time_ok = "met" if largest["round_s"] < TARGET_ROUND_S else "NOT met"
        memory_ok = "met" if largest["peak_mb"] < TARGET_ROUND_MB else "NOT met"
        print(
            f"K = {largest['clients']:,}: {largest['round_s']:.3f} s per round (target < "
            f"{TARGET_ROUND_S:g} s: {time_ok}), peak RSS {largest['peak_mb']:.0f} MB "
            f"(target < {TARGET_ROUND_MB:.0f} MB: {memory_ok})"
        )
        print()

    # The FL environments (this table's columns are FL quantities); the vehicular environment
    # has its own benchmark, benchmarks/bench_vehicular.py.
    fl_ids = tuple(env_id for env_id in ENV_IDS if "Vehicular" not in env_id)
    results = bench_envs(fl_ids, args.steps, args.warmup, args.blocks)
    print(
        f"## Environment steps per second (defaults, random actions, one core; median of "
        f"{args.blocks} blocks of {args.steps} steps)"
    )
    print()
    print(
        "| env | steps/s (resets included) | steps/s (steps only) | steps per CPU-s "
        "| ms/step | ms/reset | steps/episode | devices selected | local steps |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(
            f"| {r.env_id} | {r.steps_per_s:.0f} | {r.steps_per_s_no_reset:.0f} "
            f"| {r.steps_per_cpu_s:.0f} "
            f"| {r.ms_per_step:.2f} | {r.ms_per_reset:.2f} | {r.steps_per_episode:.1f} "
            f"| {r.selected:.1f} | {r.local_steps:.1f} |"
        )
    print()
    if args.profile:
        print(f"## cProfile of {MAIN_ENV} ({args.steps} random steps)")
        print()
        print(profile_env(MAIN_ENV, args.steps))
    main_result = next(r for r in results if r.env_id == MAIN_ENV)
    verdict = "met" if main_result.steps_per_s >= TARGET_STEPS_PER_S else "NOT met"
    print(
        f"{MAIN_ENV}: {main_result.steps_per_s:.0f} steps/s with resets, "
        f"{main_result.steps_per_s_no_reset:.0f} steps/s without, "
        f"{main_result.steps_per_cpu_s:.0f} steps per CPU-second (blocks with resets: "
        f"{', '.join(f'{rate:.0f}' for rate in main_result.block_rates)})"
    )
    print(f"target >= {TARGET_STEPS_PER_S:.0f} steps/s on one core: {verdict}")


if __name__ == "__main__":
    main()
