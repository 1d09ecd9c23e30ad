"""Transmit-power heuristics: fixed maximum, fixed minimum and channel inversion.

Powers stay within the environment's action range ``[power_min_dbm, p_max_dbm]`` so that the
plan survives ``encode_plan`` / ``decode_action`` unchanged; the range and the dBm <-> W
conversion are the environment's codec's (:class:`~fl_gym.envs.wireless_fl.codec.WirelessFLCodec`).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from fl_gym.baselines.base import BaselinePolicy, EpisodeMemory
from fl_gym.baselines.features import ObservationFeatures

__all__ = ["ChannelInversionPower", "MaxPower", "MinPower"]

_POWER = frozenset({"power"})


class MaxPower(BaselinePolicy):
    """Every device transmits at ``p_max``: the fastest, most reliable and costliest upload.

    The fixed-power setting of most FL-over-wireless studies (e.g. Chen, Yang, Saad, Poor and
    Cui, "A Joint Learning and Communications Framework for Federated Learning over Wireless
    Networks", IEEE TWC 2021, as the upper end of their power range).
    """

    name: ClassVar[str] = "max-power"
    knobs: ClassVar[frozenset[str]] = _POWER

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)

    def _decide(self, features: ObservationFeatures, memory: EpisodeMemory) -> dict[str, Any]:
        return {"power": np.full(features.num_devices, self.codec.max_power_w)}


class MinPower(BaselinePolicy):
    """Every device transmits at ``power_min_dbm``, the lowest power the environment allows.

    The energy-saving extreme: slow uploads and many packet errors at the cell edge.
    """

    name: ClassVar[str] = "min-power"
    knobs: ClassVar[frozenset[str]] = _POWER

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)

    def _decide(self, features: ObservationFeatures, memory: EpisodeMemory) -> dict[str, Any]:
        return {"power": np.full(features.num_devices, self.codec.min_power_w)}


class ChannelInversionPower(BaselinePolicy):
    """Truncated channel inversion: each device's power makes its received SNR equal a target.

    With ``snr_db`` the SNR a device would have at ``p_max`` on the current channel (block
    fading: the upload sees this channel), the power that gives a received SNR of
    ``target_snr_db`` is ``p_dbm = p_max_dbm + target_snr_db - snr_db``. It is clipped to
    ``[power_min_dbm, p_max_dbm]``: devices too far away to reach the target transmit at
    ``p_max`` (below target), devices so close that the minimum power overshoots it transmit at
    ``power_min_dbm`` (above target); all others arrive at exactly the target. The classic
    power-control rule of fading channels (Goldsmith and Varaiya, "Capacity of fading channels
    with channel side information", IEEE Trans. Inf. Theory 1997) and the power scaling of
    over-the-air FL (Zhu, Wang and Huang, "Broadband Analog Aggregation for Low-Latency
    Federated Edge Learning", IEEE TWC 2020).

    Args:
        env: The environment.
        target_snr_db: Received SNR to aim for, dB. The default 10 dB gives 3.46 bit/s/Hz and,
            under the environment's packet error model ``q = 1 - exp(-0.023 / snr)``, a packet
            error probability of 0.23 %.
    """

    name: ClassVar[str] = "channel-inversion"
    knobs: ClassVar[frozenset[str]] = _POWER

    def __init__(self, env: gym.Env, *, target_snr_db: float = 10.0) -> None:
        super().__init__(env)
        ok = isinstance(target_snr_db, (int, float, np.integer, np.floating))
        if isinstance(target_snr_db, bool) or not ok or not math.isfinite(target_snr_db):
            raise ValueError(f"target_snr_db must be a finite number (dB), got {target_snr_db!r}")
        self.target_snr_db = float(target_snr_db)

    def _decide(self, features: ObservationFeatures, memory: EpisodeMemory) -> dict[str, Any]:
        # snr_db is the SNR at p_max: the power for the target is p_max's, shifted by the gap.
        _, max_dbm = self.codec.power_range_dbm
        return {
            "power": self.codec.clip_power_dbm_to_w(max_dbm + self.target_snr_db - features.snr_db)
        }
