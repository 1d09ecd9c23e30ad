"""The wireless federated-learning control environments (one class, five registered variants)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from numpy.typing import ArrayLike

from fl_gym.envs import snapshot as snapshots
from fl_gym.envs.human import HumanWindow, check_render_mode, ready_to_render
from fl_gym.envs.obs_mode import (
    Observation,
    check_obs_mode,
    flat_feature_names,
    flat_observation_space,
    flat_slices,
    flatten_observation,
)
from fl_gym.envs.snapshot import EnvSnapshot
from fl_gym.envs.wireless_fl.codec import CONTROLS, SelectionState, WirelessFLCodec, check_controls
from fl_gym.envs.wireless_fl.config import (
    PRESETS,
    TARGET_REQUIRED_MODES,
    WirelessFLConfig,
    apply_overrides,
    build_dataset,
    make_config,
)
from fl_gym.sim.config import field_names, reject_unknown_arguments
from fl_gym.sim.learning.federation import Federation, check_torch_device
from fl_gym.sim.localization.scenario import LOCALIZATION_PRESETS
from fl_gym.sim.plan import RoundPlan, RoundReport
from fl_gym.sim.radio.cell import WirelessCell
from fl_gym.sim.rounds import DigitalUplink, RoundPipeline, Transport, UpdateTransform
from fl_gym.sim.threads import DEFAULT_NUM_THREADS, check_num_threads, with_torch_threads

__all__ = [
    "CONTROLS",
    "DEVICE_FEATURES",
    "SERVER_FEATURES",
    "ServerQuantities",
    "WirelessFLEnv",
    "data_share",
    "observe_many",
    "scale_observation",
]

DEVICE_FEATURES = (
    "snr_db",
    "distance",
    "battery",
    "cpu",
    "staleness",
    "train_loss",
    "available",
    "selected",
    "delivered",
    "data_share",
)
"""Columns of ``obs["devices"]``; see the class docstring for units and scaling."""

SERVER_FEATURES = (
    "round",
    "accuracy",
    "loss",
    "energy_spent",
    "round_time",
    "available_share",
    "accuracy_gain",
)
"""Entries of ``obs["server"]``; see the class docstring for units and scaling."""

_OBS_BOUND = 5.0
SNR_SCALE_DB = 30.0
"""``snr_db`` column = SNR in dB / this."""
STALENESS_SCALE_ROUNDS = 50
"""``staleness`` column = rounds since the last aggregated update / this, capped at 1."""
LOSS_SCALE = 5.0
"""``train_loss`` column and ``loss`` entry = loss / this, capped at 1."""
ACCURACY_GAIN_SCALE = 10.0
"""``accuracy_gain`` entry = accuracy change x this."""


class WirelessFLEnv(gym.Env):
    r"""Federated learning over a wireless cell, one environment step per FL round.

    ## Description

    K devices hold private shards of a dataset and share one base station with M orthogonal
    uplink sub-channels. Every step is one FL round: the controller's action is decoded into a
    :class:`~fl_gym.sim.plan.RoundPlan` (which devices take part, their transmit power, their
    compression level, the local SGD steps), the selected devices really train the model from the
    current global weights (all of them in one batched computation), compress their updates and
    upload them through Rayleigh block fading; updates that miss the deadline, are lost to packet
    errors or run out of battery are dropped; the base station aggregates what arrived and the
    global model is tested. By default K = 10 devices share M = 5 sub-channels of 1 MHz and hold
    0.1-0.2 J each: uploading at full power every round empties the batteries within an
    episode, so the controller trades accuracy against energy and time.

    Each registered variant controls some knobs and leaves the others at documented defaults:

    | id | controls | action space |
    | --- | --- | --- |
    | `fl_gym/ClientSelection-v0` | selection | `Box(-1, 1, (K,))` scores |
    | `fl_gym/PowerControl-v0` | power | `Box(-1, 1, (K,))` |
    | `fl_gym/GradientCompression-v0` | compression | `MultiDiscrete([L] * K)` |
    | `fl_gym/AggregationFrequency-v0` | frequency | `Discrete(len(local_step_choices))` |
    | `fl_gym/WirelessFL-v0` | all four | `Box(-1, 1, (3K + 1,))` |

    ## Action Space

    * **selection**: a score per device; the devices with a score > 0 that are available (battery
      not empty) are selected, the M highest scores if more than M qualify (ties go to the lower
      index). Default when not controlled: round-robin, the M available devices that have gone
      longest without being selected.
    * **power**: ``a in [-1, 1]`` per device maps linearly in dBm to
      ``[power_min_dbm, p_max_dbm]`` (0 to 23 dBm by default). Default: ``p_max``.
    * **compression**: a level per device, an index into ``learning.compression_levels``
      (default ``("none", "topk:0.1", "qsgd:16", "sign")``). Default: ``default_compression``.
    * **frequency**: an index into ``local_step_choices`` (default ``(1, 2, 5, 10, 20)``), the
      local SGD steps of every selected device before the next aggregation. Default:
      ``default_local_steps`` (5).
    * The joint layout of ``WirelessFL-v0`` (and of any other combination of knobs) is the
      concatenation, in this order, of K selection scores, K power values, K compression values
      and 1 frequency value, all in ``[-1, 1]``; compression and frequency values are binned
      uniformly into their levels (``level = floor((a + 1) / 2 * L)``, capped at ``L - 1``).

    Box actions outside ``[-1, 1]`` are clipped (``info["action_clipped"]`` says so); NaN,
    infinite, wrongly shaped or wrongly typed actions raise ``ValueError`` / ``TypeError`` and
    leave the environment unchanged. Selecting an exhausted device through scores is not an
    error: it is dropped and listed in ``info["dropped_unavailable"]``.

    ## Observation Space

    ``Dict(devices=Box(-5, 5, (K, 10)), server=Box(-5, 5, (7,)))``, float32:

    | devices column | meaning | scaling |
    | --- | --- | --- |
    | `snr_db` | SNR at ``p_max`` on the current channel, dB | / 30, clipped to [-5, 5] |
    | `distance` | distance to the base station | / cell radius |
    | `battery` | energy left | / capacity |
    | `cpu` | CPU frequency | / ``cpu_max_hz`` |
    | `staleness` | rounds since the device's update was last aggregated | / 50, capped at 1 |
    | `train_loss` | its last training loss (0 before; 1 if it diverged) | / 5, capped at 1 |
    | `available` | battery not empty | 0 or 1 |
    | `selected` | selected in the last round | 0 or 1 |
    | `delivered` | its update was aggregated in the last round | 0 or 1 |
    | `data_share` | its number of samples | / the largest client's |

    | server entry | meaning | scaling |
    | --- | --- | --- |
    | `round` | rounds played | / ``max_rounds`` |
    | `accuracy` | global test accuracy | as is |
    | `loss` | global test loss (1 if NaN or infinite) | / 5, capped at 1 |
    | `energy_spent` | energy spent by all devices so far | / total battery capacity |
    | `round_time` | duration of the last round | / deadline |
    | `available_share` | fraction of devices with energy left | as is |
    | `accuracy_gain` | accuracy change in the last round | x 10, clipped to [-5, 5] |

    With ``obs_mode="flat"`` the same float32 values come as one ``Box(-5, 5, (10K + 7,))``:
    the ``devices`` matrix row-major (device 0's 10 columns, then device 1's, ...), then the 7
    server entries, for ``MlpPolicy``, rl-zoo3 and CleanRL. ``env.unwrapped.observation_slices``
    (``{"devices": slice(0, 10K), "server": slice(10K, 10K + 7)}``),
    ``observation_feature_names`` (``"devices[k].snr_db"``, ..., ``"server.round"``, ...) and
    ``dict_observation_space`` describe the layout in both modes (:mod:`fl_gym.envs.obs_mode`).
    SB3's ``check_env`` warns that the Dict mode's 2-D ``devices`` Box has an "unconventional
    shape": that shape is what lets the device-set policies treat devices as a set, so it stays;
    the flat mode is the form without the warning.

    ## Rewards

    ``config.reward_mode`` chooses the objective (the presets of the same names select the
    last three); each term is in ``info["reward_terms"]``:

    * ``"weighted"`` (default): ``accuracy_weight * (accuracy - previous accuracy) -
      energy_weight_per_j * (energy of all devices, J) - time_weight_per_s * (round duration,
      s)``, with defaults 100, 20 and 1.
    * ``"time-to-accuracy"`` (FAVOR, Wang et al. INFOCOM 2020): ``favor_base ** (accuracy -
      target_accuracy) - 1`` per round (Xi = 64 by default), which is above -1 and below 0
      until the target is reached, so fewer rounds to the target score more.
    * ``"energy-to-accuracy"``: ``-energy_weight_per_j * (energy of all devices, J)`` per round.
    * ``"accuracy-at-budget"``: ``accuracy_weight * (accuracy - previous accuracy)`` for every
      round within ``energy_budget_j`` / ``time_budget_s``; the round that overspends a budget
      earns 0 and ends the episode, so the return is the accuracy reached within the budget.

    In the two "to-accuracy" modes an episode that ends (battery exhaustion, ``max_rounds``)
    without reaching the target pays ``target_penalty()`` (``info["reward_terms"]
    ["target_missed"]``): ``max_rounds`` for time-to-accuracy, ``energy_weight_per_j`` times the
    total battery capacity plus 1 for energy-to-accuracy, so that no failed episode out-scores
    a successful one.

    ## Episode End

    Terminates when the test accuracy reaches ``target_accuracy`` (not in
    ``"accuracy-at-budget"``, which terminates when a budget is overspent instead) or when no
    device has energy left. The registered environments truncate after ``max_rounds`` (100)
    rounds through ``max_episode_steps``; in the ``"weighted"`` and ``"accuracy-at-budget"``
    modes the raw environment never truncates, in the two "to-accuracy" modes it truncates at
    ``max_rounds`` itself (charging the penalty).
    The episode also terminates when the global model diverges (its test loss or a parameter is
    NaN or infinite): that round's reward then carries the term
    ``diverged = -divergence_penalty`` (100 by default) and ``info["diverged"]`` is ``True``;
    both appear only in that round, so the observation space and the info of a run that does not
    diverge are unchanged.

    ## Arguments

    ``gym.make(id, config=None, preset=None, render_mode=None, device="cpu", num_threads=1,
    obs_mode="dict")``: ``config`` is a
    :class:`~fl_gym.envs.wireless_fl.config.WirelessFLConfig` or a dict of overrides (unknown keys
    are an
    error naming them), applied on top of the named ``preset`` (see
    :data:`~fl_gym.envs.wireless_fl.config.PRESETS`). ``reset(options={"config": ...})`` replaces
    the
    configuration for the coming episodes (same K and action layout required).
    ``render_mode="rgb_array"`` draws the cell and the accuracy curve (matplotlib, a core
    dependency); ``render_mode="human"`` shows that frame in a matplotlib window after every
    reset and step (without a display the frames are not shown, and the first one warns).
    ``num_threads`` is torch's intra-op thread count inside ``reset`` and ``step`` (the caller's
    count is restored after each; ``None`` leaves torch alone): one thread is fastest for these
    small tensors, see :mod:`fl_gym.sim.threads`. ``obs_mode`` is
    ``"dict"`` (the default) or ``"flat"`` (see Observation Space); anything else is a
    ``ValueError`` naming the allowed values.

    Stragglers (``learning.stragglers``): by default an update that misses ``deadline_s`` is
    lost (``"drop"``). With ``"stale"`` the straggler keeps computing and transmitting (the
    rest of its energy is charged to the round) and its update is aggregated ``tau`` rounds
    late with weight ``(1 + tau)^-a`` (FedAsync; ``staleness_exponent`` ``a``, 0.5; updates
    later than ``max_staleness`` rounds are dropped). With ``"coded"`` (``model="logreg"``
    only) every device uploads once, the first round it is selected, a random linear code of
    its data (``code_redundancy`` x its samples rows; its energy in that round's report, its
    time, spent before the round, in ``federation.coded_upload_time_s``)
    and the server runs each missing device's local steps on its coded data instead (CodedFedL,
    Prakash et al. 2020, simplified; see :mod:`fl_gym.sim.learning.coded`). The coded data are
    random projections of the raw data and leak far more about it than updates do: the scheme
    trades privacy for latency. The presets ``"stragglers"`` (``"stale"`` on a 1 MHz uplink
    with a 0.3 s deadline and half the devices at the cell edge) and ``"coded"`` (``"coded"``
    with logistic regression on a 200 kHz uplink with a 0.1 s deadline) set these up. The
    coded stand-ins are least-squares steps of the linear model; against cross-entropy clients
    they are a surrogate and need not beat dropping (the least-squares case is reproduced in
    ``docs/reproductions.md``).

    ## Snapshots

    ``snapshot()`` copies the whole state (model, client state, cell, bookkeeping, generator) in
    well under a step's time; ``restore(snapshot)`` goes back to it. Replaying the same actions
    after a restore gives the same trajectory bit for bit; reseeding ``np_random`` after it
    plays a fresh future from the same state (what planners and bounds need).

    ## Version History

    * v0: initial release.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array", "human"], "render_fps": 4}
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = PRESETS
    """The named scenarios ``preset=`` accepts."""

    def __init__(
        self,
        controls: tuple[str, ...] | list[str] = CONTROLS,
        config: WirelessFLConfig | dict[str, Any] | None = None,
        preset: str | None = None,
        render_mode: str | None = None,
        device: str = "cpu",
        num_threads: int | None = DEFAULT_NUM_THREADS,
        obs_mode: str = "dict",
        **unexpected: Any,
    ) -> None:
        self.obs_mode = check_obs_mode(obs_mode)
        controls = check_controls(controls)
        check_render_mode(render_mode, self.metadata)
        self.controls = controls
        self.config = make_config(preset, config, base=self.default_config(), presets=self.PRESETS)
        reject_unknown_arguments(type(self).__name__, unexpected, self.config, self._arguments())
        self.render_mode = render_mode
        self._window = HumanWindow(type(self).__name__, self.metadata["render_fps"])
        self.device = device
        check_torch_device(device)  # a clear error here, not at the first reset
        self.num_threads = check_num_threads(num_threads)
        self._build_spaces()
        self.federation: Federation | None = None
        self.pipeline = RoundPipeline(self.make_transport(), self.make_transforms())
        """The round's stages (:mod:`fl_gym.sim.rounds`), kept for the environment's life."""
        self._renderer: Any = None

    @classmethod
    def _arguments(cls) -> list[str]:
        """The keyword arguments the constructor takes (for the error on others)."""
        return [
            name
            for name, p in inspect.signature(cls.__init__).parameters.items()
            if name != "self" and p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        ]

    # -- spaces ------------------------------------------------------------------------------------

    def _build_spaces(self) -> None:
        cfg = self.config
        k = cfg.num_devices
        self.num_devices = k
        self._codec: WirelessFLCodec | None = None
        self.action_space = self.codec.action_space
        self._set_observation_layout(DEVICE_FEATURES, SERVER_FEATURES)

    def _set_observation_layout(
        self, device_features: Sequence[str], server_features: Sequence[str]
    ) -> None:
        """The observation spaces (dict and flat), slices and feature names of ``K`` rows of
        ``device_features`` and one vector of ``server_features``, all in [-5, 5]; a subclass
        that adds columns or entries calls it with its own names."""
        k = self.num_devices
        f, g = len(device_features), len(server_features)
        self.dict_observation_space = spaces.Dict(
            {
                "devices": spaces.Box(-_OBS_BOUND, _OBS_BOUND, (k, f), dtype=np.float32),
                "server": spaces.Box(-_OBS_BOUND, _OBS_BOUND, (g,), dtype=np.float32),
            }
        )
        # The flat layout is exposed in both modes (see fl_gym.envs.obs_mode).
        self.observation_slices = flat_slices((k, f), g)
        self.observation_feature_names = flat_feature_names(k, device_features, server_features)
        self.observation_space = (
            self.dict_observation_space
            if self.obs_mode == "dict"
            else flat_observation_space(self.dict_observation_space)
        )

    @property
    def codec(self) -> WirelessFLCodec:
        """This environment's action codec (:mod:`fl_gym.envs.wireless_fl.codec`): every rule
        between its actions and the :class:`RoundPlan` they play, for the environment and for
        every baseline. Rebuilt when the configuration changes (``reset(options=...)``)."""
        if self._codec is None or self._codec.config is not self.config:
            self._codec = self.make_codec()
        return self._codec

    def make_codec(self) -> WirelessFLCodec:
        """The codec of this environment's controls and configuration."""
        return WirelessFLCodec(self.config, self.controls)

    # -- gymnasium API -----------------------------------------------------------------------------

    @with_torch_threads
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Observation, dict[str, Any]]:
        unknown_options = set(options or {}) - {"config"}
        if unknown_options:
            raise ValueError(
                f"unknown reset option(s) {sorted(unknown_options)}; allowed: ['config']"
            )
        if options and "config" in options:
            new = options["config"]
            if not isinstance(new, WirelessFLConfig):
                new = apply_overrides(self.config, new)
            if self._layout(new) != self._layout(self.config):
                raise ValueError(
                    "reset(options={'config': ...}) must keep num_devices, the number of "
                    "compression levels and local_step_choices (they shape the spaces); "
                    "make a new environment to change them"
                )
            self._check_same_transport(new)
            self.config = new
        # Only now, once the options are valid: a failed reset must not reseed np_random.
        super().reset(seed=seed)
        rng = self.np_random
        data = build_dataset(self.config, rng)
        self.federation = Federation(
            data,
            self.config.learning,
            cell=WirelessCell(self.config.wireless, data.num_clients),
            rng=rng,
            device=self.device,
        )
        k = self.num_devices
        self._last_selected_round = np.full(k, -1, dtype=np.int64)
        self._last_report: RoundReport | None = None
        self._previous_accuracy = self.federation.accuracy
        self._energy_spent_j = 0.0
        self._elapsed_time_s = 0.0
        self._accuracy_history = [self.federation.accuracy]
        self._train_loss = np.zeros(k)
        self._data_share = data_share(data.client_sizes)
        observation, info = self.observe(), self._info(None, {}, {})
        if self.render_mode == "human":
            self.render()
        return observation, info

    @with_torch_threads
    def step(self, action: Any) -> tuple[Observation, float, bool, bool, dict[str, Any]]:
        if self.federation is None:
            raise RuntimeError("call reset() before step()")
        plan, decode_info = self.decode_action(action)
        self._before_round(decode_info)
        result = self._finish_step(self._play_round(plan), decode_info)
        if self.render_mode == "human":
            self.render()
        return result

    def _finish_step(
        self, report: RoundReport, decode_info: dict[str, Any], *, observe: bool = True
    ) -> tuple[Observation, float, bool, bool, dict[str, Any]]:
        """Everything a step does after the round: bookkeeping, reward, observation, info.

        With ``observe=False`` the observation is left out (an empty dict): the caller makes it
        with :func:`observe_many`."""
        assert self.federation is not None
        self._last_selected_round[report.selected] = report.round_index
        self._last_report = report
        self._train_loss = np.where(report.selected, report.train_loss, self._train_loss)
        self._energy_spent_j += float(report.energy_j.sum())
        self._accuracy_history.append(report.accuracy)
        self._elapsed_time_s += report.round_time_s
        cell = self.federation.cell
        assert cell is not None
        cfg = self.config
        reached = report.accuracy >= cfg.target_accuracy
        exhausted = not cell.available.any()
        truncated = False
        if cfg.reward_mode == "accuracy-at-budget":
            over_budget = (0 < cfg.energy_budget_j < self._energy_spent_j) or (
                0 < cfg.time_budget_s < self._elapsed_time_s
            )
            terminated = over_budget or exhausted
            reward, terms = self._budget_reward(report, over_budget)
        else:
            terminated = reached or exhausted
            if cfg.reward_mode in TARGET_REQUIRED_MODES and not terminated:
                # These modes end the episode at max_rounds themselves, to charge the penalty.
                truncated = report.round_index + 1 >= cfg.max_rounds
            failed = cfg.reward_mode in TARGET_REQUIRED_MODES and (
                (terminated or truncated) and not reached
            )
            reward, terms = self._reward(report, failed=failed)
        diverged = self.diverged
        if diverged:
            terms["diverged"] = -cfg.divergence_penalty
            reward -= cfg.divergence_penalty
            terminated, truncated = True, False
        self._previous_accuracy = report.accuracy
        obs = self.observe() if observe else {}
        info = self._info(report, terms, decode_info)
        if diverged:
            info["diverged"] = True
        return obs, reward, bool(terminated), truncated, info

    @property
    def diverged(self) -> bool:
        """Whether the global model has diverged: its test loss or a parameter is NaN or
        infinite (the episode then terminates with ``divergence_penalty``)."""
        fed = self.federation
        if fed is None:
            return False
        return not (math.isfinite(fed.loss) and math.isfinite(fed.params.sum().item()))

    analog: ClassVar[bool] = False
    """Whether the updates travel by analog aggregation (presets with an ``analog_scheme``)."""

    @classmethod
    def available_presets(cls) -> dict[str, dict[str, Any]]:
        """The :data:`~fl_gym.envs.wireless_fl.config.PRESETS` this environment accepts (those
        that choose an analog scheme only where the updates travel by analog aggregation)."""
        return {
            name: overrides
            for name, overrides in cls.PRESETS.items()
            if cls.analog or overrides.get("analog_scheme", "beamforming") == "beamforming"
        }

    def default_config(self) -> WirelessFLConfig:
        """This environment's defaults, which presets and ``config`` overrides apply to."""
        return WirelessFLConfig()

    def make_transport(self) -> Transport:
        """How this environment's updates reach the server: digital uploads on orthogonal
        sub-channels (:class:`~fl_gym.sim.transports.DigitalUplink`)."""
        if self.config.analog_scheme != "beamforming":
            raise ValueError(
                f"analog_scheme={self.config.analog_scheme!r} needs the over-the-air environment "
                "(fl_gym/OverTheAirFL-v0); this environment uploads digitally and allows only "
                "'beamforming' (the default)"
            )
        return DigitalUplink()

    def _check_same_transport(self, new: WirelessFLConfig) -> None:
        """Refuse a reset configuration under which :meth:`make_transport` picks another kind
        of transport: the environment's pipeline, and a native vector environment's, keep the
        transport they were built with."""
        old, current = self.config, self.pipeline.transport
        self.config = new
        try:
            transport = self.make_transport()
        finally:
            self.config = old
        if type(transport) is not type(current):
            raise ValueError(
                f"reset(options={{'config': ...}}) must keep the transport: this environment "
                f"uses {type(current).__name__} ({current.name!r}) and the new configuration "
                f"would need {type(transport).__name__} ({transport.name!r}); settings such as "
                "analog_scheme or over_the_air choose it, so make a new environment to change it"
            )

    def make_transforms(self) -> tuple[UpdateTransform, ...]:
        """The update transforms of this environment's rounds (none)."""
        return ()

    def _before_round(self, decode_info: dict[str, Any]) -> None:
        """Apply what a decoded action sets beyond its plan, just before the round runs (an
        environment whose action also picks the aggregation rule sets it here). Called by
        :meth:`step` and by the native vector environment; nothing by default."""

    def _after_round(self, plan: RoundPlan, report: RoundReport) -> None:
        """Bookkeeping of a subclass right after its round ran, before the step's reward and
        observation (privacy accounting, say). Called by :meth:`_play_round` and by the native
        vector environment; nothing by default."""

    def _play_round(self, plan: RoundPlan) -> RoundReport:
        """Carry the plan out: the round pipeline on a batch of one."""
        assert self.federation is not None
        report = self.pipeline.run([self.federation], [plan], [self.np_random], allow_empty=True)[0]
        self._after_round(plan, report)
        return report

    # -- action <-> plan ---------------------------------------------------------------------------

    def selection_state(self) -> SelectionState:
        """The devices' availability and selection history, as decoding needs them."""
        if self.federation is None:
            raise RuntimeError("call reset() before decoding actions")
        cell = self.federation.cell
        assert cell is not None
        return SelectionState(cell.available, self._last_selected_round)

    def decode_action(self, action: Any) -> tuple[RoundPlan, dict[str, Any]]:
        """Turn an action of this environment's space into a validated :class:`RoundPlan`
        (:meth:`WirelessFLCodec.decode <fl_gym.envs.wireless_fl.codec.WirelessFLCodec.decode>`
        with the current devices).

        Returns:
            The plan and what decoding changed: ``action_clipped`` (a Box action had entries
            outside [-1, 1]) and ``dropped_unavailable`` (devices scored > 0 whose battery is
            empty).
        """
        return self.codec.decode(action, self.selection_state())

    def encode_plan(self, plan: RoundPlan) -> np.ndarray | int:
        """The action of this environment's space that decodes to (as nearly as possible) ``plan``
        (:meth:`WirelessFLCodec.encode <fl_gym.envs.wireless_fl.codec.WirelessFLCodec.encode>`).

        Knobs the environment does not control are ignored. Local steps that are not one of
        ``local_step_choices`` map to the nearest choice (of the selected devices' largest
        count); powers outside ``[power_min_dbm, p_max_dbm]`` map to the nearest end.
        """
        return self.codec.encode(plan)

    # -- observation, reward, info -----------------------------------------------------------------

    def _format_observation(self, observation: dict[str, np.ndarray]) -> Observation:
        """The Dict observation as this environment's ``obs_mode`` returns it."""
        return observation if self.obs_mode == "dict" else flatten_observation(observation)

    def wireless_observation(self, observation: Observation) -> Observation:
        """The wireless FL columns of an observation of this environment (all of them here;
        an environment that adds features drops them), as baselines read it."""
        return observation

    def observe(self) -> Observation:
        """The current observation (no side effects): :meth:`observe_envs` of this environment."""
        return self.observe_envs([self])[0]

    @classmethod
    def observe_envs(cls, envs: list[WirelessFLEnv]) -> list[Observation]:
        """The observations of environments of this class, made together (the native vector
        environment's observation step): :func:`observe_many`, plus the columns a subclass
        adds. Reading state only, it changes nothing."""
        return observe_many(envs)

    def _reward(self, report: RoundReport, failed: bool = False) -> tuple[float, dict[str, float]]:
        """The reward of ``report``'s round (``failed``: the episode ends with it, target not
        reached) in the ``"weighted"`` and the two target-required modes."""
        cfg = self.config
        energy_j = float(report.energy_j.sum())
        if cfg.reward_mode == "time-to-accuracy":
            terms = {"time": cfg.favor_base ** (report.accuracy - cfg.target_accuracy) - 1.0}
        elif cfg.reward_mode == "energy-to-accuracy":
            terms = {"energy": -cfg.energy_weight_per_j * energy_j}
        else:
            terms = {
                "accuracy": cfg.accuracy_weight * (report.accuracy - self._previous_accuracy),
                "energy": -cfg.energy_weight_per_j * energy_j,
                "time": -cfg.time_weight_per_s * report.round_time_s,
            }
            return float(sum(terms.values())), terms
        terms["target_missed"] = -self.target_penalty() if failed else 0.0
        return float(sum(terms.values())), terms

    def target_penalty(self) -> float:
        """What an episode that ends without reaching the target pays in the target-required
        reward modes, chosen so that no such episode out-scores one that reaches it.

        Time-to-accuracy: ``max_rounds`` (every round before the target earns more than -1, so a
        successful episode's return exceeds ``-max_rounds``, while a failed one's is at most
        ``-max_rounds``). Energy-to-accuracy: ``energy_weight_per_j`` times the devices' total
        battery capacity, plus 1 (no episode can spend more than the batteries hold).
        """
        cfg = self.config
        if cfg.reward_mode == "time-to-accuracy":
            return float(cfg.max_rounds)
        assert self.federation is not None and self.federation.cell is not None
        capacity_j = float(self.federation.cell.battery_capacity_j.sum())
        return cfg.energy_weight_per_j * capacity_j + 1.0

    def _budget_reward(
        self, report: RoundReport, over_budget: bool
    ) -> tuple[float, dict[str, float]]:
        """The ``"accuracy-at-budget"`` reward: the accuracy gain of a round within the budget;
        the round that overspends it earns nothing and ends the episode, so the return is the
        accuracy reached within the budget minus the initial accuracy (times the weight)."""
        cfg = self.config
        gain = 0.0 if over_budget else report.accuracy - self._previous_accuracy
        terms = {"accuracy": cfg.accuracy_weight * gain}
        return terms["accuracy"], terms

    def _info(
        self,
        report: RoundReport | None,
        terms: dict[str, float],
        decode_info: dict[str, Any],
    ) -> dict[str, Any]:
        fed = self.federation
        assert fed is not None
        info: dict[str, Any] = {
            "accuracy": fed.accuracy,
            "loss": fed.loss,
            "round": fed.round_index,
            "energy_spent_j": self._energy_spent_j,
        }
        if self.config.dataset == "localization":
            info.update(self.localization_errors())
        if report is not None:
            # A field a round did not fill (the attackers of a round without an adversary) is
            # left out rather than given as None.
            for name in field_names(type(report)):
                value = getattr(report, name)
                if value is not None:
                    info[name] = value
            info["energy_j"] = float(report.energy_j.sum())
            info["reward_terms"] = terms
            info.update(decode_info)
        return info

    def localization_errors(self) -> dict[str, float]:
        """Position errors of the global model on the test set (``dataset="localization"``):
        ``rmse_m``, ``error_p50_m`` and ``error_p90_m``, metres."""
        fed = self.federation
        assert fed is not None
        area_m = LOCALIZATION_PRESETS[self.config.localization_scenario].area_m
        with torch.no_grad():
            out = fed.model.logits(fed.params.unsqueeze(0), fed.x_test.unsqueeze(0))[0]
            errors = torch.linalg.vector_norm(out - fed.y_test, dim=1).double() * area_m
        values = errors.numpy()
        return {
            "rmse_m": float(np.sqrt(np.mean(values**2))),
            "error_p50_m": float(np.percentile(values, 50)),
            "error_p90_m": float(np.percentile(values, 90)),
        }

    # -- rendering ---------------------------------------------------------------------------------

    @property
    def accuracy_history(self) -> tuple[float, ...]:
        """Test accuracy after ``reset()`` and after every round of the current episode."""
        return tuple(getattr(self, "_accuracy_history", ()))

    def render(self) -> np.ndarray | None:
        if not ready_to_render(self.render_mode, self.federation is not None):
            return None
        from fl_gym.envs.wireless_fl.rendering import render_cell

        return self._window.deliver(render_cell(self), self.render_mode)

    def close(self) -> None:
        self._renderer = None
        self._window.close()

    # -- snapshots ---------------------------------------------------------------------------------

    _KEPT_ATTRIBUTES: ClassVar[frozenset[str]] = frozenset(
        {
            "pipeline",
            "_renderer",
            "_window",
            "_codec",
            "action_space",
            "observation_space",
            "dict_observation_space",
            "observation_slices",
            "observation_feature_names",
            "render_mode",
            "num_threads",
            "obs_mode",
            "spec",
        }
    )
    """What stays with the environment on :meth:`restore` (spaces, caches, display settings)."""

    def snapshot(self) -> EnvSnapshot:
        """A copy of the environment's whole state: the federation (global model, per-client
        state), the cell (channels, positions, batteries), the episode's bookkeeping and the
        generator. Datasets and configurations are shared, not copied (no step changes them).

        :meth:`restore` followed by the same actions replays the same trajectory bit for bit;
        followed by ``np_random`` reseeded (``env.np_random = np.random.default_rng(s)``) it
        plays a fresh future from the same state.

        Raises:
            RuntimeError: Before the first ``reset()``.
        """
        return snapshots.take(self, self._KEPT_ATTRIBUTES, self._shared_state())

    def restore(self, snapshot: EnvSnapshot) -> None:
        """Return to the state of ``snapshot`` (taken by :meth:`snapshot` of an environment of
        this class with the same spaces); the snapshot can be restored again later."""
        if isinstance(snapshot, EnvSnapshot) and snapshot.env_type is type(self):
            config = snapshot.state.get("config")
            if config is None or self._layout(config) != self._layout(self.config):
                raise ValueError(
                    "snapshot's num_devices, compression levels or local_step_choices differ "
                    "from this environment's (they shape the spaces)"
                )
        snapshots.restore(self, snapshot, self._KEPT_ATTRIBUTES, self._shared_state())

    def _shared_state(self) -> list[Any]:
        """Objects the snapshots share with the environment: what no step changes."""
        fed = self.federation
        if fed is None:
            raise RuntimeError("call reset() before snapshot() or restore()")
        return [
            self.config,
            fed.config,
            fed.data,
            fed.clients,
            fed.x_test,
            fed.y_test,
            fed.model,
            fed.device,
            self._data_share,
        ]

    # -- helpers -----------------------------------------------------------------------------------

    @staticmethod
    def _layout(config: WirelessFLConfig) -> tuple[Any, ...]:
        return config.num_devices, config.num_compression_levels, config.local_step_choices


