"""The UAV swarm family: the PettingZoo class behind :mod:`fl_gym.envs.uav_swarm_v0` and the
swarm renderer (frames and GIFs)."""
