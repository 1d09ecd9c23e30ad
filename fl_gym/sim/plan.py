"""The two records that cross the boundary between a controller and the simulator.

A controller (an RL agent, a heuristic, a script) decides a :class:`RoundPlan`; the
:class:`~fl_gym.sim.learning.federation.Federation` carries it out and answers with a
:class:`RoundReport`.
Both hold one entry per client, as read-only numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

__all__ = ["RoundPlan", "RoundReport"]


def _readonly(a: np.ndarray) -> np.ndarray:
    """A read-only array of ``a``'s values: ``a`` itself when it is already a read-only array
    that owns its data (another record's: nothing can change it), else a copy."""
    if type(a) is np.ndarray and not a.flags.writeable and a.base is None:
        return a
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


def _freeze_arrays(record: object, *, every_field: bool = False) -> None:
    """Make a frozen dataclass record's array fields read-only (:func:`_readonly`), or every
    field with ``every_field``; called from ``__post_init__``, where the instance's own dict
    holds exactly the fields ``__init__`` just set."""
    values = vars(record)
    for name, value in values.items():
        if every_field or isinstance(value, np.ndarray):
            values[name] = _readonly(value)


def _per_client_ints(value: object, num: int, name: str) -> np.ndarray:
    if type(value) is int and -(2**62) < value < 2**62:  # the common scalar, in one step
        return np.full(num, value, dtype=np.int64)
    arr = np.asarray(value)
    kind = arr.dtype.kind
    if kind not in "iuf":  # bools, strings and objects are not counts
        raise TypeError(f"{name} must be an integer or an integer array, got {value!r}")
    if kind == "f" and (not np.isfinite(arr).all() or (arr != np.round(arr)).any()):
        raise ValueError(f"{name} must hold whole numbers, got {value!r}")
    if arr.ndim == 0:
        arr = np.full(num, arr)
    if arr.shape != (num,):
        raise ValueError(f"{name} must be a scalar or have shape ({num},), got shape {arr.shape}")
    return arr.astype(np.int64)


@dataclass(frozen=True, eq=False)
class RoundPlan:
    """What every client does in one round.

    Args:
        selected: ``(K,)`` bool mask of the clients that train and upload.
        local_steps: Local SGD steps, one int for all or ``(K,)``; each selected client's >= 1.
        compression: Index into the federation's ``compression_levels``, one int or ``(K,)``;
            level 0 is uncompressed by default.
        power_w: ``(K,)`` transmit power in watts, or ``None`` for the wireless model's default.
            Used only where a wireless model is attached.

    Unselected clients' entries are ignored (and set to 0 in the stored plan).
    """

    selected: np.ndarray
    local_steps: np.ndarray | int = 1
    compression: np.ndarray | int = 0
    power_w: np.ndarray | None = None

    def __post_init__(self) -> None:
        sel = np.asarray(self.selected)
        if sel.dtype != np.bool_:
            raise TypeError(
                f"selected must be a boolean mask of shape (K,), got dtype {sel.dtype}; "
                "use Federation.plan(selected=[indices]) to pass client indices"
            )
        if sel.ndim != 1 or sel.shape[0] == 0:
            raise ValueError(f"selected must have shape (K,) with K >= 1, got shape {sel.shape}")
        num = sel.shape[0]
        steps = _per_client_ints(self.local_steps, num, "local_steps")
        bad = sel & (steps < 1)
        if bad.any():
            idx = np.flatnonzero(bad)
            raise ValueError(
                f"local_steps must be >= 1 for every selected client; clients {idx.tolist()} "
                f"have {steps[idx].tolist()}"
            )
        levels = _per_client_ints(self.compression, num, "compression")
        if (sel & (levels < 0)).any():
            raise ValueError(f"compression levels must be >= 0, got {levels[sel].tolist()}")
        power = None
        if self.power_w is not None:
            power = np.asarray(self.power_w, dtype=np.float64)
            if power.ndim == 0:
                power = np.full(num, float(power))
            if power.shape != (num,):
                raise ValueError(f"power_w must have shape ({num},), got shape {power.shape}")
            if not np.isfinite(power).all() or (power < 0).any():
                raise ValueError(f"power_w must be finite and >= 0 W, got {power.tolist()}")
        self._store(sel, steps, levels, power)

    @classmethod
    def _trusted(
        cls,
        selected: np.ndarray,
        local_steps: np.ndarray | int,
        compression: np.ndarray | int,
        power_w: np.ndarray | None,
    ) -> RoundPlan:
        """The plan the constructor makes of values a caller inside fl_gym computed valid,
        without the constructor's checks (an action codec's decoded knobs: nothing a user gave).

        Args:
            selected: ``(K,)`` bool mask, ``K >= 1``.
            local_steps: Whole steps ``>= 1``, an int or an int64 ``(K,)`` array.
            compression: Levels ``>= 0``, an int or an int64 ``(K,)`` array.
            power_w: Finite powers ``>= 0``, a float64 ``(K,)`` array, or ``None``.
        """
        plan = object.__new__(cls)
        plan._store(selected, local_steps, compression, power_w)
        return plan

    def _store(
        self,
        selected: np.ndarray,
        local_steps: np.ndarray | int,
        compression: np.ndarray | int,
        power_w: np.ndarray | None,
    ) -> None:
        """Set the fields from valid knobs: a private copy of the mask, every knob zero where a
        client is not selected, all read-only (``np.where`` gives fresh arrays: no second
        copy)."""
        selected = selected.copy()
        selected.setflags(write=False)
        steps = np.where(selected, local_steps, 0).astype(np.int64, copy=False)
        levels = np.where(selected, compression, 0).astype(np.int64, copy=False)
        steps.setflags(write=False)
        levels.setflags(write=False)
        if power_w is not None:
            power_w = np.where(selected, power_w, 0.0)
            power_w.setflags(write=False)
        object.__setattr__(self, "selected", selected)
        object.__setattr__(self, "local_steps", steps)
        object.__setattr__(self, "compression", levels)
        object.__setattr__(self, "power_w", power_w)

    @property
    def num_clients(self) -> int:
        return int(self.selected.shape[0])

    @property
    def selected_ids(self) -> np.ndarray:
        """Indices of the selected clients, ascending."""
        return np.flatnonzero(self.selected)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RoundPlan):
            return NotImplemented
        return all(
            _array_equal(getattr(self, f.name), getattr(other, f.name)) for f in fields(self)
        )

    __hash__ = None  # type: ignore[assignment]


