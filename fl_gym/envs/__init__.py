"""Gymnasium and PettingZoo adapters over :mod:`fl_gym.sim`."""

from fl_gym.envs.registration import ENV_IDS, register_envs
from fl_gym.envs.vehicular.env import VehicularURLLCConfig, VehicularURLLCEnv
from fl_gym.envs.wireless_fl.config import PRESETS, WirelessFLConfig, make_config
from fl_gym.envs.wireless_fl.env import CONTROLS, DEVICE_FEATURES, SERVER_FEATURES, WirelessFLEnv
from fl_gym.envs.wireless_fl.localization import FederatedLocalizationEnv
from fl_gym.envs.wireless_fl.over_the_air import OverTheAirFLEnv
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
    "VehicularURLLCConfig",
    "VehicularURLLCEnv",
    "WirelessFLConfig",
    "WirelessFLEnv",
    "WirelessFLVectorEnv",
    "make_config",
    "register_envs",
]
