"""Moved: :class:`BroadbandAnalog` lives in :mod:`fl_gym.sim.transports.broadband`; this module
re-exports it so that ``fl_gym.sim.broadband`` keeps working."""

from fl_gym.sim.transports.broadband import BroadbandAnalog

__all__ = ["BroadbandAnalog"]
