"""fl_gym: federated learning over wireless networks as reinforcement-learning control problems.

``import fl_gym`` registers every environment with Gymnasium (``gym.make("fl_gym/WirelessFL-v0")``;
``gym.make("fl_gym:fl_gym/WirelessFL-v0")`` imports the package first).
"""

from fl_gym.envs.registration import ENV_IDS, register_envs

__version__ = "0.1.0"
__all__ = ["ENV_IDS", "__version__", "register_envs"]

register_envs()
