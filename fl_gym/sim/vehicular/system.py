"""Vehicle-to-vehicle (V2V) links sharing resource blocks, with per-transmitter queues.

The system of Samarakoon, Bennis, Saad and Debbah, "Distributed Federated Learning for
Ultra-Reliable Low-Latency Vehicular Communications" (IEEE Trans. Commun. 2020), written for
arrays of vehicles (every quantity has shape ``(K,)``, ``(K, N)`` or ``(K, K)``; nothing loops
over vehicles in Python):

* **Mobility.** ``layout="manhattan"``: streets every ``block_size_m`` metres in x and y on a
  square torus of side ``num_streets * block_size_m``; a vehicle drives along its street at its
  own speed and, at each intersection it crosses, turns left or right with probability
  ``turn_probability / 2`` each (the Manhattan mobility model). ``layout="freeway"``: a straight
  torus road of ``freeway_length_m`` with ``freeway_lanes`` lanes, half of them in each direction
  (see :data:`PRESETS`). Each of the K V2V pairs is a transmitter vehicle and a receiver
  following it at a fixed headway, drawn per pair in ``[pair_distance_min_m,
  pair_distance_max_m]``; the receiver is placed behind the transmitter along its heading, which
  keeps it on a street.
* **Path loss** (3GPP TR 36.885 Annex A.1.4, after WINNER+ B1; ``d`` in metres, ``f_c`` in GHz,
  effective antenna heights ``h' = antenna_height_m - 1 m``, breakpoint
  ``d_BP = 4 h'_t h'_r f_c / c``; distances below ``min_distance_m`` are raised to it)::

      PL_LOS(d) = 22.7 log10(d) + 41.0 + 20 log10(f_c / 5)                          d <= d_BP
                = 40.0 log10(d) + 9.45 - 17.3 log10(h'_t) - 17.3 log10(h'_r)
                  + 2.7 log10(f_c / 5)                                              d >  d_BP
      PL_NLOS(d1, d2) = min(PL_N(d1, d2), PL_N(d2, d1)),
      PL_N(a, b) = PL_LOS(a) + 20 - 12.5 n + 10 n log10(b) + 3 log10(f_c / 5),
      n = max(2.8 - 0.0024 a, 1.84)

  A link is line of sight (LOS) on the freeway always, and in the Manhattan grid when both ends
  are on the same street: ``|dy| < street_width_m / 2`` with the transmitter on a horizontal
  street, or ``|dx| < street_width_m / 2`` with it on a vertical street. Otherwise it is NLOS and
  ``d1 = |dx|``, ``d2 = |dy|`` are the two legs around the corner (differences on the torus).
* **Shadowing**: log-normal, standard deviation 3 dB (LOS) and 4 dB (NLOS), spatially
  correlated by Gudmundson's model: a unit-variance Gauss-Markov state per link with coefficient
  ``exp(-(moved by tx + moved by rx) / shadowing_decorrelation_m)``, scaled by the link's
  standard deviation.
* **Fading**: Rayleigh, independent per slot, link and resource block (the coherence time at
  5.9 GHz and 15 m/s is about one 1 ms slot), so ``|h|^2`` is unit-mean exponential.
* **Resource blocks**: N blocks of ``rb_bandwidth_hz`` each. Pair j on block ``b_j`` at power
  ``p_j`` gets ``SINR_j = p_j g_jj |h_jj,b_j|^2 / (N0 B + I_j)`` with co-channel interference
  ``I_j = sum_{i != j, b_i = b_j} p_i g_ij |h_ij,b_i|^2`` (pairs on other blocks add nothing)
  and rate ``R_j = B log2(1 + SINR_j)``.
* **Queues** (bits): ``Q(t+1) = max(Q(t) - R(t) dt, 0) + A(t)`` with ``A = packet_size_bits
  * Poisson(arrival_rate_packets_per_s * dt)``. The URLLC target is ``Pr(Q > q0) <= eps``; the
  exceedances ``X = Q - q0`` given ``Q > q0`` are modelled by a generalised Pareto distribution
  (:mod:`fl_gym.sim.vehicular.tail`) whose conditional mean and second moment must stay below those
  of the
  target GPD ``(tail_scale_target_bits, tail_shape_target)``.

A :class:`VehicularSystem` is used on its own like this::

    rng = np.random.default_rng(0)
    system = VehicularSystem(VehicularConfig())
    system.reset(rng)
    for _ in range(100):
        report = system.step(np.full(20, system.config.p_max_w), np.arange(20) % 10, rng)
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike

from fl_gym.sim.config import (
    MAX_VEHICLE_PAIRS,
    Range,
    check_choice,
    check_memory,
    check_ranges,
    check_rng,
    is_real,
    resolve_config,
)
from fl_gym.sim.radio.cell import dbm_to_w

__all__ = [
    "LAYOUTS",
    "PRESETS",
    "SlotReport",
    "VehicularConfig",
    "VehicularSystem",
    "los_path_loss_db",
    "make_vehicular_config",
    "nlos_path_loss_db",
]

LAYOUTS = ("manhattan", "freeway")
SPEED_OF_LIGHT_MPS = 299_792_458.0
_LN2 = math.log(2.0)
_HEADINGS = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
"""Unit vectors of the headings 0 (+x), 1 (+y), 2 (-x), 3 (-y)."""
_LINK_ARRAYS = 16
"""float64 ``(K, K)`` arrays a system holds or builds at once in a slot (for its memory
estimate)."""


# -- path loss ---------------------------------------------------------------------------------


def los_path_loss_db(
    distance_m: ArrayLike,
    carrier_frequency_hz: float = 5.9e9,
    effective_height_m: float = 0.5,
    min_distance_m: float = 3.0,
) -> np.ndarray:
    """LOS V2V path loss of 3GPP TR 36.885 (WINNER+ B1 with the V2V antenna heights), in dB.

    Args:
        distance_m: Link distances in metres (raised to ``min_distance_m``).
        carrier_frequency_hz: Carrier frequency ``f_c``.
        effective_height_m: Effective antenna height ``h'`` of both ends (height - 1 m).
        min_distance_m: Shortest distance the model is evaluated at.

    Returns:
        Path loss in dB, same shape as ``distance_m``.
    """
    d = np.maximum(np.asarray(distance_m, dtype=np.float64), min_distance_m)
    fc_ghz = carrier_frequency_hz / 1e9
    breakpoint_m = 4.0 * effective_height_m**2 * carrier_frequency_hz / SPEED_OF_LIGHT_MPS
    log_d = np.log10(d)
    near = 22.7 * log_d + 41.0 + 20.0 * math.log10(fc_ghz / 5.0)
    far = (
        40.0 * log_d
        + 9.45
        - 2.0 * 17.3 * math.log10(effective_height_m)
        + 2.7 * math.log10(fc_ghz / 5.0)
    )
    return np.where(d <= breakpoint_m, near, far)


def nlos_path_loss_db(
    leg1_m: ArrayLike,
    leg2_m: ArrayLike,
    carrier_frequency_hz: float = 5.9e9,
    effective_height_m: float = 0.5,
    min_distance_m: float = 3.0,
) -> np.ndarray:
    """NLOS (around one corner) V2V path loss of 3GPP TR 36.885 / WINNER+ B1, in dB.

    Args:
        leg1_m: Distance from one end to the corner, metres (raised to ``min_distance_m``).
        leg2_m: Distance from the corner to the other end, metres (raised likewise).
        carrier_frequency_hz: Carrier frequency ``f_c``.
        effective_height_m: Effective antenna height of both ends.
        min_distance_m: Shortest leg the model is evaluated at.

    Returns:
        ``min(PL_N(d1, d2), PL_N(d2, d1))`` in dB (the formula is in the module docstring).
    """
    d1 = np.maximum(np.asarray(leg1_m, dtype=np.float64), min_distance_m)
    d2 = np.maximum(np.asarray(leg2_m, dtype=np.float64), min_distance_m)
    extra = 20.0 + 3.0 * math.log10(carrier_frequency_hz / 1e9 / 5.0)

    def one_way(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        n = np.maximum(2.8 - 0.0024 * a, 1.84)
        los = los_path_loss_db(a, carrier_frequency_hz, effective_height_m, min_distance_m)
        return los + extra - 12.5 * n + 10.0 * n * np.log10(b)

    return np.minimum(one_way(d1, d2), one_way(d2, d1))


# -- configuration -----------------------------------------------------------------------------


@dataclass(frozen=True)
class VehicularConfig:
    """Parameters of the vehicular system; every number carries its unit in its name.

    Attributes:
        num_pairs: V2V transmitter-receiver pairs K. In [1, 10000].
        num_resource_blocks: Shared resource blocks N. In [1, 1000].
        layout: ``"manhattan"`` or ``"freeway"``.
        block_size_m: Manhattan: distance between parallel streets. In (0, 100000].
        num_streets: Manhattan: streets per axis; the torus has side ``num_streets *
            block_size_m``. In [1, 1000].
        street_width_m: Manhattan: width of a street (the LOS test of the module docstring).
            In (0, 100000].
        freeway_length_m: Freeway: length of the (torus) road. In (0, 1e+06].
        freeway_lanes: Freeway: number of lanes, the first half driving in +x. In [1, 100].
        lane_width_m: Freeway: distance between lane centres. In (0, 100].
        speed_min_mps: Lowest vehicle speed (drawn uniformly per vehicle at reset). In [0, 150].
        speed_max_mps: Highest vehicle speed. In (0, 150].
        turn_probability: Manhattan: probability of turning at an intersection (left and right
            equally likely). In [0, 1].
        pair_distance_min_m: Shortest transmitter-receiver headway. In (0, 10000].
        pair_distance_max_m: Longest transmitter-receiver headway. In (0, 10000].
        carrier_frequency_hz: Carrier frequency ``f_c``. In [1e+06, 1e+11].
        antenna_height_m: Antenna height of every vehicle (effective height is 1 m less).
            In (1, 100].
        min_distance_m: Shortest distance the path loss is evaluated at. In (0, 1000].
        shadowing_std_los_db: Shadowing standard deviation of LOS links. In [0, 30].
        shadowing_std_nlos_db: Shadowing standard deviation of NLOS links. In [0, 30].
        shadowing_decorrelation_m: Decorrelation distance of the shadowing. In (0, 1e+06].
        rb_bandwidth_hz: Bandwidth of one resource block ``B``. In [1, 1e+09].
        noise_psd_dbm_per_hz: Thermal noise spectral density. In [-250, 0].
        noise_figure_db: Receiver noise figure. In [0, 30].
        power_levels_dbm: Transmit powers a transmitter may pick besides silence (level 0 is
            0 W; level ``l >= 1`` is ``power_levels_dbm[l - 1]``), strictly increasing.
        slot_duration_s: Slot length ``dt``: one queue update, one fading draw, one move.
            In (0, 10].
        large_scale_interval_slots: Path loss, LOS state and shadowing of the ``(K, K)`` links
            are recomputed every this many slots (vehicles move every slot; 10 slots of 1 ms at
            17 m/s are 17 cm, far below the 10 m shadowing decorrelation distance). In [1, 100000].
        packet_size_bits: Bits per arriving packet. In (0, 1e+09].
        arrival_rate_packets_per_s: Mean packet arrival rate per transmitter (Poisson).
            In [0, 1e+09].
        queue_threshold_bits: ``q0``: a queue above it is an extreme event. In [1, 1e+12].
        tail_probability_target: ``eps`` of ``Pr(Q > q0) <= eps``. In (0, 1].
        tail_scale_target_bits: Scale ``sigma_th`` of the target GPD of the exceedances.
            In [1, 1e+12].
        tail_shape_target: Shape ``xi_th`` of the target GPD, in ``[0, 0.5)`` (the second moment
            must exist). In [0, 0.49].
    """

    num_pairs: int = 20
    num_resource_blocks: int = 10
    layout: str = "manhattan"
    block_size_m: float = 250.0
    num_streets: int = 4
    street_width_m: float = 14.0
    freeway_length_m: float = 2000.0
    freeway_lanes: int = 6
    lane_width_m: float = 4.0
    speed_min_mps: float = 10.0
    speed_max_mps: float = 17.0
    turn_probability: float = 0.5
    pair_distance_min_m: float = 10.0
    pair_distance_max_m: float = 40.0
    carrier_frequency_hz: float = 5.9e9
    antenna_height_m: float = 1.5
    min_distance_m: float = 3.0
    shadowing_std_los_db: float = 3.0
    shadowing_std_nlos_db: float = 4.0
    shadowing_decorrelation_m: float = 10.0
    rb_bandwidth_hz: float = 180e3
    noise_psd_dbm_per_hz: float = -174.0
    noise_figure_db: float = 9.0
    power_levels_dbm: tuple[float, ...] = (0.0, 6.0, 12.0, 18.0, 23.0)
    slot_duration_s: float = 1e-3
    large_scale_interval_slots: int = 10
    packet_size_bits: float = 1600.0
    arrival_rate_packets_per_s: float = 1000.0
    queue_threshold_bits: float = 8000.0
    tail_probability_target: float = 0.05
    tail_scale_target_bits: float = 2000.0
    tail_shape_target: float = 0.1

    RANGES: ClassVar[Mapping[str, Range]] = {
        "num_pairs": Range(1, MAX_VEHICLE_PAIRS, integer=True),
        "num_resource_blocks": Range(1, 1000, integer=True),
        "block_size_m": Range(0.0, 1e5, low_open=True),
        "num_streets": Range(1, 1000, integer=True),
        "street_width_m": Range(0.0, 1e5, low_open=True),
        "freeway_length_m": Range(0.0, 1e6, low_open=True),
        "freeway_lanes": Range(1, 100, integer=True),
        "lane_width_m": Range(0.0, 100.0, low_open=True),
        "speed_min_mps": Range(0.0, 150.0),
        "speed_max_mps": Range(0.0, 150.0, low_open=True),
        "turn_probability": Range(0.0, 1.0),
        "pair_distance_min_m": Range(0.0, 1e4, low_open=True),
        "pair_distance_max_m": Range(0.0, 1e4, low_open=True),
        "carrier_frequency_hz": Range(1e6, 1e11),
        "antenna_height_m": Range(1.0, 100.0, low_open=True),
        "min_distance_m": Range(0.0, 1e3, low_open=True),
        "shadowing_std_los_db": Range(0.0, 30.0),
        "shadowing_std_nlos_db": Range(0.0, 30.0),
        "shadowing_decorrelation_m": Range(0.0, 1e6, low_open=True),
        "rb_bandwidth_hz": Range(1.0, 1e9),
        "noise_psd_dbm_per_hz": Range(-250.0, 0.0),
        "noise_figure_db": Range(0.0, 30.0),
        "slot_duration_s": Range(0.0, 10.0, low_open=True),
        "large_scale_interval_slots": Range(1, 100_000, integer=True),
        "packet_size_bits": Range(0.0, 1e9, low_open=True),
        "arrival_rate_packets_per_s": Range(0.0, 1e9),
        "queue_threshold_bits": Range(1.0, 1e12),
        "tail_probability_target": Range(0.0, 1.0, low_open=True),
        "tail_scale_target_bits": Range(1.0, 1e12),
        "tail_shape_target": Range(0.0, 0.49),
    }
    """Documented plausible range of every numeric field (stated in its description)."""

    def __post_init__(self) -> None:
        check_choice("layout", self.layout, LAYOUTS)
        check_ranges(self, self.RANGES)
        # The (K, K) links: positions, distances, path loss, LOS, shadowing, gains and fading.
        check_memory(
            "num_pairs",
            self.num_pairs,
            _LINK_ARRAYS * 8 * self.num_pairs**2,
            "the (K, K) link arrays",
        )
        for low, high in (
            ("speed_min_mps", "speed_max_mps"),
            ("pair_distance_min_m", "pair_distance_max_m"),
        ):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(
                    f"{low} must be <= {high} ({getattr(self, high)!r}), got {getattr(self, low)!r}"
                )
        if self.street_width_m >= self.block_size_m:
            raise ValueError(
                f"street_width_m must be < block_size_m ({self.block_size_m!r}), "
                f"got {self.street_width_m!r}"
            )
        levels = self.power_levels_dbm
        items = tuple(levels) if isinstance(levels, (tuple, list, np.ndarray)) else ()
        valid = bool(items) and all(is_real(v) and -100.0 <= v <= 60.0 for v in items)
        valid = valid and all(a < b for a, b in itertools.pairwise(items))
        if not valid:
            raise ValueError(
                "power_levels_dbm must be a non-empty, strictly increasing sequence of numbers "
                f"in [-100, 60] dBm, got {levels!r}"
            )
        object.__setattr__(self, "power_levels_dbm", tuple(float(v) for v in items))

    # Derived values (cached: the environments read them every step).

    @functools.cached_property
    def power_levels_w(self) -> np.ndarray:
        """Power of each action level in watts; level 0 is silence (0 W)."""
        out = np.concatenate([[0.0], dbm_to_w(np.array(self.power_levels_dbm))])
        out.setflags(write=False)
        return out

    @property
    def num_power_levels(self) -> int:
        """Number of power levels, silence included."""
        return len(self.power_levels_dbm) + 1

    @functools.cached_property
    def p_max_w(self) -> float:
        """Highest transmit power in watts."""
        return float(self.power_levels_w[-1])

    @functools.cached_property
    def noise_power_w(self) -> float:
        """Noise power in one resource block, ``N0 B`` with the noise figure."""
        psd_dbm = self.noise_psd_dbm_per_hz + self.noise_figure_db
        return float(dbm_to_w(psd_dbm)) * self.rb_bandwidth_hz

    @property
    def effective_antenna_height_m(self) -> float:
        """TR 36.885's effective antenna height ``h' = h - 1 m``."""
        return self.antenna_height_m - 1.0

    @property
    def area_side_m(self) -> float:
        """Side of the Manhattan torus."""
        return self.num_streets * self.block_size_m

    @property
    def mean_arrival_bits_per_slot(self) -> float:
        """Mean bits arriving per transmitter and slot."""
        return self.packet_size_bits * self.arrival_rate_packets_per_s * self.slot_duration_s

    @property
    def tail_mean_target_bits(self) -> float:
        """Conditional-mean target of the exceedances, ``sigma_th / (1 - xi_th)``."""
        return self.tail_scale_target_bits / (1.0 - self.tail_shape_target)

    @property
    def tail_second_moment_target_bits2(self) -> float:
        """Second-moment target, ``2 sigma_th^2 / ((1 - xi_th)(1 - 2 xi_th))``."""
        xi = self.tail_shape_target
        return 2.0 * self.tail_scale_target_bits**2 / ((1.0 - xi) * (1.0 - 2.0 * xi))


PRESETS: dict[str, dict[str, Any]] = {
    "urban": {},
    "freeway": {
        "layout": "freeway",
        "speed_min_mps": 19.4,
        "speed_max_mps": 38.9,
        "pair_distance_min_m": 20.0,
        "pair_distance_max_m": 60.0,
    },
}
"""Named scenarios: ``"urban"`` (Manhattan grid, 36-61 km/h, the defaults) and ``"freeway"``
(6 lanes, 70-140 km/h, always LOS)."""


def make_vehicular_config(
    preset: str | None = None,
    overrides: Mapping[str, Any] | VehicularConfig | None = None,
) -> VehicularConfig:
    """A configuration from a preset and overrides.

    Args:
        preset: A name in :data:`PRESETS` or ``None`` (the defaults).
        overrides: A :class:`VehicularConfig` (used as is; beside a preset it is an error, the
            object being complete) or a dict of field overrides. Nested
            dicts are read as dotted keys (``{"a": {"b": 1}}`` is ``{"a.b": 1}``), which are never
            fields: every unknown key is an error naming it.

    Returns:
        The validated configuration.
    """
    return resolve_config(
        VehicularConfig(), preset, overrides, presets=PRESETS, family="the vehicular envs"
    )


# -- the system --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlotReport:
    """What happened in one slot, per pair (arrays of shape ``(K,)``).

    Attributes:
        power_w: Transmit power used.
        block: Resource block used.
        sinr: Signal to interference plus noise ratio (0 for silent pairs).
        interference_w: Co-channel interference at the receiver on its block.
        rate_bps: Shannon rate ``B log2(1 + SINR)``.
        served_bits: Bits that left the queue, ``min(Q, R dt)``.
        arrivals_bits: Bits that arrived at the end of the slot.
        queue_before_bits: Backlog at the start of the slot.
        queue_bits: Backlog after it, ``Q - served + arrivals``.
        exceedance_bits: ``max(queue_bits - q0, 0)``.
    """

    power_w: np.ndarray
    block: np.ndarray
    sinr: np.ndarray
    interference_w: np.ndarray
    rate_bps: np.ndarray
    served_bits: np.ndarray
    arrivals_bits: np.ndarray
    queue_before_bits: np.ndarray
    queue_bits: np.ndarray
    exceedance_bits: np.ndarray


class VehicularSystem:
    """K V2V pairs on N resource blocks: mobility, channels, interference and queues.

    After :meth:`reset`, :attr:`own_gain` holds each pair's channel gain on every block for the
    coming slot (known to the transmitter before it acts); :meth:`step` plays one slot with the
    chosen powers and blocks, draws the cross-link fading, updates the queues, then moves the
    vehicles and draws the next slot's channels.
    """

    def __init__(self, config: VehicularConfig | None = None) -> None:
        self.config = VehicularConfig() if config is None else config
        if not isinstance(self.config, VehicularConfig):
            raise TypeError(f"config must be a VehicularConfig, got {self.config!r}")
        self.num_pairs = self.config.num_pairs
        self._ready = False

    # -- state ---------------------------------------------------------------------------------

    def reset(self, rng: np.random.Generator) -> None:
        """Place the vehicles, empty the queues and draw the first slot's channels.

        Args:
            rng: The only source of randomness.
        """
        check_rng(rng)
        cfg, k = self.config, self.num_pairs
        if cfg.layout == "manhattan":
            side = cfg.area_side_m
            self.heading = rng.integers(0, 4, k)
            along = rng.uniform(0.0, side, k)
            street = rng.integers(0, cfg.num_streets, k) * cfg.block_size_m
            horizontal = self.heading % 2 == 0
            self.tx_m = np.stack(
                [np.where(horizontal, along, street), np.where(horizontal, street, along)], axis=1
            )
        else:
            lane = rng.integers(0, cfg.freeway_lanes, k)
            self.heading = np.where(lane < (cfg.freeway_lanes + 1) // 2, 0, 2)
            self.tx_m = np.stack(
                [rng.uniform(0.0, cfg.freeway_length_m, k), lane * cfg.lane_width_m], axis=1
            )
        self.speed_mps = rng.uniform(cfg.speed_min_mps, cfg.speed_max_mps, k)
        self.headway_m = rng.uniform(cfg.pair_distance_min_m, cfg.pair_distance_max_m, k)
        self.queue_bits = np.zeros(k)
        self.slot = 0
        self._shadowing_state = rng.standard_normal((k, k))
        self._moved_m = np.zeros(k)
        self.last_interference_w = np.zeros((k, cfg.num_resource_blocks))
        self._update_geometry()
        self._draw_fading(rng)
        self._ready = True

    @property
    def rx_m(self) -> np.ndarray:
        """Receiver positions ``(K, 2)``: the headway behind the transmitter, on the torus."""
        pos = self.tx_m - self.headway_m[:, None] * _HEADINGS[self.heading]
        return np.mod(pos, self._period)

    @property
    def _period(self) -> np.ndarray:
        cfg = self.config
        if cfg.layout == "manhattan":
            return np.array([cfg.area_side_m, cfg.area_side_m])
        return np.array([cfg.freeway_length_m, np.inf])

    def _update_geometry(self) -> None:
        """Path loss, LOS state and large-scale gain of every tx -> rx link ``(K, K)``."""
        cfg = self.config
        tx, rx = self.tx_m, self.rx_m
        period = self._period
        legs = []
        for axis in (0, 1):  # [i, j] = |rx_j - tx_i| on the torus, one axis at a time
            d = rx[None, :, axis] - tx[:, axis, None]
            if np.isfinite(period[axis]):
                d -= period[axis] * np.round(d / period[axis])
            legs.append(np.abs(d, out=d))
        dx, dy = legs
        h = cfg.effective_antenna_height_m
        pl = los_path_loss_db(np.hypot(dx, dy), cfg.carrier_frequency_hz, h, cfg.min_distance_m)
        if cfg.layout == "freeway":
            los = np.ones(dx.shape, dtype=bool)
        else:
            half = cfg.street_width_m / 2.0
            offset = np.mod(tx, cfg.block_size_m)
            on_street = np.minimum(offset, cfg.block_size_m - offset) < half  # (K, 2): x, y
            los = ((dy < half) & on_street[:, 1:2]) | ((dx < half) & on_street[:, 0:1])
            nlos = ~los
            pl[nlos] = nlos_path_loss_db(
                dx[nlos], dy[nlos], cfg.carrier_frequency_hz, h, cfg.min_distance_m
            )
        self.los = los
        self.path_loss_db = pl
        std = np.where(los, cfg.shadowing_std_los_db, cfg.shadowing_std_nlos_db)
        self.shadowing_db = std * self._shadowing_state
        self.large_scale_gain = np.power(10.0, -(pl + self.shadowing_db) / 10.0)

    def _draw_fading(self, rng: np.random.Generator) -> None:
        k, n = self.num_pairs, self.config.num_resource_blocks
        self.own_fading = rng.standard_exponential((k, n))
        # Fast fading is new every slot; the large-scale gains of all links (the own link
        # keeps its headway) are refreshed every ``large_scale_interval_slots``.
        self.own_gain = np.diagonal(self.large_scale_gain)[:, None] * self.own_fading

    # -- one slot ------------------------------------------------------------------------------

    def check_allocation(self, power_w: ArrayLike, block: ArrayLike) -> tuple[np.ndarray, ...]:
        """Validate per-pair powers (W, finite, in ``[0, p_max]``) and blocks (ints in 0..N-1)."""
        cfg, k = self.config, self.num_pairs
        p = np.asarray(power_w, dtype=np.float64)
        if p.shape != (k,):
            raise ValueError(f"power_w must have shape ({k},), got shape {p.shape}")
        bad = ~np.isfinite(p) | (p < 0.0) | (p > cfg.p_max_w * (1 + 1e-9))
        if np.any(bad):
            raise ValueError(
                f"power_w must be finite and in [0, {cfg.p_max_w:.6g}] W, got "
                f"{p[bad].tolist()} at {np.flatnonzero(bad).tolist()}"
            )
        b = np.asarray(block)
        if b.shape != (k,) or not np.issubdtype(b.dtype, np.integer):
            raise ValueError(
                f"block must be integers of shape ({k},), got dtype {b.dtype} shape {b.shape}"
            )
        n = cfg.num_resource_blocks
        if np.any((b < 0) | (b >= n)):
            raise ValueError(f"block entries must be in 0..{n - 1}, got {b.tolist()}")
        return p, b.astype(np.int64)

    def step(self, power_w: ArrayLike, block: ArrayLike, rng: np.random.Generator) -> SlotReport:
        """Play one slot, then move the vehicles and draw the next slot's channels.

        Args:
            power_w: ``(K,)`` transmit powers in watts, in ``[0, p_max]``.
            block: ``(K,)`` resource block of each pair, in ``0..N-1``.
            rng: The only source of randomness.

        Returns:
            The slot's report.
        """
        if not self._ready:
            raise RuntimeError("call reset() before step()")
        check_rng(rng)
        p, b = self.check_allocation(power_w, block)
        report = self._transmit(p, b, rng)
        self._advance(rng)
        return report

    def _transmit(self, p: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> SlotReport:
        cfg, k = self.config, self.num_pairs
        n = cfg.num_resource_blocks
        pairs = np.arange(k)
        # Cross-link fading only on the block each transmitter uses: (K, K), not (K, K, N).
        cross_fading = rng.standard_exponential((k, k))
        received = p[:, None] * self.large_scale_gain * cross_fading  # [tx i, rx j]
        received[pairs, pairs] = 0.0
        onehot = np.zeros((k, n))
        onehot[pairs, b] = 1.0
        per_block = received.T @ onehot  # [rx j, block m]: sum over tx i on block m
        interference = per_block[pairs, b]
        signal = p * self.own_gain[pairs, b]
        sinr = signal / (cfg.noise_power_w + interference)
        rate = cfg.rb_bandwidth_hz * np.log1p(sinr) / _LN2
        before = self.queue_bits
        served = np.minimum(before, rate * cfg.slot_duration_s)
        lam = cfg.arrival_rate_packets_per_s * cfg.slot_duration_s
        arrivals = cfg.packet_size_bits * rng.poisson(lam, k)
        queue = before - served + arrivals
        self.queue_bits = queue
        self.last_interference_w = per_block
        self.slot += 1
        return SlotReport(
            power_w=p,
            block=b,
            sinr=sinr,
            interference_w=interference,
            rate_bps=rate,
            served_bits=served,
            arrivals_bits=arrivals.astype(np.float64),
            queue_before_bits=before,
            queue_bits=queue,
            exceedance_bits=np.maximum(queue - cfg.queue_threshold_bits, 0.0),
        )

    def _advance(self, rng: np.random.Generator) -> None:
        cfg = self.config
        moved = self.speed_mps * cfg.slot_duration_s
        self._move(moved, rng)
        self._moved_m += moved
        if self.slot % cfg.large_scale_interval_slots == 0:
            # Gudmundson: correlation exp(-distance moved / decorrelation distance) per link.
            rho = np.exp(
                -(self._moved_m[:, None] + self._moved_m[None, :]) / cfg.shadowing_decorrelation_m
            )
            innovation = rng.standard_normal(rho.shape)
            state = rho * self._shadowing_state
            state += np.sqrt(1.0 - rho**2) * innovation
            self._shadowing_state = state
            self._moved_m = np.zeros(self.num_pairs)
            self._update_geometry()
        self._draw_fading(rng)

    def _move(self, distance_m: np.ndarray, rng: np.random.Generator) -> None:
        cfg = self.config
        k = self.num_pairs
        if cfg.layout == "freeway":
            self.tx_m[:, 0] += distance_m * _HEADINGS[self.heading, 0]
            self.tx_m = np.mod(self.tx_m, self._period)
            return
        size = cfg.block_size_m
        axis = self.heading % 2
        sign = np.where(self.heading < 2, 1.0, -1.0)
        rows = np.arange(k)
        coord = self.tx_m[rows, axis]
        cell = coord / size
        next_crossing = np.where(sign > 0, np.floor(cell) + 1.0, np.ceil(cell) - 1.0) * size
        to_crossing = np.abs(next_crossing - coord)
        crosses = distance_m >= to_crossing
        draw = rng.uniform(size=k)  # drawn for everyone: the stream does not depend on crossings
        turn = crosses & (draw < cfg.turn_probability)
        left = draw < cfg.turn_probability / 2.0
        new_heading = np.where(
            turn, np.where(left, self.heading + 1, self.heading + 3) % 4, self.heading
        )
        # Straight on (or no crossing): move along the street. Turning: go to the intersection,
        # then the rest of the way along the new street.
        straight = self.tx_m.copy()
        straight[rows, axis] = coord + sign * distance_m
        turned = self.tx_m.copy()
        turned[rows, axis] = next_crossing
        turned += (distance_m - to_crossing)[:, None] * _HEADINGS[new_heading]
        self.tx_m = np.mod(np.where(turn[:, None], turned, straight), cfg.area_side_m)
        self.heading = new_heading

    # -- helpers for observations ----------------------------------------------------------------

    def rates_bps(self, power_w: ArrayLike, interference_w: ArrayLike) -> np.ndarray:
        """Rate on every block at the given powers against the given interference ``(K, N)``."""
        p = np.asarray(power_w, dtype=np.float64)
        p = p[:, None] if p.ndim == 1 else p
        sinr = p * self.own_gain / (self.config.noise_power_w + np.asarray(interference_w))
        return self.config.rb_bandwidth_hz * np.log1p(sinr) / _LN2
