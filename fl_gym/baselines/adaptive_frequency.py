"""Adaptive aggregation frequency under a resource budget (Wang et al., IEEE JSAC 2019).

The controller of S. Wang, T. Tuor, T. Salonidis, K. K. Leung, C. Makaya, T. He and K. Chan,
"Adaptive Federated Learning in Resource Constrained Edge Computing Systems", IEEE JSAC 37(6),
2019, Algorithm 2. Every local step costs ``c`` and every aggregation ``b`` units of one
resource, of which the episode may spend ``R``. Before each round the server estimates the
smoothness ``beta``, the Lipschitz constant ``rho`` and the gradient divergence ``delta`` of
the clients' losses, and picks the number of local steps ``tau`` that minimises the paper's
convergence bound

::

    h(tau) = delta / beta * ((eta * beta + 1) ** tau - 1) - eta * delta * tau
    T(tau) = R * tau / (c * tau + b)
    G(tau) = (1 + sqrt(1 + 4 * T**2 * phi * rho * eta * h / tau)) / (2 * T * eta * phi)
             + rho * h

where ``eta`` is the clients' step size, ``T(tau)`` the local steps the budget affords at that
period and ``phi`` the paper's control parameter. When the budget left cannot pay for the chosen
period, the last round runs the most local steps it can still pay for; after that the controller
is exhausted.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch

from fl_gym.baselines.base import BaselinePolicy, EpisodeMemory
from fl_gym.baselines.features import ObservationFeatures
from fl_gym.sim.learning.federation import Federation

__all__ = ["AdaptiveFrequency", "LossConstants", "estimate_loss_constants", "wang_bound"]

# Floor of the smoothness estimate, as in the authors' implementation: beta appears as a
# divisor in h(tau), and a flat stretch of the loss would otherwise give 0.
_BETA_FLOOR = 1e-5
# Below this model movement the secant estimates are 0 / 0; the previous estimates are kept.
_MIN_MOVEMENT = 1e-10
# The search of the paper is over 1..10 * tau_prev: the period may grow tenfold per round.
_GROWTH_CAP = 10


class LossConstants:
    """Estimates of the constants of the convergence bound.

    Attributes:
        beta: Smoothness (Lipschitz constant of the gradient), averaged over clients.
        rho: Lipschitz constant of the loss, averaged over clients.
        delta: Gradient divergence, the data-weighted mean of ``||grad F_i - grad F||``.
    """

    __slots__ = ("beta", "delta", "rho")

    def __init__(self, beta: float, rho: float, delta: float) -> None:
        self.beta = float(beta)
        self.rho = float(rho)
        self.delta = float(delta)

    def __repr__(self) -> str:
        return f"LossConstants(beta={self.beta:.6g}, rho={self.rho:.6g}, delta={self.delta:.6g})"


def wang_bound(
    taus: np.ndarray,
    constants: LossConstants,
    *,
    learning_rate: float,
    budget: float,
    cost_per_step: float,
    cost_per_aggregation: float,
    phi: float,
) -> np.ndarray:
    """The convergence bound ``G(tau)`` of Wang et al. (2019), to be minimised over ``tau``.

    Args:
        taus: Candidate local-step counts (integers >= 1), any shape.
        constants: Estimates of ``beta``, ``rho`` and ``delta``.
        learning_rate: The clients' SGD step size ``eta``.
        budget: The resource budget ``R``.
        cost_per_step: ``c``, the resource one local step consumes.
        cost_per_aggregation: ``b``, the resource one aggregation consumes.
        phi: The control parameter ``phi`` (> 0).

    Returns:
        ``G`` at each ``tau``, same shape as ``taus``; smaller is a better period.
    """
    tau = np.asarray(taus, dtype=np.float64)
    eta = learning_rate
    beta = max(constants.beta, _BETA_FLOOR)
    rho, delta = constants.rho, constants.delta
    # h(tau) >= 0 in exact arithmetic (convexity of the exponential); the clip removes the
    # rounding error of the difference at small tau.
    h = np.maximum(delta / beta * (np.power(eta * beta + 1.0, tau) - 1.0) - eta * delta * tau, 0.0)
    steps_affordable = budget * tau / (cost_per_step * tau + cost_per_aggregation)
    root = np.sqrt(1.0 + 4.0 * steps_affordable**2 * phi * rho * eta * h / tau)
    return (1.0 + root) / (2.0 * steps_affordable * eta * phi) + rho * h


def estimate_loss_constants(
    federation: Federation, previous_params: torch.Tensor
) -> LossConstants | None:
    """Estimate ``beta``, ``rho`` and ``delta`` from the global models of two rounds.

    Every client's full local loss ``F_i`` and its gradient are evaluated, on all its training
    samples (so the estimate is deterministic), at the current global model ``w`` and at
    ``previous_params`` ``w'``; then, weighting clients by their number of samples ``D_i``,

    * ``beta = sum_i D_i ||grad F_i(w) - grad F_i(w')|| / (D ||w - w'||)``,
    * ``rho = sum_i D_i |F_i(w) - F_i(w')| / (D ||w - w'||)``,
    * ``delta = sum_i D_i ||grad F_i(w) - grad F(w)|| / D`` with
      ``grad F = sum_i D_i grad F_i / D``.

    The paper's nodes form the same secants between their last local model and the global model;
    here the two points are consecutive global models, which the server holds itself. Nothing of
    the federation is modified.

    Args:
        federation: The federation (its model, clients' data, step settings and ``params``).
        previous_params: ``(P,)`` the global model of an earlier round.

    Returns:
        The estimates, or ``None`` when the model has not moved (the secants are undefined).
    """
    current = federation.params.detach()
    previous = previous_params.detach().to(current)
    movement = float(torch.linalg.vector_norm(current - previous))
    if not math.isfinite(movement) or movement < _MIN_MOVEMENT:
        return None
    losses, grads = _client_losses_and_grads(federation, torch.stack([current, previous]))
    sizes = torch.as_tensor(
        federation.data.client_sizes, dtype=grads.dtype, device=grads.device
    ).reshape(-1)
    weights = sizes / sizes.sum()
    beta_i = torch.linalg.vector_norm(grads[0] - grads[1], dim=1) / movement
    rho_i = (losses[0] - losses[1]).abs() / movement
    global_grad = weights @ grads[0]
    delta_i = torch.linalg.vector_norm(grads[0] - global_grad, dim=1)
    return LossConstants(
        beta=float(weights @ beta_i), rho=float(weights @ rho_i), delta=float(weights @ delta_i)
    )


def _client_losses_and_grads(
    federation: Federation, points: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every client's full local loss and gradient at each of ``points``.

    Args:
        federation: The federation.
        points: ``(S, P)`` parameter vectors.

    Returns:
        ``losses (S, K)`` and ``grads (S, K, P)``, the mean loss (cross-entropy, or squared
        error for regression) over each client's samples (plus the L2 term of the local
        objective) and its gradient.
    """
    clients, model = federation.clients, federation.model
    s, k = points.shape[0], clients.num_clients
    counts = clients.counts
    width = int(counts.max())
    # Clients hold different numbers of samples: pad every client to the largest and mask, so
    # that all S x K full-batch gradients are one batched computation.
    position = torch.arange(width, device=counts.device)
    mask = position.unsqueeze(0) < counts.unsqueeze(1)
    index = torch.where(mask, clients.offsets.unsqueeze(1) + position, 0)
    x = clients.x[index].repeat(s, 1, 1)
    y = clients.y[index]
    y = y.repeat(s, *([1] * (y.ndim - 1)))
    weight = (mask / counts.unsqueeze(1)).to(x.dtype).repeat(s, 1)
    params = points.repeat_interleave(k, dim=0).clone().requires_grad_(True)
    with torch.enable_grad():
        outputs = model.logits(params, x)
        if model.loss == "squared_error":  # regression: the least-squares loss of each sample
            per_sample = (outputs - y).pow(2).sum(dim=2)
        else:
            log_probs = torch.log_softmax(outputs, dim=-1)
            per_sample = -log_probs.gather(2, y.unsqueeze(2)).squeeze(2)
        loss = (per_sample * weight).sum(dim=1)
        decay = federation.config.weight_decay
        if decay:
            loss = loss + 0.5 * decay * params.pow(2).sum(dim=1)
        (grads,) = torch.autograd.grad(loss.sum(), params)
    return loss.detach().reshape(s, k), grads.reshape(s, k, -1)


class AdaptiveFrequency(BaselinePolicy):
    """Adaptive local-step count under a resource budget (Wang et al., IEEE JSAC 2019, Alg. 2).

    A round of ``tau`` local steps costs ``cost_per_step * tau + cost_per_aggregation`` of an
    abstract resource (the paper's ``c`` and ``b``; the defaults 1 and 10 give the ratio of
    aggregation to local-step time the authors measured, about 10); the episode may spend
    ``budget``. The first round runs the smallest of ``local_step_choices`` (the paper starts
    from ``tau = 1``); before each later round the controller estimates ``beta``, ``rho`` and
    ``delta`` (see :func:`estimate_loss_constants`) and plays the choice ``tau`` that minimises
    :func:`wang_bound` among the choices up to ``min(10 * tau_prev, tau_max)`` (the paper's search
    range, restricted to the periods the environment can play). If the budget left cannot pay
    for that round, it plays the largest choice it can still pay for; once not even the smallest
    choice fits, it is exhausted (:meth:`exhausted`).

    The estimates need the clients' losses and gradients, which an observation does not carry:
    the controller reads, and never changes, the federation of the environment it was built for
    (``env.unwrapped.federation``: global ``params``, clients' data, ``model``, ``learning_rate``)
    and evaluates full-batch losses there, so its decisions are deterministic. Hence one policy
    serves one environment: feed it that environment's observations, in order.

    An environment cannot skip a round, so an exhausted controller still answers: it plays the
    smallest choice, and its spending (:meth:`resource_spent`) stops counting; a budgeted
    evaluation ends the episode when :meth:`exhausted` turns true.

    Args:
        env: The environment.
        budget: ``R``, the resource the episode may spend (> 0).
        cost_per_step: ``c``, the resource one local step of the selected devices costs (> 0).
        cost_per_aggregation: ``b``, the resource one aggregation costs (>= 0).
        phi: The control parameter ``phi`` of the bound (> 0); larger values weigh the
            divergence term more and favour shorter periods. The default 0.025 is the authors'
            value for their smooth-SVM experiments (they use 5e-5 for CNNs).
        tau_max: Largest local-step count considered, or ``None`` for the largest choice.
        smoothing: Moving-average weight of the previous estimates in ``[0, 1)`` (0, the
            authors' setting, uses the latest estimates alone).
    """

    name: ClassVar[str] = "adaptive-frequency"
    knobs: ClassVar[frozenset[str]] = frozenset({"frequency"})

    def __init__(
        self,
        env: gym.Env,
        *,
        budget: float = 200.0,
        cost_per_step: float = 1.0,
        cost_per_aggregation: float = 10.0,
        phi: float = 0.025,
        tau_max: int | None = None,
        smoothing: float = 0.0,
    ) -> None:
        super().__init__(env)
        self.budget = _positive("budget", budget)
        self.cost_per_step = _positive("cost_per_step", cost_per_step)
        self.cost_per_aggregation = _positive(
            "cost_per_aggregation", cost_per_aggregation, allow_zero=True
        )
        self.phi = _positive("phi", phi)
        if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float, np.floating)):
            raise TypeError(f"smoothing must be a number in [0, 1), got {smoothing!r}")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing!r}")
        self.smoothing = float(smoothing)
        choices = np.sort(np.asarray(self.env.config.local_step_choices, dtype=np.int64))
        if tau_max is None:
            tau_max = int(choices[-1])
        elif isinstance(tau_max, bool) or not isinstance(tau_max, (int, np.integer)):
            raise TypeError(f"tau_max must be None or an int >= {choices[0]}, got {tau_max!r}")
        elif tau_max < choices[0]:
            raise ValueError(
                f"tau_max must be at least the smallest local step choice {int(choices[0])} "
                f"(choices {choices.tolist()}), got {tau_max}"
            )
        self.tau_max = int(tau_max)
        self.choices = choices[choices <= self.tau_max]
        """The local-step counts the controller may play, ascending."""

    # -- budget ------------------------------------------------------------------------------------

    def round_cost(self, local_steps: int | np.ndarray) -> float | np.ndarray:
        """The resource a round of ``local_steps`` consumes: ``c * tau + b``."""
        return self.cost_per_step * np.asarray(local_steps) + self.cost_per_aggregation

    def resource_spent(self, slot: int = 0) -> float:
        """The resource spent by the rounds planned within the budget in the current episode.

        Args:
            slot: Index of the environment of a batch (0 for a single environment).

        Returns:
            The sum of :meth:`round_cost` over those rounds (0 before the first round).
        """
        memory = self._memory(slot)
        return 0.0 if memory is None else float(memory.extra["spent"])

    def exhausted(self, slot: int = 0) -> bool:
        """Whether the budget left cannot pay for another round of the smallest choice.

        Args:
            slot: Index of the environment of a batch (0 for a single environment).

        Returns:
            True once the controller has stopped spending in the current episode.
        """
        memory = self._memory(slot)
        return memory is not None and bool(memory.extra["exhausted"])

    def estimates(self, slot: int = 0) -> LossConstants | None:
        """The (smoothed) estimates of the last decision, ``None`` before the first estimate."""
        memory = self._memory(slot)
        return None if memory is None else memory.extra["constants"]

    # -- the decision ------------------------------------------------------------------------------

    def _new_episode_state(self) -> dict[str, Any]:
        return {
            "spent": 0.0,
            "exhausted": False,
            "tau": None,
            "previous_params": None,
            "constants": None,
        }

    def _decide(self, features: ObservationFeatures, memory: EpisodeMemory) -> dict[str, Any]:
        federation = self.env.federation
        if federation is None:
            raise RuntimeError("reset() the environment before asking the policy for an action")
        expected = federation.round_index / self.env.config.max_rounds
        if not math.isclose(features.round_fraction, expected, abs_tol=1e-6):
            raise RuntimeError(
                f"observation of round fraction {features.round_fraction:.6g} does not match the "
                f"environment this policy reads (round {federation.round_index}, fraction "
                f"{expected:.6g}); build one {self.name!r} policy per environment"
            )
        state = memory.extra
        if state["exhausted"]:
            return {"frequency": int(self.choices[0])}
        tau = self._period(federation, state)
        remaining = self.budget - state["spent"]
        if self.round_cost(tau) > remaining:
            # The paper's last round: as many local steps as the remaining budget pays for.
            affordable = self.choices[self.round_cost(self.choices) <= remaining]
            affordable = affordable[affordable <= tau]
            if affordable.size == 0:
                state["exhausted"] = True
                return {"frequency": int(self.choices[0])}
            tau = int(affordable[-1])
        state["spent"] += float(self.round_cost(tau))
        state["tau"] = tau
        return {"frequency": tau}

    def _period(self, federation: Federation, state: dict[str, Any]) -> int:
        """The period minimising the bound, from estimates of the round just played."""
        current = federation.params.detach().clone()
        previous, state["previous_params"] = state["previous_params"], current
        if previous is None or state["tau"] is None:
            return int(self.choices[0])
        fresh = estimate_loss_constants(federation, previous)
        if fresh is not None:
            old = state["constants"]
            if old is not None and self.smoothing > 0.0:
                keep = self.smoothing
                fresh = LossConstants(
                    beta=keep * old.beta + (1.0 - keep) * fresh.beta,
                    rho=keep * old.rho + (1.0 - keep) * fresh.rho,
                    delta=keep * old.delta + (1.0 - keep) * fresh.delta,
                )
            state["constants"] = fresh
        constants = state["constants"]
        if constants is None:
            return int(state["tau"])
        candidates = self.choices[self.choices <= min(_GROWTH_CAP * state["tau"], self.tau_max)]
        bound = wang_bound(
            candidates,
            constants,
            learning_rate=federation.config.learning_rate,
            budget=self.budget,
            cost_per_step=self.cost_per_step,
            cost_per_aggregation=self.cost_per_aggregation,
            phi=self.phi,
        )
        # A non-finite bound (an overflowing h at a huge period) never wins; argmin takes the
        # smaller period on ties.
        bound = np.where(np.isfinite(bound), bound, np.inf)
        return int(candidates[int(np.argmin(bound))])

    def _memory(self, slot: int) -> EpisodeMemory | None:
        if not isinstance(slot, (int, np.integer)) or isinstance(slot, bool):
            raise TypeError(f"slot must be an int, got {slot!r}")
        if not self._memories:
            return None
        if not 0 <= slot < len(self._memories):
            raise ValueError(f"slot must be in 0..{len(self._memories) - 1}, got {slot}")
        return self._memories[slot]


def _positive(name: str, value: Any, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    ok = value >= 0.0 if allow_zero else value > 0.0
    if not (ok and math.isfinite(value)):
        allowed = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {allowed}, got {value!r}")
    return value
