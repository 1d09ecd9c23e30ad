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

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from fl_gym.sim.aggregation import AggregationResult, fedavg_trusted, get_aggregator
from fl_gym.sim.compression import (
    FLOAT_BITS,
    QSGD,
    Compressor,
    NoCompression,
    SignSGD,
    TopK,
    parse_compressor,
)
from fl_gym.sim.config import check_choice, check_positive
from fl_gym.sim.data import FederatedDataset
from fl_gym.sim.models import MODEL_NAMES, BatchedMLP, make_model
from fl_gym.sim.plan import RoundPlan, RoundReport
from fl_gym.sim.training import (
    ClientTensors,
    LocalTrainingResult,
    TrainingGroup,
    draw_round_indices,
    local_sgd,
)
from fl_gym.sim.wireless import UplinkReport, WirelessCell, WirelessConfig, uplink_many

__all__ = [
    "Federation",
    "FederationConfig",
    "PendingUpdates",
    "RoundStart",
    "compress_rounds",
    "stage_rounds",
]

_SEED_HIGH = 2**63 - 1
AGGREGATOR_NAMES = ("fedavg", "median", "trimmed_mean", "geometric_median")
WEIGHTINGS = ("samples", "uniform")


@dataclass(frozen=True)
class FederationConfig:
    """The learning side of a federation.

    Attributes:
        model: ``"mlp"`` or ``"logreg"``.
        hidden_units: Hidden layer widths of the MLP.
        learning_rate: Clients' local SGD step size.
        batch_size: Minibatch size of a local step.
        weight_decay: L2 coefficient of the local objective.
        server_learning_rate: Scale of the aggregated update applied to the global model.
        aggregator: ``"fedavg"``, ``"median"``, ``"trimmed_mean"`` or ``"geometric_median"``.
        trim_ratio: Fraction trimmed at each end by ``"trimmed_mean"``.
        weighting: Aggregation weights: ``"samples"`` (client dataset sizes, as in FedAvg) or
            ``"uniform"``.
        compression_levels: Operator specs a plan's per-client ``compression`` indexes into
            (see :func:`fl_gym.sim.compression.parse_compressor`).
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

    def __post_init__(self) -> None:
        check_choice("model", self.model, MODEL_NAMES)
        hidden = self.hidden_units
        if isinstance(hidden, (str, bytes)) or not all(
            isinstance(h, (int, np.integer)) and not isinstance(h, bool) and h >= 1
            for h in (hidden if isinstance(hidden, (tuple, list)) else [None])
        ):
            raise ValueError(
                f"hidden_units must be a tuple of integers >= 1, e.g. (64,), got {hidden!r}"
            )
        object.__setattr__(self, "hidden_units", tuple(int(h) for h in hidden))
        check_positive("learning_rate", self.learning_rate)
        if not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        check_positive("weight_decay", self.weight_decay, allow_zero=True)
        check_positive("server_learning_rate", self.server_learning_rate)
        check_choice("aggregator", self.aggregator, AGGREGATOR_NAMES)
        if not 0.0 <= self.trim_ratio < 0.5:
            raise ValueError(f"trim_ratio must be in [0, 0.5), got {self.trim_ratio!r}")
        check_choice("weighting", self.weighting, WEIGHTINGS)
        levels = tuple(self.compression_levels)
        if not levels:
            raise ValueError("compression_levels must name at least one operator, e.g. ('none',)")
        for spec in levels:
            parse_compressor(spec)  # raises a clear error for an unknown or malformed spec
        object.__setattr__(self, "compression_levels", levels)


class Federation:
    """Global model, clients and their state; runs rounds.

    Args:
        data: The clients' training data and the global test set.
        config: Learning configuration.
        wireless: The cell the clients upload through, or ``None`` for an ideal channel on
            which every update arrives at no cost.
        rng: Draws the initial model (through a torch generator seeded from it) and, with a
            wireless model, the devices' placement, channels, CPUs and batteries.
        device: Torch device of all tensors (``"cpu"`` or ``"cuda"``).
    """

    def __init__(
        self,
        data: FederatedDataset,
        config: FederationConfig | None = None,
        *,
        wireless: WirelessConfig | None = None,
        rng: np.random.Generator,
        device: torch.device | str = "cpu",
    ) -> None:
        self.config = config if config is not None else FederationConfig()
        self.cell = WirelessCell(wireless, data.num_clients) if wireless is not None else None
        self.data = data
        self.device = torch.device(device)
        self.model: BatchedMLP = make_model(
            self.config.model,
            data.num_features,
            data.num_classes,
            hidden_units=self.config.hidden_units,
        )
        self.clients = ClientTensors.from_arrays(
            data.x_train, data.y_train, data.client_indices, device=self.device
        )
        self.x_test = torch.as_tensor(data.x_test, dtype=torch.float32, device=self.device)
        self.y_test = torch.as_tensor(data.y_test, dtype=torch.int64, device=self.device)
        self.compressors: tuple[Compressor, ...] = tuple(
            parse_compressor(spec) for spec in self.config.compression_levels
        )
        kwargs: dict[str, Any] = {}
        if self.config.aggregator == "trimmed_mean":
            kwargs["trim_ratio"] = self.config.trim_ratio
        self._aggregate = get_aggregator(self.config.aggregator, **kwargs)
        if self.config.aggregator == "fedavg":
            # The rows it gets are finite and the weights are sample counts: same result, without
            # the validation that costs more than the weighted sum of a few rows.
            self._aggregate = fedavg_trusted
        sizes = torch.as_tensor(data.client_sizes, dtype=torch.float32, device=self.device)
        self.client_weights = (
            sizes if self.config.weighting == "samples" else torch.ones_like(sizes)
        )
        self.reset(rng)

    # -- state ---------------------------------------------------------------------------------

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
        k, p = self.num_clients, self.num_params
        needs_residual = any(c.uses_residual for c in self.compressors)
        needs_momentum = any(c.uses_momentum for c in self.compressors)
        self.residual = torch.zeros(k, p, device=self.device) if needs_residual else None
        self.momentum = torch.zeros(k, p, device=self.device) if needs_momentum else None
        self.round_index = 0
        self.participation_count = np.zeros(k, dtype=np.int64)
        self.last_delivered_round = np.full(k, -1, dtype=np.int64)
        loss, accuracy = self.evaluate()
        self.accuracy, self.loss = accuracy, loss

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
        return RoundPlan(mask, local_steps, compression, power_w)

    def _check_plan(self, plan: RoundPlan, allow_empty: bool, *, subchannels: bool = True) -> None:
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

    # -- one round -------------------------------------------------------------------------------

    def train_and_compress(
        self, plan: RoundPlan, rng: np.random.Generator, *, allow_empty: bool = False
    ) -> PendingUpdates:
        """First half of a round: local training and compression of the selected clients.

        The wireless layer decides between this and :meth:`apply`, from ``bits``, which of the
        updates arrive. Clients' residual and momentum rows are updated here: a client that
        transmitted has spent its residual whether or not the packet gets through.
        """
        start = self._start_training(plan, rng, allow_empty)
        return self._compress(start, self.train_local(start))

    def _start_training(
        self, plan: RoundPlan, rng: np.random.Generator, allow_empty: bool
    ) -> RoundStart:
        self._check_plan(plan, allow_empty)
        generator = self._torch_generator(rng)
        ids_np = plan.selected_ids
        ids = torch.as_tensor(ids_np, dtype=torch.int64, device=self.device)
        steps = torch.as_tensor(plan.local_steps[ids_np], dtype=torch.int64, device=self.device)
        return RoundStart(plan, ids, steps, generator)

    def train_local(self, start: RoundStart) -> LocalTrainingResult:
        """Local training of a started round's clients (:func:`~fl_gym.sim.training.local_sgd`)."""
        return local_sgd(
            self.model,
            self.params,
            self.clients,
            start.client_ids,
            start.local_steps,
            batch_size=self.config.batch_size,
            learning_rate=self.config.learning_rate,
            generator=start.generator,
            weight_decay=self.config.weight_decay,
        )

    def training_group(self, start: RoundStart) -> TrainingGroup:
        """A started round's local training as one group of a batched call over federations.

        Draws the round's minibatch indices from the round's generator exactly as
        :meth:`train_local` would, so that
        ``local_sgd_groups(model, [fed.training_group(start), ...])`` trains these clients bit
        for bit as :meth:`train_local` does, and :meth:`finish_round` then goes on with the
        generator where it would be.
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

    def _compress(self, start: RoundStart, trained: LocalTrainingResult) -> PendingUpdates:
        plan, generator, ids = start.plan, start.generator, start.client_ids
        ids_np = plan.selected_ids
        updates = trained.params - self.params
        finite = _finite_rows(updates)
        if not bool(finite.all()):
            # A diverged client sends nothing usable; zero its row so that neither the
            # compressor nor its error-feedback state ever sees a NaN.
            updates = torch.where(finite.unsqueeze(1), updates, torch.zeros_like(updates))
        reconstructed = torch.zeros_like(updates)
        bits = torch.zeros(ids.shape[0], dtype=torch.int64, device=self.device)
        levels = plan.compression[ids_np]
        finite_np = finite.cpu().numpy()
        for level in np.unique(levels):
            rows_np = np.flatnonzero((levels == level) & finite_np)
            if rows_np.size:
                self._compress_rows(
                    int(level), rows_np, ids, updates, reconstructed, bits, generator
                )
        train_loss = torch.where(finite, trained.train_loss, torch.zeros_like(trained.train_loss))
        return PendingUpdates(
            plan=plan,
            client_ids=ids_np,
            updates=reconstructed,
            finite=finite_np,
            bits=bits.cpu().numpy(),
            train_loss=train_loss.cpu().numpy().astype(np.float64),
        )

    def _compress_rows(
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
        and ``bits``, updating the clients' error-feedback and momentum rows."""
        rows = torch.as_tensor(rows_np, device=self.device)
        op = self.compressors[level]
        if type(op) is NoCompression:
            # The identity: the same values and bits as op._compress, without its copy.
            reconstructed[rows] = updates[rows]
            bits[rows] = FLOAT_BITS * updates.shape[1]
            return
        client_rows = ids[rows]
        # The rows are finite and the state rows match them (checked above): skip the
        # public method's input validation, which costs as much as a small operator.
        out = op._compress(
            updates[rows],
            self.residual[client_rows] if op.uses_residual else None,
            self.momentum[client_rows] if op.uses_momentum else None,
            generator,
            self.round_index,
        )
        reconstructed[rows] = out.reconstructed
        bits[rows] = out.bits
        if out.residual is not None and self.residual is not None:
            self.residual[client_rows] = out.residual
        if out.momentum is not None and self.momentum is not None:
            self.momentum[client_rows] = out.momentum

    def apply(self, pending: PendingUpdates, uplink: UplinkReport | None = None) -> RoundReport:
        """Second half of a round: aggregate the updates that arrived and evaluate.

        Args:
            pending: The output of :meth:`train_and_compress` for this round.
            uplink: What the wireless cell reported for this round; ``None`` means an ideal
                channel on which every pending update arrives.

        Returns:
            The round's report.
        """
        return self._conclude(self._aggregate_pending(pending, uplink), *self.evaluate())

    def _aggregate_pending(
        self, pending: PendingUpdates, uplink: UplinkReport | None
    ) -> dict[str, Any]:
        """:meth:`apply` up to the evaluation: the report's fields but accuracy and loss."""
        num = pending.client_ids.shape[0]
        k = self.num_clients
        if uplink is None:
            arrived_np = np.ones(num, dtype=bool)
            zeros = np.zeros(k)
            energy_compute = energy_transmit = latency = packet_error = zeros
            straggler = packet_lost = np.zeros(k, dtype=bool)
            round_time_s = channel_uses = 0.0
        else:
            arrived_np = uplink.delivered[pending.client_ids]
            energy_compute, energy_transmit = uplink.compute_energy_j, uplink.transmit_energy_j
            latency, packet_error = uplink.latency_s, uplink.packet_error_prob
            straggler, packet_lost = uplink.straggler, uplink.packet_lost
            round_time_s = uplink.round_time_s
            channel_uses = float(
                uplink.transmit_time_s.sum() * self.cell.config.subchannel_bandwidth_hz
            )
        use = arrived_np & pending.finite
        num_rejected = int((arrived_np & ~pending.finite).sum())
        update_norm = 0.0
        accepted = np.zeros(num, dtype=bool)
        if use.any():
            rows = torch.as_tensor(np.flatnonzero(use), device=self.device)
            ids = torch.as_tensor(pending.client_ids[use], device=self.device)
            result: AggregationResult = self._aggregate(
                pending.updates[rows], self.client_weights[ids]
            )
            step = result.aggregate * self.config.server_learning_rate
            self.params = self.params + step
            update_norm = float(torch.linalg.vector_norm(step))
            accepted[np.flatnonzero(use)] = result.accepted.cpu().numpy()
            num_rejected += int(result.num_rejected)
        delivered = np.zeros(k, dtype=bool)
        delivered[pending.client_ids[accepted]] = True
        self.participation_count[pending.client_ids] += 1
        self.last_delivered_round[delivered] = self.round_index
        bits_up = np.zeros(k, dtype=np.int64)
        bits_up[pending.client_ids] = pending.bits
        train_loss = np.zeros(k, dtype=np.float64)
        train_loss[pending.client_ids] = pending.train_loss
        return dict(
            round_index=self.round_index,
            selected=pending.plan.selected,
            delivered=delivered,
            local_steps=pending.plan.local_steps,
            compression=pending.plan.compression,
            bits_up=bits_up,
            train_loss=train_loss,
            num_rejected=num_rejected,
            update_norm=update_norm,
            energy_compute_j=energy_compute,
            energy_transmit_j=energy_transmit,
            latency_s=latency,
            packet_error=packet_error,
            straggler=straggler,
            packet_lost=packet_lost,
            round_time_s=round_time_s,
            channel_uses=channel_uses,
        )

    def _conclude(self, fields: dict[str, Any], loss: float, accuracy: float) -> RoundReport:
        """:meth:`apply` from the evaluation on: record it, build the report, count the round."""
        self.loss, self.accuracy = loss, accuracy
        report = RoundReport(accuracy=accuracy, loss=loss, **fields)
        self.round_index += 1
        return report

    def run_round(
        self, plan: RoundPlan, rng: np.random.Generator, *, allow_empty: bool = False
    ) -> RoundReport:
        """Train, compress, upload, aggregate and evaluate one round.

        With a wireless model, the selected devices train and upload on their sub-channels at
        ``plan.power_w`` (``p_max`` where it is ``None``); stragglers, lost packets and devices
        whose battery ran out contribute nothing; energy leaves the batteries; then the channel
        moves on to the next round. A selected device whose power is below the cell's
        ``power_floor_w`` neither trains nor transmits.

        Args:
            plan: What each client does (see :meth:`plan`).
            rng: Source of this round's randomness (minibatches, stochastic compression, packet
                losses, channel evolution).
            allow_empty: Accept a plan that selects nobody (the model then stays unchanged).

        Returns:
            The round's report.
        """
        start = self.begin_round(plan, rng, allow_empty=allow_empty)
        return self.finish_round(start, self.train_local(start), rng)

    def begin_round(
        self, plan: RoundPlan, rng: np.random.Generator, *, allow_empty: bool = False
    ) -> RoundStart:
        """What :meth:`run_round` does before local training: validate, seed the round's torch
        generator. ``finish_round(start, train_local(start), rng)`` completes the round; a batched
        caller may train many federations' started rounds at once instead (see
        :meth:`training_group`)."""
        if self.cell is None:
            return self._start_training(plan, rng, allow_empty)
        self._check_plan(plan, allow_empty)
        cell_config = self.cell.config
        power = (
            np.full(self.num_clients, cell_config.p_max_w) if plan.power_w is None else plan.power_w
        )
        silent = plan.selected & (power < cell_config.power_floor_w)
        if silent.any():
            plan = RoundPlan(plan.selected & ~silent, plan.local_steps, plan.compression, power)
        start = self._start_training(plan, rng, True)
        return replace(start, silent=silent, power_w=power)

    def finish_round(
        self, start: RoundStart, trained: LocalTrainingResult, rng: np.random.Generator
    ) -> RoundReport:
        """What :meth:`run_round` does after local training: compress, upload, aggregate,
        evaluate and move the channel on.

        Args:
            start: The round as :meth:`begin_round` started it.
            trained: Its clients' local training (:meth:`train_local` or a batched equivalent).
            rng: The round's generator, as passed to :meth:`begin_round`.

        Returns:
            The round's report.
        """
        staged = self.stage_round(start, trained, rng)
        return self.conclude_round(staged, *self.evaluate(), rng)

    def stage_round(
        self,
        start: RoundStart,
        trained: LocalTrainingResult,
        rng: np.random.Generator,
        *,
        pending: PendingUpdates | None = None,
    ) -> dict[str, Any]:
        """:meth:`finish_round` up to the test-set evaluation of the new global model.

        A batched caller evaluates many federations' models at once, then calls
        :meth:`conclude_round` with each one's loss and accuracy. ``pending``, if given, is the
        round's compression as :func:`compress_rounds` made it (else it is made here).
        """
        if pending is None:
            pending = self._compress(start, trained)
        if self.cell is None:
            return self._aggregate_pending(pending, None)
        args = self._uplink_args(start, pending, rng)
        if args is not None:
            # begin_round validated the plan (selection, powers, steps) and the config the
            # batch size: skip the public method's checks, which cost as much as its arithmetic.
            uplink = self.cell._uplink(*args, self.config.batch_size, rng)
        else:  # the public method raises the error
            assert start.power_w is not None and start.silent is not None
            plan = start.plan
            uplink = self.cell.uplink(
                plan.selected | start.silent,
                np.where(plan.selected, start.power_w, 0.0),
                self._round_bits(pending),
                plan.local_steps,
                self.config.batch_size,
                rng,
            )
        return self._aggregate_pending(pending, uplink)

    def _round_bits(self, pending: PendingUpdates) -> np.ndarray:
        bits = np.zeros(self.num_clients)
        bits[pending.client_ids] = pending.bits
        return bits

    def _uplink_args(
        self, start: RoundStart, pending: PendingUpdates, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """The validated inputs of the round's uplink (selection, powers, bits, local steps) for
        :meth:`WirelessCell._uplink`, or ``None`` where the public ``uplink`` must run to raise
        its error (a power above ``p_max_w``, an ``rng`` that is not a generator)."""
        assert self.cell is not None
        assert start.silent is not None and start.power_w is not None
        plan = start.plan
        power = np.where(plan.selected, start.power_w, 0.0)
        p_max_w = self.cell.config.p_max_w
        if not isinstance(rng, np.random.Generator) or (power > p_max_w * (1.0 + 1e-9)).any():
            return None
        return (
            plan.selected | start.silent,
            np.minimum(power, p_max_w),
            self._round_bits(pending),
            np.asarray(plan.local_steps, dtype=np.float64),
        )

    def conclude_round(
        self, staged: dict[str, Any], loss: float, accuracy: float, rng: np.random.Generator
    ) -> RoundReport:
        """:meth:`finish_round` from the evaluation (``evaluate()`` of the new global model) on."""
        report = self._conclude(staged, loss, accuracy)
        if self.cell is not None:
            self.cell.advance(rng)
        return report

    def run_ota_round(
        self,
        plan: RoundPlan,
        rng: np.random.Generator,
        *,
        power_scale: float = 1.0,
        allow_empty: bool = False,
    ) -> RoundReport:
        """One round with over-the-air (analog) aggregation (Yang, Jiang, Shi, Ding, TWC 2020).

        Every selected device trains; those whose compute time plus the airtime fit the deadline
        and whose battery covers the round then transmit their raw update simultaneously, one
        parameter per channel use over the whole bandwidth (airtime ``d / bandwidth_hz``), with
        zero-forcing transmit scalars; the base station's ``num_antennas`` antennas combine them
        with a receive beamformer designed for the set (:func:`receive_beamformer`), and the
        estimate of the sample-weighted average, receiver noise included, moves the global
        model. There is no sub-channel limit and no compression. Energy: compute as in the
        digital round, transmit = each device's average power x airtime.

        Args:
            plan: Which devices take part and their local steps (compression and power ignored).
            rng: This round's randomness (minibatches, receiver noise, channel evolution).
            power_scale: Per-device power budget ``P0`` as a fraction of ``p_max``, in (0, 1].
            allow_empty: Accept a plan that selects nobody.

        Returns:
            The round's report; ``aggregation_mse`` is the analytic per-parameter error the
            channel added and ``channel_uses`` is ``d``.
        """
        from fl_gym.sim.over_the_air import ota_aggregate, ota_channels, receive_beamformer

        if self.cell is None:
            raise ValueError("over-the-air aggregation needs a wireless model (wireless=...)")
        if not (isinstance(power_scale, (int, float)) and 0.0 < power_scale <= 1.0):
            raise ValueError(f"power_scale must be in (0, 1], got {power_scale!r}")
        self._check_plan(plan, allow_empty, subchannels=False)
        cell, cfg = self.cell, self.cell.config
        k, d = self.num_clients, self.num_params
        generator = self._torch_generator(rng)
        ids_np = plan.selected_ids
        airtime_s = d / cfg.bandwidth_hz
        p0 = power_scale * cfg.p_max_w
        compute_s, compute_j = cell.compute_cost(plan.local_steps, self.config.batch_size)
        compute_s = np.where(plan.selected, compute_s, 0.0)
        compute_j = np.where(plan.selected, compute_j, 0.0)
        straggler = plan.selected & (compute_s + airtime_s > cfg.deadline_s)
        affordable = cell.battery_j >= compute_j + p0 * airtime_s

        trained = local_sgd(
            self.model,
            self.params,
            self.clients,
            torch.as_tensor(ids_np, dtype=torch.int64, device=self.device),
            torch.as_tensor(plan.local_steps[ids_np], dtype=torch.int64, device=self.device),
            batch_size=self.config.batch_size,
            learning_rate=self.config.learning_rate,
            generator=generator,
            weight_decay=self.config.weight_decay,
        )
        updates = trained.params - self.params
        finite = np.zeros(k, dtype=bool)
        finite[ids_np] = torch.isfinite(updates).all(dim=1).cpu().numpy()
        send = plan.selected & ~straggler & affordable & finite
        rows = np.flatnonzero(send[ids_np])
        transmit_w = np.zeros(k)
        mse = 0.0
        update_norm = 0.0
        if rows.size:
            send_ids = ids_np[rows]
            channels = ota_channels(cell.large_scale_gain[send_ids], cell.fading[send_ids])
            weights = self.data.client_sizes[send_ids].astype(np.float64)
            # 20 mirror-descent iterations and one local ascent reach >= 99.9% of the dual bound
            # on the default cells in ~2 ms; the function's defaults take ten times longer.
            beamformer = receive_beamformer(
                channels, weights, num_iterations=20, num_starts=1
            ).beamformer
            result = ota_aggregate(
                updates[torch.as_tensor(rows, device=self.device)],
                weights,
                channels,
                beamformer,
                power_w=p0,
                noise_power_w=cfg.noise_psd_w_per_hz * cfg.bandwidth_hz,
                generator=generator,
            )
            step = result.aggregate.to(self.params.dtype) * self.config.server_learning_rate
            self.params = self.params + step
            update_norm = float(torch.linalg.vector_norm(step))
            transmit_w[send_ids] = result.transmit_power_w
            mse = float(result.aggregate_mse)
        energy_transmit = transmit_w * airtime_s
        spent = cell.drain(compute_j + energy_transmit)
        # A device that could not pay for the round spent what it had, computing first.
        energy_compute = np.minimum(compute_j, spent)
        energy_transmit = spent - energy_compute
        latency = np.minimum(np.where(send, compute_s + airtime_s, compute_s), cfg.deadline_s)
        self.participation_count[ids_np] += 1
        self.last_delivered_round[send] = self.round_index
        loss, accuracy = self.evaluate()
        self.loss, self.accuracy = loss, accuracy
        train_loss = np.zeros(k)
        train_loss[ids_np] = np.where(
            finite[ids_np], trained.train_loss.cpu().numpy().astype(np.float64), 0.0
        )
        report = RoundReport(
            round_index=self.round_index,
            selected=plan.selected,
            delivered=send,
            local_steps=plan.local_steps,
            compression=np.zeros(k, dtype=np.int64),
            bits_up=np.zeros(k, dtype=np.int64),
            train_loss=train_loss,
            num_rejected=int((plan.selected & ~finite).sum()),
            accuracy=accuracy,
            loss=loss,
            update_norm=update_norm,
            energy_compute_j=energy_compute,
            energy_transmit_j=energy_transmit,
            latency_s=latency,
            packet_error=np.zeros(k),
            straggler=straggler,
            packet_lost=np.zeros(k, dtype=bool),
            round_time_s=float(latency.max(initial=0.0)),
            channel_uses=float(d if rows.size else 0),
            aggregation_mse=mse,
        )
        self.round_index += 1
        cell.advance(rng)
        return report

    def _torch_generator(self, rng: np.random.Generator) -> torch.Generator:
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        generator = torch.Generator(device=self.device)
        generator.manual_seed(int(rng.integers(0, _SEED_HIGH)))
        return generator


_BATCHED_OPERATORS = (NoCompression, TopK, SignSGD, QSGD)
"""Operators that compress row by row, with no state but error feedback and no randomness but
uniform draws of the rows' shape (QSGD): the rows of many federations go through one call, each
federation's draws made from its own generator, and each row's result is the one it gets alone."""


def _finite_rows(x: torch.Tensor) -> torch.Tensor:
    """``torch.isfinite(x).all(dim=1)``, through the row sums where they are all finite (a row
    with a NaN or an infinity has a non-finite sum), which is several times faster."""
    if bool(torch.isfinite(x.sum(dim=1)).all()):
        return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    return torch.isfinite(x).all(dim=1)


def compress_rounds(
    feds: list[Federation], starts: list[RoundStart], trained: list[LocalTrainingResult]
) -> list[PendingUpdates]:
    """``[fed._compress(start, result) ...]`` of many federations' rounds, batched, bit for bit.

    The updates of all rounds are formed and checked in one pass; every compression level whose
    operator is row-wise (none, top-k, sign, QSGD) and the same in every federation compresses
    the rows of all federations in one call. Levels run in ascending order as in
    :meth:`Federation._compress`, so every round's generator is drawn in the same order (a
    stochastic batched level draws each federation's uniforms from its own generator); other
    operators run per federation.
    """
    if not feds:
        return []
    first = feds[0]
    if any(
        fed.num_params != first.num_params
        or fed.params.dtype != first.params.dtype
        or fed.device != first.device
        for fed in feds
    ):
        return [fed._compress(s, t) for fed, s, t in zip(feds, starts, trained, strict=True)]
    device = first.device
    sizes = [start.client_ids.shape[0] for start in starts]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64).tolist()
    local = torch.cat([t.params for t in trained])
    global_rows = torch.cat(
        [fed.params.unsqueeze(0).expand(n, -1) for fed, n in zip(feds, sizes, strict=True)]
    )
    updates = local - global_rows
    finite = _finite_rows(updates)
    finite_np = finite.cpu().numpy()
    if not finite_np.all():
        updates = torch.where(finite.unsqueeze(1), updates, torch.zeros_like(updates))
    reconstructed = torch.zeros_like(updates)
    bits = torch.zeros(updates.shape[0], dtype=torch.int64, device=device)
    ids_np = [start.plan.selected_ids for start in starts]
    levels = np.concatenate(
        [start.plan.compression[ids] for start, ids in zip(starts, ids_np, strict=True)]
    ).astype(np.int64)
    owner = np.repeat(np.arange(len(feds)), sizes)
    for level in np.unique(levels).tolist():
        at_level = levels == level
        involved = np.unique(owner[at_level]).tolist()
        op = feds[involved[0]].compressors[level]
        if type(op) not in _BATCHED_OPERATORS or any(
            feds[e].compressors[level] != op for e in involved
        ):
            for e in involved:
                begin, end = offsets[e], offsets[e + 1]
                rows_np = np.flatnonzero(at_level[begin:end] & finite_np[begin:end])
                if rows_np.size:
                    feds[e]._compress_rows(
                        level,
                        rows_np,
                        starts[e].client_ids,
                        updates[begin:end],
                        reconstructed[begin:end],
                        bits[begin:end],
                        starts[e].generator,
                    )
            continue
        rows_np = np.flatnonzero(at_level & finite_np)
        if rows_np.size == 0:
            continue
        rows = torch.as_tensor(rows_np, device=device)
        if type(op) is NoCompression:
            reconstructed[rows] = updates[rows]
            bits[rows] = FLOAT_BITS * updates.shape[1]
            continue
        # Each federation's client rows of this level, in row order.
        members = []
        for e in np.unique(owner[rows_np]).tolist():
            mine = rows_np[owner[rows_np] == e] - offsets[e]
            members.append((e, starts[e].client_ids[torch.as_tensor(mine, device=device)]))
        x = updates[rows]
        if type(op) is QSGD:
            draws = torch.cat(
                [
                    torch.rand(
                        (c.shape[0], x.shape[1]),
                        generator=starts[e].generator,
                        device=starts[e].generator.device,
                        dtype=x.dtype,
                    ).to(device)
                    for e, c in members
                ]
            )
            out = op._quantize(x, draws)
        else:
            residual = None
            if op.uses_residual:
                residual = torch.cat([feds[e].residual[c] for e, c in members])  # type: ignore[index]
            out = op._compress(x, residual, None, None, 0)
        reconstructed[rows] = out.reconstructed
        bits[rows] = out.bits
        if out.residual is not None:
            begin = 0
            for e, client_rows in members:
                end = begin + client_rows.shape[0]
                if feds[e].residual is not None:
                    feds[e].residual[client_rows] = out.residual[begin:end]  # type: ignore[index]
                begin = end
    loss = torch.cat([t.train_loss for t in trained])
    loss_np = torch.where(finite, loss, torch.zeros_like(loss)).cpu().numpy().astype(np.float64)
    bits_np = bits.cpu().numpy()
    return [
        PendingUpdates(
            plan=start.plan,
            client_ids=ids_np[e],
            updates=reconstructed[offsets[e] : offsets[e + 1]],
            finite=finite_np[offsets[e] : offsets[e + 1]],
            bits=bits_np[offsets[e] : offsets[e + 1]],
            train_loss=loss_np[offsets[e] : offsets[e + 1]],
        )
        for e, start in enumerate(starts)
    ]


