"""Mean-field UAV control with per-UAV neural networks and federated model averaging.

After Shiri, Park and Bennis (IEEE Trans. Commun. 2020): every UAV carries two small networks,

- an **FPK network** ``m_phi(p, t)`` that approximates the population density (the solution of
  the Fokker-Planck-Kolmogorov equation, i.e. the mean field) at position ``p`` and time ``t``;
  it is fitted online to the density the UAV senses in the cells around it;
- an **HJB network** ``delta_theta(z)`` that approximates the mean-field optimal control (the
  minimiser in the Hamilton-Jacobi-Bellman equation) as a correction to a nominal straight-line
  acceleration; it is trained online to minimise, over a short look-ahead ``tau``,

      ``J = density_weight * m_phi(x + v tau + (u_nom + delta) tau^2 / 2, t + tau)
      + deviation_weight * |delta / a_max|^2``,

  i.e. to steer away from where the mean field predicts crowding, at a quadratic price for
  leaving the nominal path. This is a receding-horizon simplification of the paper's
  HJB solution, not its full PDE residual training.

Every ``average_every_steps`` steps the flying UAVs replace their HJB and/or FPK weights by the
federated average (:func:`fl_gym.sim.aggregation.fedavg`, weighted by the number of local
training steps), as in the paper's MfgFL-HF (both), MfgFL-H (HJB only), MfgFL-F (FPK only); no
averaging gives independent learners.

Parameters of all UAVs are stacked ``(N, P)`` tensors and each training step is one batched
computation (``baddbmm`` over UAVs, autograd for the gradients); nothing loops over UAVs.
All randomness comes from the ``torch.Generator`` passed in.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from fl_gym.sim.aggregation import fedavg

__all__ = [
    "AVERAGING_MODES",
    "BatchedTanhMLP",
    "MeanFieldConfig",
    "MeanFieldLearner",
    "federated_average",
]

AVERAGING_MODES = ("both", "hjb", "fpk", "none")
"""Which networks are federated-averaged: MfgFL-HF, MfgFL-H, MfgFL-F, or none."""

BITS_PER_PARAMETER = 32
"""Weights travel as float32."""


class BatchedTanhMLP:
    """A tanh multilayer perceptron evaluated for K parameter sets at once.

    Parameters are flat rows of a ``(K, P)`` tensor, layer by layer ``W (fan_in x fan_out)`` then
    ``b``. Gradients come from autograd on the stacked tensor.

    Args:
        widths: Layer widths, input first, output last (at least two).
    """

    def __init__(self, widths: tuple[int, ...]) -> None:
        if len(widths) < 2 or any(int(w) < 1 for w in widths):
            raise ValueError(f"widths must be >= 2 positive integers, got {widths!r}")
        self.widths = tuple(int(w) for w in widths)
        self._layers: list[tuple[int, int, int]] = []
        offset = 0
        for fan_in, fan_out in itertools.pairwise(self.widths):
            self._layers.append((fan_in, fan_out, offset))
            offset += fan_in * fan_out + fan_out
        self.num_params = offset

    def init_params(
        self, num_models: int, generator: torch.Generator, *, zero_last: bool = False
    ) -> torch.Tensor:
        """``(K, P)`` parameters, uniform in ``+-1/sqrt(fan_in)`` (the last layer zero if asked);
        all K models start equal, as UAVs that share one initial model."""
        one = torch.empty(self.num_params)
        for i, (fan_in, fan_out, offset) in enumerate(self._layers):
            end = offset + fan_in * fan_out + fan_out
            if zero_last and i == len(self._layers) - 1:
                one[offset:end] = 0.0
            else:
                bound = 1.0 / math.sqrt(fan_in)
                one[offset:end].uniform_(-bound, bound, generator=generator)
        return one.expand(num_models, -1).clone()

    def forward(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Outputs ``(K, B, out)`` of K models on their own inputs ``x (K, B, in)``."""
        k = params.shape[0]
        h = x
        for i, (fan_in, fan_out, offset) in enumerate(self._layers):
            w = params[:, offset : offset + fan_in * fan_out].reshape(k, fan_in, fan_out)
            b = params[:, offset + fan_in * fan_out : offset + fan_in * fan_out + fan_out]
            h = torch.baddbmm(b.unsqueeze(1), h, w)
            if i < len(self._layers) - 1:
                h = torch.tanh(h)
        return h


