"""Fixed learning knobs: one compression level and one local-step count for every round.

These are the static configurations that adaptive compression and adaptive aggregation
frequency are measured against.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from fl_gym.baselines.base import BaselinePolicy, EpisodeMemory
from fl_gym.baselines.features import ObservationFeatures

__all__ = ["FixedCompression", "FixedLocalSteps"]


class FixedCompression(BaselinePolicy):
    """Every device compresses its update with the same operator, every round.

    The static compression of the gradient-compression literature (top-k sparsification, Aji and
    Heafield, EMNLP 2017; QSGD, Alistarh et al., NeurIPS 2017; signSGD, Bernstein et al., ICML
    2018), with the operator picked from the environment's ``learning.compression_levels``.

    No extra registry names such as ``"compression-topk:0.1"`` exist: the levels are part of
    each environment's configuration, so the level is an argument instead
    (``make_baseline("fixed-compression", env, level="qsgd:16")``).

    Args:
        env: The environment.
        level: An index into ``learning.compression_levels`` or one of its spec strings. The
            default ``None`` means level 1 (``"topk:0.1"`` with the default levels), or level 0
            when the environment has a single level.
    """

    name: ClassVar[str] = "fixed-compression"
    knobs: ClassVar[frozenset[str]] = frozenset({"compression"})

    def __init__(self, env: gym.Env, *, level: int | str | None = None) -> None:
        super().__init__(env)
        levels = self.env.config.learning.compression_levels
        if level is None:
            index = min(1, len(levels) - 1)
        elif isinstance(level, str):
            if level not in levels:
                raise ValueError(
                    f"level {level!r} is not one of this environment's compression levels "
                    f"{list(levels)}"
                )
            index = levels.index(level)
        elif isinstance(level, (int, np.integer)) and not isinstance(level, bool):
            if not 0 <= level < len(levels):
                raise ValueError(
                    f"level must be an index in 0..{len(levels) - 1} of {list(levels)}, "
                    f"got {level!r}"
                )
            index = int(level)
        else:
            raise TypeError(
                f"level must be None, an int index or a spec string of {list(levels)}, "
                f"got {level!r}"
            )
        self.level = index

    def _decide(self, features: ObservationFeatures, memory: EpisodeMemory) -> dict[str, Any]:
        return {"compression": self.level}


class FixedLocalSteps(BaselinePolicy):
    """Every selected device runs the same number of local SGD steps, every round.

    Local SGD / FedAvg with a fixed period (McMahan et al., AISTATS 2017; Stich, "Local SGD
    Converges Fast and Communicates Little", ICLR 2019), the reference of adaptive aggregation
    frequency control (Wang et al., "Adaptive Federated Learning in Resource Constrained Edge
    Computing Systems", IEEE JSAC 2019).

    Args:
        env: The environment.
        steps: Local steps, one of ``local_step_choices``. The default ``None`` means
            ``default_local_steps`` (or the choice nearest to it, should it not be a choice).
    """

    name: ClassVar[str] = "fixed-steps"
    knobs: ClassVar[frozenset[str]] = frozenset({"frequency"})

    def __init__(self, env: gym.Env, *, steps: int | None = None) -> None:
        super().__init__(env)
        config = self.env.config
        choices = config.local_step_choices
        if steps is None:
            # The nearest choice, first in the tuple on ties: what encode_plan would pick.
            steps = choices[self.codec.local_steps_choice(config.default_local_steps)]
        elif isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
            raise TypeError(f"steps must be an int, one of {list(choices)}, got {steps!r}")
        elif steps not in choices:
            raise ValueError(
                f"steps must be one of local_step_choices {list(choices)}, got {steps}"
            )
        self.steps = int(steps)

    def _decide(self, features: ObservationFeatures, memory: EpisodeMemory) -> dict[str, Any]:
        return {"frequency": self.steps}