class ServerQuantities(NamedTuple):
    """One federation's server state in physical units, which the ``SERVER_FEATURES`` entries
    scale (:func:`scale_observation`)."""

    round_index: int
    """Rounds played."""
    max_rounds: int
    """Rounds of an episode."""
    accuracy: float
    """Global test accuracy."""
    loss: float
    """Global test loss (NaN or infinite shows as 1, the worst value)."""
    energy_spent_j: float
    """Energy the devices have spent, J (shown over their total battery capacity)."""
    round_time_s: float
    """Duration of the last round, s."""
    deadline_s: float
    """Round deadline, s."""
    accuracy_gain: float
    """Accuracy change in the last round."""


def data_share(num_examples: np.ndarray) -> np.ndarray:
    """The ``data_share`` column: each client's number of samples over the largest client's
    (``(K,)``, or ``(E, K)`` along the last axis)."""
    return num_examples / np.max(num_examples, axis=-1, keepdims=True)


def scale_observation(
    *,
    snr_db: np.ndarray,
    distance_m: np.ndarray,
    cell_radius_m: ArrayLike,
    battery_j: np.ndarray,
    battery_capacity_j: np.ndarray,
    cpu_hz: np.ndarray,
    cpu_max_hz: ArrayLike,
    rounds_since_delivery: np.ndarray,
    train_loss: np.ndarray,
    available: np.ndarray,
    selected: np.ndarray,
    delivered: np.ndarray,
    data_share: np.ndarray,
    server: Sequence[ServerQuantities],
) -> tuple[np.ndarray, np.ndarray]:
    """The wireless FL observation of E federations from their state in physical units: the one
    definition of every ``DEVICE_FEATURES`` column and ``SERVER_FEATURES`` entry (the class
    docstring's Observation Space tables), for :func:`observe_many` and for the Flower
    integration alike.

    After scaling, NaN becomes 0 and every value is clipped to ``[-5, 5]`` (so ``+-inf`` goes
    to the bounds) in float64, then cast to float32. Element by element: each federation's rows
    are what it gets in a batch of one.

    Args:
        snr_db: ``(E, K)`` SNR at ``p_max`` on the current channel, dB.
        distance_m: ``(E, K)`` distance to the base station, m.
        cell_radius_m: Cell radius, m, broadcastable to ``(E, K)`` (``(E, 1)`` or a scalar).
        battery_j: ``(E, K)`` energy left, J.
        battery_capacity_j: ``(E, K)`` full battery, J.
        cpu_hz: ``(E, K)`` CPU frequency, Hz.
        cpu_max_hz: Largest CPU frequency, Hz, broadcastable to ``(E, K)``.
        rounds_since_delivery: ``(E, K)`` rounds since each update was last aggregated.
        train_loss: ``(E, K)`` last local training loss (a NaN shows as 0, ``inf`` as 1).
        available: ``(E, K)`` bool, may be selected (battery above the floor).
        selected: ``(E, K)`` bool, selected in the last round.
        delivered: ``(E, K)`` bool, update aggregated in the last round.
        data_share: ``(E, K)`` number of training samples over the largest client's
            (:func:`data_share`).
        server: Per federation, its :class:`ServerQuantities` (the server entries are made
            row by row in Python: E is often 1, where each numpy call costs more than the
            arithmetic).

    Returns:
        ``(devices, server)``: ``(E, K, 10)`` and ``(E, 7)`` float32, views of one buffer
        (row ``e`` of both, flattened and joined, is federation ``e``'s flat observation).
    """
    n, k = np.shape(snr_db)
    num_device_features = len(DEVICE_FEATURES)
    # Both arrays of every federation in one buffer (views of it), so that the NaN pass, the
    # clip and the cast below run once.
    rows = np.zeros((n, k * num_device_features + len(SERVER_FEATURES)), dtype=np.float64)
    devices = rows[:, : k * num_device_features].reshape(n, k, num_device_features)
    server_rows = rows[:, k * num_device_features :]
    # Every column is clipped to the bounds once, below (the SNR and accuracy-gain clips too).
    devices[:, :, 0] = snr_db / SNR_SCALE_DB
    devices[:, :, 1] = distance_m / cell_radius_m
    devices[:, :, 2] = battery_j / battery_capacity_j
    devices[:, :, 3] = cpu_hz / cpu_max_hz
    devices[:, :, 4] = (
        np.minimum(rounds_since_delivery, STALENESS_SCALE_ROUNDS) / STALENESS_SCALE_ROUNDS
    )
    # A NaN stays NaN here (0 below); inf is capped at 1.
    devices[:, :, 5] = np.minimum(train_loss / LOSS_SCALE, 1.0)
    devices[:, :, 6] = available
    devices[:, :, 7] = selected
    devices[:, :, 8] = delivered
    devices[:, :, 9] = data_share
    capacity = np.add.reduce(battery_capacity_j, axis=-1).tolist()
    for e, q in enumerate(server):
        server_rows[e] = (
            q.round_index / q.max_rounds,
            q.accuracy,
            # A NaN or infinite loss shows as 1 (the worst value), never as a good one.
            min(q.loss / LOSS_SCALE, 1.0) if math.isfinite(q.loss) else 1.0,
            q.energy_spent_j / capacity[e],
            q.round_time_s / q.deadline_s,
            # The mean of the bools, as an exact count over K (a row at a time: numpy's
            # count_nonzero with an axis is several times slower).
            np.count_nonzero(available[e]) / k,
            ACCURACY_GAIN_SCALE * q.accuracy_gain,
        )
    # NaN becomes 0 and the clip sends +-inf to the bounds (what np.nan_to_num with those
    # bounds and the clip do, in fewer passes).
    rows[np.isnan(rows)] = 0.0
    rows32 = np.clip(rows, -_OBS_BOUND, _OBS_BOUND).astype(np.float32)
    return (
        rows32[:, : k * num_device_features].reshape(n, k, num_device_features),
        rows32[:, k * num_device_features :],
    )


