"""Federated learning with over-the-air (analog) aggregation: which devices transmit, how loud."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from fl_gym.envs.wireless_fl.config import WirelessFLConfig, apply_overrides
from fl_gym.envs.wireless_fl.env import WirelessFLEnv
from fl_gym.sim.plan import RoundPlan
from fl_gym.sim.radio.cell import dbm_to_w, w_to_dbm
from fl_gym.sim.rounds import OverTheAir, Transport
from fl_gym.sim.threads import DEFAULT_NUM_THREADS

__all__ = ["OverTheAirFLEnv"]

OTA_DEFAULTS: dict[str, Any] = {"wireless.num_antennas": 4}
"""What the over-the-air environment changes in :class:`WirelessFLConfig`'s defaults."""


class OverTheAirFLEnv(WirelessFLEnv):
    r"""Federated learning whose updates are summed by the channel itself, one round per step.

    ## Description

    The over-the-air variant of :class:`~fl_gym.envs.wireless_fl.env.WirelessFLEnv` after Yang,
    Jiang, Shi and Ding, "Federated Learning via Over-the-Air Computation" (IEEE TWC 2020): the
    selected devices train, then transmit their raw updates at the same time, one parameter per
    channel use over the whole band; the base station's N antennas (4 by default) combine the
    superposition with a receive beamformer designed for the selected set, and the estimate of
    the sample-weighted average, receiver noise included, updates the global model. A device far
    from the base station or in a fade forces everyone's zero-forcing scalars down and raises the
    error of the aggregate for all: selection trades participation against aggregation error.
    There is no sub-channel limit and no compression; a round's airtime is ``d / bandwidth``.

    ## Action Space

    ``Box(-1, 1, (K + 1,))``: K device scores (devices with a score > 0 and energy left
    transmit) and one power value mapping linearly in dBm to the per-device power budget
    ``P0`` in ``[power_min_dbm, p_max_dbm]``. Out-of-range values are clipped
    (``info["action_clipped"]``); NaN, wrong shapes and types raise.

    ## Observation Space, Rewards, Episode End, Arguments

    As :class:`~fl_gym.envs.wireless_fl.env.WirelessFLEnv` (the ``snr_db`` feature is the SNR of the
    device's channel summed over the antennas; ``obs_mode="flat"`` gives the same values as one
    1-D Box). ``info`` carries every
    :class:`~fl_gym.sim.plan.RoundReport` field, among them ``aggregation_mse`` (the analytic
    per-parameter error the channel added), ``delivered`` (the devices that transmitted) and
    ``channel_uses`` (``d``).

    ## Version History

    * v0: initial release.
    """

    def __init__(
        self,
        config: WirelessFLConfig | dict[str, Any] | None = None,
        preset: str | None = None,
        render_mode: str | None = None,
        device: str = "cpu",
        num_threads: int | None = DEFAULT_NUM_THREADS,
        obs_mode: str = "dict",
        **unexpected: Any,
    ) -> None:
        super().__init__(
            controls=("selection", "power"),
            config=config,
            preset=preset,
            render_mode=render_mode,
            device=device,
            num_threads=num_threads,
            obs_mode=obs_mode,
            **unexpected,
        )

    def default_config(self) -> WirelessFLConfig:
        return apply_overrides(WirelessFLConfig(), OTA_DEFAULTS)

    def _build_spaces(self) -> None:
        super()._build_spaces()
        self.action_space = spaces.Box(-1.0, 1.0, (self.config.num_devices + 1,), np.float32)

    def make_transport(self) -> Transport:
        """Over-the-air aggregation, each round's power budget the plan's (the action's last
        entry)."""
        return OverTheAir()

    def decode_action(self, action: Any) -> tuple[RoundPlan, dict[str, Any]]:
        """Scores and power budget -> plan; every selected device gets the budget ``P0``."""
        if self.federation is None:
            raise RuntimeError("call reset() before decoding actions")
        cfg = self.config
        box = self._check_box(action)
        info: dict[str, Any] = {"action_clipped": bool(np.any((box < -1.0) | (box > 1.0)))}
        box = np.clip(box, -1.0, 1.0)
        scores, power = box[:-1], float(box[-1])
        cell = self.federation.cell
        assert cell is not None
        wanted = scores > 0
        info["dropped_unavailable"] = np.flatnonzero(wanted & ~cell.available).tolist()
        selected = wanted & cell.available
        span = cfg.wireless.p_max_dbm - cfg.power_min_dbm
        p0_w = min(
            float(dbm_to_w(cfg.power_min_dbm + (power + 1.0) / 2.0 * span)), cfg.wireless.p_max_w
        )
        plan = RoundPlan(
            selected,
            cfg.default_local_steps,
            cfg.default_compression,
            np.full(self.num_devices, p0_w),
        )
        return plan, info

    def encode_plan(self, plan: RoundPlan) -> np.ndarray:
        """The action selecting ``plan.selected`` at the largest selected power budget."""
        cfg = self.config
        if not isinstance(plan, RoundPlan) or plan.num_clients != self.num_devices:
            raise ValueError(
                f"plan must be a RoundPlan for {self.num_devices} devices, got {plan!r}"
            )
        scores = np.where(plan.selected, 1.0, -1.0)
        if plan.power_w is None or not plan.selected.any():
            power = 1.0
        else:
            with np.errstate(divide="ignore"):
                p_dbm = float(w_to_dbm(max(float(plan.power_w[plan.selected].max()), 0.0)))
            span = cfg.wireless.p_max_dbm - cfg.power_min_dbm
            power = float(np.clip(2.0 * (p_dbm - cfg.power_min_dbm) / span - 1.0, -1.0, 1.0))
        return np.append(scores, power).astype(np.float32)
