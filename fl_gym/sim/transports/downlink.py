"""The model broadcast that precedes every transport's uploads (the downlink half of a round).

:func:`with_downlink` adds the base station's broadcast of the global model to what any
transport delivered; the pipeline (:func:`fl_gym.sim.rounds.run_rounds`) applies it after the
transport stage.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from fl_gym.sim.learning.compression import FLOAT_BITS
from fl_gym.sim.stages import Delivery, RoundStart

if TYPE_CHECKING:
    from fl_gym.sim.learning.federation import Federation

__all__ = ["with_downlink"]


def with_downlink(fed: Federation, start: RoundStart, delivery: Delivery) -> Delivery:
    """``delivery`` with the broadcast of the global model added, where the cell models it.

    With ``WirelessConfig.downlink`` on, the base station first sends the float32 global model
    to the round's participants (:meth:`~fl_gym.sim.radio.cell.WirelessCell.downlink`); that time
    precedes their compute and upload, so it is added to each participant's latency and to the
    round time (the deadline bounds compute + upload). Otherwise ``delivery`` is returned as is.
    """
    cell = fed.cell
    if cell is None or not cell.config.downlink:
        return delivery
    selected = start.plan.selected
    time_s, _ = cell.downlink(selected, FLOAT_BITS * fed.num_params)
    if time_s == 0.0:
        return delivery
    return dataclasses.replace(
        delivery,
        latency_s=np.where(selected, delivery.latency_s + time_s, delivery.latency_s),
        round_time_s=delivery.round_time_s + time_s,
    )
