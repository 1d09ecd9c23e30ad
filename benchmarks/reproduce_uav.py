"""Reproduce the comparison of Shiri, Park and Bennis (IEEE Trans. Commun. 2020) on uav_swarm_v0.

Every controller of :mod:`fl_gym.baselines.uav` flies the default 100-UAV scenario over several
seeds (the same seeds for all), then the 1,000-UAV preset once for the communication scaling.
Writes its block of ``docs/reproductions.md`` (between ``<!-- BEGIN uav -->`` and
``<!-- END uav -->``; appended at the end of the file when the markers are absent; nothing else
is touched) and ``docs/img/uav_controllers.png``.

Run: ``python benchmarks/reproduce_uav.py [--seeds 3] [--no-1k] [--results FILE]`` (a few
minutes on one core; ``--results`` keeps the runs in a pickle and rewrites the text from it).
"""

from __future__ import annotations

import argparse
import datetime
import pickle
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
    FullInformationController,
    MeanFieldController,
    StraightLineController,
    SwarmController,
    make_controller,
    run_episode,
)
from fl_gym.envs import uav_swarm_v0
from fl_gym.sim.uav.swarm import UAVSwarmConfig

DOC = Path("docs/reproductions.md")
IMG = Path("docs/img/uav_controllers.png")
BEGIN, END = markers("uav")

TUNING_SEEDS = {
    "uav": (0, 1),
    "swarm": (1000, 1001),
}
"""Seeds on which the mean-field settings were tuned by hand: those of the UAV's own frame (the
defaults of :class:`~fl_gym.baselines.mean_field.MeanFieldConfig`) on 0 and 1, the shared
frames' on 1000 and 1001. The evaluation seeds below are disjoint from both."""
FIRST_EVAL_SEED = 100
SHARED_FRAME_SETTINGS = {"hidden_units": 32}
"""What the shared frames change from the defaults (tuned on their tuning seeds): one network
holds the field of the whole swarm there, not the neighbourhood of one UAV."""

FRAME_WORDS = {
    "uav": "own frame",
    "swarm": "shared moving frame",
    "global": "shared fixed frame",
    "start": "own moving frame",
}
VARIANTS = {
    "mfgfl-hf": "MfgFL-HF (HJB + FPK averaged)",
    "mfgfl-h": "MfgFL-H (HJB averaged)",
    "mfgfl-f": "MfgFL-F (FPK averaged)",
    "mfg-local": "mean field, no averaging",
}
PDE = (
    "mfgfl-hf/pde",
    "mfg-local/pde",
    *(f"{name}/pde/swarm" for name in VARIANTS),
    "mfgfl-hf/pde/global",
    "mfg-local/pde/start",
)
"""The mean-field controllers trained on the HJB and FPK residuals (``training="pde"``), in the
UAV's own frame (``frame="uav"``, the default), the shared frame that moves with the swarm
(``"swarm"``) and the shared frame fixed at the source (``"global"``)."""


def _label(key: str) -> str:
    name, _, rest = key.partition("/")
    if name == "straight-line":
        return "straight line (PD, no coordination)"
    if name == "hjb-full-info":
        return "HJB, full information (all positions every step)"
    training, _, frame = rest.partition("/")
    if not training:
        return f"{VARIANTS[name]}, look-ahead (default)"
    return f"{VARIANTS[name]}, PDE residuals, {FRAME_WORDS[frame or 'uav']}"


