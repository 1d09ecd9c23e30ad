"""Moved: :class:`CSOverTheAir` lives in :mod:`fl_gym.sim.transports.cs_over_the_air`; this
module re-exports it so that ``fl_gym.sim.cs_over_the_air`` keeps working."""

from fl_gym.sim.transports.cs_over_the_air import CSOverTheAir

__all__ = ["CSOverTheAir"]
