"""The stages' contract: the records a round passes from stage to stage, and the protocols of the
stages that are objects.

A round of the pipeline (:func:`fl_gym.sim.rounds.run_rounds`) is a sequence of stages over a
batch of federations: start, train, transform, compress, transport, aggregate, evaluate,
conclude. Most are functions of :mod:`fl_gym.sim.rounds`; two are objects behind a small
protocol defined here, so that a new one is one new class, with no change to the pipeline, the
environments or the vector environment:

* a **transport** (:class:`Transport`) validates a plan against its channel model and starts the
  round (:meth:`Transport.start`, which ends with :func:`start_round`), says whether the
  compression stage runs before it (:attr:`Transport.compresses`), and carries every round's
  :class:`PendingUpdates` to the server as a :class:`Delivery` (:meth:`Transport.deliver`).
  Write it as one module of :mod:`fl_gym.sim.transports`; it imports this module (and
  :mod:`fl_gym.sim.radio`, :mod:`fl_gym.sim.learning`), never the pipeline.
* an **update transform** (:class:`UpdateTransform`) changes the trained models between local
  training and compression (:meth:`UpdateTransform.apply`) and may act on the new global models
  after aggregation (:meth:`UpdateTransform.after_aggregate`). A transform that lives in
  :mod:`fl_gym.sim.learning` (which cannot import this module) becomes one by
  ``UpdateTransform.register``, as the adversary stage does below.

The records (:class:`RoundStart`, :class:`PendingUpdates`, :class:`Delivery`) are frozen: a
stage makes new ones, it does not change those it is given.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fl_gym.sim.learning.adversary import ByzantineTransform, UpdateMonitor
from fl_gym.sim.learning.training import LocalTrainingResult
from fl_gym.sim.plan import RoundPlan

if TYPE_CHECKING:
    from fl_gym.sim.learning.federation import Federation

__all__ = [
    "Delivery",
    "PendingUpdates",
    "RoundStart",
    "Transport",
    "UpdateTransform",
    "start_round",
]


# -- records passed between stages ----------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RoundStart:
    """A round after :meth:`Transport.start`, before local training.

    Attributes:
        plan: The plan that trains (a transport may take devices out of it, e.g. those below
            the cell's power floor).
        client_ids: ``(S,)`` int64 the training clients, ascending.
        local_steps: ``(S,)`` int64 their local steps.
        generator: The round's torch generator (minibatches, then stochastic compression and
            receiver noise).
        silent: With a wireless cell, the selected devices that neither train nor transmit.
        power_w: With a wireless cell, the devices' transmit powers (or power budget).
    """

    plan: RoundPlan
    client_ids: torch.Tensor
    local_steps: torch.Tensor
    generator: torch.Generator
    silent: np.ndarray | None = None
    power_w: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class PendingUpdates:
    """One round's updates between compression and the transport.

    Attributes:
        plan: The round's plan.
        client_ids: ``(S,)`` the training clients, ascending.
        updates: ``(S, P)`` what the server decodes from each client (its raw update when the
            transport does not compress).
        finite: ``(S,)`` False where local training diverged (the row is zero and never used).
        bits: ``(S,)`` exact bits each client uploads (0 for analog transports).
        train_loss: ``(S,)`` each client's mean local training loss (``inf`` where it diverged:
            a non-finite update or loss is never reported as a good value).
    """

    plan: RoundPlan
    client_ids: np.ndarray
    updates: torch.Tensor
    finite: np.ndarray
    bits: np.ndarray
    train_loss: np.ndarray


@dataclass(frozen=True, eq=False)
class Delivery:
    """What a transport reports for one round.

    Attributes:
        arrived: ``(S,)`` per pending row, whether its update reached the server.
        energy_compute_j: ``(K,)`` energy each device spent computing.
        energy_transmit_j: ``(K,)`` energy each device spent transmitting.
        latency_s: ``(K,)`` each device's compute + upload time (capped at the deadline).
        packet_error: ``(K,)`` each device's packet error probability.
        straggler: ``(K,)`` devices that missed the deadline.
        packet_lost: ``(K,)`` devices whose packet was lost.
        round_time_s: Duration of the round.
        channel_uses: Channel uses the round took.
        aggregate: The update the channel itself combined (analog aggregation), already the
            server's estimate of the weighted average; ``None`` when the server aggregates the
            arrived rows with its rule.
        aggregation_mse: Per-parameter mean squared error the channel added (analog), or
            ``None``.
    """

    arrived: np.ndarray
    energy_compute_j: np.ndarray
    energy_transmit_j: np.ndarray
    latency_s: np.ndarray
    packet_error: np.ndarray
    straggler: np.ndarray
    packet_lost: np.ndarray
    round_time_s: float
    channel_uses: float
    aggregate: torch.Tensor | None = None
    aggregation_mse: float | None = None
    late_rounds: np.ndarray | None = None
    """``(S,)`` per pending row, the rounds a straggler's update arrives late (0: not held), with
    ``FederationConfig.stragglers="stale"``; ``None`` otherwise."""


def _ideal_delivery(num_rows: int, k: int) -> Delivery:
    """An ideal channel: every update arrives, at no cost."""
    zeros = np.zeros(k)
    return Delivery(
        arrived=np.ones(num_rows, dtype=bool),
        energy_compute_j=zeros,
        energy_transmit_j=zeros,
        latency_s=zeros,
        packet_error=zeros,
        straggler=np.zeros(k, dtype=bool),
        packet_lost=np.zeros(k, dtype=bool),
        round_time_s=0.0,
        channel_uses=0.0,
    )


# -- stage protocols ------------------------------------------------------------------------------


class Transport(abc.ABC):
    """How updates get from the devices to the server (the ``start`` and ``transport`` stages).

    A transport validates a plan against its channel model and starts the round
    (:meth:`start`), says whether updates are compressed before it (:attr:`compresses`), and
    carries a batch of rounds' updates (:meth:`deliver`), accounting energy and time.
    """

    name: str = "transport"
    compresses: bool = True
    """Whether the compression stage runs before this transport (analog ones send raw values)."""

    @abc.abstractmethod
    def start(
        self, fed: Federation, plan: RoundPlan, rng: np.random.Generator, allow_empty: bool
    ) -> RoundStart:
        """Validate ``plan`` for this channel and start the round: :func:`start_round` makes
        the :class:`RoundStart` (and seeds the round's generator) once the plan is checked."""

    @abc.abstractmethod
    def deliver(
        self,
        feds: Sequence[Federation],
        starts: Sequence[RoundStart],
        pendings: Sequence[PendingUpdates],
        rngs: Sequence[np.random.Generator],
    ) -> list[Delivery]:
        """Carry every round's pending updates; update the cells' batteries."""


class UpdateTransform(abc.ABC):
    """A stage between local training and compression that changes the trained models.

    Where privacy noise, clipping or adversarial clients act on what the devices send. A
    transform draws its randomness from each round's generator (``start.generator``) so that
    the same seed gives the same round.
    """

    name: str = "transform"

    @abc.abstractmethod
    def apply(
        self,
        feds: Sequence[Federation],
        starts: Sequence[RoundStart],
        trained: list[LocalTrainingResult],
    ) -> list[LocalTrainingResult]:
        """The trained models after this transform (one result per federation)."""

    def after_aggregate(  # noqa: B027 - an optional hook: most transforms act only in apply
        self,
        feds: Sequence[Federation],
        starts: Sequence[RoundStart],
        pendings: Sequence[PendingUpdates],
        fields: Sequence[dict[str, Any]],
    ) -> None:
        """Act on the new global models after aggregation, before evaluation (e.g. the
        server's privacy noise); ``fields`` are the rounds' report fields. Nothing by default."""


# The adversary stage and its monitor live in learning (which cannot import the pipeline): they
# are update transforms by registration.
UpdateTransform.register(ByzantineTransform)
UpdateTransform.register(UpdateMonitor)


# -- start ----------------------------------------------------------------------------------------


def start_round(
    fed: Federation, plan: RoundPlan, rng: np.random.Generator, **extra: Any
) -> RoundStart:
    """The start of a round of ``fed`` under an already validated ``plan``: its training
    clients and their local steps, and the round's torch generator, seeded from ``rng``.

    What a :meth:`Transport.start` returns once it has checked the plan against its channel
    (``extra`` sets :class:`RoundStart`'s optional fields, e.g. ``power_w``).
    """
    generator = fed._torch_generator(rng)
    ids_np = plan.selected_ids
    ids = torch.as_tensor(ids_np, dtype=torch.int64, device=fed.device)
    steps = torch.as_tensor(plan.local_steps[ids_np], dtype=torch.int64, device=fed.device)
    return RoundStart(plan, ids, steps, generator, **extra)
