"""The wireless half of the simulator: one cell, K devices uploading to one base station.

The physics, vectorised over devices (every quantity is an array of shape ``(K,)`` or
``(K, N)``; nothing loops over devices in Python):

* Geometry: the base station (BS) sits at the origin of a disc of radius ``cell_radius_m``;
  devices are placed uniformly in area in the annulus ``[min_distance_m, cell_radius_m]``
  (optionally a fraction of them in an outer ring), and may move by random waypoint.
* Large scale: path loss ``PL(d) = 128.1 + 37.6 log10(d / 1 km)`` dB and log-normal shadowing.
* Small scale: Rayleigh block fading ``h`` of shape ``(K, N)`` (``N`` BS antennas), correlated
  across rounds by the Gauss-Markov model ``h_t = rho h_{t-1} + sqrt(1 - rho^2) e_t`` with the
  Jakes coefficient ``rho = J0(2 pi f_d T)``. The effective power gain with maximum-ratio combining
  is ``g = 10^(-(PL + shadowing) / 10) * ||h||^2``.
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

Calibration: :func:`simulate_full_power` runs exactly that loop and summarises the energy per
round; ``python -m fl_gym.sim.radio.cell`` prints it for the defaults. With the defaults, 10
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
from dataclasses import dataclass, fields

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import j0

from fl_gym.sim.config import check_int, check_positive, check_real, check_rng

__all__ = [
    "CellState",
    "DrainSummary",
    "UplinkReport",
    "WirelessCell",
    "WirelessConfig",
    "dbm_to_w",
    "jakes_correlation",
    "packet_error_probability",
    "path_loss_db",
    "shannon_rate_bps",
    "simulate_full_power",
    "uplink_many",
    "w_to_dbm",
]

_LN2 = math.log(2.0)


# -- pure functions ----------------------------------------------------------------------------


def _finite_array(value: ArrayLike, name: str, *, minimum: float | None = 0.0) -> np.ndarray:
    """``value`` as a float64 array, or a ValueError naming ``name`` if NaN/inf/below minimum."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be numeric, got {value!r}") from exc
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if minimum is not None and np.any(arr < minimum):
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return arr


def dbm_to_w(x: ArrayLike) -> np.ndarray:
    """Convert a power from dBm to watts: ``10^((x - 30) / 10)``.

    Args:
        x: Power in dBm (any finite real; ``-inf`` gives 0 W).

    Returns:
        Power in watts, same shape as ``x``.
    """
    arr = np.asarray(x, dtype=np.float64)
    if np.any(np.isnan(arr)) or np.any(arr == np.inf):
        raise ValueError(f"power in dBm must be finite or -inf, got {x!r}")
    return np.power(10.0, (arr - 30.0) / 10.0)


def w_to_dbm(x: ArrayLike) -> np.ndarray:
    """Convert a power from watts to dBm: ``10 log10(x) + 30``.

    Args:
        x: Power in watts, finite and ``>= 0``.

    Returns:
        Power in dBm, same shape as ``x``; 0 W maps to ``-inf`` dBm.
    """
    arr = _finite_array(x, "power in watts")
    positive = arr > 0
    out = np.full(arr.shape, -np.inf)
    np.log10(arr, out=out, where=positive)
    return np.where(positive, 10.0 * out + 30.0, -np.inf)


def path_loss_db(
    distance_m: ArrayLike, intercept_db: float = 128.1, slope_db: float = 37.6
) -> np.ndarray:
    """Log-distance path loss ``intercept + slope * log10(d / 1 km)`` in dB (3GPP TR 36.814 macro).

    Args:
        distance_m: BS-device distance in metres, finite and ``> 0``.
        intercept_db: Path loss at 1 km, dB.
        slope_db: dB per decade of distance (10 times the path-loss exponent).

    Returns:
        Path loss in dB, same shape as ``distance_m``.
    """
    d = _finite_array(distance_m, "distance_m")
    if np.any(d <= 0):
        raise ValueError(f"distance_m must be > 0 m, got {distance_m!r}")
    return intercept_db + slope_db * np.log10(d / 1000.0)


