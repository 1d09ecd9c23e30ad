"""fl_gym: federated learning over wireless networks as reinforcement-learning control problems.

``import fl_gym`` registers every environment with Gymnasium (``gym.make("fl_gym/WirelessFL-v0")``;
``gym.make("fl_gym:fl_gym/WirelessFL-v0")`` imports the package first).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fl_gym.envs.registration import ENV_IDS, register_envs

if TYPE_CHECKING:
    from fl_gym._catalogue import EnvEntry

__version__ = "0.1.0"
__all__ = ["ENV_IDS", "__version__", "catalogue", "register_envs"]


def catalogue() -> tuple[EnvEntry, ...]:
    """Every environment of every family (Gymnasium ids and PettingZoo modules): how to build
    it, its controls, spaces, presets, policies and config keys with defaults and units.

    ``fl-gym list`` prints it (``fl-gym list NAME`` with the config keys, ``--json`` as JSON).
    Returns a tuple of :class:`fl_gym._catalogue.EnvEntry`.
    """
    from fl_gym._catalogue import build_catalogue

    return build_catalogue()


register_envs()
