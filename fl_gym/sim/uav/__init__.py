"""The UAV swarm's dynamics: exact wind integration, k-d-tree collisions and density grids."""

from fl_gym.sim.uav.swarm import UAV_PRESETS, SwarmStep, UAVSwarm, UAVSwarmConfig, make_uav_config

__all__ = ["UAV_PRESETS", "SwarmStep", "UAVSwarm", "UAVSwarmConfig", "make_uav_config"]