class _Probe(MeanFieldController):
    """A mean-field controller that also measures, without changing what it does, the deviation
    it flies (along and across the path to the destination) and how much of the steering that
    differs between UAVs survives each averaging round."""

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        self.along: list[float] = []
        self.across: list[float] = []
        self.kept: list[float] = []
        self._state: torch.Tensor | None = None
        learner = self.learner
        average = learner.average

        def probed_average(rows: torch.Tensor) -> int:
            if self._state is None or rows.numel() < 2 or self.mean_field.averaging == "none":
                return average(rows)
            max_corr = self.mean_field.max_correction * self.config.max_accel_mps2
            before = learner.optimal_deviation(rows, self._state, self._scales, max_corr)
            bits = average(rows)
            after = learner.optimal_deviation(rows, self._state, self._scales, max_corr)
            before = before - before.mean(0)
            after = after - after.mean(0)
            norm = float((before * before).sum())
            if norm > 0:
                self.kept.append(float((after * before).sum()) / norm)
            return bits

        learner.average = probed_average  # type: ignore[method-assign]

    def _accel_fraction(self, obs: np.ndarray, uav_index: np.ndarray) -> np.ndarray:
        cfg = self.config
        pos = torch.from_numpy(self.positions_m(obs))
        vel = torch.from_numpy(obs[:, 2:4].astype(np.float64) * cfg.max_speed_mps)
        now = torch.from_numpy(obs[:, -1].astype(np.float64)) * (cfg.max_steps * cfg.time_step_s)
        origin, _ = self._frame_origin(pos, now)
        state = torch.zeros(obs.shape[0], 5)
        state[:, 0:2] = ((pos - origin) / self._scales.length_m).float()
        state[:, 2:4] = (vel / self._scales.speed_mps).float()
        self._state = state
        accel = super()._accel_fraction(obs, uav_index)
        deviation = (accel - self.nominal_accel_mps2(obs) / cfg.max_accel_mps2) * cfg.max_accel_mps2
        goal = obs[:, 4:6].astype(np.float64)
        unit = goal / np.maximum(np.linalg.norm(goal, axis=1, keepdims=True), 1e-9)
        self.along.append(float((deviation * unit).sum(1).mean()))
        cross = deviation[:, 0] * unit[:, 1] - deviation[:, 1] * unit[:, 0]
        self.across.append(float(np.abs(cross).mean()))
        return accel


