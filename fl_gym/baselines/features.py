"""Decoding of a wireless FL observation back into physical units.

:class:`~fl_gym.envs.wireless_fl.env.WirelessFLEnv` scales every feature into ``[-5, 5]`` (its class
docstring has the table). The baselines need the quantities themselves (an SNR in dB, a staleness
in rounds), so the inverse scalings live here, in one place, keyed by the column names of
:data:`~fl_gym.envs.wireless_fl.env.DEVICE_FEATURES` and
:data:`~fl_gym.envs.wireless_fl.env.SERVER_FEATURES` rather than by hard-coded positions.

Both observation modes are read: the Dict observation and the flat one of ``obs_mode="flat"``
(split by the environment's layout, :func:`fl_gym.envs.obs_mode.flat_slices`), one observation
or a vector env's batch of either.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fl_gym.envs.obs_mode import flat_slices
from fl_gym.envs.wireless_fl.env import (
    ACCURACY_GAIN_SCALE,
    DEVICE_FEATURES,
    LOSS_SCALE,
    SERVER_FEATURES,
    SNR_SCALE_DB,
    STALENESS_SCALE_ROUNDS,
)

__all__ = [
    "LOSS_SCALE",
    "SNR_SCALE_DB",
    "STALENESS_SCALE_ROUNDS",
    "ObservationFeatures",
    "read_observation",
    "split_batch",
]

_DEVICE_COLUMN = {name: i for i, name in enumerate(DEVICE_FEATURES)}
_SERVER_ENTRY = {name: i for i, name in enumerate(SERVER_FEATURES)}
_LN2 = math.log(2.0)


@dataclass(frozen=True)
class ObservationFeatures:
    """One (unbatched) observation in physical units.

    Per-device arrays have shape ``(K,)``. Quantities the environment caps stay capped: a
    staleness of 50 rounds means "50 or more", a loss of 5 means "5 or more".

    Attributes:
        snr_db: SNR each device would have at ``p_max`` on the current channel, dB.
        distance_fraction: Distance to the base station / cell radius.
        battery_fraction: Energy left / battery capacity.
        cpu_fraction: CPU frequency / ``cpu_max_hz``.
        staleness_rounds: Rounds since the device's update was last aggregated (integers).
        train_loss: The device's last local training loss (0 before it trains).
        available: The battery is not empty (the device may be selected).
        selected: The device was selected in the last round.
        delivered: The device's update was aggregated in the last round.
        data_share: The device's number of samples / the largest client's.
        round_fraction: Rounds played / ``max_rounds``.
        accuracy: Global test accuracy.
        test_loss: Global test loss.
        energy_spent_fraction: Energy spent by all devices so far / total battery capacity.
        round_time_fraction: Duration of the last round / deadline.
        available_share: Fraction of devices with energy left.
        accuracy_gain: Accuracy change in the last round.
    """

    snr_db: np.ndarray
    distance_fraction: np.ndarray
    battery_fraction: np.ndarray
    cpu_fraction: np.ndarray
    staleness_rounds: np.ndarray
    train_loss: np.ndarray
    available: np.ndarray
    selected: np.ndarray
    delivered: np.ndarray
    data_share: np.ndarray
    round_fraction: float
    accuracy: float
    test_loss: float
    energy_spent_fraction: float
    round_time_fraction: float
    available_share: float
    accuracy_gain: float

    @property
    def num_devices(self) -> int:
        return int(self.snr_db.shape[0])

    @property
    def is_first_round(self) -> bool:
        """Whether this is the observation of a fresh episode (no round played yet)."""
        return self.round_fraction == 0.0

    @property
    def spectral_efficiency(self) -> np.ndarray:
        """``(K,)`` Shannon spectral efficiency ``log2(1 + snr)`` at ``p_max``, bit/s/Hz.

        The rate on a sub-channel is this times the sub-channel bandwidth, which is the same for
        every device, so rankings by rate and by spectral efficiency agree.
        """
        # log1p keeps cell-edge devices (SNR far below 1) distinguishable instead of 0.
        return np.log1p(np.power(10.0, self.snr_db / 10.0)) / _LN2


def split_batch(observation: Any) -> list[dict[str, np.ndarray]] | None:
    """The observations of a batch (as stacked by a vector env), or ``None`` for a single one.

    Args:
        observation: A mapping with ``"devices"`` of shape ``(K, F)`` (one observation) or
            ``(n, K, F)`` (a batch) and ``"server"`` of shape ``(G,)`` or ``(n, G)``; or flat
            observations (``obs_mode="flat"``), an array of shape ``(D,)`` or ``(n, D)``.

    Returns:
        ``None`` if ``observation`` is a single observation, else the ``n`` observations.
    """
    devices, server = _arrays(observation)
    if devices.ndim == 2:
        return None
    if devices.ndim != 3 or server.ndim != 2 or server.shape[0] != devices.shape[0]:
        raise ValueError(
            "observation must hold 'devices' of shape (K, F) and 'server' of shape (G,), or a "
            f"batch of shapes (n, K, F) and (n, G); got {devices.shape} and {server.shape}"
        )
    return [{"devices": devices[i], "server": server[i]} for i in range(devices.shape[0])]


def read_observation(observation: Any, num_devices: int | None = None) -> ObservationFeatures:
    """Decode one observation of a wireless FL environment into physical units.

    Args:
        observation: A mapping with ``"devices"`` ``(K, len(DEVICE_FEATURES))`` and ``"server"``
            ``(len(SERVER_FEATURES),)``, or the flat array of ``obs_mode="flat"``
            (``(K * len(DEVICE_FEATURES) + len(SERVER_FEATURES),)``), as the environment
            returns it.
        num_devices: The K the observation must have, or ``None`` to accept any.

    Returns:
        The decoded features.
    """
    devices, server = _arrays(observation)
    expected_devices = (
        num_devices if num_devices is not None else devices.shape[0],
        len(DEVICE_FEATURES),
    )
    if devices.ndim != 2 or devices.shape != expected_devices:
        raise ValueError(
            f"observation['devices'] must have shape {expected_devices} (one observation; "
            f"columns {list(DEVICE_FEATURES)}), got shape {devices.shape}"
        )
    # An environment may append entries of its own after the family's (PrivateFL-v0's privacy
    # entries, fewer than a device row); the heuristics read the family's.
    if server.ndim == 1 and len(SERVER_FEATURES) < server.shape[0] < 2 * len(SERVER_FEATURES):
        server = server[: len(SERVER_FEATURES)]
    if server.shape != (len(SERVER_FEATURES),):
        raise ValueError(
            f"observation['server'] must have shape ({len(SERVER_FEATURES)},) (entries "
            f"{list(SERVER_FEATURES)}), got shape {server.shape}"
        )

    def column(name: str) -> np.ndarray:
        return devices[:, _DEVICE_COLUMN[name]]

    def entry(name: str) -> float:
        return float(server[_SERVER_ENTRY[name]])

    # Flags are stored as 0.0 / 1.0; > 0.5 reads them back whatever the float rounding.
    return ObservationFeatures(
        snr_db=column("snr_db") * SNR_SCALE_DB,
        distance_fraction=column("distance"),
        battery_fraction=column("battery"),
        cpu_fraction=column("cpu"),
        # Whole rounds: rint undoes the float32 rounding of k / 50, so equal ages compare equal.
        staleness_rounds=np.rint(column("staleness") * STALENESS_SCALE_ROUNDS).astype(np.int64),
        train_loss=column("train_loss") * LOSS_SCALE,
        available=column("available") > 0.5,
        selected=column("selected") > 0.5,
        delivered=column("delivered") > 0.5,
        data_share=column("data_share"),
        round_fraction=entry("round"),
        accuracy=entry("accuracy"),
        test_loss=entry("loss") * LOSS_SCALE,
        energy_spent_fraction=entry("energy_spent"),
        round_time_fraction=entry("round_time"),
        available_share=entry("available_share"),
        accuracy_gain=entry("accuracy_gain") / ACCURACY_GAIN_SCALE,
    )


def _arrays(observation: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(observation, np.ndarray):
        devices, server = _split_flat(observation)
    elif not isinstance(observation, Mapping) or not {"devices", "server"} <= set(observation):
        raise TypeError(
            "observation must be a dict with keys 'devices' and 'server' or a flat array (the "
            f"observation of a wireless FL environment), got {type(observation).__name__}"
        )
    else:
        try:
            devices = np.asarray(observation["devices"], dtype=np.float64)
            server = np.asarray(observation["server"], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"observation entries must be numeric arrays, got {observation!r}"
            ) from exc
    if not (np.all(np.isfinite(devices)) and np.all(np.isfinite(server))):
        raise ValueError("observation holds NaN or infinite entries; allowed: finite numbers")
    return devices, server


def _split_flat(observation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``devices`` ``(..., K, F)`` and ``server`` ``(..., G)`` of flat observation(s)."""
    f, g = len(DEVICE_FEATURES), len(SERVER_FEATURES)
    size = observation.shape[-1] if observation.ndim else 0
    # Server entries an environment appends after the family's (fewer than a device row) are
    # kept with the server's.
    extra = (size - g) % f if size > g else 0
    if observation.ndim not in (1, 2) or size < g + extra + f or extra >= g:
        # Not a flat observation (nor a dict): the same TypeError as any other non-observation.
        raise TypeError(
            "observation must be a dict with keys 'devices' and 'server' or a flat array of "
            f"shape (K * {f} + {g},) or a batch (n, K * {f} + {g}) (the devices' columns "
            f"{list(DEVICE_FEATURES)} device by device, then server {list(SERVER_FEATURES)}), "
            f"got an array of shape {observation.shape}"
        )
    if observation.dtype.kind not in "biuf":
        raise TypeError(f"observation must be a numeric array, got dtype {observation.dtype}")
    k = (size - g - extra) // f
    slices = flat_slices((k, f), g + extra)
    flat = observation.astype(np.float64)
    lead = flat.shape[:-1]
    return flat[..., slices["devices"]].reshape(*lead, k, f), flat[..., slices["server"]]
