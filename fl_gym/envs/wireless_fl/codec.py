"""The action codec of the wireless FL environments: action <-> :class:`RoundPlan`, written once.

Every rule that connects an action of a wireless FL environment to the round it plays lives
here, and nowhere else: the environments decode through it and the baselines build their plans
through it, so an environment rule cannot drift from the heuristics that replay it.

* validation of Box, Discrete and MultiDiscrete actions (through :mod:`fl_gym.envs.actions`,
  the one input policy of every family: clear errors naming the value given);
* the joint Box layout (K selection scores, K powers, K compression values, 1 frequency value,
  for the controlled knobs in that order) and the uniform binning of compression and frequency;
* the power map: ``a in [-1, 1]`` <-> ``[power_min_dbm, p_max_dbm]``, linear in dBm;
* the top-M rule (the M highest scores above 0 among the available devices, lower index first
  on ties) and the round-robin default selection (the M available devices unselected longest);
* the defaults of the knobs an environment (or a baseline) leaves alone: round-robin
  selection, ``p_max``, ``default_compression``, ``default_local_steps``.

:class:`WirelessFLCodec` is the codec of the digital environments (uploads on M orthogonal
sub-channels); :class:`OverTheAirCodec` is the variant of the over-the-air environment, whose
``Box(-1, 1, (K + 1,))`` holds K scores and one power budget shared by the selected devices, with
no sub-channel limit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

from fl_gym.envs.actions import check_box_action, check_discrete_action
from fl_gym.envs.wireless_fl.config import WirelessFLConfig
from fl_gym.sim.plan import RoundPlan
from fl_gym.sim.radio.cell import dbm_to_w, w_to_dbm

__all__ = [
    "CONTROLS",
    "OverTheAirCodec",
    "SelectionState",
    "WirelessFLCodec",
    "bin_levels",
    "check_controls",
    "rank_select",
    "unbin_levels",
]

CONTROLS = ("selection", "power", "compression", "frequency")
"""The knobs an environment may control, in the order of the joint action layout."""


def check_controls(controls: Sequence[str]) -> tuple[str, ...]:
    """The controls in layout order, or a ``ValueError`` naming what was given.

    Args:
        controls: Distinct names from :data:`CONTROLS`, in any order.

    Returns:
        The same names in the order of :data:`CONTROLS`.
    """
    controls = tuple(controls)
    unknown = [c for c in controls if c not in CONTROLS]
    if unknown or not controls or len(set(controls)) != len(controls):
        raise ValueError(
            f"controls must be distinct names from {list(CONTROLS)}, got {list(controls)}"
        )
    return tuple(c for c in CONTROLS if c in controls)


@dataclass(frozen=True)
class SelectionState:
    """What decoding needs to know of the devices besides the action itself.

    Attributes:
        available: ``(K,)`` bool, the devices with energy left (only they may be selected).
        last_selected_round: ``(K,)`` int, the round in which each device was last selected,
            -1 if never (the round-robin default selects the smallest first).
    """

    available: np.ndarray
    last_selected_round: np.ndarray

    @classmethod
    def fresh(cls, available: np.ndarray) -> SelectionState:
        """The state of devices none of which has been selected yet."""
        available = np.asarray(available, dtype=bool)
        return cls(available, np.full(available.shape[0], -1, dtype=np.int64))


def rank_select(keys: Sequence[np.ndarray], eligible: np.ndarray, m: int) -> np.ndarray:
    """The ``m`` best eligible devices by ``keys``, lower index first on full ties.

    The one ranking rule of the family: the top-M rule of score actions is this with the scores
    as the only key, the round-robin default is this with ``-last_selected_round``.

    Args:
        keys: ``(K,)`` arrays, most significant first; larger is better in each. An empty
            sequence ranks by index alone.
        eligible: ``(K,)`` bool mask of the devices that may be chosen.
        m: Most devices to choose.

    Returns:
        ``(K,)`` bool mask of at most ``m`` chosen devices.
    """
    k = eligible.shape[0]
    if len(keys) == 1:
        # A stable sort keeps equal keys in index order: the lexsort below, with one key.
        order = np.argsort(-np.asarray(keys[0]), kind="stable")
    else:
        # np.lexsort sorts by its last key first; the index comes first so it breaks the last
        # ties.
        order = np.lexsort((np.arange(k), *(-np.asarray(key) for key in reversed(keys))))
    chosen = order[eligible[order]][:m]
    mask = np.zeros(k, dtype=bool)
    mask[chosen] = True
    return mask


def bin_levels(values: np.ndarray, n: int) -> np.ndarray:
    """Values in ``[-1, 1]`` binned uniformly into ``n`` levels: ``floor((a + 1) / 2 * n)``,
    capped at ``n - 1``."""
    return np.minimum(np.floor((values + 1.0) / 2.0 * n), n - 1).astype(np.int64)


def unbin_levels(levels: np.ndarray, n: int) -> np.ndarray:
    """The centre in ``[-1, 1]`` of each level's bin (the inverse of :func:`bin_levels`)."""
    return 2.0 * (levels + 0.5) / n - 1.0