def observe_many(envs: list[WirelessFLEnv]) -> list[Observation]:
    """The observations of E environments (that share ``num_devices``): the one observation
    function of the wireless FL family, for a single environment (E = 1) and the native vector
    environment alike; the scaling is :func:`scale_observation`'s.

    The device columns of all the environments are one ``(E, K, F)`` computation, element by
    element, so each environment's rows are what it gets alone; in flat mode (all of them) the
    flat rows are made in one computation too. Reading state only, it changes nothing."""
    n, k = len(envs), envs[0].num_devices
    feds = [env.federation for env in envs]
    cells = [fed.cell for fed in feds]  # type: ignore[union-attr]
    wcfgs = [env.config.wireless for env in envs]

    def column(values: list[float]) -> np.ndarray | float:
        # A batch of one broadcasts a plain float: the same element-wise values.
        return float(values[0]) if n == 1 else np.array(values, dtype=np.float64).reshape(n, 1)

    # A batch of one is a view of its arrays, not a stacked copy (the same values).
    stack = (lambda arrays: arrays[0][None]) if n == 1 else np.stack

    snr = (
        column([w.p_max_w for w in wcfgs])
        * stack([c.channel_gain for c in cells])  # type: ignore[union-attr]
        / column([w.noise_power_w for w in wcfgs])
    )
    with np.errstate(divide="ignore"):
        snr_db = 10.0 * np.log10(snr)
    reports = [env._last_report for env in envs]
    nothing = np.zeros(k, dtype=bool)
    server = [
        ServerQuantities(
            round_index=fed.round_index,  # type: ignore[union-attr]
            max_rounds=env.config.max_rounds,
            accuracy=fed.accuracy,  # type: ignore[union-attr]
            loss=fed.loss,  # type: ignore[union-attr]
            energy_spent_j=env._energy_spent_j,
            round_time_s=0.0 if report is None else report.round_time_s,
            deadline_s=wcfg.deadline_s,
            accuracy_gain=(0.0 if report is None else report.accuracy - env._accuracy_history[-2]),
        )
        for env, fed, wcfg, report in zip(envs, feds, wcfgs, reports, strict=True)
    ]
    devices32, servers32 = scale_observation(
        snr_db=snr_db,
        distance_m=stack([c.distance_m for c in cells]),  # type: ignore[union-attr]
        cell_radius_m=column([w.cell_radius_m for w in wcfgs]),
        battery_j=stack([c.battery_j for c in cells]),  # type: ignore[union-attr]
        battery_capacity_j=stack([c.battery_capacity_j for c in cells]),  # type: ignore[union-attr]
        cpu_hz=stack([c.cpu_hz for c in cells]),  # type: ignore[union-attr]
        cpu_max_hz=column([w.cpu_max_hz for w in wcfgs]),
        rounds_since_delivery=stack(
            [fed.rounds_since_delivery() for fed in feds]  # type: ignore[union-attr]
        ),
        train_loss=stack([env._train_loss for env in envs]),
        available=stack([c.available for c in cells]),  # type: ignore[union-attr]
        selected=stack([nothing if r is None else r.selected for r in reports]),
        delivered=stack([nothing if r is None else r.delivered for r in reports]),
        data_share=stack([env._data_share for env in envs]),
        server=server,
    )
    if all(env.obs_mode == "flat" for env in envs):
        # The flat layout is flatten_observation's alone.
        flat = flatten_observation({"devices": devices32, "server": servers32})
        return [flat[e] for e in range(n)]
    return [
        env._format_observation({"devices": devices32[e], "server": servers32[e]})
        for e, env in enumerate(envs)
    ]