def federated_average(
    params: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Replace the given rows of stacked parameters by their weighted FedAvg.

    Args:
        params: ``(K, P)`` stacked parameters (not modified).
        rows: ``(n,)`` indices of the models that take part.
        weights: ``(n,)`` non-negative weights of those models.

    Returns:
        A copy of ``params`` whose ``rows`` all hold ``sum_k w_k params_k / sum_k w_k``; the other
        rows are unchanged. A row holding NaN or infinity is left out of the average (and then
        receives it), as :func:`~fl_gym.sim.aggregation.fedavg` rejects it.
    """
    out = params.clone()
    if rows.numel() == 0:
        return out
    result = fedavg(params[rows], weights)
    out[rows] = result.aggregate
    return out


@dataclass(frozen=True)
class MeanFieldConfig:
    """Settings of the per-UAV HJB and FPK networks.

    Attributes:
        hidden_units: Width of the single hidden layer of both networks.
        hjb_learning_rate: SGD step size of the HJB network.
        fpk_learning_rate: SGD step size of the FPK network.
        length_scale_m: Positions enter the FPK network in units of this length (the scale at
            which the density is resolved).
        lookahead_s: Look-ahead ``tau`` of the HJB objective.
        density_weight: Weight of the predicted density in the HJB objective.
        deviation_weight: Weight of ``|delta / a_max|^2`` in the HJB objective.
        max_correction: Largest correction, as a fraction of ``max_accel_mps2`` per axis.
        average_every_steps: Steps between two federated averaging rounds.
        averaging: Which networks are averaged: one of :data:`AVERAGING_MODES`.
    """

    hidden_units: int = 16
    hjb_learning_rate: float = 3.0
    fpk_learning_rate: float = 0.3
    length_scale_m: float = 10.0
    lookahead_s: float = 1.0
    density_weight: float = 5.0
    deviation_weight: float = 0.01
    max_correction: float = 1.0
    average_every_steps: int = 10
    averaging: str = "both"

    def __post_init__(self) -> None:
        if not isinstance(self.hidden_units, int) or self.hidden_units < 1:
            raise ValueError(f"hidden_units must be an integer >= 1, got {self.hidden_units!r}")
        for name in (
            "hjb_learning_rate",
            "fpk_learning_rate",
            "length_scale_m",
            "lookahead_s",
            "density_weight",
            "deviation_weight",
            "max_correction",
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        steps = self.average_every_steps
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"average_every_steps must be an integer >= 1, got {steps!r}")
        if self.averaging not in AVERAGING_MODES:
            raise ValueError(
                f"averaging must be one of {list(AVERAGING_MODES)}, got {self.averaging!r}"
            )


class MeanFieldLearner:
    """The HJB and FPK networks of N UAVs, their online training and their averaging.

    Args:
        num_uavs: Number of UAVs N (rows of the stacked parameters).
        num_features: Inputs of the HJB network (the UAV's observation features).
        config: Network and training settings.
        generator: Source of the initial weights.

    Attributes:
        hjb_params: ``(N, P_hjb)`` HJB weights.
        fpk_params: ``(N, P_fpk)`` FPK weights.
        train_steps: ``(N,)`` local training steps of each UAV (the FedAvg weights).
        bits_exchanged: Bits uploaded plus downloaded by all UAVs in averaging rounds so far.
    """

    def __init__(
        self,
        num_uavs: int,
        num_features: int,
        config: MeanFieldConfig,
        generator: torch.Generator,
    ) -> None:
        self.config = config
        h = config.hidden_units
        self.hjb = BatchedTanhMLP((num_features, h, 2))
        self.fpk = BatchedTanhMLP((3, h, 1))
        self.hjb_params = self.hjb.init_params(num_uavs, generator, zero_last=True)
        self.fpk_params = self.fpk.init_params(num_uavs, generator)
        self.train_steps = torch.zeros(num_uavs)
        self.bits_exchanged = 0

    # -- evaluation ----------------------------------------------------------------------------

    def density(self, rows: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """FPK estimate ``(n, S)`` of rows' models at their points ``(n, S, 3)`` = (x, y, t)."""
        return torch.nn.functional.softplus(self.fpk.forward(self.fpk_params[rows], points))[..., 0]

    def correction(self, rows: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """HJB correction ``(n, 2)`` in units of ``max_accel_mps2`` for features ``(n, F)``."""
        out = self.hjb.forward(self.hjb_params[rows], features.unsqueeze(1))[:, 0]
        return self.config.max_correction * torch.tanh(out)

    # -- online training -----------------------------------------------------------------------

    def train_fpk(self, rows: torch.Tensor, points: torch.Tensor, target: torch.Tensor) -> float:
        """One SGD step of each row's FPK network on its sensed density samples.

        Args:
            rows: ``(n,)`` UAV indices.
            points: ``(n, S, 3)`` sample points (normalised x, y, t).
            target: ``(n, S)`` sensed densities there.

        Returns:
            Mean squared error before the step.
        """
        params = self.fpk_params[rows].requires_grad_(True)
        pred = torch.nn.functional.softplus(self.fpk.forward(params, points))[..., 0]
        per_uav = ((pred - target) ** 2).mean(dim=1)
        (grad,) = torch.autograd.grad(per_uav.sum(), params)
        with torch.no_grad():
            self.fpk_params[rows] = params - self.config.fpk_learning_rate * grad
        self.train_steps[rows] += 1
        return float(per_uav.detach().mean())

    def train_hjb(
        self,
        rows: torch.Tensor,
        features: torch.Tensor,
        lookahead_base: torch.Tensor,
        accel_to_position: float,
        time_ahead: torch.Tensor,
    ) -> float:
        """One SGD step of each row's HJB network on the look-ahead objective.

        Args:
            rows: ``(n,)`` UAV indices.
            features: ``(n, F)`` HJB inputs.
            lookahead_base: ``(n, 2)`` normalised look-ahead position with the nominal control
                only, ``(x + v tau + u_nom tau^2 / 2 - source) / L``.
            accel_to_position: ``a_max tau^2 / (2 L)``: how far a correction of 1 moves the
                normalised look-ahead position.
            time_ahead: ``(n,)`` normalised time of the look-ahead.

        Returns:
            Mean objective before the step.
        """
        cfg = self.config
        params = self.hjb_params[rows].requires_grad_(True)
        delta = cfg.max_correction * torch.tanh(self.hjb.forward(params, features.unsqueeze(1)))
        delta = delta[:, 0]
        point = torch.cat(
            [lookahead_base + accel_to_position * delta, time_ahead.unsqueeze(1)], dim=1
        )
        fpk = self.fpk_params[rows].detach()
        dens = torch.nn.functional.softplus(self.fpk.forward(fpk, point.unsqueeze(1)))[:, 0, 0]
        per_uav = cfg.density_weight * dens + cfg.deviation_weight * (delta**2).sum(dim=1)
        (grad,) = torch.autograd.grad(per_uav.sum(), params)
        with torch.no_grad():
            self.hjb_params[rows] = params - cfg.hjb_learning_rate * grad
        return float(per_uav.detach().mean())

    # -- federated averaging -------------------------------------------------------------------

    def average(self, rows: torch.Tensor) -> int:
        """Federated averaging round among ``rows`` for the networks that the config names.

        Returns:
            Bits exchanged in this round: each taking UAV uploads its weights and downloads the
            average, 32 bits per parameter each way.
        """
        mode = self.config.averaging
        if mode == "none" or rows.numel() == 0:
            return 0
        weights = self.train_steps[rows].clamp_min(1.0)
        params = 0
        if mode in ("both", "hjb"):
            self.hjb_params = federated_average(self.hjb_params, rows, weights)
            params += self.hjb.num_params
        if mode in ("both", "fpk"):
            self.fpk_params = federated_average(self.fpk_params, rows, weights)
            params += self.fpk.num_params
        bits = 2 * BITS_PER_PARAMETER * params * int(rows.numel())
        self.bits_exchanged += bits
        return bits
