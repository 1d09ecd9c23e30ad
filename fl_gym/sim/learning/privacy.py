"""Differential privacy of federated learning: clipping, Gaussian noise and accounting.

Two granularities, after the two papers that define them:

* **Client level** (DP-FedAvg, McMahan et al., "Learning Differentially Private Recurrent
  Language Models", ICLR 2018): each participating client's update is clipped to L2 norm ``C``
  and Gaussian noise of standard deviation ``z C w_max / sum(w)`` is added to the weighted
  average (``z C / n`` for the uniform average over ``n`` participants), ``z`` the noise
  multiplier. The neighbouring data sets differ in one client's whole data.
* **Sample level** (DP-SGD, Abadi et al., "Deep Learning with Differential Privacy", CCS 2016):
  every local step clips each example's gradient to norm ``C`` and adds ``N(0, z^2 C^2)`` to the
  sum of the clipped gradients before dividing by the batch size. The neighbouring data sets
  differ in one example of one client.

Accounting uses Google's ``dp-accounting`` library (the ``privacy`` extra): each round is one
Poisson-subsampled Gaussian mechanism composed in Renyi DP (Mironov 2017; Mironov, Talwar and
Zhang 2019) and converted to ``(epsilon, delta)``. The sampling assumptions are stated where each
mechanism is recorded: client-level amplification by sampling needs clients sampled at random
(a controller that picks clients deliberately gets rate 1, no amplification); DP-SGD's minibatches
are drawn uniformly with replacement and accounted as Poisson sampling at rate ``B / n_k``, the
convention of TensorFlow Privacy and Opacus.

This module is pure learning-side math (no radio, no round pipeline); the round's stage that
uses it is :mod:`fl_gym.sim.privacy`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from fl_gym.sim.config import check_int, check_real

__all__ = [
    "RDP_ORDERS",
    "PrivacyAccountant",
    "SampleLevelDP",
    "clip_rows",
    "require_dp_accounting",
]

RDP_ORDERS: tuple[float, ...] = (
    1.5,
    1.75,
    *(float(a) for a in range(2, 64)),
    80.0,
    96.0,
    128.0,
    256.0,
    512.0,
)
"""Renyi orders the accountant tracks: the library's usual grid without its fine fractional
orders below 1.5 (which cost most of the computation and only matter for epsilon >> 10)."""

MAX_NOISE_MULTIPLIER = 1e6
"""Largest noise multiplier a configuration accepts (noise far beyond any signal)."""


def require_dp_accounting() -> Any:
    """The ``dp_accounting`` module (a dependency of fl_gym), or an ImportError saying how to
    install it where it is missing."""
    try:
        import dp_accounting
    except ImportError:
        raise ImportError(
            "differential-privacy accounting needs Google's dp-accounting library, which is not "
            "installed (it is a dependency of fl-gym): pip install 'dp-accounting>=0.4,<1'"
        ) from None
    return dp_accounting


def clip_rows(rows: torch.Tensor, clip_norm: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row scaled to L2 norm at most ``clip_norm`` (rows already inside are unchanged).

    Args:
        rows: ``(S, P)`` updates or gradients.
        clip_norm: The bound ``C > 0``.

    Returns:
        The clipped rows and each row's norm before clipping ``(S,)``.
    """
    norms = torch.linalg.vector_norm(rows, dim=1)
    # min(1, C / ||u||), with a zero row kept at zero (its factor is 1).
    factor = torch.clamp(clip_norm / torch.clamp(norms, min=1e-30), max=1.0)
    return rows * factor.unsqueeze(1), norms


@dataclass(frozen=True)
class SampleLevelDP:
    """DP-SGD settings of local training: per-example clipping and Gaussian noise per step.

    Attributes:
        noise_multiplier: ``z >= 0``: each step adds ``N(0, z^2 C^2)`` per coordinate to the sum
            of the clipped per-example gradients (0: clipping only).
        clip_norm: ``C > 0``: the bound on every example's gradient norm.
    """

    noise_multiplier: float = 1.0
    clip_norm: float = 1.0

    def __post_init__(self) -> None:
        check_real("noise_multiplier", self.noise_multiplier, low=0.0, high=MAX_NOISE_MULTIPLIER)
        check_real("clip_norm", self.clip_norm, low=0.0, high=1e6, low_open=True)
        object.__setattr__(self, "noise_multiplier", float(self.noise_multiplier))
        object.__setattr__(self, "clip_norm", float(self.clip_norm))

    def noise_std(self, batch_size: int) -> float:
        """Standard deviation of the noise on the mean clipped gradient of a batch."""
        return self.noise_multiplier * self.clip_norm / batch_size


class PrivacyAccountant:
    """The ``(epsilon, delta)`` spent by a sequence of subsampled Gaussian mechanisms.

    A thin layer over ``dp_accounting.rdp.RdpAccountant`` (add-or-remove-one neighbouring
    relation): :meth:`record` composes ``steps`` runs of a Poisson-subsampled Gaussian mechanism
    of noise multiplier ``z`` and sampling rate ``q``; :meth:`epsilon` converts the composed
    Renyi DP into epsilon at the accountant's ``delta``. A mechanism with ``z = 0`` spends an
    infinite budget.

    Args:
        delta: The target ``delta`` in (0, 1).
    """

    def __init__(self, delta: float = 1e-5) -> None:
        self.delta = check_real("delta", delta, low=0.0, high=1.0, low_open=True, high_open=True)
        require_dp_accounting()  # a clear error now, not at the first record
        self.reset()

    def reset(self) -> None:
        """Forget every recorded mechanism (epsilon back to 0)."""
        self._accountant = require_dp_accounting().rdp.RdpAccountant(list(RDP_ORDERS))
        self._infinite = False
        self._epsilon: float | None = 0.0
        self.num_events = 0

    def event(self, noise_multiplier: float, sampling_rate: float, steps: int = 1) -> Any:
        """The library's ``DpEvent`` for ``steps`` runs of the subsampled Gaussian mechanism."""
        z = check_real("noise_multiplier", noise_multiplier, low=0.0, low_open=True)
        q = check_real("sampling_rate", sampling_rate, low=0.0, high=1.0, low_open=True)
        steps = check_int("steps", steps, minimum=1)
        dpa = require_dp_accounting()
        single: Any = dpa.GaussianDpEvent(z)
        if q < 1.0:
            single = dpa.PoissonSampledDpEvent(q, single)
        return single if steps == 1 else dpa.SelfComposedDpEvent(single, steps)

    def record(self, noise_multiplier: float, sampling_rate: float, steps: int = 1) -> None:
        """Compose ``steps`` runs of a mechanism with noise multiplier ``z`` at sampling rate
        ``q`` (``q = 1``: no amplification by sampling)."""
        self.num_events += 1
        if noise_multiplier == 0.0:
            self._infinite = True
            self._epsilon = math.inf
            return
        self._accountant.compose(self.event(noise_multiplier, sampling_rate, steps))
        self._epsilon = None

    def epsilon(self) -> float:
        """The epsilon spent so far at :attr:`delta` (``inf`` once a noiseless round ran)."""
        if self._epsilon is None:
            self._epsilon = float(self._accountant.get_epsilon(self.delta))
        return self._epsilon
