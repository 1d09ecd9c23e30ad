"""Gaussian-process RSS maps learned by federated maximum likelihood, and ML positioning.

Model (one GP per AP, hyperparameters shared by the APs, as the physics is): the RSS of AP ``a``
at position ``x`` is

    rss_a(x) = m_a(x) + f_a(x) + eps,   m_a(x) = power_db - slope_db log10(max(|x - ap_a|, d_min)),

with ``f_a ~ GP(0, signal_std^2 exp(-|x - x'| / length_m))`` (the exponential kernel is
Gudmundson's shadowing correlation) and ``eps ~ N(0, noise_std^2)``. The hyperparameters are
``theta = (power_db, slope_db, log signal_std, log length_m, log noise_std)``.

Everything is written in torch and batched over clients: the K clients' kernel matrices are one
``(K, n, n)`` tensor, factored by one batched ``torch.linalg.cholesky`` (the APs share the kernel,
so their residuals are ``A`` right-hand sides of the same factor). Clients with fewer than ``n``
samples are padded with rows that add exactly nothing to the likelihood (unit diagonal, zero
residual). GPyTorch is not used: its exact GP is one model per data set, while here the K local
likelihoods and their gradients are one batched computation.

Federated fit (FedLoc, Yin et al. 2020, "federated maximum likelihood"): every round each client
computes the gradient of its own log marginal likelihood per sample; the fusion centre averages
the gradients weighted by the clients' sample counts (which is the gradient of the sum of the
local likelihoods, the block-diagonal approximation of the global one) and takes an Adam step.
The mean's two parameters start from their federated least-squares fit (each client sends its
2x2 normal equations). The centralised reference maximises the exact likelihood of the pooled
data with L-BFGS. Prediction fuses the K local posteriors by the robust Bayesian committee
machine (Deisenroth & Ng 2015); positioning is maximum likelihood over a grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from fl_gym.sim.config import check_int, check_real

__all__ = [
    "GPHyperparameters",
    "GPMap",
    "fit_admm",
    "fit_centralized",
    "fit_federated",
    "gp_log_marginal_likelihood",
    "localize",
    "mean_rss",
    "position_grid",
]

_LOG10 = math.log(10.0)


@dataclass(frozen=True)
class GPHyperparameters:
    """The GP's hyperparameters in physical units.

    Attributes:
        power_db: RSS of the mean at 1 m, dBm.
        slope_db: dB lost per decade of distance (10 x path-loss exponent).
        signal_std_db: Standard deviation of the shadowing GP, dB.
        length_m: Correlation length of the exponential kernel, metres.
        noise_std_db: Measurement noise standard deviation, dB.
    """

    power_db: float
    slope_db: float
    signal_std_db: float
    length_m: float
    noise_std_db: float

    @classmethod
    def from_theta(cls, theta: torch.Tensor) -> GPHyperparameters:
        """From the unconstrained vector ``(power, slope, log sf, log l, log sn)``."""
        t = theta.detach().to(torch.float64).tolist()
        return cls(t[0], t[1], math.exp(t[2]), math.exp(t[3]), math.exp(t[4]))

    def theta(self) -> torch.Tensor:
        """The unconstrained ``float64`` vector of :meth:`from_theta`."""
        return torch.tensor(
            [
                self.power_db,
                self.slope_db,
                math.log(self.signal_std_db),
                math.log(self.length_m),
                math.log(self.noise_std_db),
            ],
            dtype=torch.float64,
        )


def _as64(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


def _log_distance(
    positions: torch.Tensor, aps: torch.Tensor, min_distance_m: float
) -> torch.Tensor:
    """``log10(max(|x - ap|, d_min))`` of positions ``(..., 2)`` for every AP: ``(..., A)``."""
    d = torch.linalg.vector_norm(positions.unsqueeze(-2) - aps, dim=-1)
    return torch.log10(d.clamp_min(min_distance_m))


def _part(theta: torch.Tensor, i: int) -> torch.Tensor:
    """Hyperparameter ``i`` of a shared ``(5,)`` vector (a scalar) or of per-client ``(K, 5)``
    vectors (``(K, 1, 1)``, broadcasting over a client's ``(n, ...)`` arrays)."""
    return theta[i] if theta.ndim == 1 else theta[:, i, None, None]


def mean_rss(
    theta: torch.Tensor, positions: torch.Tensor, aps: torch.Tensor, min_distance_m: float
) -> torch.Tensor:
    """The path-loss mean ``(..., A)`` of the GP at positions ``(..., 2)`` (``theta`` ``(5,)``,
    or ``(K, 5)`` for positions ``(K, n, 2)``)."""
    return _part(theta, 0) - _part(theta, 1) * _log_distance(positions, aps, min_distance_m)


def _kernel(theta: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``signal_std^2 exp(-|a - b| / length)`` for ``a (..., n, 2)``, ``b (..., m, 2)``."""
    diff = a.unsqueeze(-2) - b.unsqueeze(-3)
    # sqrt of the squared distance, clamped: cdist's gradient and sqrt(0)'s are not needed (the
    # positions are data), and the clamp keeps the diagonal exactly exp(0) = 1.
    r = diff.pow(2).sum(-1).clamp_min(0.0).sqrt()
    return torch.exp(2 * _part(theta, 2)) * torch.exp(-r / torch.exp(_part(theta, 3)))


def _counts(counts: np.ndarray | torch.Tensor | None, k: int, n: int) -> torch.Tensor:
    if counts is None:
        return torch.full((k,), n, dtype=torch.int64)
    c = torch.as_tensor(counts, dtype=torch.int64).reshape(-1)
    if c.shape != (k,) or int(c.min()) < 1 or int(c.max()) > n:
        raise ValueError(f"counts must be ({k},) integers in [1, {n}], got {counts!r}")
    return c


def _factor(
    theta: torch.Tensor,
    positions: torch.Tensor,
    rss: torch.Tensor,
    aps: torch.Tensor,
    counts: torch.Tensor,
    min_distance_m: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cholesky factors ``(K, n, n)`` of the padded kernel matrices and residuals ``(K, n, A)``."""
    n = positions.shape[1]
    valid = torch.arange(n) < counts.unsqueeze(1)  # (K, n)
    pair = valid.unsqueeze(2) & valid.unsqueeze(1)
    eye = torch.eye(n, dtype=torch.float64)
    cov = _kernel(theta, positions, positions) + torch.exp(2 * _part(theta, 4)) * eye
    cov = torch.where(pair, cov, eye.expand_as(cov))
    residual = rss - mean_rss(theta, positions, aps, min_distance_m)
    residual = torch.where(valid.unsqueeze(2), residual, torch.zeros_like(residual))
    return torch.linalg.cholesky(cov), residual


def gp_log_marginal_likelihood(
    theta: torch.Tensor,
    positions: np.ndarray | torch.Tensor,
    rss: np.ndarray | torch.Tensor,
    aps: np.ndarray | torch.Tensor,
    *,
    counts: np.ndarray | torch.Tensor | None = None,
    min_distance_m: float = 1.0,
) -> torch.Tensor:
    """Each client's GP log marginal likelihood, summed over the APs.

    Args:
        theta: ``(5,)`` float64 hyperparameters (see :class:`GPHyperparameters`), or ``(K, 5)``
            one vector per client; gradients flow.
        positions: ``(K, n, 2)`` sample positions, metres.
        rss: ``(K, n, A)`` RSS, dBm.
        aps: ``(A, 2)`` AP positions.
        counts: ``(K,)`` valid samples per client (the first ``counts[k]`` rows); all by default.
        min_distance_m: The mean's distance clamp.

    Returns:
        ``(K,)`` float64 ``sum_a log N(rss_a; m_a, K + noise^2 I)`` of each client.
    """
    pos, y, ap = _as64(positions), _as64(rss), _as64(aps)
    if pos.ndim != 3 or pos.shape[2] != 2 or y.shape[:2] != pos.shape[:2] or y.ndim != 3:
        raise ValueError(
            f"positions must be (K, n, 2) and rss (K, n, A), got {tuple(pos.shape)} and "
            f"{tuple(y.shape)}"
        )
    k, n, a = y.shape
    c = _counts(counts, k, n)
    chol, residual = _factor(theta, pos, y, ap, c, min_distance_m)
    whitened = torch.linalg.solve_triangular(chol, residual, upper=False)
    quad = whitened.pow(2).sum(dim=(1, 2))
    logdet = 2 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(dim=1)
    return -0.5 * quad - 0.5 * a * logdet - 0.5 * a * c.to(torch.float64) * math.log(2 * math.pi)


def _least_squares_mean(
    positions: torch.Tensor,
    rss: torch.Tensor,
    aps: torch.Tensor,
    counts: torch.Tensor,
    min_distance_m: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(power, slope)`` from the sum of the clients' 2x2 normal equations, and the residual
    variance about that fit (the clients' sums of squared residuals): one round each."""
    n = positions.shape[1]
    valid = (torch.arange(n) < counts.unsqueeze(1)).to(torch.float64).unsqueeze(2)
    u = -_log_distance(positions, aps, min_distance_m)  # (K, n, A)
    design = torch.stack([torch.ones_like(u), u], dim=-1) * valid.unsqueeze(3)
    gram = torch.einsum("knai,knaj->kij", design, design).sum(0)
    moment = torch.einsum("knai,kna->ki", design, rss * valid).sum(0)
    mean = torch.linalg.solve(gram + 1e-9 * torch.eye(2, dtype=torch.float64), moment)
    residual = (rss - mean[0] - mean[1] * u) * valid
    variance = residual.pow(2).sum() / (valid.sum() * rss.shape[2])
    return mean, variance


def _initial_theta(
    pos: torch.Tensor,
    y: torch.Tensor,
    ap: torch.Tensor,
    counts: torch.Tensor,
    min_distance_m: float,
    area_m: float,
) -> torch.Tensor:
    """The path-loss fit, signal variance 80% and noise variance 20% of its residual variance,
    correlation length a twentieth of the area's side (uninformed guesses)."""
    mean, variance = _least_squares_mean(pos, y, ap, counts, min_distance_m)
    log_var = torch.log(variance.clamp_min(1e-6))
    return torch.cat(
        [
            mean,
            torch.stack(
                [
                    0.5 * (log_var + math.log(0.8)),
                    torch.tensor(math.log(area_m / 20), dtype=torch.float64),
                    0.5 * (log_var + math.log(0.2)),
                ]
            ),
        ]
    )


@dataclass(frozen=True)
class FitResult:
    """A maximum-likelihood fit.

    Attributes:
        theta: ``(5,)`` float64 fitted hyperparameters.
        objective: The objective (log likelihood per sample and AP) after every round / at the
            end, a list of floats.
        thetas: ``(R + 1, 5)`` hyperparameters before the first and after every round
            (federated fits; the centralised fit holds start and end).
    """

    theta: torch.Tensor
    objective: list[float]
    thetas: torch.Tensor

    @property
    def hyperparameters(self) -> GPHyperparameters:
        return GPHyperparameters.from_theta(self.theta)


def fit_federated(
    positions: np.ndarray | torch.Tensor,
    rss: np.ndarray | torch.Tensor,
    aps: np.ndarray | torch.Tensor,
    *,
    area_m: float,
    rounds: int = 100,
    learning_rate: float = 0.05,
    counts: np.ndarray | torch.Tensor | None = None,
    min_distance_m: float = 1.0,
    init: torch.Tensor | None = None,
) -> FitResult:
    """Federated maximum likelihood of the GP hyperparameters.

    Each round every client computes the gradient of its log marginal likelihood divided by its
    ``n_k A`` (all clients in one batched backward pass); the server averages them with weights
    ``n_k`` and takes an Adam step (``betas = (0.9, 0.999)``).

    Args:
        positions: ``(K, n, 2)`` the clients' sample positions.
        rss: ``(K, n, A)`` their RSS.
        aps: ``(A, 2)`` AP positions.
        area_m: Side of the area (sets the initial correlation length, area / 20).
        rounds: Communication rounds, in [0, 100000].
        learning_rate: Adam step size, in (0, 10].
        counts: ``(K,)`` valid samples per client (see :func:`gp_log_marginal_likelihood`).
        min_distance_m: The mean's distance clamp.
        init: Initial ``theta``; by default the federated least-squares mean, signal and noise
            variances 80% and 20% of its residual variance, length area / 20.

    Returns:
        The fit.
    """
    rounds = check_int("rounds", rounds, minimum=0, maximum=100_000)
    lr = check_real("learning_rate", learning_rate, low=0.0, high=10.0, low_open=True)
    pos, y, ap = _as64(positions), _as64(rss), _as64(aps)
    k, n, a = y.shape
    c = _counts(counts, k, n)
    theta = (
        _initial_theta(pos, y, ap, c, min_distance_m, area_m)
        if init is None
        else _as64(init).clone()
    )
    weights = c.to(torch.float64) / c.sum()
    per_sample = (c * a).to(torch.float64)
    first = torch.zeros_like(theta)
    second = torch.zeros_like(theta)
    thetas = [theta.clone()]
    objective: list[float] = []
    for r in range(1, rounds + 1):
        t = theta.clone().requires_grad_(True)
        local = gp_log_marginal_likelihood(t, pos, y, ap, counts=c, min_distance_m=min_distance_m)
        # One backward pass gives the weighted sum of the local per-sample gradients: the
        # average the fusion centre forms from the K uploaded gradients.
        total = (weights * local / per_sample).sum()
        (grad,) = torch.autograd.grad(total, t)
        objective.append(float(total.detach()))
        first = 0.9 * first + 0.1 * grad
        second = 0.999 * second + 0.001 * grad * grad
        step = (first / (1 - 0.9**r)) / ((second / (1 - 0.999**r)).sqrt() + 1e-8)
        theta = theta + lr * step
        thetas.append(theta.clone())
    return FitResult(theta, objective, torch.stack(thetas))


def fit_admm(
    positions: np.ndarray | torch.Tensor,
    rss: np.ndarray | torch.Tensor,
    aps: np.ndarray | torch.Tensor,
    *,
    area_m: float,
    rounds: int = 100,
    penalty: float = 1.0,
    local_steps: int = 10,
    learning_rate: float = 0.05,
    counts: np.ndarray | torch.Tensor | None = None,
    min_distance_m: float = 1.0,
    init: torch.Tensor | None = None,
) -> FitResult:
    """Federated maximum likelihood of the GP hyperparameters by consensus ADMM.

    The consensus form of the problem (Boyd et al. 2011, Sec. 7.1) that the FedLoc survey lists
    beside gradient averaging: client ``k`` keeps its own hyperparameters ``theta_k`` and a
    scaled dual ``u_k``; each round every client approximately minimises ``f_k(theta_k) +
    penalty / 2 * |theta_k - z + u_k|^2`` with ``local_steps`` Adam steps (all clients in one
    batched computation), where ``f_k = -K log p_k / (N A)`` is its share of the negative
    per-sample log likelihood (``N`` samples in all, so that the ``f_k`` sum to ``K`` times the
    centralised objective and each is of order one); the fusion centre sets ``z`` to the mean of
    ``theta_k + u_k`` and every client updates ``u_k += theta_k - z``. Each round exchanges one
    5-vector per client each way, as gradient averaging does; the fixed point is a stationary
    point of the pooled (block-diagonal) likelihood, the one :func:`fit_federated` seeks.

    Args:
        positions: ``(K, n, 2)`` the clients' sample positions.
        rss: ``(K, n, A)`` their RSS.
        aps: ``(A, 2)`` AP positions.
        area_m: Side of the area (sets the initial correlation length, area / 20).
        rounds: ADMM rounds, in [0, 100000].
        penalty: The augmented Lagrangian's ``rho``, in (0, 1e6].
        local_steps: Adam steps of each client's local problem per round, in [1, 10000].
        learning_rate: The local Adam step size, in (0, 10].
        counts: ``(K,)`` valid samples per client (see :func:`gp_log_marginal_likelihood`).
        min_distance_m: The mean's distance clamp.
        init: Initial ``theta`` of every client and of ``z`` (:func:`fit_federated`'s default
            by default).

    Returns:
        The fit: ``theta`` is the consensus ``z``; ``objective`` the per-sample log likelihood
        of the pooled data at ``z`` after every round.
    """
    rounds = check_int("rounds", rounds, minimum=0, maximum=100_000)
    rho = check_real("penalty", penalty, low=0.0, high=1e6, low_open=True)
    steps = check_int("local_steps", local_steps, minimum=1, maximum=10_000)
    lr = check_real("learning_rate", learning_rate, low=0.0, high=10.0, low_open=True)
    pos, y, ap = _as64(positions), _as64(rss), _as64(aps)
    k, n, a = y.shape
    c = _counts(counts, k, n)
    z = (
        _initial_theta(pos, y, ap, c, min_distance_m, area_m)
        if init is None
        else _as64(init).clone()
    )
    scale = k / float(c.sum() * a)
    local_theta = z.expand(k, -1).clone()
    dual = torch.zeros_like(local_theta)
    first = torch.zeros_like(local_theta)
    second = torch.zeros_like(local_theta)
    thetas = [z.clone()]
    objective: list[float] = []
    step_count = 0
    for _ in range(rounds):
        for _ in range(steps):
            step_count += 1
            t = local_theta.clone().requires_grad_(True)
            loss = -scale * gp_log_marginal_likelihood(
                t, pos, y, ap, counts=c, min_distance_m=min_distance_m
            )
            loss = loss + 0.5 * rho * (t - z + dual).pow(2).sum(dim=1)
            (grad,) = torch.autograd.grad(loss.sum(), t)
            first = 0.9 * first + 0.1 * grad
            second = 0.999 * second + 0.001 * grad * grad
            local_theta = local_theta - lr * (first / (1 - 0.9**step_count)) / (
                (second / (1 - 0.999**step_count)).sqrt() + 1e-8
            )
        z = (local_theta + dual).mean(dim=0)
        dual = dual + local_theta - z
        thetas.append(z.clone())
        with torch.no_grad():
            pooled = gp_log_marginal_likelihood(
                z, pos, y, ap, counts=c, min_distance_m=min_distance_m
            ).sum()
        objective.append(float(pooled) / float(c.sum() * a))
    return FitResult(z, objective, torch.stack(thetas))


def fit_centralized(
    positions: np.ndarray | torch.Tensor,
    rss: np.ndarray | torch.Tensor,
    aps: np.ndarray | torch.Tensor,
    *,
    area_m: float,
    min_distance_m: float = 1.0,
    max_iterations: int = 200,
    init: torch.Tensor | None = None,
) -> FitResult:
    """Maximum likelihood of the hyperparameters on pooled data by L-BFGS (the reference).

    The pooled samples form one GP (every pair of samples correlated); ``positions (n, 2)`` and
    ``rss (n, A)`` or one client's ``(1, n, ...)``.

    Args:
        positions: Sample positions.
        rss: Their RSS.
        aps: ``(A, 2)`` AP positions.
        area_m: Side of the area (initial correlation length).
        min_distance_m: The mean's distance clamp.
        max_iterations: L-BFGS iterations, in [1, 100000].
        init: Initial ``theta`` (as :func:`fit_federated`'s default by default).

    Returns:
        The fit.
    """
    import scipy.optimize

    iterations = check_int("max_iterations", max_iterations, minimum=1, maximum=100_000)
    pos, y, ap = _as64(positions), _as64(rss), _as64(aps)
    if pos.ndim == 2:
        pos, y = pos.unsqueeze(0), y.unsqueeze(0)
    c = _counts(None, 1, pos.shape[1])
    scale = float(pos.shape[1] * y.shape[2])
    theta0 = _initial_theta(pos, y, ap, c, min_distance_m, area_m) if init is None else _as64(init)

    def negative(x: np.ndarray) -> tuple[float, np.ndarray]:
        t = torch.as_tensor(x, dtype=torch.float64).requires_grad_(True)
        value = -gp_log_marginal_likelihood(t, pos, y, ap, min_distance_m=min_distance_m)[0]
        value = value / scale
        (grad,) = torch.autograd.grad(value, t)
        return float(value.detach()), grad.numpy()

    result = scipy.optimize.minimize(
        negative,
        theta0.numpy(),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": iterations, "gtol": 1e-10, "ftol": 1e-15},
    )
    theta = torch.as_tensor(result.x, dtype=torch.float64)
    return FitResult(theta, [-float(result.fun)], torch.stack([theta0, theta]))


def position_grid(area_m: float, points_per_side: int) -> np.ndarray:
    """``(G*G, 2)`` nodes of a regular grid over the area, corners included."""
    g = check_int("points_per_side", points_per_side, minimum=2)
    axis = np.linspace(0.0, area_m, g)
    gx, gy = np.meshgrid(axis, axis, indexing="ij")
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


@dataclass(frozen=True)
class GPMap:
    """An RSS map over a grid: predictive mean and variance of every AP at every node.

    Attributes:
        grid: ``(G, 2)`` grid nodes, metres.
        mean: ``(G, A)`` predicted RSS, dBm.
        variance: ``(G, A)`` predictive variance of a measurement (noise included), dB^2.
    """

    grid: np.ndarray
    mean: np.ndarray
    variance: np.ndarray

    @classmethod
    def path_loss(
        cls,
        theta: torch.Tensor,
        grid: np.ndarray,
        aps: np.ndarray,
        *,
        min_distance_m: float = 1.0,
        variance_db2: float = 1.0,
    ) -> GPMap:
        """The map of the mean alone (no data), with a constant variance."""
        with torch.no_grad():
            mean = mean_rss(_as64(theta), _as64(grid), _as64(aps), min_distance_m).numpy()
        return cls(grid, mean, np.full_like(mean, variance_db2))

    @classmethod
    def fit(
        cls,
        theta: torch.Tensor,
        positions: np.ndarray | torch.Tensor,
        rss: np.ndarray | torch.Tensor,
        aps: np.ndarray | torch.Tensor,
        grid: np.ndarray,
        *,
        counts: np.ndarray | torch.Tensor | None = None,
        min_distance_m: float = 1.0,
    ) -> GPMap:
        """The fused posterior map of K local GPs (exact GP posterior when K = 1).

        Every client's posterior on the grid is computed in one batched solve; the fusion
        centre combines them with the robust Bayesian committee machine: precision
        ``sum_k beta_k / v_k + (1 - sum_k beta_k) / v_prior`` and mean ``v sum_k beta_k m_k /
        v_k`` (residuals about the path-loss mean), ``beta_k = (log v_prior - log v_k) / 2``.
        """
        theta = _as64(theta).detach()
        pos, y, ap, g = _as64(positions), _as64(rss), _as64(aps), _as64(grid)
        if pos.ndim == 2:
            pos, y = pos.unsqueeze(0), y.unsqueeze(0)
        k, n, _ = y.shape
        c = _counts(counts, k, n)
        with torch.no_grad():
            chol, residual = _factor(theta, pos, y, ap, c, min_distance_m)
            valid = (torch.arange(n) < c.unsqueeze(1)).to(torch.float64)
            cross = _kernel(theta, pos, g.unsqueeze(0)) * valid.unsqueeze(2)  # (K, n, G)
            v = torch.linalg.solve_triangular(chol, cross, upper=False)
            w = torch.linalg.solve_triangular(chol, residual, upper=False)
            local_mean = v.transpose(1, 2) @ w  # (K, G, A)
            prior = float(torch.exp(2 * theta[2]))
            local_var = (prior - v.pow(2).sum(1)).clamp_min(prior * 1e-9)  # (K, G)
            if k == 1:
                mean, var = local_mean[0], local_var[0].unsqueeze(1)
            else:
                beta = 0.5 * (math.log(prior) - local_var.log())  # (K, G)
                precision = (beta / local_var).sum(0) + (1 - beta.sum(0)) / prior
                precision = precision.clamp_min(1.0 / prior)
                var = (1.0 / precision).unsqueeze(1)
                mean = var * ((beta / local_var).unsqueeze(2) * local_mean).sum(0)
            noise = float(torch.exp(2 * theta[4]))
            total_mean = mean + mean_rss(theta, g, ap, min_distance_m)
            total_var = (var + noise).expand_as(total_mean)
        return cls(np.asarray(grid), total_mean.numpy(), total_var.numpy().copy())


def localize(rss: np.ndarray, rss_map: GPMap, *, chunk: int = 256) -> np.ndarray:
    """Maximum-likelihood positions ``(T, 2)`` of RSS vectors ``(T, A)`` over the map's grid.

    The log likelihood of node ``g`` is ``-sum_a [(r_a - mean_ga)^2 / var_ga + log var_ga] / 2``
    (independent Gaussian APs); the estimate is the best node.
    """
    r = np.asarray(rss, dtype=np.float64)
    if r.ndim != 2 or r.shape[1] != rss_map.mean.shape[1]:
        raise ValueError(f"rss must be (T, {rss_map.mean.shape[1]}), got {r.shape}")
    inv = 1.0 / rss_map.variance
    log_det = np.log(rss_map.variance).sum(1)
    out = np.empty((r.shape[0], 2))
    for start in range(0, r.shape[0], chunk):
        block = r[start : start + chunk]
        sq = (block[:, None, :] - rss_map.mean[None]) ** 2
        score = -0.5 * ((sq * inv[None]).sum(2) + log_det[None])
        out[start : start + chunk] = rss_map.grid[np.argmax(score, axis=1)]
    return out
