"""RSS fingerprints generated from the radio model: the data of federated localisation.

A scenario is an ``area_m x area_m`` square with ``A`` access points (APs). The received signal
strength of AP ``a`` at position ``x`` is

    rss_a(x) = tx_power_dbm - PL(|x - ap_a|) + s_a(x) + noise,

with ``PL`` the log-distance path loss of :func:`fl_gym.sim.radio.channel.path_loss_db` (distance
clamped to ``min_distance_m``), ``s_a`` a zero-mean Gaussian random field with Gudmundson's
exponential correlation ``shadowing_std_db^2 exp(-d / correlation_distance_m)`` (one independent
field per AP, drawn once per scenario) and ``noise`` i.i.d. ``N(0, noise_std_db^2)`` per
measurement. The fields are sampled on a regular grid by circulant embedding (two fields per FFT)
and interpolated bilinearly between grid nodes.

Mobiles walk random-waypoint trajectories (uniform waypoints, constant speed, one measurement per
``sample_interval_s``), so each client's samples cover only the part of the area it walked
through: the clients' data are spatially non-IID. A held-out test set is drawn uniformly over the
whole area. Everything is seeded from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from fl_gym.sim.config import Range, check_int, check_ranges, check_rng
from fl_gym.sim.learning.data import FederatedDataset
from fl_gym.sim.radio.channel import path_loss_db

__all__ = [
    "LOCALIZATION_PRESETS",
    "LocalizationConfig",
    "LocalizationData",
    "LocalizationScenario",
    "gaussian_random_field",
    "make_localization_data",
]

RSS_SCALE_DB = 10.0
"""The DNN's input feature is ``(rss - rss at half the area's side) / RSS_SCALE_DB``."""


@dataclass(frozen=True)
class LocalizationConfig:
    """A localisation scenario: area, access points, radio model and mobiles.

    Attributes:
        area_m: Side of the square area, metres, in [1, 100000].
        num_aps: Access points ``A``, in [1, 64]; placed uniformly at random in the area.
        tx_power_dbm: AP transmit power, dBm, in [-50, 60].
        path_loss_intercept_db: Path loss at 1 km, dB, in [0, 300].
        path_loss_slope_db: Path loss per decade of distance (10 x exponent), dB, in [0, 100].
        min_distance_m: Distances below this count as this (the path-loss model's near field),
            in (0, 1000].
        shadowing_std_db: Standard deviation of the shadowing field, dB, in [0, 30].
        correlation_distance_m: Gudmundson decorrelation distance, metres, in (0, 100000].
        noise_std_db: Per-measurement noise standard deviation, dB, in [0, 30].
        field_grid_points: Grid nodes per side on which the shadowing is sampled, in [2, 1025].
        speed_mps: Walking speed of the mobiles, m/s, in (0, 1000].
        sample_interval_s: Time between two measurements of a mobile, s, in (0, 10000].
    """

    area_m: float = 50.0
    num_aps: int = 8
    tx_power_dbm: float = 20.0
    path_loss_intercept_db: float = 130.0
    path_loss_slope_db: float = 30.0
    min_distance_m: float = 1.0
    shadowing_std_db: float = 4.0
    correlation_distance_m: float = 5.0
    noise_std_db: float = 2.0
    field_grid_points: int = 65
    speed_mps: float = 1.0
    sample_interval_s: float = 1.0

    RANGES: ClassVar[Mapping[str, Range]] = {
        "area_m": Range(1.0, 1e5),
        "num_aps": Range(1, 64, integer=True),
        "tx_power_dbm": Range(-50.0, 60.0),
        "path_loss_intercept_db": Range(0.0, 300.0),
        "path_loss_slope_db": Range(0.0, 100.0),
        "min_distance_m": Range(0.0, 1000.0, low_open=True),
        "shadowing_std_db": Range(0.0, 30.0),
        "correlation_distance_m": Range(0.0, 1e5, low_open=True),
        "noise_std_db": Range(0.0, 30.0),
        "field_grid_points": Range(2, 1025, integer=True),
        "speed_mps": Range(0.0, 1000.0, low_open=True),
        "sample_interval_s": Range(0.0, 1e4, low_open=True),
    }
    """Documented range of every numeric field."""

    def __post_init__(self) -> None:
        check_ranges(self, self.RANGES)

    @property
    def grid_spacing_m(self) -> float:
        """Distance between two neighbouring nodes of the shadowing grid, metres."""
        return self.area_m / (self.field_grid_points - 1)

    @property
    def reference_rss_dbm(self) -> float:
        """Mean RSS at half the area's side from an AP: the DNN features' offset."""
        return self.tx_power_dbm - float(
            path_loss_db(
                max(self.area_m / 2, self.min_distance_m),
                self.path_loss_intercept_db,
                self.path_loss_slope_db,
            )
        )


LOCALIZATION_PRESETS: dict[str, LocalizationConfig] = {
    "indoor": LocalizationConfig(),
    "outdoor": LocalizationConfig(
        area_m=500.0,
        num_aps=8,
        tx_power_dbm=23.0,
        path_loss_intercept_db=128.1,
        path_loss_slope_db=37.6,
        min_distance_m=10.0,
        shadowing_std_db=8.0,
        correlation_distance_m=50.0,
        noise_std_db=2.0,
        speed_mps=10.0,
    ),
    "few-aps": LocalizationConfig(num_aps=3),
}
"""Named scenarios: an indoor-like 50 m hall, a 500 m outdoor cell (3GPP macro path loss, 8 dB
shadowing decorrelating over 50 m) and the hall with only three APs."""


def gaussian_random_field(
    num_fields: int,
    grid_points: int,
    spacing_m: float,
    std: float,
    correlation_distance_m: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Zero-mean Gaussian fields on a square grid with covariance ``std^2 exp(-d / d_corr)``.

    Circulant embedding: the grid is embedded in a torus of twice its side, whose covariance
    matrix is block-circulant and diagonalised by the 2-D FFT; one complex FFT of white noise
    scaled by the square root of the eigenvalues gives two independent fields (its real and
    imaginary parts). The embedding is exact (all eigenvalues non-negative) while ``d_corr`` is
    short against the grid's side: up to about a quarter of it (measured on a 65-node grid:
    exact at a quarter, negative eigenvalues from about a third). Longer correlations give small
    negative eigenvalues (at most 0.5% of the largest for ``d_corr`` 1.5 sides), which are
    clipped to zero: the covariance is then approximate. The presets' ``d_corr`` is a tenth.

    Args:
        num_fields: Number of independent fields.
        grid_points: Nodes per side ``G``.
        spacing_m: Distance between neighbouring nodes.
        std: Standard deviation of every node.
        correlation_distance_m: Decorrelation distance ``d_corr``.
        rng: Source of the white noise.

    Returns:
        ``(num_fields, G, G)`` float64 fields.
    """
    g = check_int("grid_points", grid_points, minimum=2)
    m = 2 * g
    lag = np.minimum(np.arange(m), m - np.arange(m)) * spacing_m
    distance = np.hypot(lag[:, None], lag[None, :])
    cov = std**2 * np.exp(-distance / correlation_distance_m)
    eigenvalues = np.maximum(np.fft.fft2(cov).real, 0.0)
    scale = np.sqrt(eigenvalues / (m * m))
    fields = []
    for _ in range((num_fields + 1) // 2):
        noise = rng.standard_normal((m, m)) + 1j * rng.standard_normal((m, m))
        z = np.fft.fft2(scale * noise)[:g, :g]
        fields += [z.real, z.imag]
    return np.stack(fields[:num_fields])


@dataclass(frozen=True, eq=False)
class LocalizationData:
    """What the mobiles recorded and the held-out test set, in physical units.

    Attributes:
        train_positions: ``(K, n, 2)`` positions of every client's samples, metres.
        train_rss: ``(K, n, A)`` their RSS vectors, dBm.
        test_positions: ``(T, 2)`` test positions, metres.
        test_rss: ``(T, A)`` test RSS vectors, dBm.
        scenario: The scenario the data come from.
    """

    train_positions: np.ndarray
    train_rss: np.ndarray
    test_positions: np.ndarray
    test_rss: np.ndarray
    scenario: LocalizationScenario

    @property
    def num_clients(self) -> int:
        return int(self.train_positions.shape[0])

    def features(self, rss_dbm: np.ndarray) -> np.ndarray:
        """The DNN's input: ``(rss - reference_rss_dbm) / RSS_SCALE_DB``, float32."""
        cfg = self.scenario.config
        return ((rss_dbm - cfg.reference_rss_dbm) / RSS_SCALE_DB).astype(np.float32)

    def targets(self, positions_m: np.ndarray) -> np.ndarray:
        """The DNN's output: position over the area's side, centred (in [-0.5, 0.5]), float32."""
        return (positions_m / self.scenario.config.area_m - 0.5).astype(np.float32)

    def positions(self, targets: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`targets`: metres."""
        return (np.asarray(targets, dtype=np.float64) + 0.5) * self.scenario.config.area_m

    def federated_dataset(self) -> FederatedDataset:
        """The regression data set of the FL pipeline: normalised RSS -> normalised position."""
        k, n, a = self.train_rss.shape
        x = self.features(self.train_rss.reshape(k * n, a))
        y = self.targets(self.train_positions.reshape(k * n, 2))
        indices = tuple(np.arange(i * n, (i + 1) * n, dtype=np.int64) for i in range(k))
        return FederatedDataset(
            x,
            y,
            indices,
            self.features(self.test_rss),
            self.targets(self.test_positions),
            2,
            "localization",
            task="regression",
        )

    def pooled(self) -> LocalizationData:
        """The same samples as one client (the centralised reference)."""
        k, n, a = self.train_rss.shape
        return replace(
            self,
            train_positions=self.train_positions.reshape(1, k * n, 2),
            train_rss=self.train_rss.reshape(1, k * n, a),
        )


class LocalizationScenario:
    """One drawn scenario: AP positions and shadowing fields.

    Args:
        config: The scenario's configuration.
        rng: Draws the APs' positions and the shadowing fields.
    """

    def __init__(self, config: LocalizationConfig, rng: np.random.Generator) -> None:
        if not isinstance(config, LocalizationConfig):
            raise TypeError(f"config must be a LocalizationConfig, got {type(config).__name__}")
        rng = check_rng(rng)
        self.config = config
        self.ap_positions = rng.uniform(0.0, config.area_m, (config.num_aps, 2))
        self.shadowing_db = gaussian_random_field(
            config.num_aps,
            config.field_grid_points,
            config.grid_spacing_m,
            config.shadowing_std_db,
            config.correlation_distance_m,
            rng,
        )

    def mean_rss_dbm(self, positions_m: np.ndarray) -> np.ndarray:
        """Path-loss mean RSS ``(..., A)`` of every AP at positions ``(..., 2)``, dBm."""
        cfg = self.config
        d = np.linalg.norm(positions_m[..., None, :] - self.ap_positions, axis=-1)
        return cfg.tx_power_dbm - path_loss_db(
            np.maximum(d, cfg.min_distance_m), cfg.path_loss_intercept_db, cfg.path_loss_slope_db
        )

    def shadowing_at(self, positions_m: np.ndarray) -> np.ndarray:
        """Shadowing ``(..., A)`` at positions ``(..., 2)``, bilinear between grid nodes, dB."""
        cfg = self.config
        g = cfg.field_grid_points
        u = np.clip(positions_m / cfg.grid_spacing_m, 0.0, g - 1.0)
        i0 = np.minimum(np.floor(u).astype(np.int64), g - 2)
        t = u - i0
        ix, iy = i0[..., 0], i0[..., 1]
        tx, ty = t[..., 0:1], t[..., 1:2]
        f = self.shadowing_db
        v00, v10 = f[:, ix, iy], f[:, ix + 1, iy]
        v01, v11 = f[:, ix, iy + 1], f[:, ix + 1, iy + 1]
        # (A, ...) -> (..., A)
        v00, v10, v01, v11 = (np.moveaxis(v, 0, -1) for v in (v00, v10, v01, v11))
        return (1 - tx) * ((1 - ty) * v00 + ty * v01) + tx * ((1 - ty) * v10 + ty * v11)

    def rss_dbm(self, positions_m: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        """Measured RSS ``(..., A)`` at positions ``(..., 2)``: mean + shadowing + noise.

        ``rng=None`` gives the noise-free RSS (the map itself).
        """
        rss = self.mean_rss_dbm(positions_m) + self.shadowing_at(positions_m)
        if rng is not None and self.config.noise_std_db > 0:
            rss = rss + self.config.noise_std_db * rng.standard_normal(rss.shape)
        return rss

    def random_waypoint(
        self, num_mobiles: int, num_samples: int, rng: np.random.Generator
    ) -> np.ndarray:
        """Positions ``(K, n, 2)`` of K mobiles walking random-waypoint paths, one row per sample.

        Each mobile starts at a uniform point, walks at ``speed_mps`` towards a uniform waypoint
        and draws a new one on arrival; it records a sample every ``sample_interval_s``.
        """
        k = check_int("num_mobiles", num_mobiles, minimum=1)
        n = check_int("num_samples", num_samples, minimum=1)
        cfg = self.config
        step = cfg.speed_mps * cfg.sample_interval_s
        position = rng.uniform(0.0, cfg.area_m, (k, 2))
        waypoint = rng.uniform(0.0, cfg.area_m, (k, 2))
        out = np.empty((k, n, 2))
        for t in range(n):
            out[:, t] = position
            remaining = np.full(k, step)
            # A mobile may reach several waypoints within one interval when the step is long.
            for _ in range(8):
                gap = waypoint - position
                dist = np.linalg.norm(gap, axis=1)
                arrive = dist <= remaining
                move = np.where(arrive, 1.0, remaining / np.maximum(dist, 1e-12))
                position = position + gap * move[:, None]
                remaining = np.where(arrive, remaining - dist, 0.0)
                if not arrive.any():
                    break
                fresh = rng.uniform(0.0, cfg.area_m, (k, 2))
                waypoint = np.where(arrive[:, None], fresh, waypoint)
        return out

    def sample(
        self,
        num_clients: int,
        samples_per_client: int,
        num_test: int,
        rng: np.random.Generator,
    ) -> LocalizationData:
        """Draw the mobiles' recorded fingerprints and a uniform test set.

        Args:
            num_clients: Mobiles ``K`` (one client each).
            samples_per_client: Samples ``n`` each mobile records along its path.
            num_test: Test points ``T``, uniform over the area.
            rng: Source of the trajectories, test points and measurement noise.

        Returns:
            The data set.
        """
        rng = check_rng(rng)
        positions = self.random_waypoint(num_clients, samples_per_client, rng)
        rss = self.rss_dbm(positions, rng)
        t = check_int("num_test", num_test, minimum=1)
        test_positions = rng.uniform(0.0, self.config.area_m, (t, 2))
        test_rss = self.rss_dbm(test_positions, rng)
        return LocalizationData(positions, rss, test_positions, test_rss, self)


def make_localization_data(
    config: LocalizationConfig | str,
    num_clients: int,
    samples_per_client: int,
    num_test: int,
    rng: np.random.Generator,
) -> LocalizationData:
    """A fresh scenario (from a config or preset name) and its data, from one generator."""
    if isinstance(config, str):
        if config not in LOCALIZATION_PRESETS:
            raise ValueError(
                f"unknown localization preset {config!r}; allowed: "
                f"{', '.join(LOCALIZATION_PRESETS)}"
            )
        config = LOCALIZATION_PRESETS[config]
    scenario = LocalizationScenario(config, rng)
    return scenario.sample(num_clients, samples_per_client, num_test, rng)
