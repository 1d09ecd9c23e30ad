"""Federated learning with over-the-air (analog) aggregation: which devices transmit, how loud."""

from __future__ import annotations

from typing import Any

from fl_gym.envs.wireless_fl.codec import OverTheAirCodec
from fl_gym.envs.wireless_fl.config import WirelessFLConfig, apply_overrides
from fl_gym.envs.wireless_fl.env import WirelessFLEnv
from fl_gym.sim.rounds import Transport
from fl_gym.sim.threads import DEFAULT_NUM_THREADS
from fl_gym.sim.transports import BroadbandAnalog, CSOverTheAir, OverTheAir

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

    With ``preset="broadband"`` (``analog_scheme="broadband"``, one antenna, downlink on) the
    round is broadband analog aggregation instead (Zhu, Wang and Huang, "Broadband Analog
    Aggregation for Low-Latency Federated Edge Learning", IEEE TWC 2020): the band is split
    into 64 OFDM sub-carriers with independent Rayleigh fading, a device stays silent on the
    sub-carriers whose gain is below 0.1 (truncated channel inversion) and inverts the others,
    and the aligned receive power is tied to the power budget so that no device averages more
    than ``P0``; the time of the base station's model broadcast (``wireless.downlink``) is part
    of every round. With ``preset="cs-over-the-air"`` (``analog_scheme="compressive-sensing"``)
    it is compressive-sensing over-the-air aggregation (Amiri and Gunduz, "Machine Learning at
    the Wireless Edge: Distributed Stochastic Gradient Descent Over-the-Air", IEEE TSP 2020):
    each device keeps the 1% largest entries of its update plus its error-accumulation
    residual, all project them with one pseudo-random Gaussian matrix drawn for the round to
    ``s = d / 2`` measurements sent together with channel inversion to the weakest
    transmitting device at the budget (airtime ``s / bandwidth``), and the server recovers the
    largest ``s / 5`` entries of the sum by iterative hard thresholding
    (:class:`~fl_gym.sim.transports.cs_over_the_air.CSOverTheAir`). The registered v0 id keeps the
    beamforming scheme and no downlink.

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
    ``channel_uses`` (``d``; ``s`` with compressive sensing).

    ## Version History

    * v0: initial release.
    """

    analog = True

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

    def make_codec(self) -> OverTheAirCodec:
        """K scores and one power budget (:class:`~fl_gym.envs.wireless_fl.codec.OverTheAirCodec`);
        ``decode_action`` and ``encode_plan`` go through it."""
        return OverTheAirCodec(self.config)

    def make_transport(self) -> Transport:
        """Over-the-air aggregation, each round's power budget the plan's (the action's last
        entry): receive beamforming, broadband analog aggregation with
        ``analog_scheme="broadband"`` or compressive-sensing over-the-air with
        ``"compressive-sensing"``."""
        if self.config.analog_scheme == "broadband":
            return BroadbandAnalog()
        if self.config.analog_scheme == "compressive-sensing":
            return CSOverTheAir()
        return OverTheAir()
