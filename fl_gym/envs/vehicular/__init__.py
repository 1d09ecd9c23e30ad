"""The vehicular URLLC family: the roadside unit's Gymnasium environment, the per-transmitter
PettingZoo class behind :mod:`fl_gym.envs.vehicular_v1`, and the road-map renderer."""

from fl_gym.envs.vehicular.env import VehicularURLLCConfig, VehicularURLLCEnv

__all__ = ["VehicularURLLCConfig", "VehicularURLLCEnv"]