def _array_equal(a: object, b: object) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return np.array_equal(np.asarray(a), np.asarray(b))


@dataclass(frozen=True, eq=False)
class RoundReport:
    """What happened in one round.

    Per-client arrays have shape ``(K,)``; clients that were not selected hold 0 / False.

    Attributes:
        round_index: 0-based index of the round.
        selected: Clients asked to take part.
        delivered: Clients whose update reached the server and was aggregated.
        local_steps: Local SGD steps each selected client ran.
        compression: Compression level each selected client used.
        bits_up: Exact number of bits each client uploaded.
        train_loss: Mean local minibatch loss of each selected client (``inf`` where its local
            training diverged).
        num_rejected: Updates rejected as non-finite.
        accuracy: Test accuracy of the global model after aggregation.
        loss: Test loss (mean cross-entropy) of the global model after aggregation.
        update_norm: L2 norm of the change applied to the global model.
        energy_compute_j: Energy each device spent on local training.
        energy_transmit_j: Energy each device spent transmitting.
        latency_s: Compute plus upload time of each device (capped at the deadline).
        packet_error: Packet error probability of each device's upload.
        straggler: Devices that missed the deadline (their update was lost).
        packet_lost: Devices whose upload finished in time but whose packet was lost.
        round_time_s: Duration of the round (the slowest transmitting device, at most the
            deadline).
        channel_uses: Uplink channel uses of the round: the sum over transmitting devices of
            sub-channel bandwidth times airtime (complex symbols at the Nyquist rate) for digital
            uploads; one use per parameter, shared by all devices, over the air.
        aggregation_mse: Expected squared error, per parameter, that over-the-air aggregation
            added to the aggregate (0 for digital uploads).
        byzantine: Devices whose upload the adversary stage replaced by a Byzantine one this
            round (``(K,)`` bool), or ``None`` when the round ran without an adversary stage.
            The ground truth for evaluating a defence; an environment shows it to a controller
            only when its configuration says the server knows.

    Without a wireless model every update arrives and the wireless fields hold zeros.
    """

    round_index: int
    selected: np.ndarray
    delivered: np.ndarray
    local_steps: np.ndarray
    compression: np.ndarray
    bits_up: np.ndarray
    train_loss: np.ndarray
    num_rejected: int
    accuracy: float
    loss: float
    update_norm: float
    energy_compute_j: np.ndarray
    energy_transmit_j: np.ndarray
    latency_s: np.ndarray
    packet_error: np.ndarray
    straggler: np.ndarray
    packet_lost: np.ndarray
    round_time_s: float
    channel_uses: float
    aggregation_mse: float = 0.0
    byzantine: np.ndarray | None = None

    @property
    def energy_j(self) -> np.ndarray:
        """Energy each device spent in the round, compute plus transmit."""
        return self.energy_compute_j + self.energy_transmit_j

    def __post_init__(self) -> None:
        _freeze_arrays(self)

    @property
    def num_delivered(self) -> int:
        return int(self.delivered.sum())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RoundReport):
            return NotImplemented
        return all(
            _array_equal(getattr(self, f.name), getattr(other, f.name)) for f in fields(self)
        )

    __hash__ = None  # type: ignore[assignment]
