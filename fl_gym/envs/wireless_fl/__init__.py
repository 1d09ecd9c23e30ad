"""The wireless FL family: one environment class with five registered variants, the
over-the-air and private variants, their configuration and presets, the native vector env and
the renderer."""

from fl_gym.envs.wireless_fl.config import PRESETS, WirelessFLConfig, make_config
from fl_gym.envs.wireless_fl.env import (
    CONTROLS,
    DEVICE_FEATURES,
    SERVER_FEATURES,
    WirelessFLEnv,
    observe_many,
)
from fl_gym.envs.wireless_fl.localization import FederatedLocalizationEnv
from fl_gym.envs.wireless_fl.over_the_air import OverTheAirFLEnv
from fl_gym.envs.wireless_fl.private import PRIVATE_PRESETS, PrivateFLConfig, PrivateFLEnv
from fl_gym.envs.wireless_fl.vector import OverTheAirFLVectorEnv, WirelessFLVectorEnv

__all__ = [
    "CONTROLS",
    "DEVICE_FEATURES",
    "PRESETS",
    "PRIVATE_PRESETS",
    "SERVER_FEATURES",
    "FederatedLocalizationEnv",
    "OverTheAirFLEnv",
    "OverTheAirFLVectorEnv",
    "PrivateFLConfig",
    "PrivateFLEnv",
    "WirelessFLConfig",
    "WirelessFLEnv",
    "WirelessFLVectorEnv",
    "make_config",
    "observe_many",
]
