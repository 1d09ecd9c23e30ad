"""The federation: global model, clients' data and per-client optimiser state, round by round.

A :class:`Federation` runs federated learning with no RL anywhere near it::

    rng = np.random.default_rng(0)
    data = make_federated_dataset("digits", num_clients=10, rng=rng)
    fed = Federation(data, FederationConfig(), rng=rng)
    for _ in range(30):
        report = fed.run_round(fed.plan(selected="all", local_steps=5), rng)
        print(report.round_index, report.accuracy)

One round: every selected client starts from the global model and runs its local SGD steps (all
clients in one batched computation), its update (local - global) goes through the compression
operator of its level (error-feedback residual and momentum rows are the federation's state), the
server aggregates the finite updates it received and moves the global model, and the new model is
evaluated on the test set.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch

from fl_gym.sim.config import (
    MAX_BATCH_SIZE,
    MAX_DEVICES,
    MAX_HIDDEN_LAYERS,
    MAX_HIDDEN_UNITS,
    MAX_LOCAL_STEPS,
    Range,
    check_choice,
    check_int,
    check_int_tuple,
    check_memory,
    check_ranges,
)
from fl_gym.sim.learning.aggregation import fedavg_trusted, get_aggregator
from fl_gym.sim.learning.compression import FLOAT_BITS, Compressor, NoCompression, parse_compressor
from fl_gym.sim.learning.data import FederatedDataset
from fl_gym.sim.learning.models import MODEL_NAMES, BatchedMLP, make_model
from fl_gym.sim.learning.training import ClientTensors, TrainingGroup, draw_round_indices
from fl_gym.sim.plan import RoundPlan, RoundReport

if TYPE_CHECKING:
    from fl_gym.sim.stages import RoundStart, Transport

__all__ = [
    "Cell",
    "ClientState",
    "Federation",
    "FederationConfig",
    "check_federation_size",
    "check_torch_device",
]

_SEED_HIGH = 2**63 - 1
AGGREGATOR_NAMES = (
    "fedavg",
    "median",
    "trimmed_mean",
    "geometric_median",
    "krum",
    "multi_krum",
    "centered_clipping",
    "norm_clipping",
)
WEIGHTINGS = ("samples", "uniform")
STRAGGLER_SCHEMES = ("drop", "stale", "coded")


def check_torch_device(device: Any, name: str = "device") -> torch.device:
    """``device`` as a ``torch.device`` this machine has, or a clear error.

    Args:
        device: A ``torch.device`` or its name (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).
        name: The argument's name in the error message.

    Returns:
        The device.

    Raises:
        TypeError: If ``device`` is neither a string nor a ``torch.device``.
        ValueError: If it names no torch device, or a CUDA device this machine does not have.
    """
    if not isinstance(device, (str, torch.device)):
        raise TypeError(
            f"{name} must be a torch device name such as 'cpu' or 'cuda' (or a torch.device), "
            f"got {device!r}"
        )
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(
            f"{name} must be a torch device name such as 'cpu', 'cuda' or 'cuda:0', got {device!r}"
        ) from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(
                f"{name}={device!r} asks for CUDA, which this machine's torch cannot use "
                f"(torch.cuda.is_available() is False; torch {torch.__version__}); allowed: 'cpu'"
            )
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(
                f"{name}={device!r} names CUDA device {resolved.index}, but this machine has "
                f"{count}; allowed: 'cpu', 'cuda', 'cuda:0'..'cuda:{count - 1}'"
            )
    elif resolved.type != "cpu":
        backend = getattr(torch, resolved.type, None)
        is_available = getattr(backend, "is_available", None)
        if not (callable(is_available) and is_available()):
            raise ValueError(
                f"{name}={device!r} is a {resolved.type!r} device, which this machine's torch "
                "cannot use; allowed: 'cpu' (or 'cuda' where CUDA is available)"
            )
    return resolved


@dataclass(frozen=True)
class FederationConfig:
    """The learning side of a federation.

    Attributes:
        model: ``"mlp"`` or ``"logreg"``.
        hidden_units: Hidden layer widths of the MLP: at most
            :data:`~fl_gym.sim.config.MAX_HIDDEN_LAYERS` (16) layers of at most
            :data:`~fl_gym.sim.config.MAX_HIDDEN_UNITS` (4096) units.
        learning_rate: Clients' local SGD step size, in (0, 1e38] (float32; a client whose
            update diverges is rejected by the server). In (0, 1e+38].
        batch_size: Minibatch size of a local step, in [1, 65536]
            (:data:`~fl_gym.sim.config.MAX_BATCH_SIZE`).
        weight_decay: L2 coefficient of the local objective, in [0, 100].
        server_learning_rate: Scale of the aggregated update applied to the global model, in
            (0, 100].
        aggregator: ``"fedavg"``, ``"median"``, ``"trimmed_mean"``, ``"geometric_median"``,
            ``"krum"``, ``"multi_krum"``, ``"centered_clipping"`` or ``"norm_clipping"`` (the
            rules of :mod:`fl_gym.sim.learning.aggregation`, with their default options).
        trim_ratio: Fraction trimmed at each end by ``"trimmed_mean"``, in [0, 0.5).
        weighting: Aggregation weights: ``"samples"`` (client dataset sizes, as in FedAvg) or
            ``"uniform"``.
        compression_levels: Operator specs a plan's per-client ``compression`` indexes into
            (see :func:`fl_gym.sim.learning.compression.parse_compressor`).
        stragglers: What becomes of an update that misses the round deadline on the digital
            uplink: ``"drop"`` (lost, the default), ``"stale"`` (the device finishes its upload
            and the update is aggregated ``tau`` rounds late, weighted by ``(1 + tau)^-a``,
            FedAsync's polynomial staleness function) or ``"coded"`` (coded federated learning
            after Prakash et al., JSAC 2020: every device uploads a random linear code of its
            data once, and the server stands in for each missing update by running that
            device's local steps on its coded data; see :mod:`fl_gym.sim.learning.coded`).
        staleness_exponent: ``a`` of the staleness weight ``(1 + tau)^-a``, in [0, 10].
        max_staleness: The most rounds an update may arrive late with ``stragglers="stale"``;
            a later one is dropped. In [1, 1000].
        code_redundancy: With ``stragglers="coded"``, each device's code length ``c`` (rows of
            coded data) as a fraction of its sample count, ``c = ceil(redundancy * n_k)``.
            In (0, 10].
    """

    model: str = "mlp"
    hidden_units: tuple[int, ...] = (64,)
    learning_rate: float = 0.1
    batch_size: int = 16
    weight_decay: float = 0.0
    server_learning_rate: float = 1.0
    aggregator: str = "fedavg"
    trim_ratio: float = 0.1
    weighting: str = "samples"
    compression_levels: tuple[str, ...] = ("none", "topk:0.1", "qsgd:16", "sign")
    stragglers: str = "drop"
    staleness_exponent: float = 0.5
    max_staleness: int = 4
    code_redundancy: float = 0.1

    RANGES: ClassVar[Mapping[str, Range]] = {
        "learning_rate": Range(0.0, 1e38, low_open=True),
        "batch_size": Range(1, MAX_BATCH_SIZE, integer=True),
        "weight_decay": Range(0.0, 100.0),
        "server_learning_rate": Range(0.0, 100.0, low_open=True),
        "trim_ratio": Range(0.0, 0.5, high_open=True),
        "staleness_exponent": Range(0.0, 10.0),
        "max_staleness": Range(1, 1000, integer=True),
        "code_redundancy": Range(0.0, 10.0, low_open=True),
    }
    """Documented plausible range of every numeric field (stated in its description)."""

    def __post_init__(self) -> None:
        check_choice("model", self.model, MODEL_NAMES)
        hidden = check_int_tuple("hidden_units", self.hidden_units, nonempty=False, example="(64,)")
        if len(hidden) > MAX_HIDDEN_LAYERS or any(h > MAX_HIDDEN_UNITS for h in hidden):
            raise ValueError(
                f"hidden_units must hold at most {MAX_HIDDEN_LAYERS} widths in "
                f"[1, {MAX_HIDDEN_UNITS}] (fl_gym.sim.config.MAX_HIDDEN_LAYERS, MAX_HIDDEN_UNITS), "
                f"got {self.hidden_units!r}"
            )
        if self.model == "mlp" and not hidden:
            raise ValueError(
                "hidden_units must hold at least one width for model 'mlp' (use model='logreg' "
                f"for no hidden layer), got {self.hidden_units!r}"
            )
        object.__setattr__(self, "hidden_units", hidden)
        check_ranges(self, self.RANGES)
        check_choice("aggregator", self.aggregator, AGGREGATOR_NAMES)
        check_choice("weighting", self.weighting, WEIGHTINGS)
        check_choice("stragglers", self.stragglers, STRAGGLER_SCHEMES)
        if self.stragglers == "coded" and self.model != "logreg":
            raise ValueError(
                "stragglers='coded' needs a linear model (model='logreg'): a random linear code "
                f"of the data gives the gradient of a linear model only, got model={self.model!r}"
            )
        levels = self.compression_levels
        if isinstance(levels, (str, bytes)) or not isinstance(levels, (tuple, list)) or not levels:
            raise ValueError(
                "compression_levels must name at least one operator in a tuple of specs, e.g. "
                f"('none', 'topk:0.1'), got {levels!r}"
            )
        levels = tuple(levels)
        for spec in levels:
            try:
                parse_compressor(spec)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"compression_levels holds {spec!r}: {exc}") from None
        object.__setattr__(self, "compression_levels", levels)


# Bytes per client and model parameter a round holds at once: the clients' stacked parameters,
# their updates, gradients, compression residuals and momentum rows and the transforms' copies,
# in float32, with room for temporaries.
_BYTES_PER_CLIENT_PARAM = 48
# Bytes per client, local step and minibatch sample of a round's drawn indices (int64).
_BYTES_PER_INDEX = 8


def _num_params(num_features: int, num_classes: int, config: FederationConfig) -> int:
    widths = (num_features, *(config.hidden_units if config.model == "mlp" else ()), num_classes)
    return sum((fan_in + 1) * fan_out for fan_in, fan_out in itertools.pairwise(widths))


def check_federation_size(
    num_clients: int,
    num_features: int,
    num_classes: int,
    config: FederationConfig,
    *,
    max_local_steps: int = 1,
) -> None:
    """Refuse, before anything is allocated, a federation whose arrays would not fit.

    Cheap arithmetic on sizes: the clients' stacked model state (``K x parameters``) and one
    round's minibatch indices and activations (``K x local steps x batch``), each against
    :data:`~fl_gym.sim.config.MEMORY_LIMIT_BYTES`.

    Args:
        num_clients: Clients ``K``, at most :data:`~fl_gym.sim.config.MAX_DEVICES`.
        num_features: Input features of the model.
        num_classes: Output classes of the model.
        config: The learning configuration (model, hidden units, batch size).
        max_local_steps: The most local steps a round may ask of a client, at most
            :data:`~fl_gym.sim.config.MAX_LOCAL_STEPS`.

    Raises:
        ValueError: A size above its limit, naming the value, the estimate and the limit.
    """
    check_int("num_devices", num_clients, minimum=1, maximum=MAX_DEVICES)
    check_int("local_steps", max_local_steps, minimum=1, maximum=MAX_LOCAL_STEPS)
    params = _num_params(num_features, num_classes, config)
    check_memory(
        "num_devices x model parameters",
        (num_clients, params),
        num_clients * params * _BYTES_PER_CLIENT_PARAM,
        "the clients' stacked model state",
    )
    widest = max((num_features, num_classes, *config.hidden_units))
    per_sample = max_local_steps * _BYTES_PER_INDEX + 3 * 4 * widest
    check_memory(
        "num_devices x local_steps x batch_size",
        (num_clients, max_local_steps, config.batch_size),
        num_clients * config.batch_size * per_sample,
        "one round's minibatch indices and activations",
    )


@runtime_checkable
class Cell(Protocol):
    """What a federation needs of the cell its clients sit in (the radio side implements it:
    :class:`fl_gym.sim.radio.cell.WirelessCell`); learning never imports radio."""

    num_devices: int

    @property
    def available(self) -> np.ndarray:
        """``(K,)`` devices that can still take part (battery not empty)."""
        ...

    def reset(self, rng: np.random.Generator) -> None:
        """Draw a fresh cell (placement, channels, batteries)."""
        ...

    def check_selection(self, selected: np.ndarray) -> np.ndarray:
        """Raise a clear error unless ``selected`` fits the cell (count, availability)."""
        ...


@dataclass
class ClientState:
    """Every client's state that rounds carry from one to the next, ``K`` rows each.

    Attributes:
        residual: ``(K, P)`` error-feedback residuals (compression with error feedback, CS over
            the air's error accumulation), or ``None`` when nothing uses them.
        momentum: ``(K, P)`` momentum rows of the compressors that keep one, or ``None``.
        participation_count: Rounds each client was selected in.
        last_delivered_round: The last round whose aggregate included each client's update
            (-1: never).
        late_updates: ``(K, P)`` late updates in flight (``stragglers="stale"``), at most one per
            client, or ``None`` before the first.
        late_origin_round: The round each in-flight late update was trained in (-1: none).
        late_due_round: The round it reaches the server (-1: none).
        num_late_applied: Late updates of each client aggregated so far.
        coded: The devices' coded data and who has uploaded it (``stragglers="coded"``), made
            at the first round; ``None`` before.
        coded_upload_time_s: Time each device spent on its one-off coded upload.
    """

    residual: torch.Tensor | None
    momentum: torch.Tensor | None
    participation_count: np.ndarray
    last_delivered_round: np.ndarray
    late_updates: torch.Tensor | None
    late_origin_round: np.ndarray
    late_due_round: np.ndarray
    num_late_applied: np.ndarray
    coded: Any
    coded_upload_time_s: np.ndarray

    @classmethod
    def fresh(
        cls,
        num_clients: int,
        num_params: int,
        *,
        residual: bool,
        momentum: bool,
        device: torch.device | str = "cpu",
    ) -> ClientState:
        """The state of ``num_clients`` clients before their first round."""
        k, p = num_clients, num_params
        return cls(
            residual=torch.zeros(k, p, device=device) if residual else None,
            momentum=torch.zeros(k, p, device=device) if momentum else None,
            participation_count=np.zeros(k, dtype=np.int64),
            last_delivered_round=np.full(k, -1, dtype=np.int64),
            late_updates=None,
            late_origin_round=np.full(k, -1, dtype=np.int64),
            late_due_round=np.full(k, -1, dtype=np.int64),
            num_late_applied=np.zeros(k, dtype=np.int64),
            coded=None,
            coded_upload_time_s=np.zeros(k),
        )


def _client_state_field(name: str) -> property:
    """A :class:`Federation` attribute that reads and writes ``client_state.<name>``."""

    def get(self: Federation) -> Any:
        return getattr(self.client_state, name)

    def set_(self: Federation, value: Any) -> None:
        setattr(self.client_state, name, value)

    return property(get, set_, doc=f"``client_state.{name}`` (see :class:`ClientState`).")


class Federation:
    """Global model, clients and their state; runs rounds.

    The per-client state that rounds carry over is one :class:`ClientState`,
    :attr:`client_state`; its fields are also attributes of the federation (``fed.residual``
    is ``fed.client_state.residual``).

    Args:
        data: The clients' training data and the global test set.
        config: Learning configuration.
        cell: The cell the clients upload through (a :class:`Cell`, e.g.
            ``fl_gym.sim.radio.cell.WirelessCell(WirelessConfig(), K)``), or ``None`` for an
            ideal channel on which every update arrives at no cost. The federation resets it
            with the model and checks plans against it; the round's transport uses it.
        rng: Draws the initial model (through a torch generator seeded from it) and, with a
            cell, the devices' placement, channels, CPUs and batteries.
        device: Torch device of all tensors (``"cpu"`` or ``"cuda"``).
    """

    def __init__(
        self,
        data: FederatedDataset,
        config: FederationConfig | None = None,
        *,
        cell: Cell | None = None,
        rng: np.random.Generator,
        device: torch.device | str = "cpu",
    ) -> None:
        if config is not None and not isinstance(config, FederationConfig):
            raise TypeError(
                f"config must be a FederationConfig or None, got {config!r} "
                f"({type(config).__name__})"
            )
        self.config = config if config is not None else FederationConfig()
        if isinstance(self.config, FederationConfig):
            check_federation_size(
                data.num_clients, data.num_features, data.num_classes, self.config
            )
        if cell is not None and getattr(cell, "num_devices", data.num_clients) != data.num_clients:
            raise ValueError(
                f"the cell has {cell.num_devices} devices but the data {data.num_clients} clients"
            )
        self.cell: Any = cell
        self.data = data
        self.device = check_torch_device(device)
        self.model: BatchedMLP = make_model(
            self.config.model,
            data.num_features,
            data.num_classes,
            hidden_units=self.config.hidden_units,
            loss="squared_error" if data.task == "regression" else "cross_entropy",
        )
        self.clients = ClientTensors.from_arrays(
            data.x_train, data.y_train, data.client_indices, device=self.device
        )
        self.x_test = torch.as_tensor(data.x_test, dtype=torch.float32, device=self.device)
        label_dtype = torch.float32 if data.task == "regression" else torch.int64
        self.y_test = torch.as_tensor(data.y_test, dtype=label_dtype, device=self.device)
        self.compressors: tuple[Compressor, ...] = tuple(
            parse_compressor(spec).for_layout(self.model.tensor_sizes)
            for spec in self.config.compression_levels
        )
        kwargs: dict[str, Any] = {}
        if self.config.aggregator == "trimmed_mean":
            kwargs["trim_ratio"] = self.config.trim_ratio
        self.aggregator = get_aggregator(self.config.aggregator, **kwargs)
        """The server's rule over the updates that arrive: ``(updates, weights) ->
        AggregationResult``."""
        if self.config.aggregator == "fedavg":
            # The rows it gets are finite and the weights are sample counts: same result, without
            # the validation that costs more than the weighted sum of a few rows.
            self.aggregator = fedavg_trusted
        sizes = torch.as_tensor(data.client_sizes, dtype=torch.float32, device=self.device)
        self.client_weights = (
            sizes if self.config.weighting == "samples" else torch.ones_like(sizes)
        )
        self.reset(rng)

    # -- state ---------------------------------------------------------------------------------

    residual = _client_state_field("residual")
    momentum = _client_state_field("momentum")
    participation_count = _client_state_field("participation_count")
    last_delivered_round = _client_state_field("last_delivered_round")
    late_updates = _client_state_field("late_updates")
    late_origin_round = _client_state_field("late_origin_round")
    late_due_round = _client_state_field("late_due_round")
    num_late_applied = _client_state_field("num_late_applied")
    coded = _client_state_field("coded")
    coded_upload_time_s = _client_state_field("coded_upload_time_s")

    @property
    def num_clients(self) -> int:
        return self.clients.num_clients

    @property
    def num_params(self) -> int:
        return self.model.num_params

    @property
    def compression_levels(self) -> tuple[str, ...]:
        return self.config.compression_levels

    def reset(self, rng: np.random.Generator) -> None:
        """Draw a fresh global model, clear every client's state and reset the cell."""
        generator = self._torch_generator(rng)
        if self.cell is not None:
            self.cell.reset(rng)
        self.params = self.model.init_params(generator, device=self.device)
        self.client_state = ClientState.fresh(
            self.num_clients,
            self.num_params,
            residual=any(c.uses_residual for c in self.compressors),
            momentum=any(c.uses_momentum for c in self.compressors),
            device=self.device,
        )
        """Every client's state carried from round to round."""
        self.round_index = 0
        loss, accuracy = self.evaluate()
        self.accuracy, self.loss = accuracy, loss

    @property
    def staleness(self) -> np.ndarray:
        """``(K,)`` per client, the age in rounds of its update still in flight (-1 if none)."""
        return np.where(self.late_origin_round >= 0, self.round_index - self.late_origin_round, -1)

    def rounds_since_delivery(self) -> np.ndarray:
        """Per client, rounds since its last aggregated update (``round_index + 1`` if never)."""
        return self.round_index - self.last_delivered_round

    def evaluate(self, params: torch.Tensor | None = None) -> tuple[float, float]:
        """Test loss and accuracy of ``params`` (the global model by default)."""
        p = self.params if params is None else params
        loss, accuracy = self.model.evaluate(p, self.x_test, self.y_test)
        return float(loss), float(accuracy)

    # -- plans -----------------------------------------------------------------------------------

    def plan(
        self,
        *,
        selected: Any = "all",
        local_steps: Any = 1,
        compression: Any = 0,
        power_w: Any = None,
    ) -> RoundPlan:
        """Build a validated :class:`RoundPlan` from convenient inputs.

        Args:
            selected: ``"all"``, a bool mask ``(K,)`` or a sequence of client indices.
            local_steps: One int or ``(K,)`` ints.
            compression: A level index, a spec string that is one of ``compression_levels``,
                or ``(K,)`` level indices.
            power_w: Transmit powers, passed through.

        Returns:
            The plan.
        """
        k = self.num_clients
        if isinstance(selected, str):
            if selected != "all":
                raise ValueError(f"selected must be 'all', a mask or indices, got {selected!r}")
            mask = np.ones(k, dtype=bool)
        else:
            arr = np.asarray(selected)
            if arr.dtype == np.bool_:
                mask = arr
            else:
                if arr.size and not np.issubdtype(arr.dtype, np.integer):
                    raise TypeError(f"client indices must be integers, got {selected!r}")
                idx = arr.astype(np.int64).reshape(-1)
                bad = idx[(idx < 0) | (idx >= k)]
                if bad.size:
                    raise ValueError(
                        f"client indices {bad.tolist()} out of range; allowed 0..{k - 1}"
                    )
                if np.unique(idx).size != idx.size:
                    raise ValueError(f"client indices must be distinct, got {idx.tolist()}")
                mask = np.zeros(k, dtype=bool)
                mask[idx] = True
        if isinstance(compression, str):
            if compression not in self.compression_levels:
                raise ValueError(
                    f"compression {compression!r} is not one of this federation's levels "
                    f"{list(self.compression_levels)}"
                )
            compression = self.compression_levels.index(compression)
        self._check_round_size(mask, local_steps)
        return RoundPlan(mask, local_steps, compression, power_w)

    def _check_round_size(self, mask: np.ndarray, local_steps: Any) -> None:
        """Refuse local step counts whose round would not fit, before the plan is run (the
        plan itself validates their type and sign)."""
        steps = np.asarray(local_steps)
        if not steps.size or not np.issubdtype(steps.dtype, np.integer):
            return
        most = int(steps.max())
        if most > MAX_LOCAL_STEPS:
            raise ValueError(
                f"local_steps must be integers in [1, {MAX_LOCAL_STEPS}] "
                f"(fl_gym.sim.config.MAX_LOCAL_STEPS), got {local_steps!r}"
            )
        check_federation_size(
            max(int(np.count_nonzero(mask)), 1),
            self.data.num_features,
            self.data.num_classes,
            self.config,
            max_local_steps=max(most, 1),
        )

    def check_plan(self, plan: RoundPlan, allow_empty: bool, *, subchannels: bool = True) -> None:
        """Raise a clear error unless ``plan`` fits this federation (and, with ``subchannels``,
        the cell's sub-channel limit; otherwise only its batteries)."""
        if not isinstance(plan, RoundPlan):
            raise TypeError(f"plan must be a RoundPlan, got {type(plan).__name__}")
        if plan.num_clients != self.num_clients:
            raise ValueError(
                f"plan is for {plan.num_clients} clients, this federation has {self.num_clients}"
            )
        if not allow_empty and not plan.selected.any():
            raise ValueError(
                "plan selects no client; select at least one of the "
                f"{self.num_clients} clients (or pass allow_empty=True for an idle round)"
            )
        if self.cell is not None and subchannels:
            self.cell.check_selection(plan.selected)
        elif self.cell is not None:
            exhausted = plan.selected & ~self.cell.available
            if exhausted.any():
                raise ValueError(
                    f"devices {np.flatnonzero(exhausted).tolist()} have exhausted batteries and "
                    "cannot be selected"
                )
        top = int(plan.compression.max())
        if top >= len(self.compressors):
            raise ValueError(
                f"compression level {top} out of range; allowed 0..{len(self.compressors) - 1} "
                f"({list(self.compression_levels)})"
            )

    # -- state the round pipeline's stages update ----------------------------------------------

    def training_group(self, start: RoundStart) -> TrainingGroup:
        """A started round's local training as one group of a batched
        :func:`~fl_gym.sim.learning.training.local_sgd_groups` call (the training stage of
        :mod:`fl_gym.sim.rounds`): draws the round's minibatch indices from the round's
        generator, so the stages after training go on with the generator where they expect it.
        """
        ids, steps = start.client_ids, start.local_steps
        indices = None
        if ids.shape[0] > 0:
            max_steps = int(steps.max())
            if max_steps >= 1 and int(steps.min()) >= 1:
                indices = draw_round_indices(
                    self.clients, ids, max_steps, self.config.batch_size, start.generator
                )
        return TrainingGroup(self.params, self.clients, ids, steps, indices)

    def compress_rows(
        self,
        level: int,
        rows_np: np.ndarray,
        ids: torch.Tensor,
        updates: torch.Tensor,
        reconstructed: torch.Tensor,
        bits: torch.Tensor,
        generator: torch.Generator,
    ) -> None:
        """Compress ``updates[rows]`` (clients ``ids[rows]``) at ``level`` into ``reconstructed``
        and ``bits``, updating the clients' error-feedback and momentum rows (the compression
        stage's path for operators that are not batched across federations)."""
        rows = torch.as_tensor(rows_np, device=self.device)
        op = self.compressors[level]
        if type(op) is NoCompression:
            # The identity: the same values and bits as op._compress, without its copy.
            reconstructed[rows] = updates[rows]
            bits[rows] = FLOAT_BITS * updates.shape[1]
            return
        client_rows = ids[rows]
        # The rows are finite and the state rows match them (checked by the stage): skip the
        # public method's input validation, which costs as much as a small operator.
        out = op._compress(
            updates[rows],
            self.residual[client_rows] if op.uses_residual else None,
            self.momentum[client_rows] if op.uses_momentum else None,
            generator,
            # Warm-up schedules run per client, over its own participations.
            self.participation_count[client_rows.cpu().numpy()],
        )
        reconstructed[rows] = out.reconstructed
        bits[rows] = out.bits
        if out.residual is not None and self.residual is not None:
            self.residual[client_rows] = out.residual
        if out.momentum is not None and self.momentum is not None:
            self.momentum[client_rows] = out.momentum

    def set_residual_rows(self, client_rows: torch.Tensor, residual: torch.Tensor) -> None:
        """Store the error-feedback residuals of some clients (after a batched compression)."""
        if self.residual is not None:
            self.residual[client_rows] = residual

    def record_participation(self, client_ids: np.ndarray, delivered: np.ndarray) -> None:
        """Count a round's participants and remember whose update was aggregated."""
        self.participation_count[client_ids] += 1
        self.last_delivered_round[delivered] = self.round_index

    # -- one round -------------------------------------------------------------------------------

    def run_round(
        self,
        plan: RoundPlan,
        rng: np.random.Generator,
        *,
        allow_empty: bool = False,
        transport: Transport | None = None,
    ) -> RoundReport:
        """Train, compress, upload, aggregate and evaluate one round: the round pipeline
        (:func:`fl_gym.sim.rounds.run_rounds`) on a batch of one.

        With a wireless model and the default digital transport, the selected devices train and
        upload on their sub-channels at ``plan.power_w`` (``p_max`` where it is ``None``);
        stragglers, lost packets and devices whose battery ran out contribute nothing; energy
        leaves the batteries; then the channel moves on to the next round. A selected device
        whose power is below the cell's ``power_floor_w`` neither trains nor transmits.
        ``transport=OverTheAir()`` aggregates over the air instead.

        Args:
            plan: What each client does (see :meth:`plan`).
            rng: Source of this round's randomness (minibatches, stochastic compression, packet
                losses, channel evolution).
            allow_empty: Accept a plan that selects nobody (the model then stays unchanged).
            transport: How updates reach the server (:class:`~fl_gym.sim.transports.DigitalUplink`
                by default).

        Returns:
            The round's report.
        """
        from fl_gym.sim.rounds import run_rounds

        return run_rounds([self], [plan], [rng], transport=transport, allow_empty=allow_empty)[0]

    def _torch_generator(self, rng: np.random.Generator) -> torch.Generator:
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        generator = torch.Generator(device=self.device)
        generator.manual_seed(int(rng.integers(0, _SEED_HIGH)))
        return generator
