"""Mean-field UAV control with per-UAV neural networks and federated model averaging.

After Shiri, Park and Bennis (IEEE Trans. Commun. 2020) and its Globecom 2019 precursor: every
UAV carries two small networks that approximate the two equations of the mean-field game, and
trains them online, from what it senses. With ``training="pde"`` (the paper's method) both
learn by gradient descent on their PDE residuals:

- the **FPK network** ``m_phi(x, t)`` approximates the population density (the mean field) near
  the UAV. It minimises the squared residual of the Fokker-Planck-Kolmogorov equation

      ``R_FPK = dm/dt + div(m w) - D lap_x m``

  at collocation points along the UAV's predicted path (``w`` the local flow velocity, taken as
  the UAV's own velocity: the swarm around it moves with it; ``D`` an effective diffusion), plus
  the squared misfit to the density it senses now in the cells around it (the initial condition
  of the FPK equation, which the residual alone does not fix);
- the **HJB network** ``W_theta(x, v, t)`` approximates the value function of the UAV's deviation
  ``delta`` from the straight-line law ``u_nom(x, v)``: with the running cost
  ``energy_weight |delta|^2 + collision_weight m_phi(x, t)`` (the collision term computed from the
  FPK density) and dynamics ``dx = v dt``, ``dv = (u_nom + delta) dt + sigma dW``, it minimises
  the squared residual of the discounted Hamilton-Jacobi-Bellman equation

      ``R_HJB = dW/dt + v . grad_x W + (u_nom + delta*) . grad_v W + energy_weight |delta*|^2
      + collision_weight m_phi + (sigma^2 / 2) lap_v W - beta W``,

      ``delta* = clip(-grad_v W / (2 energy_weight), +-delta_max)`` (the Hamiltonian's minimiser)

  at collocation points along the UAV's predicted path. The UAV then flies ``u_nom + delta*``
  evaluated at its own state. The discount ``beta`` replaces the paper's finite horizon, so the
  value function can be learned online without a terminal condition.

PDE derivatives come from autograd on the inputs (:func:`input_derivatives`); the residuals are
pure functions of those derivatives (:func:`hjb_residual`, :func:`fpk_residual`) so that they can
be checked on closed-form solutions. ``training="lookahead"`` (the default, because it collides
less in our scenario: see the ``uav`` block of ``docs/reproductions.md``) is a receding-horizon
simplification: the HJB network outputs the correction ``delta`` itself and minimises
``density_weight * m_phi(x + v tau + (u_nom + delta) tau^2 / 2, t + tau) + deviation_weight *
|delta / a_max|^2``, and the FPK network only fits the sensed density.

The PDE networks' positions are measured in a frame (``frame``): each UAV's own, where the
networks of different UAVs approximate different functions (the field around each UAV, in its
own coordinates), or a frame shared by all UAVs (moving with the swarm, or fixed), where they
approximate one density and one value function, as the paper's interchangeable UAVs do; a
moving frame adds its velocity to the residuals' transport terms (``frame_velocity_mps``).

Every ``average_every_steps`` steps the flying UAVs replace their HJB and/or FPK weights by the
federated average (:func:`fl_gym.sim.learning.aggregation.fedavg`, weighted by the number of local
training steps), as in the paper's MfgFL-HF (both), MfgFL-H (HJB only), MfgFL-F (FPK only); no
averaging gives independent learners.

Parameters of all UAVs are stacked ``(N, P)`` tensors and each training step is one batched
computation (``baddbmm`` over UAVs, autograd for the gradients); nothing loops over UAVs.
All randomness comes from the ``torch.Generator`` passed in.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch

from fl_gym.sim.config import MAX_HIDDEN_UNITS, Range, check_choice, check_ranges
from fl_gym.sim.learning.aggregation import fedavg

__all__ = [
    "AVERAGING_MODES",
    "FRAMES",
    "TRAINING_MODES",
    "BatchedTanhMLP",
    "MeanFieldConfig",
    "MeanFieldLearner",
    "PDEScales",
    "federated_average",
    "fpk_residual",
    "hjb_residual",
    "input_derivatives",
]

AVERAGING_MODES = ("both", "hjb", "fpk", "none")
"""Which networks are federated-averaged: MfgFL-HF, MfgFL-H, MfgFL-F, or none."""

FRAMES = ("uav", "swarm", "global")
"""Origin of the PDE networks' positions: each UAV's own position at the step, a reference point
that every UAV knows and that moves with the swarm, or the fixed source centre."""

TRAINING_MODES = ("pde", "lookahead")
"""How the networks learn: PDE residuals (the paper's method) or the look-ahead simplification."""

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


def input_derivatives(
    fn: Callable[[torch.Tensor], torch.Tensor],
    z: torch.Tensor,
    second_dims: tuple[int, ...],
    *,
    create_graph: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Value, gradient and pure second derivatives of a pointwise function, by autograd.

    Args:
        fn: Maps points ``(..., D)`` to values ``(...)``; each output may depend only on its own
            point (true of a network applied row by row), so that the gradient of the sum is the
            pointwise gradient.
        z: Points ``(..., D)``.
        second_dims: Input dimensions ``j`` whose ``d^2 fn / dz_j^2`` is wanted.
        create_graph: Keep the graph so that a loss of these derivatives can be differentiated
            again (with respect to the parameters inside ``fn``).

    Returns:
        ``value (...)``, ``grad (..., D)`` and ``second (..., len(second_dims))``.
    """
    z = z.detach().requires_grad_(True)
    value = fn(z)
    (grad,) = torch.autograd.grad(value.sum(), z, create_graph=True)
    second = []
    for j in second_dims:
        (grad_j,) = torch.autograd.grad(
            grad[..., j].sum(), z, create_graph=create_graph, retain_graph=True
        )
        second.append(grad_j[..., j])
    if not create_graph:
        grad = grad.detach()
    empty = z.new_zeros((*z.shape[:-1], 0))
    return value, grad, torch.stack(second, dim=-1) if second else empty


def hjb_residual(
    value: torch.Tensor,
    grad: torch.Tensor,
    laplacian_v: torch.Tensor,
    *,
    velocity_mps: torch.Tensor,
    nominal_accel_mps2: torch.Tensor,
    state_cost: torch.Tensor,
    energy_weight: float,
    max_correction_mps2: float,
    wind_std: float,
    discount_per_s: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual of the discounted HJB equation of a UAV's deviation from a nominal law.

    For ``dx = v dt``, ``dv = (u_nom + delta) dt + sigma dW`` and running cost
    ``energy_weight |delta|^2 + state_cost``, the value ``W(x, v, t)`` satisfies

    ``beta W = dW/dt + v . grad_x W + min_delta [u . grad_v W + energy_weight |delta|^2]
    + state_cost + (sigma^2 / 2) lap_v W``;

    the minimiser over the box ``|delta_j| <= delta_max`` is, axis by axis,
    ``clip(-grad_v W / (2 energy_weight), -delta_max, delta_max)``.

    Args:
        value: ``W`` at the points ``(...)``.
        grad: ``(..., 5)`` physical derivatives ``(dW/dx_1, dW/dx_2, dW/dv_1, dW/dv_2, dW/dt)``.
        laplacian_v: ``(...)`` ``d^2W/dv_1^2 + d^2W/dv_2^2``.
        velocity_mps: ``(..., 2)`` velocity at the points.
        nominal_accel_mps2: ``(..., 2)`` nominal acceleration at the points.
        state_cost: ``(...)`` state part of the running cost (the collision term).
        energy_weight: Cost per unit ``|delta|^2`` (per second).
        max_correction_mps2: ``delta_max``.
        wind_std: ``sigma`` of the velocity noise.
        discount_per_s: ``beta``.

    Returns:
        The residual ``(...)`` (zero for the exact value function) and the optimal deviation
        ``delta* (..., 2)``.
    """
    grad_x, grad_v, grad_t = grad[..., 0:2], grad[..., 2:4], grad[..., 4]
    delta = (-grad_v / (2.0 * energy_weight)).clamp(-max_correction_mps2, max_correction_mps2)
    residual = (
        grad_t
        + (velocity_mps * grad_x).sum(-1)
        + ((nominal_accel_mps2 + delta) * grad_v).sum(-1)
        + energy_weight * (delta**2).sum(-1)
        + state_cost
        + 0.5 * wind_std**2 * laplacian_v
        - discount_per_s * value
    )
    return residual, delta


def fpk_residual(
    density: torch.Tensor,
    grad: torch.Tensor,
    laplacian_x: torch.Tensor,
    *,
    flow_mps: torch.Tensor,
    flow_divergence_per_s: torch.Tensor | float,
    diffusion_m2_s: float,
) -> torch.Tensor:
    """Residual ``dm/dt + div(m w) - D lap_x m`` of the FPK (continuity-diffusion) equation.

    Args:
        density: ``m`` at the points ``(...)``.
        grad: ``(..., 3)`` physical derivatives ``(dm/dx_1, dm/dx_2, dm/dt)``.
        laplacian_x: ``(...)`` ``d^2m/dx_1^2 + d^2m/dx_2^2``.
        flow_mps: ``(..., 2)`` flow velocity ``w`` at the points.
        flow_divergence_per_s: ``div w`` at the points (0 for a locally uniform flow).
        diffusion_m2_s: ``D``.

    Returns:
        The residual ``(...)``, zero for an exact solution.
    """
    return (
        grad[..., 2]
        + (flow_mps * grad[..., 0:2]).sum(-1)
        + density * flow_divergence_per_s
        - diffusion_m2_s * laplacian_x
    )


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
        receives it), as :func:`~fl_gym.sim.learning.aggregation.fedavg` rejects it.
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
        training: How the networks learn, one of :data:`TRAINING_MODES`: ``"pde"`` (HJB and FPK
            residuals, the paper's method) or ``"lookahead"`` (the receding-horizon
            simplification, the default: it collides less in our scenario).
        hidden_units: Width of the single hidden layer of both networks. In [1, 4096].
        hjb_learning_rate: SGD step size of the HJB network (``"lookahead"``). In [0, 1000].
        fpk_learning_rate: SGD step size of the FPK network (``"lookahead"``). In [0, 1000].
        length_scale_m: Positions enter both networks in units of this length. In [0.001, 1e+06].
        lookahead_s: Look-ahead ``tau`` of the HJB objective (``"lookahead"``). In [0, 100].
        density_weight: Weight of the predicted density in the HJB objective (``"lookahead"``).
            In [0, 1e+06].
        deviation_weight: Weight of ``|delta / a_max|^2`` in the HJB objective (``"lookahead"``).
            In [0, 1e+06].
        max_correction: Largest deviation from the nominal law, as a fraction of
            ``max_accel_mps2`` per axis. In [0, 10].
        average_every_steps: Steps between two federated averaging rounds. In [1, 1000000].
        averaging: Which networks are averaged: one of :data:`AVERAGING_MODES`.
        hjb_pde_learning_rate: SGD step size of the HJB network on its residual (``"pde"``).
            In [0, 1000].
        fpk_pde_learning_rate: SGD step size of the FPK network on its loss (``"pde"``).
            In [0, 1000].
        energy_weight: HJB running cost per unit ``|delta|^2`` ((m/s^2)^2 s), ``"pde"``.
            In [1e-06, 1e+06].
        collision_weight: HJB running cost per unit of FPK density (density normalised to UAVs
            per cell at the initial lattice packing), ``"pde"``. In [0, 1e+06].
        discount_per_s: Discount rate ``beta`` of the HJB equation (``1 / beta`` is the horizon
            the value function looks over), ``"pde"``. In [0, 1000].
        fpk_diffusion_m2_s: Effective diffusion ``D`` of the FPK equation in position space,
            ``"pde"``. In [0, 1000].
        fpk_residual_weight: Weight of the mean squared FPK residual (in (density/s)^2) against
            the mean squared misfit to the sensed density, ``"pde"``. In [0, 1e+06].
        collocation_points: Points per UAV and step at which the residuals are evaluated
            (``"pde"``). In [1, 1024].
        collocation_horizon_s: Collocation points lie on the UAV's predicted path up to this far
            ahead (``"pde"``). In [0, 100].
        collocation_spread_m: Standard deviation of the points around that path (position).
            In [0, 1000].
        collocation_speed_spread_mps: Standard deviation of the points' velocities around the
            UAV's own. In [0, 1000].
        max_grad_norm: Each UAV's gradient is scaled down to at most this norm (``"pde"``).
            In [0, 1e+06].
        pde_iterations: SGD steps of each network per control step (``"pde"``). In [1, 1000].
        frame: Origin of both networks' positions (``"pde"``; time is always counted from the
            present step), one of :data:`FRAMES`: ``"uav"``, each UAV's own position (every UAV
            has its own frame), ``"swarm"``, the point of the nominal path from the source
            centre that a UAV starting there at rest would have reached (one frame shared by all
            UAVs, moving with the swarm), or ``"global"``, the source centre (shared, fixed). In
            a shared frame every UAV approximates the same two functions, so that their
            federated average is an average of approximations of one solution.
    """

    training: str = "lookahead"
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
    hjb_pde_learning_rate: float = 0.05
    fpk_pde_learning_rate: float = 1.0
    energy_weight: float = 0.05
    collision_weight: float = 50.0
    discount_per_s: float = 1.0
    fpk_diffusion_m2_s: float = 0.5
    fpk_residual_weight: float = 1.0
    collocation_points: int = 16
    collocation_horizon_s: float = 1.0
    collocation_spread_m: float = 1.0
    collocation_speed_spread_mps: float = 1.0
    max_grad_norm: float = 10.0
    pde_iterations: int = 3
    frame: str = "uav"

    RANGES: ClassVar[Mapping[str, Range]] = {
        "hidden_units": Range(1, MAX_HIDDEN_UNITS, integer=True),
        "hjb_learning_rate": Range(0.0, 1e3),
        "fpk_learning_rate": Range(0.0, 1e3),
        "length_scale_m": Range(1e-3, 1e6),
        "lookahead_s": Range(0.0, 100.0),
        "density_weight": Range(0.0, 1e6),
        "deviation_weight": Range(0.0, 1e6),
        "max_correction": Range(0.0, 10.0),
        "average_every_steps": Range(1, 1_000_000, integer=True),
        "hjb_pde_learning_rate": Range(0.0, 1e3),
        "fpk_pde_learning_rate": Range(0.0, 1e3),
        "energy_weight": Range(1e-6, 1e6),
        "collision_weight": Range(0.0, 1e6),
        "discount_per_s": Range(0.0, 1e3),
        "fpk_diffusion_m2_s": Range(0.0, 1e3),
        "fpk_residual_weight": Range(0.0, 1e6),
        "collocation_points": Range(1, 1024, integer=True),
        "collocation_horizon_s": Range(0.0, 100.0),
        "collocation_spread_m": Range(0.0, 1e3),
        "collocation_speed_spread_mps": Range(0.0, 1e3),
        "max_grad_norm": Range(0.0, 1e6),
        "pde_iterations": Range(1, 1000, integer=True),
    }
    """Documented plausible range of every numeric field (stated in its description)."""

    def __post_init__(self) -> None:
        check_choice("training", self.training, TRAINING_MODES)
        check_ranges(self, self.RANGES)
        check_choice("averaging", self.averaging, AVERAGING_MODES)
        check_choice("frame", self.frame, FRAMES)


@dataclass(frozen=True)
class PDEScales:
    """Units of the networks' inputs, to turn their derivatives into physical ones.

    Attributes:
        length_m: A position input of 1 is this many metres.
        speed_mps: A velocity input of 1 is this many m/s.
        time_s: A time input of 1 is this many seconds.
    """

    length_m: float
    speed_mps: float
    time_s: float

    def hjb(self) -> torch.Tensor:
        """Per-input units of the HJB network ``(x_1, x_2, v_1, v_2, t)``."""
        s = self
        return torch.tensor([s.length_m, s.length_m, s.speed_mps, s.speed_mps, s.time_s])

    def fpk(self) -> torch.Tensor:
        """Per-input units of the FPK network ``(x_1, x_2, t)``."""
        return torch.tensor([self.length_m, self.length_m, self.time_s])


def _clip_rows(grad: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Scale each row of ``grad`` down to at most ``max_norm`` (rows are independent UAVs)."""
    if max_norm <= 0:
        return grad
    norm = grad.norm(dim=1, keepdim=True)
    return grad * (max_norm / norm.clamp_min(max_norm))


