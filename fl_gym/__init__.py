"""fl_gym: federated learning over wireless networks as reinforcement-learning control problems."""

__version__ = "0.1.0"