def jakes_correlation(doppler_hz: float, interval_s: float) -> float:
    """Correlation of Rayleigh fading samples ``interval_s`` apart under Jakes' model.

    Args:
        doppler_hz: Maximum Doppler frequency ``f_d`` in Hz, ``>= 0``.
        interval_s: Time between the two samples ``T`` in seconds, ``>= 0``.

    Returns:
        ``J0(2 pi f_d T)``, in ``[-0.403, 1]``.
    """
    check_positive("doppler_hz", doppler_hz, allow_zero=True)
    check_positive("interval_s", interval_s, allow_zero=True)
    return float(j0(2.0 * math.pi * doppler_hz * interval_s))


def _snr(
    bandwidth_hz: ArrayLike, power_w: ArrayLike, gain: ArrayLike, noise_psd_w_per_hz: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Received power ``p g``, noise power ``B N0`` and their validated broadcast."""
    b = _finite_array(bandwidth_hz, "bandwidth_hz")
    p = _finite_array(power_w, "power_w")
    g = _finite_array(gain, "gain")
    n0 = _finite_array(noise_psd_w_per_hz, "noise_psd_w_per_hz")
    if np.any(n0 <= 0):
        raise ValueError(f"noise_psd_w_per_hz must be > 0, got {noise_psd_w_per_hz!r}")
    received_w, noise_w = np.broadcast_arrays(p * g, b * n0)
    return received_w, noise_w, np.broadcast_to(b, received_w.shape)


def shannon_rate_bps(
    bandwidth_hz: ArrayLike, power_w: ArrayLike, gain: ArrayLike, noise_psd_w_per_hz: ArrayLike
) -> np.ndarray:
    """Shannon capacity ``B log2(1 + p g / (B N0))`` of an AWGN link in bit/s.

    Args:
        bandwidth_hz: Bandwidth ``B`` in Hz, ``>= 0`` (0 gives rate 0).
        power_w: Transmit power ``p`` in watts, ``>= 0``.
        gain: Channel power gain ``g`` (linear), ``>= 0``.
        noise_psd_w_per_hz: Noise power spectral density ``N0`` in W/Hz, ``> 0``.

    Returns:
        Rate in bit/s, the broadcast shape of the arguments.
    """
    received_w, noise_w, b = _snr(bandwidth_hz, power_w, gain, noise_psd_w_per_hz)
    return _rate(received_w, noise_w, b)


def _rate(received_w: np.ndarray, noise_w: np.ndarray, b: ArrayLike) -> np.ndarray:
    """Shannon rate on validated, broadcast inputs."""
    snr = np.divide(received_w, noise_w, out=np.zeros(np.shape(received_w)), where=noise_w > 0)
    # log1p keeps the low-SNR regime (cell edge, deep fades) accurate.
    return b * np.log1p(snr) / _LN2


def packet_error_probability(
    power_w: ArrayLike,
    gain: ArrayLike,
    bandwidth_hz: ArrayLike,
    noise_psd_w_per_hz: ArrayLike,
    waterfall: float = 0.023,
) -> np.ndarray:
    """Packet error probability ``q = 1 - exp(-m B N0 / (p g))`` (Chen et al., IEEE TWC 2021).

    Args:
        power_w: Transmit power ``p`` in watts, ``>= 0``.
        gain: Channel power gain ``g`` (linear), ``>= 0``.
        bandwidth_hz: Bandwidth ``B`` in Hz, ``>= 0``.
        noise_psd_w_per_hz: Noise power spectral density ``N0`` in W/Hz, ``> 0``.
        waterfall: Waterfall threshold ``m`` (linear), ``> 0``.

    Returns:
        ``q`` in ``[0, 1]``; 1 wherever nothing is received (``p g = 0``).
    """
    check_positive("waterfall", waterfall)
    received_w, noise_w, _ = _snr(bandwidth_hz, power_w, gain, noise_psd_w_per_hz)
    return _packet_error(received_w, noise_w, waterfall)


def _packet_error(received_w: np.ndarray, noise_w: ArrayLike, waterfall: float) -> np.ndarray:
    """Packet error probability on validated inputs."""
    inverse_snr = np.divide(
        waterfall * noise_w,
        received_w,
        out=np.full(np.shape(received_w), np.inf),
        where=received_w > 0,
    )
    # -expm1(-x) is 1 - exp(-x) without cancellation at high SNR; exp(-inf) = 0 gives q = 1.
    return -np.expm1(-inverse_snr)


# -- configuration -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WirelessConfig:
    """Physical parameters of the cell; every number carries its unit in its name.

    Attributes:
        cell_radius_m: Radius of the cell around the BS.
        min_distance_m: Closest a device is placed to the BS; also the shortest distance the path
            loss model is evaluated at (a device walking past the BS is not given infinite gain).
        edge_fraction: Fraction of the devices (rounded to a whole number) placed uniformly in
            area in the outer ring ``[edge_inner_radius_m, cell_radius_m]`` instead of the whole
            annulus; 0 places everyone uniformly, 1 makes a cell-edge-heavy deployment.
        edge_inner_radius_m: Inner radius of that outer ring, in ``[min_distance_m,
            cell_radius_m)`` (checked when ``edge_fraction > 0``).
        speed_min_mps: Lowest random-waypoint speed; with ``speed_max_mps = 0`` devices are static.
            Keep it above 0 for mobile devices: one that draws a speed near 0 takes very long to
            reach its waypoint (the known speed decay of the random-waypoint model).
        speed_max_mps: Highest random-waypoint speed.
        round_interval_s: Time ``T`` between two rounds (mobility step and fading correlation).
        path_loss_intercept_db: Path loss at 1 km.
        path_loss_slope_db: Path loss per decade of distance.
        shadowing_std_db: Standard deviation of the log-normal shadowing.
        shadowing_decorrelation_m: Distance over which the shadowing of a moving device
            decorrelates (Gudmundson's exponential model, ``exp(-moved / this)``); static devices
            keep their shadowing.
        num_antennas: BS receive antennas ``N`` (maximum-ratio combining).
        doppler_hz: Maximum Doppler frequency ``f_d`` of the fading. The default 0.1 Hz (nearly
            static devices, slowly moving scatterers) gives ``rho = J0(2 pi 0.1 * 1) = 0.90``, so
            the channel of the last round says something about the next; pedestrian Doppler at
            2 GHz (about 5 Hz) makes rounds one second apart practically independent.
        num_subchannels: Orthogonal sub-channels ``M``; at most ``M`` devices upload per round.
        bandwidth_hz: Total uplink bandwidth ``B``, split evenly among the sub-channels.
        noise_psd_dbm_per_hz: Thermal noise spectral density.
        noise_figure_db: BS receiver noise figure, added to the thermal noise.
        waterfall_threshold: ``m`` in the packet error model. Chen et al. (IEEE TWC 2021, Table I)
            list ``m = 0.023 dB``; like their model, the value 0.023 enters the exponent as is.
        p_max_dbm: Highest transmit power of a device.
        power_floor_w: A selected device given less power than this does not transmit (and
            therefore does not train either: it spends nothing that round).
        cpu_min_hz: Lowest device CPU frequency (drawn uniformly per device at reset).
        cpu_max_hz: Highest device CPU frequency.
        cycles_per_sample: CPU cycles ``C`` to process one training sample in a local step.
        effective_capacitance: ``kappa`` of the dynamic CPU power ``kappa f^3`` (J s^2 / cycle^3).
        deadline_s: Round deadline; a device whose compute plus upload time exceeds it is a
            straggler.
        battery_min_j: Lowest battery capacity (drawn uniformly per device at reset).
        battery_max_j: Highest battery capacity; equal to ``battery_min_j`` for identical devices.
        battery_floor_j: A device whose battery holds this much or less is exhausted: it is not
            available and cannot be selected.
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

    def __post_init__(self) -> None:
        for name in (
            "cell_radius_m",
            "min_distance_m",
            "edge_inner_radius_m",
            "round_interval_s",
            "path_loss_slope_db",
            "shadowing_decorrelation_m",
            "bandwidth_hz",
            "waterfall_threshold",
            "power_floor_w",
            "cpu_min_hz",
            "cpu_max_hz",
            "cycles_per_sample",
            "effective_capacitance",
            "deadline_s",
            "battery_min_j",
            "battery_max_j",
        ):
            check_positive(name, getattr(self, name))
        for name in (
            "speed_min_mps",
            "speed_max_mps",
            "shadowing_std_db",
            "doppler_hz",
            "noise_figure_db",
            "battery_floor_j",
        ):
            check_positive(name, getattr(self, name), allow_zero=True)
        check_real("edge_fraction", self.edge_fraction, low=0.0, high=1.0)
        for name in ("path_loss_intercept_db", "noise_psd_dbm_per_hz", "p_max_dbm"):
            check_real(name, getattr(self, name))
        check_int("num_antennas", self.num_antennas, minimum=1)
        check_int("num_subchannels", self.num_subchannels, minimum=1)
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
        """Gauss-Markov coefficient ``rho = J0(2 pi f_d T)`` between consecutive rounds."""
        return jakes_correlation(self.doppler_hz, self.round_interval_s)

    @property
    def mobile(self) -> bool:
        """Whether devices move (random waypoint)."""
        return self.speed_max_mps > 0.0


# -- records -----------------------------------------------------------------------------------


def _readonly(a: np.ndarray) -> np.ndarray:
    if isinstance(a, np.ndarray) and not a.flags.writeable and a.base is None:
        return a  # already a read-only array that owns its data: nothing can change it
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


def _view(a: np.ndarray) -> np.ndarray:
    # The cell replaces its arrays instead of writing into them, so a read-only view never
    # changes after it was handed out.
    v = a.view()
    v.setflags(write=False)
    return v


@dataclass(frozen=True, eq=False)
class UplinkReport:
    """What happened on the uplink in one round.

    Per-device arrays have shape ``(K,)``; they hold 0 / False for devices that were not selected
    (and the link quantities ``rate_bps``, ``packet_error_prob`` and all times and energies hold
    0 for selected devices that did not transmit).

    Attributes:
        selected: Devices asked to take part.
        transmitted: Selected devices whose power was at least ``power_floor_w``: they trained and
            started their upload. The others spent nothing.
        delivered: Updates that reached the BS: transmitted, not a straggler, battery not
            exhausted during the round, packet not lost.
        straggler: Transmitting devices whose compute plus upload time exceeds the deadline.
            Work stops at the deadline: a straggler spends energy up to the deadline and its
            update is lost.
        packet_lost: Uploads finished in time whose packet was lost (drawn with probability
            ``packet_error_prob``).
        battery_depleted: Transmitting devices whose battery ran out during the round: a device
            spends what it has (computing first, then transmitting), its update is lost and its
            battery is left at 0.
        channel_gain: Effective channel power gain ``g`` of the round.
        rate_bps: Uplink rate on the device's sub-channel.
        compute_time_s: Time spent on local training.
        compute_energy_j: Energy spent on local training.
        transmit_time_s: Time spent transmitting (``bits / rate`` for a completed upload; less
            when the deadline or the battery cut it short).
        transmit_energy_j: Energy spent transmitting, ``power * transmit_time_s``.
        latency_s: ``compute_time_s + transmit_time_s``; at most ``deadline_s``.
        packet_error_prob: Packet error probability of the upload.
        round_time_s: Duration of the round: ``min(deadline, max latency over transmitting
            devices)``, 0 if nobody transmitted. Because a round with a straggler waits for the
            deadline, it equals ``deadline_s`` whenever there is one.
    """

    selected: np.ndarray
    transmitted: np.ndarray
    delivered: np.ndarray
    straggler: np.ndarray
    packet_lost: np.ndarray
    battery_depleted: np.ndarray
    channel_gain: np.ndarray
    rate_bps: np.ndarray
    compute_time_s: np.ndarray
    compute_energy_j: np.ndarray
    transmit_time_s: np.ndarray
    transmit_energy_j: np.ndarray
    latency_s: np.ndarray
    packet_error_prob: np.ndarray
    round_time_s: float

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                object.__setattr__(self, f.name, _readonly(value))

    @property
    def energy_j(self) -> np.ndarray:
        """Total energy spent by each device, compute plus transmit."""
        return self.compute_energy_j + self.transmit_energy_j

    @property
    def num_delivered(self) -> int:
        return int(self.delivered.sum())


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
    """

    positions_m: np.ndarray
    shadowing_db: np.ndarray
    fading: np.ndarray
    cpu_hz: np.ndarray
    battery_j: np.ndarray
    battery_capacity_j: np.ndarray
    waypoints_m: np.ndarray
    speed_mps: np.ndarray

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, _readonly(getattr(self, f.name)))


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

    @property
    def distance_m(self) -> np.ndarray:
        """``(K,)`` link distance used by the path loss: ``max(|position|, min_distance_m)``."""
        radius = np.hypot(*self._require_state().positions_m.T)
        return np.maximum(radius, self.config.min_distance_m)

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
        """``(K,)`` linear gain ``10^(-(PL + shadowing) / 10)``, the mean of ``g / N``."""
        return np.power(10.0, -(self.path_loss_db + self._require_state().shadowing_db) / 10.0)

    @property
    def fading(self) -> np.ndarray:
        """``(K, N)`` complex small-scale fading, ``CN(0, 1)`` entries."""
        return _view(self._require_state().fading)

    @property
    def channel_gain(self) -> np.ndarray:
        """``(K,)`` effective power gain ``10^(-(PL + shadowing) / 10) ||h||^2`` (MRC)."""
        state = self._require_state()
        cached = self._gain_cache
        # The state's arrays are immutable and replaced, never written: identity is a safe key.
        if (
            cached is not None
            and cached[0] is state.fading
            and cached[1] is state.positions_m
            and cached[2] is state.shadowing_db
        ):
            return cached[3]
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
        if not np.iscomplexobj(fading):
            fading = _readonly(fading.astype(np.complex128))
            state = CellState(**{**_state_dict(state), "fading": fading})
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
        )

    def advance(self, rng: np.random.Generator) -> None:
        """Move on one round: random-waypoint mobility (with shadowing), then fading evolution.

        A device walks ``speed * round_interval_s`` towards its waypoint; one that reaches it
        stops there and draws a new waypoint (uniform in the annulus) and speed. Its shadowing
        follows Gudmundson's model ``s <- a s + sqrt(1 - a^2) sigma z``, ``a = exp(-moved / d_c)``.
        Fading follows ``h <- rho h + sqrt(1 - rho^2) e`` with ``e ~ CN(0, 1)``.

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
        rho = cfg.fading_correlation
        fading = rho * state.fading + math.sqrt(1.0 - rho**2) * self._complex_normal(rng)
        self._state = CellState(
            **{
                **_state_dict(state),
                "positions_m": positions_m,
                "waypoints_m": waypoints_m,
                "speed_mps": speed_mps,
                "shadowing_db": shadowing_db,
                "fading": fading,
            }
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
        count, limit = int(sel.sum()), self.config.num_subchannels
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
        self._state = CellState(**{**_state_dict(state), "battery_j": state.battery_j - spent})
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


def _uplink_arrays(
    cfg: WirelessConfig,
    sel: np.ndarray,
    power: np.ndarray,
    size_bits: np.ndarray,
    steps: np.ndarray,
    batch_size: int,
    channel_gain: np.ndarray,
    cpu_hz: np.ndarray,
    battery: np.ndarray,
    draws: np.ndarray,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The arithmetic of :meth:`WirelessCell.uplink`, element by element on arrays of one shape
    (``(K,)`` for one cell, ``(E, K)`` for E cells of one config): the report's arrays, the new
    batteries and the largest latency of each row. ``draws`` are the packet-loss uniforms."""
    transmitted = sel & (power >= cfg.power_floor_w)
    p = np.where(transmitted, power, 0.0)
    gain = np.where(sel, channel_gain, 0.0)
    b_m, n0 = cfg.subchannel_bandwidth_hz, cfg.noise_psd_w_per_hz
    # p and gain are checked above and by the cell's state, B and N0 by the config.
    received_w, noise_w = p * gain, b_m * n0
    rate = np.where(transmitted, _rate(received_w, noise_w, b_m), 0.0)
    q = np.where(transmitted, _packet_error(received_w, noise_w, cfg.waterfall_threshold), 0.0)

    # Time and energy the whole job needs; an upload at rate 0 never finishes.
    cycles = np.where(transmitted, cfg.cycles_per_sample * batch_size * steps, 0.0)
    compute_need_s = cycles / cpu_hz
    compute_need_j = cfg.effective_capacitance * cycles * cpu_hz**2
    compute_power_w = cfg.effective_capacitance * cpu_hz**3
    needs_air = transmitted & (size_bits > 0)
    with np.errstate(over="ignore"):  # a rate so small the time overflows is an inf time
        transmit_need_s = np.divide(
            size_bits, rate, out=np.where(needs_air, np.inf, 0.0), where=needs_air & (rate > 0)
        )
    deadline = cfg.deadline_s
    straggler = transmitted & (compute_need_s + transmit_need_s > deadline)

    # Work stops at the deadline.
    compute_s = np.minimum(compute_need_s, deadline)
    compute_j = np.where(compute_need_s <= deadline, compute_need_j, compute_power_w * deadline)
    transmit_s = np.minimum(transmit_need_s, deadline - compute_s)
    transmit_j = p * transmit_s

    # A battery that cannot pay for all of it pays compute first, then as much airtime as is
    # left; the device then stops with an empty battery.
    depleted = transmitted & (compute_j + transmit_j > battery)
    short_compute = depleted & (compute_j >= battery)
    compute_s = np.where(
        short_compute,
        np.divide(battery, compute_power_w, out=np.zeros_like(battery), where=short_compute),
        compute_s,
    )
    compute_j = np.where(short_compute, battery, compute_j)
    left_j = battery - compute_j
    short_transmit = depleted & ~short_compute
    transmit_s = np.where(
        short_transmit,
        np.divide(left_j, p, out=np.zeros_like(p), where=short_transmit),
        np.where(short_compute, 0.0, transmit_s),
    )
    transmit_j = np.where(depleted, np.where(short_compute, 0.0, left_j), transmit_j)

    finished = transmitted & ~straggler & ~depleted
    packet_lost = finished & (draws < q)
    delivered = finished & ~packet_lost

    spent_j = compute_j + transmit_j
    new_battery = np.where(depleted, 0.0, np.maximum(battery - spent_j, 0.0))
    latency_s = compute_s + transmit_s
    fields = dict(
        selected=sel,
        transmitted=transmitted,
        delivered=delivered,
        straggler=straggler,
        packet_lost=packet_lost,
        battery_depleted=depleted,
        channel_gain=gain,
        rate_bps=rate,
        compute_time_s=compute_s,
        compute_energy_j=compute_j,
        transmit_time_s=transmit_s,
        transmit_energy_j=transmit_j,
        latency_s=latency_s,
        packet_error_prob=q,
    )
    return fields, new_battery, latency_s.max(axis=-1, initial=0.0)


def uplink_many(
    cells: list[WirelessCell],
    selected: list[np.ndarray],
    power_w: list[np.ndarray],
    bits: list[np.ndarray],
    local_steps: list[np.ndarray],
    batch_size: int,
    rngs: list[np.random.Generator],
) -> list[UplinkReport]:
    """:meth:`WirelessCell.uplink` of many cells on validated inputs (see
    :meth:`WirelessCell._uplink`), bit for bit, with one array computation for all of them.

    Every cell draws its packet-loss uniforms from its own generator, as alone; the arithmetic
    is element by element, so a cell's row of the stacked arrays is what it computes alone.
    Cells whose configs or sizes differ from the first's are computed one by one.
    """
    first = cells[0]
    if len(cells) > 1 and any(
        c.config != first.config or c.num_devices != first.num_devices for c in cells
    ):
        return [
            uplink_many([c], [s], [p], [b], [t], batch_size, [r])[0]
            for c, s, p, b, t, r in zip(
                cells, selected, power_w, bits, local_steps, rngs, strict=True
            )
        ]
    states = [c._require_state() for c in cells]
    draws = [rng.random(c.num_devices) for c, rng in zip(cells, rngs, strict=True)]
    if len(cells) == 1:
        stack = lambda arrays: arrays[0]  # noqa: E731
    else:
        stack = np.stack
    fields, new_battery, latency_max = _uplink_arrays(
        first.config,
        stack(selected),
        stack(power_w),
        stack(bits),
        stack(local_steps),
        batch_size,
        stack([c.channel_gain for c in cells]),
        stack([s.cpu_hz for s in states]),
        stack([s.battery_j for s in states]),
        stack(draws),
    )
    deadline = first.config.deadline_s
    reports = []
    for e, (cell, state) in enumerate(zip(cells, states, strict=True)):
        row = (lambda a: a) if len(cells) == 1 else (lambda a, e=e: a[e])
        cell._state = CellState(**{**_state_dict(state), "battery_j": row(new_battery)})
        reports.append(
            UplinkReport(
                **{name: row(value) for name, value in fields.items()},
                round_time_s=float(min(deadline, row(latency_max))),
            )
        )
    return reports


def _state_dict(state: CellState) -> dict[str, np.ndarray]:
    return {f.name: getattr(state, f.name) for f in fields(state)}



# -- calibration -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DrainSummary:
    """How fast full participation at full power empties the batteries.

    Attributes:
        rounds: Rounds simulated.
        compute_energy_j: Mean compute energy per transmitting device and round.
        transmit_energy_j: Mean transmit energy per transmitting device and round.
        max_energy_j: Largest energy one device spent in one round.
        mean_battery_j: Mean battery capacity.
        first_depletion_round: 0-based round at the end of which the first device was exhausted,
            ``None`` if none was.
        median_depletion_round: Round by the end of which half of the devices were exhausted,
            ``None`` if fewer were.
        depleted_fraction: Fraction of the devices exhausted at the end.
        straggler_fraction: Stragglers per transmission.
        packet_loss_fraction: Lost packets per transmission.
    """

    rounds: int
    compute_energy_j: float
    transmit_energy_j: float
    max_energy_j: float
    mean_battery_j: float
    first_depletion_round: int | None
    median_depletion_round: int | None
    depleted_fraction: float
    straggler_fraction: float
    packet_loss_fraction: float


def simulate_full_power(
    config: WirelessConfig | None = None,
    num_devices: int = 10,
    *,
    bits: float = 1.5e5,
    local_steps: int = 5,
    batch_size: int = 16,
    rounds: int = 100,
    rng: np.random.Generator,
) -> DrainSummary:
    """Run ``rounds`` rounds in which the available devices upload at ``p_max``.

    Every round selects up to ``num_subchannels`` available devices in round-robin order (all of
    them when ``num_devices <= num_subchannels``). Use it to calibrate battery sizes against an
    episode length.

    Args:
        config: Physical parameters (defaults if ``None``).
        num_devices: ``K``.
        bits: Upload size per device and round.
        local_steps: Local steps per round.
        batch_size: Samples per local step.
        rounds: Rounds to simulate.
        rng: Source of every draw.

    Returns:
        The :class:`DrainSummary`.
    """
    check_int("rounds", rounds, minimum=1)
    cell = WirelessCell(config, num_devices)
    cell.reset(rng)
    cfg, k = cell.config, num_devices
    compute = transmit = max_energy = 0.0
    transmissions = stragglers = lost = 0
    never = rounds  # marks a device that outlived the simulation
    depleted_at = np.full(k, never)
    for t in range(rounds):
        # Round robin: rotate a priority over the devices and take the first M available.
        priority = (np.arange(k) - t * cfg.num_subchannels) % k
        priority = np.where(cell.available, priority, k + np.arange(k))
        selected = np.zeros(k, dtype=bool)
        selected[np.argsort(priority, kind="stable")[: cfg.num_subchannels]] = True
        selected &= cell.available
        report = cell.uplink(selected, cfg.p_max_w, bits, local_steps, batch_size, rng)
        compute += float(report.compute_energy_j.sum())
        transmit += float(report.transmit_energy_j.sum())
        max_energy = max(max_energy, float(report.energy_j.max()))
        transmissions += int(report.transmitted.sum())
        stragglers += int(report.straggler.sum())
        lost += int(report.packet_lost.sum())
        depleted_at = np.where(~cell.available & (depleted_at == never), t, depleted_at)
        if not cell.available.any():
            break
        cell.advance(rng)
    per = max(transmissions, 1)
    ordered = np.sort(depleted_at)
    first, median = int(ordered[0]), int(ordered[(k - 1) // 2])
    return DrainSummary(
        rounds=t + 1,
        compute_energy_j=compute / per,
        transmit_energy_j=transmit / per,
        max_energy_j=max_energy,
        mean_battery_j=float(cell.battery_capacity_j.mean()),
        first_depletion_round=first if first < never else None,
        median_depletion_round=median if median < never else None,
        depleted_fraction=float(np.mean(depleted_at < never)),
        straggler_fraction=stragglers / per,
        packet_loss_fraction=lost / per,
    )


if __name__ == "__main__":
    summary = simulate_full_power(rng=np.random.default_rng(0))
    for f in fields(summary):
        print(f"{f.name:>24}: {getattr(summary, f.name)}")
