"""Byzantine devices: an update transform of the round pipeline that corrupts some clients' updates.

:class:`ByzantineTransform` sits between local training and compression
(:class:`fl_gym.sim.stages.UpdateTransform`). A set of devices, given by index or drawn as a
fraction of the K devices (once per episode, or again every round), replaces what it sends:

==============  ==================================================================================
attack          what a Byzantine device sends (``u`` its own honest update, ``scale`` the
                configured strength or the attack's default)
==============  ==================================================================================
``sign_flip``   ``-scale * u`` (default scale 4)
``gaussian``    ``N(0, scale^2)`` in every coordinate (default 1)
``large_norm``  ``scale`` in every coordinate (default 1e12)
``alie``        "A little is enough" (Baruch, Baruch and Goldberg, NeurIPS 2019): ``mu - z sigma``
                with ``mu``, ``sigma`` the coordinate-wise mean and standard deviation of the
                honest updates of all selected devices (an omniscient attacker) and
                ``z = Phi^-1((n - s) / n)``, ``s = floor(n / 2 + 1) - f`` for ``n`` selected and
                ``f`` Byzantine devices (``scale`` overrides ``z`` when given)
``ipm``         inner-product manipulation (Xie, Koyejo and Gupta, UAI 2020): ``-scale`` times
                the mean honest update of the non-Byzantine selected devices (default 0.1)
``label_flip``  data poisoning: the device trains its local steps on labels ``C - 1 - y``
``nan``         an honest-but-broken device: NaN in every coordinate
``inf``         an honest-but-broken device: ``+inf`` in every coordinate
==============  ==================================================================================

All Byzantine rows of a federation are computed in one batched operation. Randomness (the drawn
set, Gaussian noise, the label-flip retraining's minibatches) comes from the round's torch
generator (``RoundStart.generator``), so the same seed gives the same round; with
``attack="none"`` or no Byzantine device nothing is drawn and the round is unchanged bit for bit.

:class:`UpdateMonitor` measures, after the attack, what each selected device sends: the norm of
its update and its cosine similarity to the global model's last step, the features a server can
learn a defence from.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from fl_gym.sim.config import Range, check_bool, check_choice, check_int_tuple, check_ranges
from fl_gym.sim.learning.training import ClientTensors, LocalTrainingResult, local_sgd

if TYPE_CHECKING:
    from fl_gym.sim.learning.federation import Federation
    from fl_gym.sim.stages import RoundStart

__all__ = ["ATTACKS", "AdversaryConfig", "ByzantineTransform", "UpdateMonitor", "alie_z"]

ATTACKS = (
    "none",
    "sign_flip",
    "gaussian",
    "large_norm",
    "alie",
    "ipm",
    "label_flip",
    "nan",
    "inf",
)
"""Every attack :class:`AdversaryConfig` accepts."""

DEFAULT_SCALES: Mapping[str, float] = {
    "sign_flip": 4.0,
    "gaussian": 1.0,
    "large_norm": 1e12,
    "ipm": 0.1,
}
"""The strength of each scaled attack when ``AdversaryConfig.scale`` is ``None``."""


@dataclass(frozen=True)
class AdversaryConfig:
    """Which devices are Byzantine and what they send.

    Attributes:
        attack: One of ``"none"``, ``"sign_flip"``, ``"gaussian"``, ``"large_norm"``,
            ``"alie"``, ``"ipm"``, ``"label_flip"``, ``"nan"``, ``"inf"`` (see
            :mod:`fl_gym.sim.learning.adversary`).
        fraction: Share of the K devices that are Byzantine (``round(fraction * K)`` of them,
            drawn uniformly), in [0, 1]; ignored when ``devices`` is given.
        devices: Indices of the Byzantine devices (fixed); empty to draw them by ``fraction``.
        redraw: Draw the Byzantine set again every round (otherwise once per episode, at its
            first round).
        scale: Strength of the attack (its meaning per attack in the module's table), a finite
            number in [-3e38, 3e38], or ``None`` for the attack's default.
    """

    attack: str = "none"
    fraction: float = 0.0
    devices: tuple[int, ...] = ()
    redraw: bool = False
    scale: float | None = None

    RANGES: ClassVar[Mapping[str, Range]] = {
        "fraction": Range(0.0, 1.0),
        "scale": Range(-3e38, 3e38),
    }
    """Documented plausible range of every numeric field (stated in its description)."""

    def __post_init__(self) -> None:
        check_choice("attack", self.attack, ATTACKS)
        check_bool("redraw", self.redraw)
        devices = check_int_tuple("devices", self.devices, nonempty=False, distinct=True, minimum=0)
        object.__setattr__(self, "devices", devices)
        if self.scale is None:
            ranges = {k: v for k, v in self.RANGES.items() if k != "scale"}
            check_ranges(self, ranges)
        else:
            check_ranges(self, self.RANGES)

    @property
    def active(self) -> bool:
        """Whether any device can be Byzantine."""
        return self.attack != "none" and (bool(self.devices) or self.fraction > 0)

    @property
    def strength(self) -> float | None:
        """``scale``, or the attack's default (``None`` where the attack has no scale)."""
        return self.scale if self.scale is not None else DEFAULT_SCALES.get(self.attack)

    def num_byzantine(self, num_devices: int) -> int:
        """How many of ``num_devices`` devices are Byzantine."""
        if self.devices:
            return len(self.devices)
        return min(num_devices, math.floor(self.fraction * num_devices + 0.5))


def _find(pairs: list[tuple[Any, Any]], fed: Federation) -> Any:
    """The value paired with ``fed`` (by identity), or ``None``."""
    return next((value for owner, value in pairs if owner is fed), None)


def alie_z(num_selected: int, num_byzantine: int) -> float:
    """The "a little is enough" deviation ``z`` (Baruch et al. 2019, Algorithm 3).

    ``s = floor(n / 2 + 1) - f`` honest devices must be won over; ``z = Phi^-1((n - s) / n)``.
    The probability is kept in ``[0.5, 0.999]`` so ``z`` is finite and non-negative for every
    ``n`` and ``f``.
    """
    n, f = num_selected, num_byzantine
    s = math.floor(n / 2 + 1) - f
    p = min(max((n - s) / n, 0.5), 0.999)
    return statistics.NormalDist().inv_cdf(p)


class ByzantineTransform:
    """The adversary stage: corrupts the Byzantine devices' trained models.

    An :class:`~fl_gym.sim.stages.UpdateTransform` (registered as one at import of
    :mod:`fl_gym.sim.stages`; learning does not import the pipeline). One instance serves any
    number of federations; per federation it keeps the episode's Byzantine set (for a fixed,
    drawn set) and the last round's attackers.

    Args:
        config: The attack.
    """

    name = "byzantine"

    def __init__(self, config: AdversaryConfig) -> None:
        if not isinstance(config, AdversaryConfig):
            raise TypeError(f"config must be an AdversaryConfig, got {type(config).__name__}")
        self.config = config
        # Per federation, found by identity (a list of pairs, so that a deep copy of an owner
        # that holds both the federation and this transform keeps them matched).
        self._sets: list[tuple[Federation, np.ndarray]] = []
        self._flipped: list[tuple[Federation, ClientTensors]] = []
        self.last_attackers: list[np.ndarray] = []
        """Per federation of the last call, ``(K,)`` bool: the devices that sent a Byzantine
        update in that round (selected and Byzantine)."""

    # -- the Byzantine set -------------------------------------------------------------------------

    def byzantine_set(self, fed: Federation, generator: torch.Generator) -> np.ndarray:
        """``(K,)`` bool: the federation's Byzantine devices this round (drawn if needed)."""
        cfg, k = self.config, fed.num_clients
        if cfg.devices:
            mask = np.zeros(k, dtype=bool)
            ids = np.asarray(cfg.devices, dtype=np.int64)
            if ids.max(initial=-1) >= k:
                raise ValueError(
                    f"adversary devices {list(cfg.devices)} out of range for {k} devices; "
                    f"allowed 0..{k - 1}"
                )
            mask[ids] = True
            return mask
        kept = _find(self._sets, fed)
        if not cfg.redraw and kept is not None and fed.round_index > 0:
            return kept
        order = torch.randperm(k, generator=generator, device=generator.device).cpu().numpy()
        mask = np.zeros(k, dtype=bool)
        mask[order[: cfg.num_byzantine(k)]] = True
        return mask

    def byzantine_devices(self, fed: Federation) -> np.ndarray | None:
        """``(K,)`` bool: ``fed``'s Byzantine devices of the last round (selected or not), or
        ``None`` before its first round with this stage. The evaluation side of the truth that
        ``last_attackers`` gives only for the devices that uploaded."""
        kept = _find(self._sets, fed)
        return None if kept is None else kept.copy()

    # -- the stage -------------------------------------------------------------------------------

    def apply(
        self,
        feds: Sequence[Federation],
        starts: Sequence[RoundStart],
        trained: list[LocalTrainingResult],
    ) -> list[LocalTrainingResult]:
        """The trained models with the Byzantine devices' replaced (one result per federation)."""
        out = []
        sets: list[tuple[Federation, np.ndarray]] = []
        self.last_attackers = []
        for fed, start, result in zip(feds, starts, trained, strict=True):
            k = fed.num_clients
            if not self.config.active:
                self.last_attackers.append(np.zeros(k, dtype=bool))
                out.append(result)
                continue
            mask = self.byzantine_set(fed, start.generator)
            sets.append((fed, mask))
            ids = start.client_ids.cpu().numpy()
            rows = np.flatnonzero(mask[ids])
            attackers = np.zeros(k, dtype=bool)
            attackers[ids[rows]] = True
            self.last_attackers.append(attackers)
            out.append(self._attack(fed, start, result, rows) if rows.size else result)
        self._sets = sets
        return out

    def after_aggregate(
        self,
        feds: Sequence[Federation],
        starts: Sequence[RoundStart],
        pendings: Sequence[Any],
        fields: list[dict[str, Any]],
    ) -> None:
        """Put the round's attackers in each federation's report (``RoundReport.byzantine``); an
        inactive adversary leaves the field ``None``, as a round without the stage has it."""
        if not self.config.active:
            return
        for e, attackers in enumerate(self.last_attackers):
            fields[e]["byzantine"] = attackers.copy()

    def _attack(
        self,
        fed: Federation,
        start: RoundStart,
        result: LocalTrainingResult,
        rows: np.ndarray,
    ) -> LocalTrainingResult:
        cfg = self.config
        params, loss = result.params, result.train_loss
        index = torch.as_tensor(rows, device=params.device)
        honest = torch.ones(params.shape[0], dtype=torch.bool, device=params.device)
        honest[index] = False
        updates = params - fed.params
        scale = cfg.strength
        if cfg.attack == "label_flip":
            poisoned = local_sgd(
                fed.model,
                fed.params,
                self._flipped_clients(fed),
                start.client_ids[index],
                start.local_steps[index],
                batch_size=fed.config.batch_size,
                learning_rate=fed.config.learning_rate,
                generator=start.generator,
                weight_decay=fed.config.weight_decay,
            )
            params, loss = params.clone(), loss.clone()
            params[index] = poisoned.params
            loss[index] = poisoned.train_loss
            return LocalTrainingResult(params=params, train_loss=loss)
        shape = (rows.size, params.shape[1])
        if cfg.attack == "sign_flip":
            sent = -float(scale) * updates[index]  # type: ignore[arg-type]
        elif cfg.attack == "gaussian":
            noise = torch.randn(shape, generator=start.generator, device=params.device)
            sent = float(scale) * noise.to(params.dtype)  # type: ignore[arg-type]
        elif cfg.attack == "large_norm":
            sent = torch.full(shape, float(scale), dtype=params.dtype, device=params.device)  # type: ignore[arg-type]
        elif cfg.attack == "alie":
            z = alie_z(params.shape[0], rows.size) if cfg.scale is None else float(cfg.scale)
            mean = updates.mean(dim=0)
            std = updates.std(dim=0, unbiased=False)
            sent = (mean - z * std).unsqueeze(0).expand(shape)
        elif cfg.attack == "ipm":
            pool = updates[honest] if bool(honest.any()) else updates
            sent = (-float(scale) * pool.mean(dim=0)).unsqueeze(0).expand(shape)  # type: ignore[arg-type]
        elif cfg.attack == "nan":
            sent = torch.full(shape, math.nan, dtype=params.dtype, device=params.device)
        else:  # "inf"
            sent = torch.full(shape, math.inf, dtype=params.dtype, device=params.device)
        params = params.clone()
        params[index] = fed.params + sent
        return LocalTrainingResult(params=params, train_loss=loss)

    def _flipped_clients(self, fed: Federation) -> ClientTensors:
        """The federation's client data with every label ``y`` replaced by ``C - 1 - y``."""
        kept = _find(self._flipped, fed)
        if kept is not None:
            return kept
        clients = fed.clients
        flipped = dataclasses.replace(clients, y=fed.model.num_classes - 1 - clients.y)
        self._flipped = [(fed, flipped)]
        return flipped


class UpdateMonitor:
    """Measures what each selected device sends: update norm and cosine to the last step.

    An :class:`~fl_gym.sim.stages.UpdateTransform` that changes nothing. Per federation of the
    last call it holds ``(K,)`` float64 arrays :attr:`norms` (``||u_k||``; ``inf`` for a row that
    is not finite or overflows) and :attr:`cosines` (cosine similarity between ``u_k`` and the
    global model's change in the previous round, in ``[-1, 1]``; 0 where either is zero or not
    finite, and in the first round), and :attr:`measured` (the selected devices). It keeps the
    global model of each federation's previous round to form that change.
    """

    name = "monitor"

    def __init__(self) -> None:
        self._previous: list[tuple[Federation, torch.Tensor]] = []
        self.norms: list[np.ndarray] = []
        self.cosines: list[np.ndarray] = []
        self.measured: list[np.ndarray] = []

    def apply(
        self,
        feds: Sequence[Federation],
        starts: Sequence[RoundStart],
        trained: list[LocalTrainingResult],
    ) -> list[LocalTrainingResult]:
        previous: list[tuple[Federation, torch.Tensor]] = []
        self.norms, self.cosines, self.measured = [], [], []
        for fed, start, result in zip(feds, starts, trained, strict=True):
            k = fed.num_clients
            ids = start.client_ids.cpu().numpy()
            norms, cosines = np.zeros(k), np.zeros(k)
            measured = np.zeros(k, dtype=bool)
            measured[ids] = True
            kept = _find(self._previous, fed)
            step = None
            if kept is not None and fed.round_index > 0:
                step = (fed.params - kept).to(torch.float64)
            if ids.size:
                u = (result.params - fed.params).to(torch.float64)
                finite = torch.isfinite(u).all(dim=1)
                u = torch.where(finite.unsqueeze(1), u, torch.zeros_like(u))
                norm = torch.linalg.vector_norm(u, dim=1)
                norm = torch.where(finite & torch.isfinite(norm), norm, math.inf)
                norms[ids] = norm.cpu().numpy()
                if step is not None:
                    step_norm = float(torch.linalg.vector_norm(step))
                    if math.isfinite(step_norm) and step_norm > 0:
                        usable = finite & (norm > 0) & torch.isfinite(norm)
                        cos = (u @ step) / (norm.clamp_min(1e-300) * step_norm)
                        cos = torch.where(usable, cos.clamp(-1.0, 1.0), 0.0)
                        cosines[ids] = cos.cpu().numpy()
            self.norms.append(norms)
            self.cosines.append(cosines)
            self.measured.append(measured)
            previous.append((fed, fed.params.clone()))
        self._previous = previous
        return trained

    def state(self, e: int = 0) -> dict[str, Any]:
        """The last call's measurements of federation ``e``."""
        return {"norms": self.norms[e], "cosines": self.cosines[e], "measured": self.measured[e]}