class MeanFieldLearner:
    """The HJB and FPK networks of N UAVs, their online training and their averaging.

    With ``training="pde"`` the HJB network is the value function ``W(x_1, x_2, v_1, v_2, t)``
    (5 inputs, 1 output, zero last layer: ``W = 0`` and no deviation at first); with
    ``"lookahead"`` it maps the observation features to the correction (2 outputs).

    Args:
        num_uavs: Number of UAVs N (rows of the stacked parameters).
        num_features: Inputs of the look-ahead HJB network (the UAV's observation features).
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
        if config.training == "pde":
            self.hjb = BatchedTanhMLP((5, h, 1))
        else:
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

    # -- PDE-residual training (training="pde") ------------------------------------------------

    def _step(
        self, which: str, rows: torch.Tensor, params: torch.Tensor, loss: torch.Tensor
    ) -> None:
        cfg = self.config
        (grad,) = torch.autograd.grad(loss.sum(), params)
        lr = cfg.hjb_pde_learning_rate if which == "hjb" else cfg.fpk_pde_learning_rate
        with torch.no_grad():
            new = params - lr * _clip_rows(grad, cfg.max_grad_norm)
            if which == "hjb":
                self.hjb_params[rows] = new
            else:
                self.fpk_params[rows] = new

    def fpk_losses(
        self,
        params: torch.Tensor,
        data_points: torch.Tensor,
        target: torch.Tensor,
        collocation: torch.Tensor,
        flow_mps: torch.Tensor,
        scales: PDEScales,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-UAV mean squared data misfit and mean squared FPK residual.

        Args:
            params: ``(n, P_fpk)`` FPK weights.
            data_points: ``(n, S_d, 3)`` normalised ``(x_1, x_2, t)`` of the sensed cells.
            target: ``(n, S_d)`` sensed densities there.
            collocation: ``(n, S, 3)`` normalised collocation points.
            flow_mps: ``(n, S, 2)`` flow velocity at the collocation points.
            scales: Input units.

        Returns:
            ``(n,)`` misfits and ``(n,)`` mean squared residuals.
        """

        def density(z: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.softplus(self.fpk.forward(params, z))[..., 0]

        misfit = ((density(data_points) - target) ** 2).mean(dim=1)
        m, grad, second = input_derivatives(density, collocation, (0, 1))
        units = scales.fpk().to(grad.dtype)
        residual = fpk_residual(
            m,
            grad / units,
            second.sum(-1) / scales.length_m**2,
            flow_mps=flow_mps,
            flow_divergence_per_s=0.0,
            diffusion_m2_s=self.config.fpk_diffusion_m2_s,
        )
        return misfit, (residual**2).mean(dim=1)

    def train_fpk_pde(
        self,
        rows: torch.Tensor,
        data_points: torch.Tensor,
        target: torch.Tensor,
        collocation: torch.Tensor,
        flow_mps: torch.Tensor,
        scales: PDEScales,
    ) -> float:
        """One SGD step of each row's FPK network on misfit + weighted FPK residual.

        Arguments as in :meth:`fpk_losses` (``rows`` the UAV indices).

        Returns:
            Mean loss before the step.
        """
        params = self.fpk_params[rows].requires_grad_(True)
        misfit, residual = self.fpk_losses(
            params, data_points, target, collocation, flow_mps, scales
        )
        loss = misfit + self.config.fpk_residual_weight * residual
        self._step("fpk", rows, params, loss)
        self.train_steps[rows] += 1
        return float(loss.detach().mean())

    def hjb_losses(
        self,
        params: torch.Tensor,
        rows: torch.Tensor,
        collocation: torch.Tensor,
        nominal_accel_mps2: torch.Tensor,
        scales: PDEScales,
        max_correction_mps2: float,
        wind_std: float,
        frame_velocity_mps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-UAV mean squared HJB residual at the collocation points.

        Args:
            params: ``(n, P_hjb)`` HJB weights.
            rows: ``(n,)`` UAV indices (whose FPK networks give the collision term).
            collocation: ``(n, S, 5)`` normalised ``(x_1, x_2, v_1, v_2, t)``.
            nominal_accel_mps2: ``(n, S, 2)`` nominal acceleration at the points.
            scales: Input units.
            max_correction_mps2: Bound on each axis of the deviation.
            wind_std: ``sigma`` of the velocity noise.
            frame_velocity_mps: ``(n, S, 2)`` velocity of the frame the positions are measured
                in, at the points (``None``: a frame at rest). In a frame moving at ``c'(t)``
                the position of a UAV flying at ``v`` changes at ``v - c'(t)``, which is what
                transports the value.

        Returns:
            ``(n,)`` mean squared residuals.
        """
        cfg = self.config
        with torch.no_grad():
            dens = self.density(rows, collocation[..., [0, 1, 4]])

        def value(z: torch.Tensor) -> torch.Tensor:
            return self.hjb.forward(params, z)[..., 0]

        w, grad, second = input_derivatives(value, collocation, (2, 3))
        units = scales.hjb().to(grad.dtype)
        velocity = collocation[..., 2:4] * scales.speed_mps
        if frame_velocity_mps is not None:
            velocity = velocity - frame_velocity_mps
        residual, _ = hjb_residual(
            w,
            grad / units,
            second.sum(-1) / scales.speed_mps**2,
            velocity_mps=velocity,
            nominal_accel_mps2=nominal_accel_mps2,
            state_cost=cfg.collision_weight * dens,
            energy_weight=cfg.energy_weight,
            max_correction_mps2=max_correction_mps2,
            wind_std=wind_std,
            discount_per_s=cfg.discount_per_s,
        )
        return (residual**2).mean(dim=1)

    def train_hjb_pde(
        self,
        rows: torch.Tensor,
        collocation: torch.Tensor,
        nominal_accel_mps2: torch.Tensor,
        scales: PDEScales,
        max_correction_mps2: float,
        wind_std: float,
        frame_velocity_mps: torch.Tensor | None = None,
    ) -> float:
        """One SGD step of each row's HJB network on its mean squared HJB residual.

        Arguments as in :meth:`hjb_losses`.

        Returns:
            Mean squared residual before the step.
        """
        params = self.hjb_params[rows].requires_grad_(True)
        loss = self.hjb_losses(
            params,
            rows,
            collocation,
            nominal_accel_mps2,
            scales,
            max_correction_mps2,
            wind_std,
            frame_velocity_mps,
        )
        self._step("hjb", rows, params, loss)
        return float(loss.detach().mean())

    def optimal_deviation(
        self, rows: torch.Tensor, state: torch.Tensor, scales: PDEScales, max_correction_mps2: float
    ) -> torch.Tensor:
        """``delta* = clip(-grad_v W / (2 energy_weight), +-delta_max)`` ``(n, 2)`` in m/s^2 at
        the UAVs' normalised states ``(n, 5)``."""
        params = self.hjb_params[rows]

        def value(z: torch.Tensor) -> torch.Tensor:
            return self.hjb.forward(params, z)[..., 0]

        with torch.enable_grad():
            _, grad, _ = input_derivatives(value, state.unsqueeze(1), (), create_graph=False)
        grad_v = grad[:, 0, 2:4] / scales.speed_mps
        return (-grad_v / (2.0 * self.config.energy_weight)).clamp(
            -max_correction_mps2, max_correction_mps2
        )

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