class WirelessFLCodec:
    """Decoding and encoding of one wireless FL environment's actions.

    Args:
        config: The environment's configuration (power range, M, levels, choices, defaults).
        controls: The knobs the environment controls (distinct names from :data:`CONTROLS`).

    Attributes:
        config: The configuration the codec was built from.
        controls: The controlled knobs, in layout order.
        num_devices: K.
        action_space: The environment's action space: ``MultiDiscrete`` when compression alone
            is controlled, ``Discrete`` when frequency alone is, otherwise the joint Box.
        slices: Where each controlled knob sits in the joint Box layout.
    """

    def __init__(self, config: WirelessFLConfig, controls: Sequence[str] = CONTROLS) -> None:
        self.config = config
        self.controls = check_controls(controls)
        self.num_devices = config.num_devices
        self.slices = self._layout_slices()
        self.action_space = self._make_action_space()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(controls={list(self.controls)}, "
            f"num_devices={self.num_devices}, action_space={self.action_space})"
        )

    # -- layout ------------------------------------------------------------------------------------

    def _sizes(self) -> dict[str, int]:
        k = self.num_devices
        return {"selection": k, "power": k, "compression": k, "frequency": 1}

    def _layout_slices(self) -> dict[str, slice]:
        sizes = self._sizes()
        out, start = {}, 0
        for c in self.controls:
            out[c] = slice(start, start + sizes[c])
            start += sizes[c]
        return out

    def _make_action_space(self) -> spaces.Space:
        cfg = self.config
        if self.controls == ("compression",):
            return spaces.MultiDiscrete(
                np.full(self.num_devices, cfg.num_compression_levels, dtype=np.int64)
            )
        if self.controls == ("frequency",):
            return spaces.Discrete(len(cfg.local_step_choices))
        size = sum(self._sizes()[c] for c in self.controls)
        return spaces.Box(-1.0, 1.0, (size,), dtype=np.float32)

    # -- validation --------------------------------------------------------------------------------

    def check_box(self, action: Any) -> np.ndarray:
        """A Box action as float64, or ``TypeError`` / ``ValueError`` naming what was wrong.

        Values outside ``[-1, 1]`` pass (decoding clips them and says so); NaN, infinities,
        wrong shapes and non-numbers do not (the policy of :mod:`fl_gym.envs.actions`).
        """
        return check_box_action(action, self.action_space.shape)

    def _unit_box(self, action: Any) -> tuple[np.ndarray, bool]:
        """:meth:`check_box`'s array clipped to ``[-1, 1]``, and whether that changed it (the
        decoders' ``info["action_clipped"]``)."""
        box = self.check_box(action)
        # Finite values (checked): outside the bounds exactly when the extremes are.
        clipped = bool(box.min() < -1.0 or box.max() > 1.0)
        return (np.clip(box, -1.0, 1.0) if clipped else box), clipped

    @staticmethod
    def check_discrete(action: Any, shape: tuple[int, ...], n: int) -> np.ndarray:
        """An integer action of ``shape`` with entries in ``0..n-1``, as int64, or an error
        naming the value given (:func:`~fl_gym.envs.actions.check_discrete_action`)."""
        return check_discrete_action(action, shape, n)

    # -- the power map -----------------------------------------------------------------------------

    @property
    def power_range_dbm(self) -> tuple[float, float]:
        """``(power_min_dbm, p_max_dbm)``: the powers of the actions -1 and +1."""
        return self.config.power_min_dbm, self.config.wireless.p_max_dbm

    @property
    def max_power_w(self) -> float:
        """``p_max`` in watts: the action +1 and the default power."""
        return self.config.wireless.p_max_w

    @property
    def min_power_w(self) -> float:
        """``power_min_dbm`` in watts: the action -1, the lowest power an action reaches."""
        return float(dbm_to_w(self.config.power_min_dbm))

    def action_to_power_w(self, values: Any) -> Any:
        """Power actions in ``[-1, 1]`` -> watts, linear in dBm over :attr:`power_range_dbm`.

        Args:
            values: Action values (an array, or a float for one value), already in [-1, 1].

        Returns:
            The powers, capped at ``p_max`` (against rounding at +1).
        """
        low, high = self.power_range_dbm
        power_dbm = low + (values + 1.0) / 2.0 * (high - low)
        return np.minimum(dbm_to_w(power_dbm), self.max_power_w)

    def power_w_to_action(self, power_w: Any) -> Any:
        """Watts -> power actions in ``[-1, 1]``: the inverse of :meth:`action_to_power_w`.

        Powers outside :attr:`power_range_dbm` map to the nearest end (0 W to -1).
        """
        low, high = self.power_range_dbm
        with np.errstate(divide="ignore"):
            power_dbm = w_to_dbm(np.maximum(power_w, 0.0))
        return np.clip(2.0 * (power_dbm - low) / (high - low) - 1.0, -1, 1)

    def clip_power_dbm_to_w(self, power_dbm: Any) -> np.ndarray:
        """Powers in dBm clipped to :attr:`power_range_dbm`, in watts: the powers an action can
        express (a heuristic's power rule stays within them)."""
        low, high = self.power_range_dbm
        return dbm_to_w(np.clip(power_dbm, low, high))

    # -- selection ---------------------------------------------------------------------------------

    @property
    def max_selected(self) -> int:
        """The most devices a round can select: M, the number of sub-channels."""
        return self.config.wireless.num_subchannels

    def rank(self, keys: Sequence[np.ndarray], eligible: np.ndarray) -> np.ndarray:
        """The :attr:`max_selected` best eligible devices by ``keys`` (:func:`rank_select`)."""
        return rank_select(keys, eligible, self.max_selected)

    def top(self, scores: np.ndarray, eligible: np.ndarray) -> np.ndarray:
        """The top-M rule: the :attr:`max_selected` highest-scoring eligible devices, lower
        index first on ties."""
        return self.rank((scores,), eligible)

    def round_robin(self, state: SelectionState) -> np.ndarray:
        """The default selection: the M available devices that have gone longest without being
        selected, lower index first on ties (cyclic over indices when all are available)."""
        return self.rank((-state.last_selected_round,), state.available)

    # -- plans -------------------------------------------------------------------------------------

    def complete(self, decided: Mapping[str, Any], state: SelectionState) -> RoundPlan:
        """The plan of the knobs ``decided``, the others at their defaults.

        Args:
            decided: Values of some knobs in physical units: ``"selection"`` a ``(K,)`` bool
                mask, ``"power"`` ``(K,)`` watts, ``"compression"`` level(s), ``"frequency"``
                the local steps.
            state: The devices' availability and selection history (for round-robin).

        Returns:
            The plan; undecided knobs hold round-robin selection, ``p_max``,
            ``default_compression`` and ``default_local_steps``.
        """
        return RoundPlan(*self._knobs(decided, state))

    def _decoded(self, decided: Mapping[str, Any], state: SelectionState) -> RoundPlan:
        """:meth:`complete` of knobs this codec decoded from a validated action itself (a mask
        of at most M available devices, powers in the action's range, levels and steps from the
        configuration's choices): the same plan, without checking them a second time."""
        return RoundPlan._trusted(*self._knobs(decided, state))

    def _knobs(
        self, decided: Mapping[str, Any], state: SelectionState
    ) -> tuple[np.ndarray, Any, Any, Any]:
        """``(selected, local_steps, compression, power_w)`` of a plan: ``decided`` completed
        with the defaults (see :meth:`complete`)."""
        cfg = self.config
        if "selection" in decided:
            selected = np.asarray(decided["selection"], dtype=bool)
        else:
            selected = self.round_robin(state)
        if "power" in decided:
            power_w = decided["power"]
        else:
            power_w = np.full(self.num_devices, self.max_power_w)
        compression = decided.get("compression", cfg.default_compression)
        local_steps = decided.get("frequency", cfg.default_local_steps)
        return selected, local_steps, compression, power_w

    def decode(self, action: Any, state: SelectionState) -> tuple[RoundPlan, dict[str, Any]]:
        """An action of :attr:`action_space` -> a validated :class:`RoundPlan`.

        Args:
            action: The action.
            state: The devices' availability and selection history.

        Returns:
            The plan and what decoding changed: ``action_clipped`` (a Box action had entries
            outside [-1, 1]) and ``dropped_unavailable`` (devices scored > 0 whose battery is
            empty).
        """
        cfg = self.config
        k = self.num_devices
        info: dict[str, Any] = {"action_clipped": False, "dropped_unavailable": []}
        decided: dict[str, Any] = {}
        if isinstance(self.action_space, spaces.MultiDiscrete):
            decided["compression"] = self.check_discrete(action, (k,), cfg.num_compression_levels)
        elif isinstance(self.action_space, spaces.Discrete):
            index = self.check_discrete(action, (), len(cfg.local_step_choices))
            decided["frequency"] = cfg.local_step_choices[int(index)]
        else:
            box, info["action_clipped"] = self._unit_box(action)
            values = {name: box[sl] for name, sl in self.slices.items()}
            if "selection" in values:
                scores = values["selection"]
                wanted = scores > 0
                info["dropped_unavailable"] = np.flatnonzero(wanted & ~state.available).tolist()
                decided["selection"] = self.top(scores, wanted & state.available)
            if "power" in values:
                decided["power"] = self.action_to_power_w(values["power"])
            if "compression" in values:
                decided["compression"] = bin_levels(
                    values["compression"], cfg.num_compression_levels
                )
            if "frequency" in values:
                index = bin_levels(values["frequency"], len(cfg.local_step_choices))
                decided["frequency"] = cfg.local_step_choices[int(index[0])]
        return self._decoded(decided, state), info

    def local_steps_choice(self, steps: int) -> int:
        """The index of the ``local_step_choices`` entry nearest ``steps`` (the first on ties)."""
        choices = np.asarray(self.config.local_step_choices)
        return int(np.argmin(np.abs(choices - steps)))

    def encode(self, plan: RoundPlan) -> np.ndarray | int:
        """The action of :attr:`action_space` that decodes to (as nearly as possible) ``plan``.

        Knobs not controlled are ignored. Local steps that are not one of
        ``local_step_choices`` map to the nearest choice (of the selected devices' largest
        count); powers outside ``[power_min_dbm, p_max_dbm]`` map to the nearest end.
        """
        cfg = self.config
        k = self.num_devices
        if not isinstance(plan, RoundPlan) or plan.num_clients != k:
            raise ValueError(f"plan must be a RoundPlan for {k} devices, got {plan!r}")
        parts: dict[str, np.ndarray] = {}
        parts["selection"] = np.where(plan.selected, 1.0, -1.0)
        if plan.power_w is None:
            parts["power"] = np.ones(k)
        else:
            parts["power"] = self.power_w_to_action(plan.power_w)
        levels = np.minimum(plan.compression, cfg.num_compression_levels - 1)
        parts["compression"] = unbin_levels(levels, cfg.num_compression_levels)
        steps = int(plan.local_steps.max()) if plan.selected.any() else cfg.default_local_steps
        choice = self.local_steps_choice(steps)
        parts["frequency"] = unbin_levels(np.array([choice]), len(cfg.local_step_choices))
        if isinstance(self.action_space, spaces.MultiDiscrete):
            return levels.astype(np.int64)
        if isinstance(self.action_space, spaces.Discrete):
            return choice
        return np.concatenate([parts[c] for c in self.controls]).astype(np.float32)


