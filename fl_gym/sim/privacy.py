"""Client-level differential privacy as a stage of the round pipeline (DP-FedAvg).

:class:`ClientLevelDP` is an :class:`~fl_gym.sim.stages.UpdateTransform`: after local training
it clips every participating device's update (local - global) to L2 norm ``C`` (McMahan et al.,
ICLR 2018), then adds Gaussian noise in one of two places:

* ``noise_at="server"`` (central DP, the paper's setting): after the server has aggregated, the
  new global model gets ``N(0, sigma^2)`` per parameter with
  ``sigma = eta_s z C w_max / sum(w)`` over the ``n`` aggregated updates (``eta_s`` the server
  learning rate, ``w`` the aggregation weights): ``z C / n`` for the uniform average. One
  device's update moves the weighted average by at most ``C w_max / sum(w)``, so the round is a
  Gaussian mechanism of noise multiplier ``z``. The individual updates the server receives are
  clipped but not noisy: the guarantee is about the released models, with a trusted server.
* ``noise_at="device"`` (distributed DP): each device adds ``N(0, s^2)`` per parameter before
  compression with ``s = z C w_max / sqrt(sum(w^2))`` (``z C / sqrt(n)`` uniform), so that the
  weighted average carries the same ``sigma`` as above when every update arrives. This is the
  same guarantee as central DP only if the server sees nothing but the aggregate (secure
  aggregation, or the superposition of over-the-air computation); against a server that reads
  one device's update the protection is that update's own noise, ``s``. Updates lost on the
  channel take their noise with them, so the average then carries less than ``sigma`` (the
  transform reports the effective noise multiplier of what was aggregated).

Over the air (``count_channel_noise=True``, server noise only), the receiver noise already in
the analog aggregate counts toward ``sigma`` and the server only tops it up (Liu and Simeone,
"Privacy for free: wireless federated learning via uncoded transmission with adaptive power
control", IEEE JSAC 2021; Seif, Tandon and Li, "Wireless federated learning with local
differential privacy", ISIT 2020): the round's Gaussian channel noise of per-parameter variance
``aggregation_mse`` plus the server's top-up has variance ``sigma^2``. Assumed: the receiver
noise is Gaussian, independent of the data and of known power (the transport's analytic MSE),
and the power scaling is public. The over-the-air transport normalises the symbols by the
largest per-row RMS of the clipped updates (at most ``C / sqrt(d)``), a single data-dependent
scalar per round that this accounting treats as public; Liu and Simeone's scheme uses a
data-independent scale and is the one the guarantee formally covers.

Aggregation must be the weighted average (``aggregator="fedavg"``): the sensitivity above is
that of the average, not of a robust rule. Accounting (epsilon per round, budgets) lives with the
caller, through :class:`~fl_gym.sim.learning.privacy.PrivacyAccountant`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fl_gym.sim.config import check_bool, check_choice, check_real
from fl_gym.sim.learning.privacy import MAX_NOISE_MULTIPLIER, SampleLevelDP, clip_rows
from fl_gym.sim.learning.training import LocalTrainingResult
from fl_gym.sim.rounds import PendingUpdates, RoundStart, UpdateTransform

if TYPE_CHECKING:
    from fl_gym.sim.learning.federation import Federation

__all__ = ["NOISE_PLACEMENTS", "ClientLevelDP", "ClientRoundPrivacy", "SampleLevelDP"]

NOISE_PLACEMENTS = ("server", "device")


@dataclass(frozen=True)
class ClientRoundPrivacy:
    """What client-level DP did in one federation's round.

    Attributes:
        num_aggregated: Updates the server aggregated ``n``.
        sensitivity: ``eta_s C w_max / sum(w)``: the most one device moved the global model.
        noise_std: Per-parameter standard deviation of the Gaussian noise on the global model's
            step (server and device noise, and counted channel noise).
        channel_noise_std: The part of ``noise_std`` the over-the-air receiver contributed.
        noise_multiplier: ``noise_std / sensitivity``: the round's effective noise multiplier
            (what the accountant composes); 0 when nothing was aggregated.
        clipped: ``(S,)`` per participating device, whether its update was scaled down.
        update_norm: ``(S,)`` each participating device's update norm before clipping.
    """

    num_aggregated: int
    sensitivity: float
    noise_std: float
    channel_noise_std: float
    noise_multiplier: float
    clipped: np.ndarray
    update_norm: np.ndarray


class ClientLevelDP(UpdateTransform):
    """DP-FedAvg: clip each device's update to norm ``C``, add Gaussian noise (see the module).

    The noise multiplier and clipping norm are plain attributes, so a controller may change
    them between rounds; :attr:`last` holds each federation's :class:`ClientRoundPrivacy` of the
    latest round.

    Args:
        noise_multiplier: ``z >= 0`` (0: clipping only, no privacy).
        clip_norm: ``C > 0``.
        noise_at: ``"server"`` (central) or ``"device"`` (distributed; see the module).
        count_channel_noise: Over the air with server noise, count the receiver noise toward the
            noise (the server adds only what is missing).
    """

    name = "client_dp"

    def __init__(
        self,
        noise_multiplier: float = 1.0,
        clip_norm: float = 1.0,
        *,
        noise_at: str = "server",
        count_channel_noise: bool = False,
    ) -> None:
        self.noise_multiplier = noise_multiplier
        self.clip_norm = clip_norm
        self.noise_at = check_choice("noise_at", noise_at, NOISE_PLACEMENTS)
        self.count_channel_noise = check_bool("count_channel_noise", count_channel_noise)
        self.last: list[ClientRoundPrivacy] = []
        self._pending: list[dict[str, Any]] = []

    def _settings(self) -> tuple[float, float]:
        z = check_real(
            "noise_multiplier", self.noise_multiplier, low=0.0, high=MAX_NOISE_MULTIPLIER
        )
        c = check_real("clip_norm", self.clip_norm, low=0.0, high=1e6, low_open=True)
        return z, c

    def apply(
        self,
        feds: Sequence[Federation],
        starts: Sequence[RoundStart],
        trained: list[LocalTrainingResult],
    ) -> list[LocalTrainingResult]:
        """Clip each update (and, with device noise, add it); remember the pre-clip norms."""
        z, c = self._settings()
        self._pending = []
        out = []
        for fed, start, result in zip(feds, starts, trained, strict=True):
            if fed.config.aggregator != "fedavg":
                raise ValueError(
                    "client-level DP bounds the sensitivity of the weighted average: it needs "
                    f"aggregator='fedavg', got {fed.config.aggregator!r}"
                )
            updates, norms = clip_rows(result.params - fed.params, c)
            device_std = 0.0
            if self.noise_at == "device" and z > 0.0 and updates.shape[0] > 0:
                w = fed.client_weights[start.client_ids].to(torch.float64)
                device_std = z * c * float(w.max()) / math.sqrt(float(w.pow(2).sum()))
                noise = torch.randn(
                    updates.shape,
                    generator=start.generator,
                    dtype=updates.dtype,
                    device=updates.device,
                )
                updates = updates + device_std * noise
            norms_np = norms.cpu().numpy().astype(np.float64)
            self._pending.append({"norms": norms_np, "device_std": device_std})
            out.append(LocalTrainingResult(fed.params + updates, result.train_loss))
        return out

    def after_aggregate(
        self,
        feds: Sequence[Federation],
        starts: Sequence[RoundStart],
        pendings: Sequence[PendingUpdates],
        fields: Sequence[dict[str, Any]],
    ) -> None:
        """Add the server's noise to each new global model and record the round's privacy."""
        z, c = self._settings()
        self.last = []
        for fed, start, f, info in zip(feds, starts, fields, self._pending, strict=True):
            delivered = np.asarray(f["delivered"], dtype=bool)
            analog = "aggregation_mse" in f
            eta = fed.config.server_learning_rate
            n = int(delivered.sum())
            sensitivity = noise_std = channel_std = 0.0
            if n:
                ids = np.flatnonzero(delivered)
                if analog:
                    w = fed.data.client_sizes[ids].astype(np.float64)
                else:
                    w = fed.client_weights.cpu().numpy()[ids].astype(np.float64)
                sensitivity = eta * c * float(w.max()) / float(w.sum())
                target_var = (z * sensitivity) ** 2
                channel_var = 0.0
                if analog and self.count_channel_noise:
                    channel_var = eta**2 * float(f["aggregation_mse"])
                    channel_std = math.sqrt(channel_var)
                if self.noise_at == "server":
                    added_var = max(target_var - channel_var, 0.0)
                    if added_var > 0.0:
                        noise = torch.randn(
                            fed.params.shape,
                            generator=start.generator,
                            dtype=fed.params.dtype,
                            device=fed.params.device,
                        )
                        fed.params = fed.params + math.sqrt(added_var) * noise
                    noise_std = math.sqrt(added_var + channel_var)
                else:
                    # Device noise of the devices that were aggregated, averaged with weights w.
                    s = info["device_std"]
                    noise_std = eta * s * math.sqrt(float((w**2).sum())) / float(w.sum())
                    noise_std = math.sqrt(noise_std**2 + channel_var)
            norms = info["norms"]
            self.last.append(
                ClientRoundPrivacy(
                    num_aggregated=n,
                    sensitivity=sensitivity,
                    noise_std=noise_std,
                    channel_noise_std=channel_std,
                    noise_multiplier=noise_std / sensitivity if sensitivity > 0.0 else 0.0,
                    clipped=norms > c,
                    update_norm=norms,
                )
            )