class _StartFrameProbe(_Probe):
    """The shared moving frame shifted, for each UAV, by where that UAV started: an own frame
    (every UAV's origin is different) that moves with the swarm. Beside the shared moving frame
    it differs only by a constant offset per UAV; beside the own frame (re-centred on the UAV at
    every step, at rest during it) only by that re-centring and the frame's motion."""

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        self._start: np.ndarray | None = None
        self._offset = torch.zeros(0, 2, dtype=torch.float64)

    def _accel_fraction(self, obs: np.ndarray, uav_index: np.ndarray) -> np.ndarray:
        if self._start is None:
            self._start = np.zeros((self.config.num_uavs, 2))
            self._start[uav_index] = self.positions_m(obs) - np.asarray(self.config.source_center_m)
        self._offset = torch.from_numpy(self._start[uav_index])
        return super()._accel_fraction(obs, uav_index)

    def _frame_origin(
        self, pos_m: torch.Tensor, time_s: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        origin, velocity = super()._frame_origin(pos_m, time_s)
        shape = (self._offset.shape[0], *([1] * (time_s.dim() - 1)), 2)
        return origin + self._offset.reshape(shape), velocity


def _controller(key: str, config: UAVSwarmConfig) -> SwarmController:
    name, _, rest = key.partition("/")
    training, _, frame = rest.partition("/")
    if not training:
        return make_controller(name, config)
    modes = {"mfgfl-hf": "both", "mfgfl-h": "hjb", "mfgfl-f": "fpk", "mfg-local": "none"}
    settings = SHARED_FRAME_SETTINGS if frame in ("swarm", "global", "start") else {}
    mean_field = MeanFieldConfig(
        training=training,
        frame="swarm" if frame == "start" else frame or "uav",
        averaging=modes[name],
        **settings,
    )
    probe = _StartFrameProbe if frame == "start" else _Probe
    return probe(config, mean_field=mean_field)


def _run(
    preset: str | None, keys: tuple[str, ...], seeds: list[int]
) -> tuple[dict[str, list[EpisodeMetrics]], dict[str, dict[str, float]]]:
    env = uav_swarm_v0.parallel_env(preset=preset)
    out: dict[str, list[EpisodeMetrics]] = {}
    probes: dict[str, dict[str, float]] = {}
    for key in keys:
        out[key] = []
        along, across, kept = [], [], []
        for seed in seeds:
            controller = _controller(key, env.config)
            out[key].append(run_episode(env, controller, seed=seed))
            if isinstance(controller, _Probe):
                along += controller.along
                across += controller.across
                kept += controller.kept
        if along:
            probes[key] = {
                "along": float(np.mean(along)),
                "across": float(np.mean(across)),
                "kept": float(np.mean(kept)) if kept else float("nan"),
            }
    return out, probes


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
            f"| {_label(name)} | {_fmt(rows, 'travel_distance_m', 1)} | "
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
    from matplotlib import colormaps

    palette = colormaps["tab20"]
    colours = [palette(i % 20) for i in range(len(names))]
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
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--no-1k", action="store_true", help="skip the 1,000-UAV run")
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="pickle of the runs: written after running, read instead of running if it exists",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    seeds = list(range(FIRST_EVAL_SEED, FIRST_EVAL_SEED + args.seeds))
    tuning = sorted({seed for group in TUNING_SEEDS.values() for seed in group})
    if set(seeds) & set(tuning):
        raise ValueError(f"evaluation seeds {seeds} overlap the tuning seeds {tuning}")
    if args.results is not None and args.results.exists():
        with args.results.open("rb") as file:
            small, probes, large, elapsed = pickle.load(file)
    else:
        small, probes = _run(None, (*CONTROLLERS, *PDE), seeds)
        large_keys = ("straight-line", "hjb-full-info", "mfgfl-hf", "mfgfl-h/pde/swarm")
        large = {} if args.no_1k else _run("swarm-1k", large_keys, seeds[:1])[0]
        elapsed = time.perf_counter() - start
        if args.results is not None:
            with args.results.open("wb") as file:
                pickle.dump((small, probes, large, elapsed), file)
    _plot(small, IMG)

    env_config = uav_swarm_v0.parallel_env().config.swarm
    large_uavs = uav_swarm_v0.parallel_env(preset="swarm-1k").config.swarm.num_uavs
    straight_probe = StraightLineController(env_config)
    sizes = {}
    for key in ("mfgfl-hf", "mfgfl-hf/pde", "mfgfl-hf/pde/swarm"):
        probe = _controller(key, env_config)
        sizes[key] = (probe.learner.hjb.num_params, probe.learner.fpk.num_params)
    mf = MeanFieldConfig(training="pde")
    cps = "collisions_per_uav_step"
    sl, fi = small["straight-line"], small["hjb-full-info"]

    def m(rows: list[EpisodeMetrics], field: str = cps) -> float:
        return _mean_std(rows, field)[0]

    def change(new: float, old: float) -> str:
        if not old:
            return "n/a"
        pct = 100 * (new - old) / old
        return f"{pct:+.1f}%" if abs(pct) < 2 else f"{pct:+.0f}%"

    def versus_straight(rows: list[EpisodeMetrics]) -> str:
        return (
            f"collisions per UAV-step {change(m(rows), m(sl))}, "
            "collision probability "
            f"{change(m(rows, 'collision_probability'), m(sl, 'collision_probability'))}, "
            f"travel distance {change(m(rows, 'travel_distance_m'), m(sl, 'travel_distance_m'))}, "
            f"travel time {change(m(rows, 'travel_time_s'), m(sl, 'travel_time_s'))}, "
            "motion energy "
            f"{change(m(rows, 'motion_energy_m2_s3'), m(sl, 'motion_energy_m2_s3'))}"
        )

    def key(name: str, frame: str) -> str:
        return f"{name}/pde" + ("" if frame == "uav" else f"/{frame}")

    def frame_summary(frame: str) -> str:
        values = ", ".join(
            f"{VARIANTS[name].split(' (')[0].replace('mean field, ', '')} "
            f"{m(small[key(name, frame)]):.3f}"
            for name in VARIANTS
            if key(name, frame) in small
        )
        return f"{FRAME_WORDS[frame]}: {values}"

    def kept(name: str, frame: str) -> str:
        return f"{probes[key(name, frame)]['kept']:.2f}"

    own_hf, own_local = small[key("mfgfl-hf", "uav")], small[key("mfg-local", "uav")]
    sw_hf, sw_local = small[key("mfgfl-hf", "swarm")], small[key("mfg-local", "swarm")]
    sw_h, sw_f = small[key("mfgfl-h", "swarm")], small[key("mfgfl-f", "swarm")]
    gl_hf = small[key("mfgfl-hf", "global")]
    start_local = small[key("mfg-local", "start")]
    pde_keys = [k for k in small if "/pde" in k]
    best = min(pde_keys, key=lambda k: m(small[k]))
    best_shared = min((k for k in pde_keys if k.endswith("/swarm")), key=lambda k: m(small[k]))
    own_probe = probes[key("mfgfl-hf", "uav")]
    averaging_helps_shared = m(sw_h) < m(sw_local)
    averaging_helps_own = m(own_hf) < m(own_local)

    body = [
        "## Massive-UAV path control with federated mean-field control "
        "(Shiri, Park and Bennis, IEEE Trans. Commun. 2020)",
        "",
        f"Generated by `benchmarks/reproduce_uav.py` on {datetime.date.today()} "
        f"({platform.machine()}, Python {platform.python_version()}, torch {torch.__version__}; "
        f"{elapsed:.0f} s). Environment `uav_swarm_v0`, default scenario: "
        f"{env_config.num_uavs} UAVs start at rest on a jittered {env_config.initial_spacing_m:g} "
        f"m lattice in a {env_config.source_radius_m:g} m source disc and fly to a "
        f"{env_config.destination_radius_m:g} m destination disc "
        f"{env_config.source_to_destination_m:g} m away, wind "
        f"{env_config.wind_std_mps_per_sqrt_s:g} m/s/√s, {env_config.max_accel_mps2:g} m/s² "
        f"acceleration bound, {env_config.max_speed_mps:g} m/s speed cap, collision below "
        f"{env_config.collision_distance_m:g} m. Evaluation seeds {seeds[0]}-{seeds[-1]} (mean ± "
        "standard deviation over seeds), the same for every controller; the mean-field "
        "settings were tuned by hand on other seeds (those of the own frame on "
        f"{' and '.join(map(str, TUNING_SEEDS['uav']))}, those of the shared frames on "
        f"{' and '.join(map(str, TUNING_SEEDS['swarm']))}). All controllers share the nominal "
        f"straight-line law (cruise {straight_probe.cruise_speed_mps:g} m/s). *Collision "
        "probability* is the fraction of UAVs that collide at least once during the flight; "
        "*collisions per UAV-step* the fraction of (UAV, step) pairs in collision. "
        "Communication: full information sends two float32 coordinates from every UAV to every "
        "other at every step; the mean-field controllers send float32 weights up and down in "
        f"a FedAvg round every {mf.average_every_steps} steps (HJB network "
        f"{sizes['mfgfl-hf'][0]} and FPK network {sizes['mfgfl-hf'][1]} parameters with "
        f"look-ahead training, {sizes['mfgfl-hf/pde'][0]} and {sizes['mfgfl-hf/pde'][1]} with "
        "PDE-residual training in the own frame, "
        f"{sizes['mfgfl-hf/pde/swarm'][0]} and {sizes['mfgfl-hf/pde/swarm'][1]} in the shared "
        "frames); the density they learn from is sensed on board, not communicated.",
        "",
        "**What the networks minimise.** Each UAV has an HJB and an FPK network (one hidden "
        f"layer of {mf.hidden_units} tanh units; "
        f"{SHARED_FRAME_SETTINGS.get('hidden_units', mf.hidden_units)} in the shared frames, "
        "where one network holds the field of the whole swarm), trained online by SGD, all "
        "UAVs in one batched "
        'computation, PDE derivatives by autograd. *PDE-residual training* (`training="pde"`, '
        "the paper's method): the FPK network m(x, t) minimises the squared misfit to the "
        f"density sensed now in the {env_config.density_window_cells} x "
        f"{env_config.density_window_cells} cells of {env_config.density_cell_m:g} m around the "
        "UAV (the initial condition) plus the squared FPK residual ∂m/∂t + ∇·(m w) - D Δm at "
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
        f"Hamiltonian. {mf.pde_iterations} SGD steps of each network per control step. "
        "*Frames* (`frame=`; time is always counted from the present step, which all UAVs "
        'share): in the *own frame* (`"uav"`, the default) positions are measured from the '
        "UAV itself, so every UAV approximates a different function; in the *shared moving "
        'frame* (`"swarm"`) they are measured from the point that a UAV leaving the source '
        "centre at rest would have reached on the nominal law (known to all, no "
        "communication), so all UAVs approximate the same density and value functions, as in "
        "the paper, and the frame moves with the swarm (the residuals transport at the "
        'velocity relative to the frame); the *shared fixed frame* (`"global"`) measures '
        'them from the source centre. *Look-ahead training* (`training="lookahead"`, the '
        "default): the HJB network maps the observation to the correction δ directly and "
        "minimises the density its FPK network predicts one second ahead plus a quadratic "
        "price on δ; the FPK network only fits the sensed density.",
        "",
        *_table(small, len(seeds)),
        "",
    ]
    if large:
        body += [
            f"{large_uavs:,} UAVs (preset `swarm-1k`, seed {seeds[0]}): communication grows "
            "as n² with full information and as n with federated averaging.",
            "",
            *_table(large, 1),
            "",
        ]
    body += [
        "**Does averaging help? It depends on the frame.** Collisions per UAV-step by variant, "
        f"{frame_summary('uav')}; {frame_summary('swarm')}; {frame_summary('global')} "
        f"(straight line {m(sl):.3f}). "
        + (
            "In the own frame, averaging makes things worse "
            f"(MfgFL-HF {m(own_hf):.3f} against {m(own_local):.3f} without averaging). "
            if not averaging_helps_own
            else "In the own frame averaging lowers collisions "
            f"(MfgFL-HF {m(own_hf):.3f} against {m(own_local):.3f} without averaging). "
        )
        + "We measured why: at every averaging round the probe evaluates, at each flying "
        "UAV's state, the deviation δ* of its own HJB network just before and of the averaged "
        "network just after, removes the mean over UAVs (the part all UAVs share) and reports "
        "the share of the remaining, UAV-specific steering that survives (1: all of it, 0: "
        f"none). It is {kept('mfgfl-hf', 'uav')} for MfgFL-HF in the own frame: models that "
        "each hold the field around their own UAV, in their own coordinates, disagree, and "
        "their average gives every UAV the same deviation. In the shared moving frame it is "
        f"{kept('mfgfl-hf', 'swarm')} for MfgFL-HF and {kept('mfgfl-h', 'swarm')} for "
        "MfgFL-H: the averaged value function keeps part of the steering that depends on "
        "where each UAV is. "
        + (
            "There, averaging the HJB networks does help, as the paper finds: MfgFL-H "
            f"{m(sw_h):.3f} against {m(sw_local):.3f} without averaging "
            f"({change(m(sw_h), m(sw_local))}). "
            if averaging_helps_shared
            else "Yet even there averaging the HJB networks does not help: MfgFL-H "
            f"{m(sw_h):.3f} against {m(sw_local):.3f} without averaging. "
        )
        + (
            "Averaging the FPK networks as well does not add to it (MfgFL-HF "
            f"{m(sw_hf):.3f}, MfgFL-F {m(sw_f):.3f}), unlike the paper, where averaging both "
            "is best."
            if m(sw_hf) >= m(sw_h)
            else f"Averaging the FPK networks as well helps further (MfgFL-HF {m(sw_hf):.3f}), "
            "as in the paper."
        )
        + " The shared fixed frame is the experiment that isolates the motion of the frame: "
        "it differs from the moving one only by its origin (the swarm then crosses the "
        "networks' inputs at cruise speed), and MfgFL-HF there changes collisions per "
        f"UAV-step by {change(m(gl_hf), m(sl))} against the straight line, against "
        f"{change(m(sw_hf), m(sl))} in the moving frame.",
        "",
        "**Against the paper.** The paper reports that its federated mean-field controller "
        "(MfgFL-HF) shortens travel and roughly halves the collision probability compared "
        "with its baselines, and that averaging both networks beats averaging one or none, at "
        "a communication cost far below that of exchanging every UAV's state. Here, against "
        "the uncoordinated straight line, the best PDE-residual controller "
        f"({_label(best)}) changes {versus_straight(small[best])}; the best in the shared "
        f"moving frame ({_label(best_shared)}) changes {versus_straight(small[best_shared])}; "
        f"look-ahead MfgFL-HF changes {versus_straight(small['mfgfl-hf'])}. "
        f"{_label(best_shared)} exchanges "
        f"{m(small[best_shared], 'bits_per_step') / max(m(fi, 'bits_per_step'), 1):.2f}x the "
        "bits of the full-information controller, which changes "
        f"{versus_straight(fi)}. The deviation MfgFL-HF flies in the own frame is on average "
        f"{own_probe['along']:+.2f} m/s² along the path to the destination and "
        f"{own_probe['across']:.2f} m/s² across it (mean absolute value over all steps of "
        "the evaluation episodes; the probe of the shared moving frame reads "
        f"{probes[key('mfgfl-hf', 'swarm')]['along']:+.2f} and "
        f"{probes[key('mfgfl-hf', 'swarm')]['across']:.2f}): a forward push makes UAVs exceed "
        "the cruise speed, which shortens travel time and costs motion energy."
        + (
            f" At {large_uavs:,} UAVs (one seed) collisions per UAV-step change by "
            f"{change(m(large['mfgfl-h/pde/swarm']), m(large['straight-line']))} with "
            "MfgFL-H in the shared moving frame and "
            f"{change(m(large['mfgfl-hf']), m(large['straight-line']))} with look-ahead "
            "MfgFL-HF."
            if large
            else ""
        ),
        "",
        "**Why ours differ.** (1) A density resolved at "
        f"{env_config.density_cell_m:g} m cannot see {env_config.collision_distance_m:g} m "
        "collisions one by one, so the mean-field controllers can only thin the swarm out, not "
        "dodge individual neighbours; the full-information controller, which repels from every "
        f"neighbour within {FullInformationController(env_config).repulsion_radius_m:g} m, "
        "avoids collisions best, at the price of n(n - 1) position messages per step (and it is "
        "a potential-field law, not the paper's HJB solution with full state; our straight "
        "line is not in the paper). (2) The frame: the paper's UAVs solve one pair of "
        "equations over a common state space, which is what makes their models "
        "interchangeable and their average meaningful. "
        + (
            "The probe shows that averaging models held in each UAV's own frame erases more "
            "of the UAV-specific steering than averaging in the shared moving frame "
            f"({kept('mfgfl-hf', 'uav')} kept against {kept('mfgfl-hf', 'swarm')}). "
            if probes[key("mfgfl-hf", "uav")]["kept"] < probes[key("mfgfl-hf", "swarm")]["kept"]
            else "The probe does not show averaging in the own frame erasing more steering "
            f"than in the shared moving frame ({kept('mfgfl-hf', 'uav')} kept against "
            f"{kept('mfgfl-hf', 'swarm')}). "
        )
        + (
            "Without averaging, though, the own frame's learners collide less than the "
            f"shared moving frame's ({m(own_local):.3f} against {m(sw_local):.3f}). To "
            "isolate why, the *own moving frame* shifts the shared moving frame, for each "
            "UAV, by where that UAV started (same settings as the shared frames): an own frame "
            "again, but one that moves with the swarm instead of being re-centred on the UAV "
            f"at every step. Without averaging it collides {m(start_local):.3f}, "
            + (
                "close to the shared moving frame: what the own frame gains comes from "
                "re-centring the networks on the UAV at every step (the UAV always sits at "
                "the centre of its inputs, at rest in the frame of the step), not from each "
                "UAV having its own origin. "
                if abs(m(start_local) - m(sw_local)) < abs(m(start_local) - m(own_local))
                else "close to the own frame: what the own frame gains comes from each UAV "
                "having its own origin, not from the re-centring at every step. "
            )
            if m(own_local) < m(sw_local)
            else ""
        )
        + "(3) Our "
        "equations are simplified: a discount β replaces the paper's finite horizon and "
        "terminal condition, the FPK equation is solved in position space with the UAV's own "
        "velocity as the local flow (not in the full position-velocity state space with the "
        "optimal-control drift), and the collision term is linear in the predicted density; "
        "the paper's exact collision and flocking terms were not recovered. (4) Scenario "
        "numbers (speeds, wind, geometry, cost weights, network sizes, learning rates) are "
        "ours.",
        "",
        "![controllers compared](img/uav_controllers.png)",
        "",
    ]
    _write_block("\n".join([BEGIN, *body, END]))
    print("\n".join(body))


if __name__ == "__main__":
    main()
