"""Federated localisation: the wireless FL controls on an RSS-fingerprint positioning task."""

from __future__ import annotations

from typing import Any, ClassVar

from fl_gym.envs.wireless_fl.codec import CONTROLS
from fl_gym.envs.wireless_fl.config import (
    PRESETS,
    REWARD_MODES,
    WirelessFLConfig,
    apply_overrides,
)
from fl_gym.envs.wireless_fl.env import WirelessFLEnv
from fl_gym.sim.threads import DEFAULT_NUM_THREADS

__all__ = ["LOCALIZATION_DEFAULTS", "LOCALIZATION_ENV_PRESETS", "FederatedLocalizationEnv"]

LOCALIZATION_DEFAULTS: dict[str, Any] = {
    "dataset": "localization",
    "localization_scenario": "indoor",
    "target_accuracy": 0.95,
    "learning.hidden_units": (64, 64),
}
"""What the localisation environment changes in :class:`WirelessFLConfig`'s defaults: the data
set, and a DNN of two hidden layers of 64 (about as many parameters as the digits MLP, so an
update costs about as much airtime and energy)."""

LOCALIZATION_ENV_PRESETS: dict[str, dict[str, Any]] = {
    "indoor": {},
    "outdoor": {"localization_scenario": "outdoor"},
    "few-aps": {"localization_scenario": "few-aps"},
    **{mode: PRESETS[mode] for mode in REWARD_MODES if mode in PRESETS},
}
"""Named scenarios of ``fl_gym/FederatedLocalization-v0``: the scenarios of
:data:`~fl_gym.sim.localization.scenario.LOCALIZATION_PRESETS`, and the family's reward-mode
presets."""


class FederatedLocalizationEnv(WirelessFLEnv):
    r"""Federated localisation (FedLoc) over a wireless cell, one FL round per step.

    ## Description

    After Yin et al., "FedLoc: Federated learning framework for data-driven cooperative
    localization and location data processing" (IEEE OJSP 2020). Every device is a mobile that
    walked a random-waypoint path through an area with ``A`` access points and recorded RSS
    fingerprints with its position (:mod:`fl_gym.sim.localization.scenario`: log-distance path
    loss, spatially correlated log-normal shadowing with Gudmundson's exponential correlation,
    measurement noise); its data cover only where it walked, so the clients are spatially
    non-IID. The federation trains a DNN (two hidden ReLU layers of 64) that maps the RSS vector
    (dBm, offset and scaled) to the position (over the area's side, centred) by least squares;
    the test set is uniform over the area. The wireless side (cell, uplink, energy, deadline) is
    that of
    :class:`~fl_gym.envs.wireless_fl.env.WirelessFLEnv`, and the controller holds all four knobs
    (selection, power, compression, local steps), with the action layout of
    ``fl_gym/WirelessFL-v0``.

    The Gaussian-process localiser of :mod:`fl_gym.sim.localization.gp` (federated maximum
    likelihood of its hyperparameters) is not the model inside the round: its federated fit
    exchanges a handful of hyperparameter gradients, not model updates that compression and
    sub-channels shape; it is compared with the DNN in ``benchmarks/reproduce_localization.py``.

    ## Action Space

    ``Box(-1, 1, (3K + 1,))``: K selection scores, K powers, K compression levels and one
    local-step value, as in ``fl_gym/WirelessFL-v0``.

    ## Observation Space

    As :class:`~fl_gym.envs.wireless_fl.env.WirelessFLEnv`, with the task's metric in the
    ``accuracy`` and ``loss`` slots (regression has no accuracy):

    | server entry | meaning | scaling |
    | --- | --- | --- |
    | `accuracy` | score ``max(0, 1 - (RMSE / RMSE0)^2)`` (see below) | as is, in [0, 1] |
    | `loss` | test mean squared position error, in (area side)^2 | / 5, capped at 1 |
    | `accuracy_gain` | score change in the last round | x 10, clipped to [-5, 5] |

    RMSE0 is the error of always answering the test positions' mean: the score is the clipped
    coefficient of determination of the positions, a monotone function of the RMSE (RMSE =
    RMSE0 sqrt(1 - score) while the score is above 0). The devices' ``train_loss`` column is
    their local least-squares loss (/ 5, capped at 1).

    ## Rewards

    As :class:`~fl_gym.envs.wireless_fl.env.WirelessFLEnv` (``reward_mode`` and its presets),
    with the score in place of the accuracy; by default ``accuracy_weight * (score - previous
    score) - energy_weight_per_j * (energy, J) - time_weight_per_s * (round time, s)``
    (defaults 100, 20, 1), each term in ``info["reward_terms"]``. ``info`` also carries the
    errors in metres: ``rmse_m``, ``error_p50_m`` and ``error_p90_m`` (median and 90th
    percentile of the test position errors).

    ## Episode End

    Terminates when the score reaches ``target_accuracy`` (0.95 by default: an RMSE of about
    22% of RMSE0) or when no device has energy left; truncated after 100 rounds.

    ## Arguments

    As :class:`~fl_gym.envs.wireless_fl.env.WirelessFLEnv`, without ``controls``; presets
    ``"indoor"`` (50 m hall, 8 APs, the default), ``"outdoor"`` (500 m, 3GPP macro path loss,
    8 dB shadowing), ``"few-aps"`` (the hall with 3 APs) and the family's reward-mode presets.
    ``samples_per_device`` (60) and ``num_test_points`` (400) size the data.

    ## Version History

    * v0: initial release.
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = LOCALIZATION_ENV_PRESETS

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
            controls=CONTROLS,
            config=config,
            preset=preset,
            render_mode=render_mode,
            device=device,
            num_threads=num_threads,
            obs_mode=obs_mode,
            **unexpected,
        )

    def default_config(self) -> WirelessFLConfig:
        return apply_overrides(WirelessFLConfig(), LOCALIZATION_DEFAULTS)