class OverTheAirCodec(WirelessFLCodec):
    """The codec of the over-the-air environment: ``Box(-1, 1, (K + 1,))``.

    The first K entries are device scores (a device with a score > 0 and energy left transmits;
    there is no sub-channel limit, so no top-M cut), the last one the power budget ``P0`` of
    every selected device, through the same power map. Compression and local steps stay at their
    defaults.

    Args:
        config: The environment's configuration.
    """

    def __init__(self, config: WirelessFLConfig) -> None:
        super().__init__(config, ("selection", "power"))

    def _layout_slices(self) -> dict[str, slice]:
        k = self.num_devices
        return {"selection": slice(0, k), "power": slice(k, k + 1)}

    def _make_action_space(self) -> spaces.Space:
        return spaces.Box(-1.0, 1.0, (self.num_devices + 1,), np.float32)

    @property
    def max_selected(self) -> int:
        """Every device may join the superposition: K."""
        return self.num_devices

    def decode(self, action: Any, state: SelectionState) -> tuple[RoundPlan, dict[str, Any]]:
        """Scores and power budget -> plan; every selected device gets the budget ``P0``."""
        box, clipped = self._unit_box(action)
        info: dict[str, Any] = {"action_clipped": clipped}
        scores, power = box[:-1], float(box[-1])
        wanted = scores > 0
        info["dropped_unavailable"] = np.flatnonzero(wanted & ~state.available).tolist()
        p0_w = float(self.action_to_power_w(power))
        decided = {
            "selection": wanted & state.available,
            "power": np.full(self.num_devices, p0_w),
        }
        return self._decoded(decided, state), info

    def encode(self, plan: RoundPlan) -> np.ndarray:
        """The action selecting ``plan.selected`` at the largest selected power budget."""
        if not isinstance(plan, RoundPlan) or plan.num_clients != self.num_devices:
            raise ValueError(
                f"plan must be a RoundPlan for {self.num_devices} devices, got {plan!r}"
            )
        scores = np.where(plan.selected, 1.0, -1.0)
        if plan.power_w is None or not plan.selected.any():
            power = 1.0
        else:
            power = float(
                self.power_w_to_action(max(float(plan.power_w[plan.selected].max()), 0.0))
            )
        return np.append(scores, power).astype(np.float32)
