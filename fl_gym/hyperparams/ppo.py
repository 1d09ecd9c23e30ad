"""rl-zoo3's PPO hyperparameters as a module: ``--conf-file fl_gym.hyperparams.ppo``.

rl-zoo3 imports a ``--conf-file`` that is not a ``.yml`` / ``.py`` path and reads its
``hyperparams``; this is the content of ``ppo.yml`` beside it.
"""

from fl_gym.hyperparams import load

__all__ = ["hyperparams"]

hyperparams = load("ppo")