def stage_rounds(
    feds: list[Federation],
    starts: list[RoundStart],
    trained: list[LocalTrainingResult],
    rngs: list[np.random.Generator],
) -> list[dict[str, Any]]:
    """``[fed.stage_round(start, result, rng) ...]`` of many federations, bit for bit: their
    compression in one pass (:func:`compress_rounds`) and their cells' uplinks in one array
    computation (:func:`~fl_gym.sim.wireless.uplink_many`); aggregation stays per federation."""
    pendings = compress_rounds(feds, starts, trained)
    staged: list[dict[str, Any] | None] = [None] * len(feds)
    batch: dict[int, list[tuple[int, tuple[np.ndarray, ...]]]] = {}
    for e, (fed, start, pending) in enumerate(zip(feds, starts, pendings, strict=True)):
        args = None if fed.cell is None else fed._uplink_args(start, pending, rngs[e])
        if args is None:
            staged[e] = fed.stage_round(start, trained[e], rngs[e], pending=pending)
        else:
            batch.setdefault(fed.config.batch_size, []).append((e, args))
    for batch_size, members in batch.items():
        cells = [feds[e].cell for e, _ in members]
        columns = list(zip(*(args for _, args in members), strict=True))
        reports = uplink_many(
            cells,  # type: ignore[arg-type]
            *[list(column) for column in columns],
            batch_size,
            [rngs[e] for e, _ in members],
        )
        for (e, _), uplink in zip(members, reports, strict=True):
            staged[e] = feds[e]._aggregate_pending(pendings[e], uplink)
    return staged  # type: ignore[return-value]


