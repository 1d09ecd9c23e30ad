"""Device selection for over-the-air aggregation (Yang, Jiang, Shi, Ding, IEEE TWC 2020).

These policies choose which devices join the analog superposition of
:class:`~fl_gym.envs.wireless_fl.over_the_air.OverTheAirFLEnv`. They need the channel vectors the
receive
beamformer sees, which the observation summarises only by their norm, so they read the channel
state of the environment they were built for (``env.unwrapped.federation.cell``): they are
full-channel-knowledge heuristics, as in the paper, where the base station knows the channels.
They read and never change it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from fl_gym.baselines.base import BaselinePolicy, EpisodeMemory
from fl_gym.baselines.features import ObservationFeatures
from fl_gym.sim.radio.over_the_air import (
    ota_channels,
    ota_mse,
    receive_beamformer,
    select_ota_devices,
)

__all__ = ["OTAAllDevices", "OTAGreedyChannel", "OTASparseSelection"]

_SELECTION = frozenset({"selection"})


class _OTASelection(BaselinePolicy):
    knobs: ClassVar[frozenset[str]] = _SELECTION
    over_the_air: ClassVar[bool] = True

    def _channels(self, available: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Indices, channels ``(n, N)`` and weights ``(n,)`` of the available devices."""
        federation = self.env.federation
        if federation is None:
            raise RuntimeError("reset the environment before asking the policy for actions")
        cell = federation.cell
        assert cell is not None
        ids = np.flatnonzero(available)
        channels = ota_channels(cell.large_scale_gain[ids], cell.fading[ids])
        return ids, channels, federation.data.client_sizes[ids].astype(np.float64)

    def _mask(self, ids: np.ndarray, chosen: np.ndarray, k: int) -> np.ndarray:
        mask = np.zeros(k, dtype=bool)
        mask[ids[chosen]] = True
        return mask


class OTAAllDevices(_OTASelection):
    """Every device with energy left joins the superposition (the paper's "all devices").

    The reference of Yang et al. (TWC 2020): the most data per round, at the price of an MSE set
    by the weakest channel among all devices.
    """

    name: ClassVar[str] = "ota-all"

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)

    def _decide(self, features: ObservationFeatures, memory: EpisodeMemory) -> dict[str, Any]:
        return {"selection": features.available.copy()}


class OTAGreedyChannel(_OTASelection):
    """The ``num_devices`` available devices with the largest ``||h_k||^2 / phi_k^2``.

    Each device's single-device receive gain bounds what it can contribute to the beamformer's
    max-min objective, so this keeps the devices that constrain the MSE least.

    Args:
        env: The over-the-air environment.
        num_devices: Devices to keep (default: half of K, at least 1).
    """

    name: ClassVar[str] = "ota-greedy-channel"

    def __init__(self, env: gym.Env, *, num_devices: int | None = None) -> None:
        super().__init__(env)
        k = self.env.num_devices
        if num_devices is None:
            num_devices = max(1, k // 2)
        if isinstance(num_devices, bool) or not isinstance(num_devices, (int, np.integer)):
            raise TypeError(f"num_devices must be an integer, got {num_devices!r}")
        if not 1 <= num_devices <= k:
            raise ValueError(f"num_devices must be in 1..{k}, got {num_devices}")
        self.num_devices = int(num_devices)

    def _decide(self, features: ObservationFeatures, memory: EpisodeMemory) -> dict[str, Any]:
        ids, channels, weights = self._channels(features.available)
        if ids.size == 0:
            return {"selection": np.zeros(features.num_devices, dtype=bool)}
        chosen = select_ota_devices(
            channels,
            weights,
            method="greedy_channel",
            num_devices=min(self.num_devices, ids.size),
        )
        return {"selection": self._mask(ids, chosen, features.num_devices)}


class OTASparseSelection(_OTASelection):
    """The largest set whose aggregation MSE meets a target (the paper's sparse selection).

    The paper maximises ``|S|`` subject to ``MSE(S) <= gamma`` by DC programming; the simulator's
    :func:`~fl_gym.sim.radio.over_the_air.select_ota_devices` approximates it by greedy removal of
    the
    device that attains the maximum in the MSE. The target is ``mse_target`` (the paper's
    ``gamma``, in its units) or, by default, the MSE of selecting every available device lowered
    by ``mse_reduction_db``, which adapts to the cell's scale.

    Args:
        env: The over-the-air environment.
        mse_target: Absolute MSE target ``gamma`` (> 0), or ``None`` for the relative target.
        mse_reduction_db: How far below the all-device MSE the relative target lies (>= 0 dB).
    """

    name: ClassVar[str] = "ota-sparse"

    def __init__(
        self,
        env: gym.Env,
        *,
        mse_target: float | None = None,
        mse_reduction_db: float = 10.0,
    ) -> None:
        super().__init__(env)
        for key, value in (("mse_target", mse_target), ("mse_reduction_db", mse_reduction_db)):
            if value is None and key == "mse_target":
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not np.isfinite(value)
            ):
                raise TypeError(f"{key} must be a finite number, got {value!r}")
        if mse_target is not None and mse_target <= 0:
            raise ValueError(f"mse_target must be > 0, got {mse_target}")
        if mse_reduction_db < 0:
            raise ValueError(f"mse_reduction_db must be >= 0, got {mse_reduction_db}")
        self.mse_target = mse_target
        self.mse_reduction_db = float(mse_reduction_db)

    def _decide(self, features: ObservationFeatures, memory: EpisodeMemory) -> dict[str, Any]:
        ids, channels, weights = self._channels(features.available)
        if ids.size == 0:
            return {"selection": np.zeros(features.num_devices, dtype=bool)}
        wireless = self.env.config.wireless
        # The design assumes the default budget P0 = p_max (the policy leaves power alone).
        power_w = self.codec.max_power_w
        noise_w = wireless.noise_psd_w_per_hz * wireless.bandwidth_hz
        target = self.mse_target
        if target is None:
            design = receive_beamformer(channels, weights, num_iterations=20, num_starts=1)
            full = ota_mse(
                channels, weights, design.beamformer, power_w=power_w, noise_power_w=noise_w
            )
            target = full * 10.0 ** (-self.mse_reduction_db / 10.0)
        chosen = select_ota_devices(
            channels,
            weights,
            method="sparse",
            power_w=power_w,
            noise_power_w=noise_w,
            mse_target=target,
            num_iterations=20,
        )
        return {"selection": self._mask(ids, chosen, features.num_devices)}
