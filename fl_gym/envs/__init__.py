"""Gymnasium and PettingZoo adapters over :mod:`fl_gym.sim`."""

from typing import Any

from fl_gym.envs.registration import ENV_IDS, register_envs
from fl_gym.envs.vehicular.env import VehicularURLLCConfig, VehicularURLLCEnv
from fl_gym.envs.wireless_fl.config import PRESETS, WirelessFLConfig, make_config
from fl_gym.envs.wireless_fl.env import CONTROLS, DEVICE_FEATURES, SERVER_FEATURES, WirelessFLEnv
from fl_gym.envs.wireless_fl.localization import FederatedLocalizationEnv
from fl_gym.envs.wireless_fl.over_the_air import OverTheAirFLEnv
from fl_gym.envs.wireless_fl.private import PrivateFLConfig, PrivateFLEnv
from fl_gym.envs.wireless_fl.vector import OverTheAirFLVectorEnv, WirelessFLVectorEnv

__all__ = [
    "CONTROLS",
    "DEVICE_FEATURES",
    "ENV_IDS",
    "PRESETS",
    "SERVER_FEATURES",
    "FederatedLocalizationEnv",
    "OverTheAirFLEnv",
    "OverTheAirFLVectorEnv",
    "PrivateFLConfig",
    "PrivateFLEnv",
    "VehicularURLLCConfig",
    "VehicularURLLCEnv",
    "WirelessFLConfig",
    "WirelessFLEnv",
    "WirelessFLVectorEnv",
    "make_config",
    "register_envs",
]

_REPLACED_MODULES = {"vehicular_v0": ("vehicular", 0, 1)}
"""PettingZoo modules replaced by a newer version: ``{old name: (name, old, new version)}``."""


def __getattr__(name: str) -> Any:
    """An old module version: building any of its environments raises PettingZoo's
    ``DeprecatedEnv`` naming the version to use (PettingZoo's convention for its own envs)."""
    if name in _REPLACED_MODULES:
        from pettingzoo.utils.deprecated_module import DeprecatedModule

        return DeprecatedModule(*_REPLACED_MODULES[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
