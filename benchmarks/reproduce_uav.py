"""Reproduce the comparison of Shiri, Park and Bennis (IEEE Trans. Commun. 2020) on uav_swarm_v0.

Every controller of :mod:`fl_gym.baselines.uav` flies the default 100-UAV scenario over several
seeds (the same seeds for all), then the 1,000-UAV preset once for the communication scaling.
Writes its block of ``docs/reproductions.md`` (between ``<!-- BEGIN uav -->`` and
``<!-- END uav -->``; appended at the end of the file when the markers are absent; nothing else
is touched) and ``docs/img/uav_controllers.png``.

Run: ``python benchmarks/reproduce_uav.py [--seeds 5] [--no-1k]`` (about three minutes on one
core).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time
from pathlib import Path

import numpy as np
import torch
from docblock import markers, write_block

from fl_gym.baselines.mean_field import MeanFieldConfig
from fl_gym.baselines.uav import (
    CONTROLLERS,
    EpisodeMetrics,
    SwarmController,
    make_controller,
    run_episode,
)
from fl_gym.envs import uav_swarm_v0
from fl_gym.sim.uav.swarm import UAVSwarmConfig

DOC = Path("docs/reproductions.md")
IMG = Path("docs/img/uav_controllers.png")
BEGIN, END = markers("uav")

LABELS = {
    "straight-line": "straight line (PD, no coordination)",
    "hjb-full-info": "HJB, full information (all positions every step)",
    "mfgfl-hf": "MfgFL-HF (HJB + FPK averaged), look-ahead (default)",
    "mfgfl-h": "MfgFL-H (HJB averaged), look-ahead (default)",
    "mfgfl-f": "MfgFL-F (FPK averaged), look-ahead (default)",
    "mfg-local": "mean field, no averaging, look-ahead (default)",
    "mfgfl-hf/pde": "MfgFL-HF (HJB + FPK averaged), PDE residuals",
    "mfgfl-h/pde": "MfgFL-H (HJB averaged), PDE residuals",
    "mfgfl-f/pde": "MfgFL-F (FPK averaged), PDE residuals",
    "mfg-local/pde": "mean field, no averaging, PDE residuals",
}
PDE = ("mfgfl-hf/pde", "mfgfl-h/pde", "mfgfl-f/pde", "mfg-local/pde")
"""The mean-field controllers trained on the HJB and FPK residuals (``training="pde"``)."""


def _controller(key: str, config: UAVSwarmConfig) -> SwarmController:
    name, _, training = key.partition("/")
    return make_controller(name, config, **({"training": training} if training else {}))


def _run(preset: str | None, keys: tuple[str, ...], seeds: list[int]) -> dict:
    env = uav_swarm_v0.parallel_env(preset=preset)
    out: dict[str, list[EpisodeMetrics]] = {}
    for key in keys:
        out[key] = []
        for seed in seeds:
            out[key].append(run_episode(env, _controller(key, env.config), seed=seed))
    return out


def _mean_std(rows: list[EpisodeMetrics], field: str) -> tuple[float, float]:
    values = np.array([getattr(r, field) for r in rows])
    return float(values.mean()), float(values.std())


def _fmt(rows: list[EpisodeMetrics], field: str, digits: int) -> str:
    mean, std = _mean_std(rows, field)
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if len(rows) > 1 else f"{mean:.{digits}f}"


def _table(results: dict, seeds: int) -> list[str]:
    lines = [
        "| controller | travel distance (m) | travel time (s) | collision probability | "
        "collisions per UAV-step | motion energy (m²/s³) | bits per step | bits per episode |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, rows in results.items():
        lines.append(
            f"| {LABELS[name]} | {_fmt(rows, 'travel_distance_m', 1)} | "
            f"{_fmt(rows, 'travel_time_s', 1)} | {_fmt(rows, 'collision_probability', 3)} | "
            f"{_fmt(rows, 'collisions_per_uav_step', 4)} | "
            f"{_fmt(rows, 'motion_energy_m2_s3', 1)} | "
            f"{_mean_std(rows, 'bits_per_step')[0]:.3g} | "
            f"{_mean_std(rows, 'bits_per_episode')[0]:.3g} |"
        )
    return lines


def _plot(results: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(results)
    panels = (
        ("collision_probability", "collision probability", False),
        ("collisions_per_uav_step", "collisions per UAV-step", False),
        ("travel_distance_m", "travel distance (m)", False),
        ("motion_energy_m2_s3", "motion energy (m²/s³)", False),
        ("bits_per_step", "bits exchanged per step", True),
    )
    fig = Figure(figsize=(15, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    colours = [
        "#8c8c8c",
        "#d73027",
        "#1a9850",
        "#66bd63",
        "#a6d96a",
        "#4575b4",
        "#762a83",
        "#9970ab",
        "#c2a5cf",
        "#5aae61",
    ]
    for k, (field, title, log) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        means = [_mean_std(results[n], field) for n in names]
        ax.bar(
            range(len(names)),
            [max(m, 1.0) if log else m for m, _ in means],
            yerr=None if log else [s for _, s in means],
            color=colours[: len(names)],
        )
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
        ax.set_title(title, fontsize=9)
        if log:
            ax.set_yscale("log")
        if field == "travel_distance_m":
            low = min(m - s for m, s in means)
            ax.set_ylim(low - 5, max(m + s for m, s in means) + 2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def _write_block(section: str) -> None:
    write_block(DOC, "uav", section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--no-1k", action="store_true", help="skip the 1,000-UAV run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    seeds = list(range(args.seeds))
    small = _run(None, (*CONTROLLERS, *PDE), seeds)
    large = (
        {}
        if args.no_1k
        else _run("swarm-1k", ("straight-line", "hjb-full-info", "mfgfl-hf", "mfgfl-hf/pde"), [0])
    )
    _plot(small, IMG)
    elapsed = time.perf_counter() - start

    sl, fi, hf = small["straight-line"], small["hjb-full-info"], small["mfgfl-hf"]
    local, hf_pde, local_pde = small["mfg-local"], small["mfgfl-hf/pde"], small["mfg-local/pde"]
    env_config = uav_swarm_v0.parallel_env().config.swarm
    sizes = {}
    for key in ("mfgfl-hf", "mfgfl-hf/pde"):
        probe = _controller(key, env_config)
        sizes[key] = (probe.learner.hjb.num_params, probe.learner.fpk.num_params)
    mf = MeanFieldConfig(training="pde")

    def m(rows: list[EpisodeMetrics], field: str) -> float:
        return _mean_std(rows, field)[0]

    def change(new: float, old: float) -> str:
        if not old:
            return "n/a"
        pct = 100 * (new - old) / old
        return f"{pct:+.1f}%" if abs(pct) < 2 else f"{pct:+.0f}%"

    def versus_straight(rows: list[EpisodeMetrics]) -> str:
        return (
            "collisions per UAV-step "
            f"{change(m(rows, 'collisions_per_uav_step'), m(sl, 'collisions_per_uav_step'))}, "
            "collision probability "
            f"{change(m(rows, 'collision_probability'), m(sl, 'collision_probability'))}, "
            f"travel distance {change(m(rows, 'travel_distance_m'), m(sl, 'travel_distance_m'))}, "
            f"travel time {change(m(rows, 'travel_time_s'), m(sl, 'travel_time_s'))}, "
            "motion energy "
            f"{change(m(rows, 'motion_energy_m2_s3'), m(sl, 'motion_energy_m2_s3'))}"
        )

    cps = "collisions_per_uav_step"
    short = {
        "mfgfl-hf": "MfgFL-HF",
        "mfgfl-h": "MfgFL-H",
        "mfgfl-f": "MfgFL-F",
        "mfg-local": "no averaging",
    }
    pde_worse = [
        f"{name} ({m(small[f'{k}/pde'], cps):.3f} against {m(small[k], cps):.3f})"
        for k, name in short.items()
        if m(small[f"{k}/pde"], cps) > m(small[k], cps)
    ]
    hjb_averaging_hurts = m(hf_pde, cps) > m(local_pde, cps)

    body = [
        "## Massive-UAV path control with federated mean-field control "
        "(Shiri, Park and Bennis, IEEE Trans. Commun. 2020)",
        "",
        f"Generated by `benchmarks/reproduce_uav.py` on {datetime.date.today()} "
        f"({platform.machine()}, Python {platform.python_version()}, torch {torch.__version__}; "
        f"{elapsed:.0f} s). Environment `uav_swarm_v0`, default scenario: 100 UAVs start at rest "
        "on a jittered 2 m lattice in a 15 m source disc and fly to an 8 m destination disc "
        "120 m away, wind 0.5 m/s/√s, 4 m/s² acceleration bound, 10 m/s speed cap, collision "
        f"below 1 m. {len(seeds)} seeds (mean ± standard deviation over seeds), the same for "
        "every controller. All controllers share the nominal straight-line law (cruise 8 m/s). "
        "*Collision probability* is the fraction of UAVs that collide at least once during the "
        "flight; *collisions per UAV-step* the fraction of (UAV, step) pairs in collision. "
        "Communication: full information sends two float32 coordinates from every UAV to every "
        "other at every step; the mean-field controllers send float32 weights up and down in "
        "a FedAvg round every 10 steps (HJB network "
        f"{sizes['mfgfl-hf'][0]} and FPK network {sizes['mfgfl-hf'][1]} parameters with "
        f"look-ahead training, {sizes['mfgfl-hf/pde'][0]} and {sizes['mfgfl-hf/pde'][1]} with "
        "PDE-residual training); the density they learn from is sensed on board, not "
        "communicated.",
        "",
        "**What the networks minimise.** Each UAV has an HJB and an FPK network (one hidden "
        "layer of 16 tanh units), trained online by SGD, all UAVs in one batched computation, "
        'PDE derivatives by autograd. *PDE-residual training* (`training="pde"`, the paper\'s '
        "method): the FPK network m(x, t) minimises the squared misfit to the density sensed "
        "now in the 3 x 3 cells of 4 m around the UAV (the initial condition) plus the squared "
        "FPK residual ∂m/∂t + ∇·(m w) - D Δm at "
        f"{mf.collocation_points} collocation points on the UAV's predicted path over the next "
        f"{mf.collocation_horizon_s:g} s (w the UAV's velocity, D = {mf.fpk_diffusion_m2_s:g} "
        "m²/s); the HJB network W(x, v, t) is the value of deviating by δ from the straight-line "
        "law, and minimises the squared residual of the discounted HJB equation "
        "∂W/∂t + v·∇ₓW + (u_nom + δ*)·∇ᵥW + c_u|δ*|² + c_m m(x, t) + (sigma²/2)ΔᵥW - βW "
        "at the same kind of points, with the collision term c_m m computed from the UAV's "
        f"FPK network (c_u = {mf.energy_weight:g}, c_m = {mf.collision_weight:g}, "
        f"β = {mf.discount_per_s:g}/s, sigma the wind); the UAV flies u_nom + δ*, "
        "δ* = clip(-∇ᵥW / (2 c_u), "
        f"±{mf.max_correction * env_config.max_accel_mps2:g} m/s²), the minimiser of the "
        "Hamiltonian. "
        f"{mf.pde_iterations} SGD steps of each network per control step; both networks work "
        "in the UAV's frame of the step (positions relative to it, time from now). "
        '*Look-ahead training* (`training="lookahead"`, the default): the HJB network maps '
        "the observation to the correction δ directly and minimises the density its FPK "
        "network predicts one second ahead plus a quadratic price on δ; the FPK network only "
        "fits the sensed density. Both are in the table.",
        "",
        *_table(small, len(seeds)),
        "",
    ]
    if large:
        body += [
            "1,000 UAVs (preset `swarm-1k`, one seed): communication grows as n² with full "
            "information and as n with federated averaging.",
            "",
            *_table(large, 1),
            "",
        ]
    body += [
        "**Against the paper.** The paper reports that its federated mean-field controller "
        "(MfgFL-HF) shortens travel and roughly halves the collision probability compared "
        "with its baselines, and that averaging both networks beats averaging one or none, at "
        "a communication cost far below that of exchanging every UAV's state. Here, against "
        "the uncoordinated straight line, MfgFL-HF with PDE-residual training changes "
        f"{versus_straight(hf_pde)}; with look-ahead training, {versus_straight(hf)}. Without "
        f"averaging: PDE residuals {versus_straight(local_pde)}; look-ahead "
        f"{versus_straight(local)}. MfgFL-HF exchanges "
        f"{m(hf_pde, 'bits_per_step') / max(m(fi, 'bits_per_step'), 1):.2f}x (PDE) and "
        f"{m(hf, 'bits_per_step') / max(m(fi, 'bits_per_step'), 1):.2f}x (look-ahead) the bits "
        "of the full-information controller, which changes "
        f"{versus_straight(fi)}. "
        + (
            "PDE-residual training collides more than look-ahead training (collisions per "
            "UAV-step) for "
            + ", ".join(pde_worse)
            + ", which is why look-ahead stays the default. "
            if pde_worse
            else "PDE-residual training collides no more than look-ahead training for any variant. "
        )
        + "PDE-residual training does travel faster than the straight line (shorter travel "
        "time), as the paper reports, but mostly by flying faster: the deviation the value "
        "function asks for points mainly forward (on seed 0, MfgFL-HF's mean deviation is "
        "about +2 m/s² along the path and under 1 m/s² across it), so UAVs exceed the 8 m/s "
        "cruise speed, which costs motion energy. Its travel distance is "
        f"{change(m(hf_pde, 'travel_distance_m'), m(sl, 'travel_distance_m'))} against the "
        "straight line's (look-ahead: "
        f"{change(m(hf, 'travel_distance_m'), m(sl, 'travel_distance_m'))})."
        + (
            " At 1,000 UAVs (one seed) MfgFL-HF changes collisions per UAV-step by "
            f"{change(m(large['mfgfl-hf/pde'], cps), m(large['straight-line'], cps))} with PDE "
            "residuals and "
            f"{change(m(large['mfgfl-hf'], cps), m(large['straight-line'], cps))} with "
            "look-ahead training: far from the paper's halving."
            if large
            else ""
        ),
        "",
        "**Why ours differ.** (1) A density resolved at 4 m cannot see 1 m collisions one by "
        "one, so the mean-field controllers can only thin the swarm out, not dodge individual "
        "neighbours; the full-information controller, which repels from every neighbour "
        "within 3 m, avoids collisions best, at the price of n(n - 1) position messages per "
        "step (and it is a potential-field law, not the paper's HJB solution with full "
        "state; our straight line is not in the paper). (2) Averaging the HJB networks: "
        + (
            "MfgFL-HF with PDE residuals collides more than the learners that do not average "
            f"({m(hf_pde, cps):.3f} against {m(local_pde, cps):.3f} collisions per UAV-step), "
            "the opposite of the paper's finding. Each UAV's value network holds the field "
            "of its own neighbourhood in its own frame (a UAV at the edge of the swarm learns "
            "to move outwards, one at the other edge the opposite way), so their average "
            "cancels the gradients that steer; the paper's argument for averaging assumes "
            "interchangeable UAVs whose networks approximate one common solution. We tried "
            "absolute coordinates (so that averages pool different regions of one field) and "
            "the sensed density as an extra input of the value network: with one-hidden-layer "
            "networks and a few SGD steps per control step, both collided more (seeds 0 and "
            "1, not in the table)."
            if hjb_averaging_hurts
            else "with PDE residuals, averaging lowers collisions, as in the paper."
        )
        + " (3) Our equations are simplified: a discount β replaces the paper's finite horizon "
        "and terminal condition, the FPK equation is solved in position space with the UAV's "
        "own velocity as the local flow (not in the full position-velocity state space with "
        "the optimal-control drift), and the collision term is linear in the predicted "
        "density; the paper's exact collision and flocking terms were not recovered. "
        "(4) Scenario numbers (speeds, wind, geometry, cost weights, network sizes, learning "
        "rates) are ours; the mean-field weights and learning rates were tuned by hand on "
        "seeds 0 and 1 of this scenario.",
        "",
        "![controllers compared](img/uav_controllers.png)",
        "",
    ]
    _write_block("\n".join([BEGIN, *body, END]))
    print("\n".join(body))


if __name__ == "__main__":
    main()