@dataclass(frozen=True, eq=False)
class RoundStart:
    """A round between :meth:`Federation.begin_round` and its local training.

    Attributes:
        plan: The plan that trains (with a wireless cell, devices below the power floor are
            taken out of it).
        client_ids: ``(S,)`` int64 the training clients, ascending.
        local_steps: ``(S,)`` int64 their local steps.
        generator: The round's torch generator (minibatches, then stochastic compression).
        silent: With a wireless cell, the selected devices below the power floor.
        power_w: With a wireless cell, the devices' transmit powers.
    """

    plan: RoundPlan
    client_ids: torch.Tensor
    local_steps: torch.Tensor
    generator: torch.Generator
    silent: np.ndarray | None = None
    power_w: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class PendingUpdates:
    """Compressed updates of one round, between training and aggregation.

    Attributes:
        plan: The round's plan.
        client_ids: ``(S,)`` the selected clients, ascending.
        updates: ``(S, P)`` what the server would decode from each client.
        finite: ``(S,)`` False where local training diverged (the update is rejected).
        bits: ``(S,)`` exact bits each client uploads.
        train_loss: ``(S,)`` each client's mean local training loss.
    """

    plan: RoundPlan
    client_ids: np.ndarray
    updates: torch.Tensor
    finite: np.ndarray
    bits: np.ndarray
    train_loss: np.ndarray
