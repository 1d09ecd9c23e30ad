"""The wireless half of the simulator: one cell, K devices uploading to one base station.

The physics, vectorised over devices (every quantity is an array of shape ``(K,)`` or
``(K, N)``; nothing loops over devices in Python):

* Geometry: the base station (BS) sits at the origin of a disc of radius ``cell_radius_m``;
  devices are placed uniformly in area in the annulus ``[min_distance_m, cell_radius_m]``
  (optionally a fraction of them in an outer ring), and may move by random waypoint.
* Large scale: path loss ``PL(d) = 128.1 + 37.6 log10(d / 1 km)`` dB and log-normal shadowing.
* Small scale: Rayleigh block fading ``h`` of shape ``(K, N)`` (``N`` BS antennas), correlated
  across rounds by the first-order Gauss-Markov model ``h_t = rho h_{t-1} + sqrt(1 - rho^2) e_t``
  with ``rho = J0(2 pi f_d T)``. That matches Jakes' correlation at a lag of one round only: at
  ``n`` rounds the correlation is ``rho^n``, a decaying exponential, not ``J0(2 pi f_d n T)``
  (which oscillates and reaches 0). With ``fading_sinusoids = M > 0`` the fading is instead a
  sum of ``M`` sinusoids (Clarke / Jakes, :func:`~fl_gym.sim.radio.channel.sum_of_sinusoids`)
  whose correlation is ``J0(2 pi f_d tau)`` at every lag. The effective power gain with
  maximum-ratio combining is ``g = 10^(-(PL + shadowing) / 10) * ||h||^2``.
* Uplink: ``M`` orthogonal sub-channels of bandwidth ``B_m = B / M``, Shannon rate
  ``B_m log2(1 + p g / (B_m N0))`` and the packet error probability
  ``q = 1 - exp(-m B_m N0 / (p g))`` of Chen, Yang, Saad, Poor and Cui, "A Joint Learning and
  Communications Framework for Federated Learning over Wireless Networks", IEEE TWC 2021.
* Compute: ``C b s / f`` seconds and ``kappa C b s f^2`` joules for ``s`` local steps on batches
  of ``b`` samples at CPU frequency ``f``.
* A round deadline (stragglers lose their update) and per-device batteries.

A :class:`WirelessCell` is used on its own like this::

    rng = np.random.default_rng(0)
    cell = WirelessCell(WirelessConfig(), num_devices=10)
    cell.reset(rng)
    for _ in range(50):
        selected = cell.available                  # everyone who still has energy
        report = cell.uplink(selected, power_w=cell.config.p_max_w, bits=1.5e5,
                             local_steps=5, batch_size=16, rng=rng)
        cell.advance(rng)                          # mobility, shadowing and fading move on

Calibration: :func:`~fl_gym.sim.radio.calibration.simulate_full_power` runs exactly that loop
and summarises the energy per round; ``python -m fl_gym.sim.radio.calibration`` prints it for the
defaults. With the defaults, 10
devices,
``1.5e5`` bits (a 4,810-parameter MLP in float32), 5 local steps on batches of 16 and everyone
selected at 23 dBm, a device spends on average about 1.3 mJ computing and 6-10 mJ transmitting
per round; cell-edge devices spend several times that, and a straggler at full power keeps
transmitting until the deadline (0.2 J). The 0.3-0.6 J batteries then leave half of the devices
exhausted after 20-50 rounds and 60-100 % of them by round 100 (seeds 0-4): full participation
at full power cannot last an episode.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from numpy.typing import ArrayLike

from fl_gym.sim.config import (
    Range,
    check_bool,
    check_int,
    check_ranges,
    check_rng,
)
from fl_gym.sim.plan import _freeze_arrays, _readonly
from fl_gym.sim.radio.channel import (
    _finite_array,
    _view,
    dbm_to_w,
    jakes_correlation,
    packet_error_probability,
    path_loss_db,
    shannon_rate_bps,
    sum_of_sinusoids,
    w_to_dbm,
)
from fl_gym.sim.radio.uplink import UplinkReport, uplink_many

__all__ = [
    "CellState",
    "UplinkReport",
    "WirelessCell",
    "WirelessConfig",
    "dbm_to_w",
    "jakes_correlation",
    "packet_error_probability",
    "path_loss_db",
    "shannon_rate_bps",
    "uplink_many",
    "w_to_dbm",
]


# -- configuration -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WirelessConfig:
    """Physical parameters of the cell; every number carries its unit in its name.

    Attributes:
        cell_radius_m: Radius of the cell around the BS. In (0, 100000].
        min_distance_m: Closest a device is placed to the BS; also the shortest distance the path
            loss model is evaluated at (a device walking past the BS is not given infinite gain).
            In (0, 10000].
        edge_fraction: Fraction of the devices (rounded to a whole number) placed uniformly in
            area in the outer ring ``[edge_inner_radius_m, cell_radius_m]`` instead of the whole
            annulus; 0 places everyone uniformly, 1 makes a cell-edge-heavy deployment. In [0, 1].
        edge_inner_radius_m: Inner radius of that outer ring, in ``[min_distance_m,
            cell_radius_m)`` (checked when ``edge_fraction > 0``). In (0, 100000].
        speed_min_mps: Lowest random-waypoint speed; with ``speed_max_mps = 0`` devices are static.
            Keep it above 0 for mobile devices: one that draws a speed near 0 takes very long to
            reach its waypoint (the known speed decay of the random-waypoint model). In [0, 150].
        speed_max_mps: Highest random-waypoint speed. In [0, 150].
        round_interval_s: Time ``T`` between two rounds (mobility step and fading correlation).
            In (0, 3600].
        path_loss_intercept_db: Path loss at 1 km. In [-100, 300].
        path_loss_slope_db: Path loss per decade of distance. In (0, 100].
        shadowing_std_db: Standard deviation of the log-normal shadowing. In [0, 30].
        shadowing_decorrelation_m: Distance over which the shadowing of a moving device
            decorrelates (Gudmundson's exponential model, ``exp(-moved / this)``); static devices
            keep their shadowing. In (0, 1e+06].
        num_antennas: BS receive antennas ``N`` (maximum-ratio combining). In [1, 1024].
        doppler_hz: Maximum Doppler frequency ``f_d`` of the fading. The default 0.1 Hz (nearly
            static devices, slowly moving scatterers) gives ``rho = J0(2 pi 0.1 * 1) = 0.90``, so
            the channel of the last round says something about the next; pedestrian Doppler at
            2 GHz (about 5 Hz) makes rounds one second apart practically independent. Under the
            default Gauss-Markov fading the correlation ``n`` rounds apart is ``rho^n``, not
            Jakes' ``J0(2 pi f_d n T)`` (see ``fading_sinusoids``). In [0, 10000].
        fading_sinusoids: 0 (default): first-order Gauss-Markov fading across rounds, whose
            correlation matches Jakes' only at a lag of one round. ``M >= 1``: each fading entry
            is a sum of ``M`` sinusoids with random arrival angles and phases (Clarke / Jakes),
            whose correlation is ``J0(2 pi f_d tau)`` at every lag ``tau`` (exactly, in
            expectation over the angles); the entries tend to ``CN(0, 1)`` as ``M`` grows (16 to
            64 is usual). In [0, 1024].
        num_subchannels: Orthogonal sub-channels ``M``; at most ``M`` devices upload per round.
            In [1, 10000].
        bandwidth_hz: Total uplink bandwidth ``B``, split evenly among the sub-channels.
            In [1, 1e+11].
        noise_psd_dbm_per_hz: Thermal noise spectral density. In [-250, 0].
        noise_figure_db: BS receiver noise figure, added to the thermal noise. In [0, 30].
        waterfall_threshold: ``m`` in the packet error model. Chen et al. (IEEE TWC 2021, Table I)
            list ``m = 0.023 dB``; like their model, the value 0.023 enters the exponent as is.
            In (0, 1000].
        p_max_dbm: Highest transmit power of a device. In [-50, 60].
        power_floor_w: A selected device given less power than this does not transmit (and
            therefore does not train either: it spends nothing that round). In (0, 1000].
        cpu_min_hz: Lowest device CPU frequency (drawn uniformly per device at reset).
            In [1000, 1e+12].
        cpu_max_hz: Highest device CPU frequency. In [1000, 1e+12].
        cycles_per_sample: CPU cycles ``C`` to process one training sample in a local step.
            In (0, 1e+12].
        effective_capacitance: ``kappa`` of the dynamic CPU power ``kappa f^3`` (J s^2 / cycle^3).
            In (0, 1e-20].
        deadline_s: Round deadline; a device whose compute plus upload time exceeds it is a
            straggler. In (0, 1e+06].
        battery_min_j: Lowest battery capacity (drawn uniformly per device at reset). In (0, 1e+09].
        battery_max_j: Highest battery capacity; equal to ``battery_min_j`` for identical devices.
            In (0, 1e+09].
        battery_floor_j: A device whose battery holds this much or less is exhausted: it is not
            available and cannot be selected. In [0, 1e+09].
        downlink: Whether the base station's broadcast of the global model (float32, ``32 d``
            bits) takes time before each round (:meth:`WirelessCell.downlink`): over the whole
            bandwidth at ``downlink_power_dbm``, at the Shannon rate of the weakest selected
            device's large-scale gain (the broadcast must reach every participant; fading
            averaged out). The time is added to every selected device's latency and to the
            round time; the base station's energy is ``downlink_power_dbm`` x that time. Off by
            default.
        downlink_power_dbm: Base-station transmit power of the broadcast. In [-50, 80].
    """

    cell_radius_m: float = 500.0
    min_distance_m: float = 10.0
    edge_fraction: float = 0.0
    edge_inner_radius_m: float = 400.0
    speed_min_mps: float = 0.0
    speed_max_mps: float = 0.0
    round_interval_s: float = 1.0
    path_loss_intercept_db: float = 128.1
    path_loss_slope_db: float = 37.6
    shadowing_std_db: float = 8.0
    shadowing_decorrelation_m: float = 50.0
    num_antennas: int = 1
    doppler_hz: float = 0.1
    fading_sinusoids: int = 0
    num_subchannels: int = 10
    bandwidth_hz: float = 10e6
    noise_psd_dbm_per_hz: float = -174.0
    noise_figure_db: float = 9.0
    waterfall_threshold: float = 0.023
    p_max_dbm: float = 23.0
    power_floor_w: float = 1e-6
    cpu_min_hz: float = 0.5e9
    cpu_max_hz: float = 2.0e9
    cycles_per_sample: float = 1e5
    effective_capacitance: float = 1e-28
    deadline_s: float = 1.0
    battery_min_j: float = 0.3
    battery_max_j: float = 0.6
    battery_floor_j: float = 1e-6
    downlink: bool = False
    downlink_power_dbm: float = 46.0

    RANGES: ClassVar[Mapping[str, Range]] = {
        "cell_radius_m": Range(0.0, 1e5, low_open=True),
        "min_distance_m": Range(0.0, 1e4, low_open=True),
        "edge_fraction": Range(0.0, 1.0),
        "edge_inner_radius_m": Range(0.0, 1e5, low_open=True),
        "speed_min_mps": Range(0.0, 150.0),
        "speed_max_mps": Range(0.0, 150.0),
        "round_interval_s": Range(0.0, 3600.0, low_open=True),
        "path_loss_intercept_db": Range(-100.0, 300.0),
        "path_loss_slope_db": Range(0.0, 100.0, low_open=True),
        "shadowing_std_db": Range(0.0, 30.0),
        "shadowing_decorrelation_m": Range(0.0, 1e6, low_open=True),
        "num_antennas": Range(1, 1024, integer=True),
        "doppler_hz": Range(0.0, 1e4),
        "fading_sinusoids": Range(0, 1024, integer=True),
        "num_subchannels": Range(1, 10_000, integer=True),
        "bandwidth_hz": Range(1.0, 1e11),
        "noise_psd_dbm_per_hz": Range(-250.0, 0.0),
        "noise_figure_db": Range(0.0, 30.0),
        "waterfall_threshold": Range(0.0, 1e3, low_open=True),
        "p_max_dbm": Range(-50.0, 60.0),
        "power_floor_w": Range(0.0, 1e3, low_open=True),
        "cpu_min_hz": Range(1e3, 1e12),
        "cpu_max_hz": Range(1e3, 1e12),
        "cycles_per_sample": Range(0.0, 1e12, low_open=True),
        "effective_capacitance": Range(0.0, 1e-20, low_open=True),
        "deadline_s": Range(0.0, 1e6, low_open=True),
        "battery_min_j": Range(0.0, 1e9, low_open=True),
        "battery_max_j": Range(0.0, 1e9, low_open=True),
        "battery_floor_j": Range(0.0, 1e9),
        "downlink_power_dbm": Range(-50.0, 80.0),
    }
    """Documented plausible range of every numeric field (stated in its description)."""

    def __post_init__(self) -> None:
        check_ranges(self, self.RANGES)
        check_bool("downlink", self.downlink)
        if self.min_distance_m >= self.cell_radius_m:
            raise ValueError(
                f"min_distance_m must be < cell_radius_m ({self.cell_radius_m!r}), "
                f"got {self.min_distance_m!r}"
            )
        # The ring matters only when someone is placed in it; a cell shrunk without an
        # edge-heavy placement need not move the ring too.
        ring_ok = self.min_distance_m <= self.edge_inner_radius_m < self.cell_radius_m
        if self.edge_fraction > 0 and not ring_ok:
            raise ValueError(
                f"edge_inner_radius_m must lie in [min_distance_m, cell_radius_m) = "
                f"[{self.min_distance_m!r}, {self.cell_radius_m!r}), "
                f"got {self.edge_inner_radius_m!r}"
            )
        for low, high in (
            ("speed_min_mps", "speed_max_mps"),
            ("cpu_min_hz", "cpu_max_hz"),
            ("battery_min_j", "battery_max_j"),
        ):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(
                    f"{low} must be <= {high} ({getattr(self, high)!r}), got {getattr(self, low)!r}"
                )
        if self.battery_min_j <= self.battery_floor_j:
            raise ValueError(
                f"battery_min_j must be > battery_floor_j ({self.battery_floor_j!r}), "
                f"got {self.battery_min_j!r}"
            )
        if self.power_floor_w >= self.p_max_w:
            raise ValueError(
                f"power_floor_w must be < p_max ({self.p_max_w!r} W = {self.p_max_dbm!r} dBm), "
                f"got {self.power_floor_w!r}"
            )

    @functools.cached_property
    def subchannel_bandwidth_hz(self) -> float:
        """Bandwidth of one sub-channel, ``B / M``."""
        return self.bandwidth_hz / self.num_subchannels

    @functools.cached_property
    def noise_psd_w_per_hz(self) -> float:
        """Noise spectral density including the noise figure, in W/Hz."""
        return float(dbm_to_w(self.noise_psd_dbm_per_hz + self.noise_figure_db))

    @functools.cached_property
    def noise_power_w(self) -> float:
        """Noise power in one sub-channel, ``B_m N0``."""
        return self.noise_psd_w_per_hz * self.subchannel_bandwidth_hz

    @functools.cached_property
    def p_max_w(self) -> float:
        """Highest transmit power in watts."""
        return float(dbm_to_w(self.p_max_dbm))

    @functools.cached_property
    def fading_correlation(self) -> float:
        """Gauss-Markov coefficient ``rho = J0(2 pi f_d T)`` between consecutive rounds (the
        correlation ``n`` rounds apart is ``rho^n``)."""
        return jakes_correlation(self.doppler_hz, self.round_interval_s)

    @property
    def mobile(self) -> bool:
        """Whether devices move (random waypoint)."""
        return self.speed_max_mps > 0.0


@dataclass(frozen=True, eq=False)
class CellState:
    """Everything that evolves in a :class:`WirelessCell`; see :meth:`WirelessCell.snapshot`.

    Attributes:
        positions_m: ``(K, 2)`` device positions, BS at the origin.
        shadowing_db: ``(K,)`` shadowing.
        fading: ``(K, N)`` complex small-scale fading.
        cpu_hz: ``(K,)`` CPU frequencies.
        battery_j: ``(K,)`` energy left.
        battery_capacity_j: ``(K,)`` full battery.
        waypoints_m: ``(K, 2)`` random-waypoint targets (equal to the positions when static).
        speed_mps: ``(K,)`` random-waypoint speeds (0 when static).
        sinusoid_cos: ``(K, N, M)`` cosines of the sinusoids' arrival angles under
            sum-of-sinusoids fading (``fading_sinusoids = M``); empty otherwise.
        sinusoid_phase: ``(K, N, M)`` their current phases in ``[0, 2 pi)``; ``fading`` is
            ``sum_m exp(j phase) / sqrt(M)``. Empty without sum-of-sinusoids fading.
    """

    positions_m: np.ndarray
    shadowing_db: np.ndarray
    fading: np.ndarray
    cpu_hz: np.ndarray
    battery_j: np.ndarray
    battery_capacity_j: np.ndarray
    waypoints_m: np.ndarray
    speed_mps: np.ndarray
    sinusoid_cos: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sinusoid_phase: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        _freeze_arrays(self, every_field=True)

    def _replaced(self, **changes: np.ndarray) -> CellState:
        """This state with the arrays ``changes`` names replaced (made read-only as the
        constructor makes them) and the others shared: what
        ``CellState(**{**fields, **changes})`` makes, without a pass over every field (the
        cell's dynamics make one every round)."""
        state = object.__new__(CellState)
        values = vars(state)
        values.update(vars(self))
        for name, value in changes.items():
            values[name] = _readonly(value)
        return state

    def __setstate__(self, state: dict[str, np.ndarray]) -> None:
        # A deep copy or an unpickled state gets fresh arrays, writable: read-only again, as
        # the constructor made them (they belong to this state alone).
        values = vars(self)
        values.update(state)
        for value in values.values():
            if isinstance(value, np.ndarray):
                value.setflags(write=False)


def _still_valid(cached: tuple[np.ndarray, ...] | None, *keys: np.ndarray) -> bool:
    """Whether ``cached`` (its key arrays, then what was computed from them) still holds: the
    state's arrays are replaced, never written, so the same read-only objects are the same
    values. A copied or unpickled cell's cached arrays come back writable: then it is
    recomputed."""
    if cached is None:
        return False
    for key, kept in zip(keys, cached, strict=False):
        if kept is not key or key.flags.writeable:
            return False
    for value in cached[len(keys) :]:
        if value.flags.writeable:
            return False
    return True


# -- the cell ----------------------------------------------------------------------------------


class WirelessCell:
    """One cell: K devices, their channels, CPUs and batteries, and the uplink of a round.

    Args:
        config: Physical parameters.
        num_devices: Number of devices ``K``.

    The cell holds no random generator: :meth:`reset`, :meth:`advance` and :meth:`uplink` take
    one. A round is ``uplink`` (uses the current channel) followed by ``advance`` (moves to the
    next round's channel). The cell pickles and deep-copies; :meth:`snapshot` and
    :meth:`restore` save and set its state explicitly.
    """

    def __init__(self, config: WirelessConfig | None = None, num_devices: int = 10) -> None:
        if config is None:
            config = WirelessConfig()
        if not isinstance(config, WirelessConfig):
            raise TypeError(f"config must be a WirelessConfig, got {type(config).__name__}")
        check_int("num_devices", num_devices, minimum=1)
        self.config = config
        self.num_devices = int(num_devices)
        self._state: CellState | None = None
        # (fading, positions, shadowing, gain): the gain of the last channel state asked for.
        self._gain_cache: tuple[np.ndarray, ...] | None = None
        # (positions, shadowing, distance, large-scale gain): they change only with mobility
        # and on reset, not with the fading of every round.
        self._large_scale_cache: tuple[np.ndarray, ...] | None = None

    # -- state ---------------------------------------------------------------------------------

    def _require_state(self) -> CellState:
        if self._state is None:
            raise RuntimeError("the cell has no state yet: call reset(rng) first")
        return self._state

    @property
    def num_antennas(self) -> int:
        return self.config.num_antennas

    @property
    def positions_m(self) -> np.ndarray:
        """``(K, 2)`` device positions, BS at the origin."""
        return _view(self._require_state().positions_m)

    def _large_scale(self) -> tuple[np.ndarray, np.ndarray]:
        """``(distance_m, large_scale_gain)`` of the current state, read-only, computed once per
        change of the positions or the shadowing."""
        state = self._require_state()
        cached = self._large_scale_cache
        if _still_valid(cached, state.positions_m, state.shadowing_db):
            return cached[2], cached[3]  # type: ignore[index]
        cfg = self.config
        radius = np.hypot(*state.positions_m.T)
        distance_m = np.maximum(radius, cfg.min_distance_m)
        loss_db = path_loss_db(distance_m, cfg.path_loss_intercept_db, cfg.path_loss_slope_db)
        gain = np.power(10.0, -(loss_db + state.shadowing_db) / 10.0)
        distance_m.setflags(write=False)
        gain.setflags(write=False)
        self._large_scale_cache = (state.positions_m, state.shadowing_db, distance_m, gain)
        return distance_m, gain

    @property
    def distance_m(self) -> np.ndarray:
        """``(K,)`` link distance used by the path loss: ``max(|position|, min_distance_m)``
        (read-only)."""
        return self._large_scale()[0]

    @property
    def path_loss_db(self) -> np.ndarray:
        """``(K,)`` distance-dependent path loss."""
        return path_loss_db(
            self.distance_m, self.config.path_loss_intercept_db, self.config.path_loss_slope_db
        )

    @property
    def shadowing_db(self) -> np.ndarray:
        """``(K,)`` log-normal shadowing (added to the path loss)."""
        return _view(self._require_state().shadowing_db)

    @property
    def large_scale_gain(self) -> np.ndarray:
        """``(K,)`` linear gain ``10^(-(PL + shadowing) / 10)``, the mean of ``g / N``
        (read-only)."""
        return self._large_scale()[1]

    @property
    def fading(self) -> np.ndarray:
        """``(K, N)`` complex small-scale fading, ``CN(0, 1)`` entries."""
        return _view(self._require_state().fading)

    @property
    def channel_gain(self) -> np.ndarray:
        """``(K,)`` effective power gain ``10^(-(PL + shadowing) / 10) ||h||^2`` (MRC)."""
        state = self._require_state()
        cached = self._gain_cache
        if _still_valid(cached, state.fading, state.positions_m, state.shadowing_db):
            return cached[3]  # type: ignore[index]
        h = state.fading
        gain = self.large_scale_gain * np.sum(h.real**2 + h.imag**2, axis=1)
        gain.setflags(write=False)
        self._gain_cache = (state.fading, state.positions_m, state.shadowing_db, gain)
        return gain

    @property
    def cpu_hz(self) -> np.ndarray:
        """``(K,)`` CPU frequencies."""
        return _view(self._require_state().cpu_hz)

    @property
    def battery_j(self) -> np.ndarray:
        """``(K,)`` energy left in each battery."""
        return _view(self._require_state().battery_j)

    @property
    def battery_capacity_j(self) -> np.ndarray:
        """``(K,)`` full battery of each device."""
        return _view(self._require_state().battery_capacity_j)

    @property
    def available(self) -> np.ndarray:
        """``(K,)`` devices that may be selected: battery above ``battery_floor_j``."""
        return self._require_state().battery_j > self.config.battery_floor_j

    def achievable_rate_bps(self, power_w: ArrayLike) -> np.ndarray:
        """``(K,)`` rates the devices would get this round at ``power_w`` (scalar or ``(K,)``)."""
        power = self._per_device_float(power_w, "power_w")
        return shannon_rate_bps(
            self.config.subchannel_bandwidth_hz,
            power,
            self.channel_gain,
            self.config.noise_psd_w_per_hz,
        )

    def packet_error_prob(self, power_w: ArrayLike) -> np.ndarray:
        """``(K,)`` packet error probabilities this round at ``power_w`` (scalar or ``(K,)``)."""
        power = self._per_device_float(power_w, "power_w")
        return packet_error_probability(
            power,
            self.channel_gain,
            self.config.subchannel_bandwidth_hz,
            self.config.noise_psd_w_per_hz,
            self.config.waterfall_threshold,
        )

    def downlink(self, selected: ArrayLike, bits: float) -> tuple[float, float]:
        """Time and base-station energy of broadcasting ``bits`` to the selected devices.

        The broadcast uses the whole bandwidth ``B`` at ``downlink_power_dbm`` and must reach
        every selected device, so it runs at the rate of the weakest one's large-scale gain
        ``G``: ``B log2(1 + P_BS G / (B N0))``. Computed whether or not ``config.downlink`` is
        on (the round pipeline adds it to the round only when it is).

        Args:
            selected: ``(K,)`` bool, the devices that receive the model.
            bits: Size of the model in bits, ``>= 0``.

        Returns:
            ``(time_s, energy_j)``; both 0 when nobody is selected or ``bits`` is 0.
        """
        sel = np.asarray(selected, dtype=bool)
        if sel.shape != (self.num_devices,):
            raise ValueError(
                f"selected must have shape ({self.num_devices},), got shape {sel.shape}"
            )
        size = float(bits)
        if not math.isfinite(size) or size < 0.0:
            raise ValueError(f"bits must be finite and >= 0, got {bits!r}")
        if not sel.any() or size == 0.0:
            return 0.0, 0.0
        cfg = self.config
        power_w = float(dbm_to_w(cfg.downlink_power_dbm))
        gain = float(self.large_scale_gain[sel].min())
        rate = float(shannon_rate_bps(cfg.bandwidth_hz, power_w, gain, cfg.noise_psd_w_per_hz))
        time_s = size / rate if rate > 0.0 else math.inf
        return time_s, power_w * time_s

    def set_batteries(self, battery_j: np.ndarray) -> None:
        """Replace the batteries' charge, e.g. after a batched uplink computed the round's
        spending (:func:`~fl_gym.sim.radio.uplink.uplink_many`); the cell keeps everything else."""
        self._state = self._require_state()._replaced(battery_j=battery_j)

    def snapshot(self) -> CellState:
        """The cell's current state (immutable; :meth:`restore` puts it back)."""
        return self._require_state()

    def restore(self, state: CellState) -> None:
        """Set the cell's state, e.g. from :meth:`snapshot` or a hand-built :class:`CellState`.

        Args:
            state: Arrays with this cell's ``K`` and ``N``; positions within the cell, batteries
                in ``[0, capacity]``, CPU frequencies ``> 0``.
        """
        if not isinstance(state, CellState):
            raise TypeError(f"state must be a CellState, got {type(state).__name__}")
        k, n = self.num_devices, self.num_antennas
        shapes = {
            "positions_m": (k, 2),
            "shadowing_db": (k,),
            "fading": (k, n),
            "cpu_hz": (k,),
            "battery_j": (k,),
            "battery_capacity_j": (k,),
            "waypoints_m": (k, 2),
            "speed_mps": (k,),
        }
        m = self.config.fading_sinusoids
        if m:
            shapes |= {"sinusoid_cos": (k, n, m), "sinusoid_phase": (k, n, m)}
        for name, shape in shapes.items():
            value = getattr(state, name)
            if value.shape != shape:
                raise ValueError(f"state.{name} must have shape {shape}, got {value.shape}")
            if not np.all(np.isfinite(value)):
                raise ValueError(f"state.{name} must be finite")
        radius_limit = self.config.cell_radius_m * (1.0 + 1e-9)
        for name in ("positions_m", "waypoints_m"):
            if np.any(np.hypot(*getattr(state, name).T) > radius_limit):
                raise ValueError(f"state.{name} must lie within cell_radius_m")
        if np.any(state.cpu_hz <= 0):
            raise ValueError(f"state.cpu_hz must be > 0, got {state.cpu_hz.tolist()}")
        if np.any(state.speed_mps < 0):
            raise ValueError(f"state.speed_mps must be >= 0, got {state.speed_mps.tolist()}")
        if np.any(state.battery_j < 0) or np.any(state.battery_j > state.battery_capacity_j):
            raise ValueError(
                f"state.battery_j must lie in [0, battery_capacity_j], got {state.battery_j}"
            )
        fading = state.fading
        if m:
            # The fading follows from the sinusoids' phases.
            fading = _readonly(sum_of_sinusoids(state.sinusoid_phase))
            state = state._replaced(fading=fading)
        if not np.iscomplexobj(fading):
            fading = _readonly(fading.astype(np.complex128))
            state = state._replaced(fading=fading)
        self._state = state

    # -- dynamics ------------------------------------------------------------------------------

    def _uniform_in_annulus(
        self, rng: np.random.Generator, inner_m: np.ndarray | float
    ) -> np.ndarray:
        """``(K, 2)`` points uniform in area between ``inner_m`` and the cell radius."""
        r = np.sqrt(rng.uniform(np.square(inner_m), self.config.cell_radius_m**2, self.num_devices))
        angle = rng.uniform(0.0, 2.0 * math.pi, self.num_devices)
        return np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1)

    def _complex_normal(self, rng: np.random.Generator) -> np.ndarray:
        shape = (self.num_devices, self.num_antennas)
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / math.sqrt(2.0)

    def reset(self, rng: np.random.Generator) -> None:
        """Place the devices and draw shadowing, fading, CPU frequencies and full batteries.

        Args:
            rng: Source of every draw.
        """
        check_rng(rng)
        cfg, k = self.config, self.num_devices
        num_edge = round(cfg.edge_fraction * k)
        inner_m = np.full(k, cfg.min_distance_m)
        inner_m[rng.permutation(k)[:num_edge]] = cfg.edge_inner_radius_m
        positions_m = self._uniform_in_annulus(rng, inner_m)
        shadowing_db = cfg.shadowing_std_db * rng.standard_normal(k)
        sinusoids: dict[str, np.ndarray] = {}
        if cfg.fading_sinusoids:
            sinusoids = self._draw_sinusoids(rng)
            fading = sum_of_sinusoids(sinusoids["sinusoid_phase"])
        else:
            fading = self._complex_normal(rng)
        cpu_hz = rng.uniform(cfg.cpu_min_hz, cfg.cpu_max_hz, k)
        capacity_j = rng.uniform(cfg.battery_min_j, cfg.battery_max_j, k)
        if cfg.mobile:
            waypoints_m = self._uniform_in_annulus(rng, cfg.min_distance_m)
            speed_mps = rng.uniform(cfg.speed_min_mps, cfg.speed_max_mps, k)
        else:
            waypoints_m = positions_m
            speed_mps = np.zeros(k)
        self._state = CellState(
            positions_m=positions_m,
            shadowing_db=shadowing_db,
            fading=fading,
            cpu_hz=cpu_hz,
            battery_j=capacity_j,
            battery_capacity_j=capacity_j,
            waypoints_m=waypoints_m,
            speed_mps=speed_mps,
            **sinusoids,
        )

    def _draw_sinusoids(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Arrival angles ``(2 pi m - pi + theta) / M``, ``m = 1..M``, evenly spread with a
        random offset ``theta`` per entry (each angle uniform on the circle, as Jakes' isotropic
        scattering needs, with fewer sinusoids than independent angles would take), and
        independent uniform phases."""
        m = self.config.fading_sinusoids
        shape = (self.num_devices, self.num_antennas)
        theta = rng.uniform(-math.pi, math.pi, (*shape, 1))
        angles = (2.0 * math.pi * np.arange(1, m + 1) - math.pi + theta) / m
        phases = rng.uniform(0.0, 2.0 * math.pi, (*shape, m))
        return {"sinusoid_cos": np.cos(angles), "sinusoid_phase": phases}

    def advance(self, rng: np.random.Generator) -> None:
        """Move on one round: random-waypoint mobility (with shadowing), then fading evolution.

        A device walks ``speed * round_interval_s`` towards its waypoint; one that reaches it
        stops there and draws a new waypoint (uniform in the annulus) and speed. Its shadowing
        follows Gudmundson's model ``s <- a s + sqrt(1 - a^2) sigma z``, ``a = exp(-moved / d_c)``.
        Fading follows ``h <- rho h + sqrt(1 - rho^2) e`` with ``e ~ CN(0, 1)``, or, with
        ``fading_sinusoids > 0``, every sinusoid's phase moves on by ``2 pi f_d T cos(angle)``.

        Args:
            rng: Source of every draw.
        """
        check_rng(rng)
        state = self._require_state()
        cfg = self.config
        positions_m, waypoints_m = state.positions_m, state.waypoints_m
        speed_mps, shadowing_db = state.speed_mps, state.shadowing_db
        if cfg.mobile:
            to_go = waypoints_m - positions_m
            remaining_m = np.hypot(*to_go.T)
            step_m = speed_mps * cfg.round_interval_s
            arrived = step_m >= remaining_m
            fraction = np.divide(
                step_m, remaining_m, out=np.ones_like(step_m), where=remaining_m > 0
            )
            positions_m = np.where(
                arrived[:, None], waypoints_m, positions_m + fraction[:, None] * to_go
            )
            moved_m = np.minimum(step_m, remaining_m)
            # Fresh targets are drawn for everyone so the number of draws does not depend on
            # who arrived; only the arrived devices take them.
            new_waypoints_m = self._uniform_in_annulus(rng, cfg.min_distance_m)
            new_speed_mps = rng.uniform(cfg.speed_min_mps, cfg.speed_max_mps, self.num_devices)
            waypoints_m = np.where(arrived[:, None], new_waypoints_m, waypoints_m)
            speed_mps = np.where(arrived, new_speed_mps, speed_mps)
            a = np.exp(-moved_m / cfg.shadowing_decorrelation_m)
            shadowing_db = a * shadowing_db + np.sqrt(
                1.0 - a**2
            ) * cfg.shadowing_std_db * rng.standard_normal(self.num_devices)
        sinusoids: dict[str, np.ndarray] = {}
        if cfg.fading_sinusoids:
            step = 2.0 * math.pi * cfg.doppler_hz * cfg.round_interval_s
            phase = np.mod(state.sinusoid_phase + step * state.sinusoid_cos, 2.0 * math.pi)
            sinusoids["sinusoid_phase"] = phase
            fading = sum_of_sinusoids(phase)
        else:
            rho = cfg.fading_correlation
            fading = rho * state.fading + math.sqrt(1.0 - rho**2) * self._complex_normal(rng)
        self._state = state._replaced(
            **sinusoids,
            positions_m=positions_m,
            waypoints_m=waypoints_m,
            speed_mps=speed_mps,
            shadowing_db=shadowing_db,
            fading=fading,
        )

    # -- the uplink of a round -----------------------------------------------------------------

    def _per_device_float(self, value: ArrayLike, name: str) -> np.ndarray:
        arr = _finite_array(value, name)
        if arr.ndim == 0:
            arr = np.full(self.num_devices, float(arr))
        if arr.shape != (self.num_devices,):
            raise ValueError(
                f"{name} must be a scalar or have shape ({self.num_devices},), got {arr.shape}"
            )
        return arr

    def check_selection(self, selected: ArrayLike) -> np.ndarray:
        """Validate a selection mask: shape (K,), at most M devices, all available."""
        sel = np.asarray(selected)
        if sel.dtype != np.bool_:
            raise TypeError(
                f"selected must be a boolean mask of shape ({self.num_devices},), "
                f"got dtype {sel.dtype}"
            )
        if sel.shape != (self.num_devices,):
            raise ValueError(
                f"selected must have shape ({self.num_devices},), got shape {sel.shape}"
            )
        count, limit = np.count_nonzero(sel), self.config.num_subchannels
        if count > limit:
            raise ValueError(
                f"{count} devices selected but only num_subchannels = {limit} can upload per round"
            )
        exhausted = sel & ~self.available
        if exhausted.any():
            raise ValueError(
                f"devices {np.flatnonzero(exhausted).tolist()} have exhausted batteries "
                f"(<= battery_floor_j = {self.config.battery_floor_j} J) and cannot be selected"
            )
        return sel.copy()

    def compute_cost(
        self, local_steps: ArrayLike, batch_size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Time and energy of each device's local training, ``C b s / f`` and ``kappa C b s f^2``.

        Args:
            local_steps: Steps per device, scalar or ``(K,)`` whole numbers ``>= 0``.
            batch_size: Samples per step, ``>= 1``.

        Returns:
            ``(time_s, energy_j)``, each ``(K,)``.
        """
        state = self._require_state()
        cfg = self.config
        steps = self._per_device_float(local_steps, "local_steps")
        check_int("batch_size", batch_size, minimum=1)
        cycles = cfg.cycles_per_sample * batch_size * steps
        return cycles / state.cpu_hz, cfg.effective_capacitance * cycles * state.cpu_hz**2

    def drain(self, energy_j: ArrayLike) -> np.ndarray:
        """Take energy from the batteries, each at most down to empty.

        Args:
            energy_j: ``(K,)`` energy each device uses, ``>= 0``.

        Returns:
            ``(K,)`` the energy each device actually had to spend (``min(energy, battery)``).
        """
        state = self._require_state()
        wanted = self._per_device_float(energy_j, "energy_j")
        spent = np.minimum(wanted, state.battery_j)
        self._state = state._replaced(battery_j=state.battery_j - spent)
        return spent

    def uplink(
        self,
        selected: ArrayLike,
        power_w: ArrayLike,
        bits: ArrayLike,
        local_steps: ArrayLike,
        batch_size: int,
        rng: np.random.Generator,
    ) -> UplinkReport:
        """Train, upload and account for one round on the current channel.

        Each selected device with power at least ``power_floor_w`` gets its own sub-channel,
        trains ``local_steps`` steps on batches of ``batch_size`` and uploads ``bits``. Packet
        losses are drawn from ``rng`` (one uniform per device, whoever is selected). Energy is
        deducted from the batteries. The channel does not move: call :meth:`advance` between
        rounds. Invalid arguments raise before anything changes.

        Args:
            selected: ``(K,)`` bool mask; at most ``num_subchannels`` devices, all available.
            power_w: Transmit power in watts, scalar or ``(K,)``, in ``[0, p_max_w]``.
            bits: Size of each upload, scalar or ``(K,)``, ``>= 0``.
            local_steps: Local training steps, scalar or ``(K,)`` whole numbers ``>= 0``.
            batch_size: Samples per local step, ``>= 1``.
            rng: Draws the packet losses.

        Returns:
            The round's :class:`UplinkReport`.
        """
        check_rng(rng)
        self._require_state()
        cfg = self.config
        sel = self.check_selection(selected)
        power = self._per_device_float(power_w, "power_w")
        too_high = power > cfg.p_max_w * (1.0 + 1e-9)
        if too_high.any():
            raise ValueError(
                f"power_w must be <= p_max_w = {cfg.p_max_w:.6g} W ({cfg.p_max_dbm} dBm); "
                f"devices {np.flatnonzero(too_high).tolist()} have "
                f"{power[too_high].tolist()}"
            )
        power = np.minimum(power, cfg.p_max_w)
        size_bits = self._per_device_float(bits, "bits")
        steps = self._per_device_float(local_steps, "local_steps")
        if np.any(steps != np.round(steps)):
            raise ValueError(f"local_steps must be whole numbers, got {local_steps!r}")
        check_int("batch_size", batch_size, minimum=1)
        return self._uplink(sel, power, size_bits, steps, batch_size, rng)

    def _uplink(
        self,
        sel: np.ndarray,
        power: np.ndarray,
        size_bits: np.ndarray,
        steps: np.ndarray,
        batch_size: int,
        rng: np.random.Generator,
    ) -> UplinkReport:
        """:meth:`uplink` on validated inputs: a fresh ``(K,)`` bool selection of available
        devices (at most ``num_subchannels``), float64 ``(K,)`` powers in ``[0, p_max_w]``, bits
        ``>= 0`` and whole local steps ``>= 0``, and ``batch_size >= 1``."""
        return uplink_many([self], [sel], [power], [size_bits], [steps], batch_size, [rng])[0]
