"""Federated localisation (FedLoc, Yin et al. 2020): RSS fingerprints generated from the radio
model, and a Gaussian-process localiser whose hyperparameters are learned by federated maximum
likelihood.

- :mod:`fl_gym.sim.localization.scenario`: an area with access points, log-distance path loss
  plus spatially correlated shadowing (a Gaussian random field) plus measurement noise, mobiles
  walking random-waypoint trajectories, and the federated data set they record.
- :mod:`fl_gym.sim.localization.gp`: per-AP GP maps of RSS over position, their log marginal
  likelihood batched over clients, federated and centralised ML fits, the fused map and
  maximum-likelihood positioning over a grid.

The package sits beside ``sim/learning`` and ``sim/radio`` and may use both (the DNN localiser is
the batched MLP of ``sim/learning`` with a least-squares loss).
"""

from fl_gym.sim.localization.gp import (
    GPHyperparameters,
    GPMap,
    fit_admm,
    fit_centralized,
    fit_federated,
    gp_log_marginal_likelihood,
    localize,
)
from fl_gym.sim.localization.scenario import (
    LOCALIZATION_PRESETS,
    LocalizationConfig,
    LocalizationData,
    LocalizationScenario,
    gaussian_random_field,
)

__all__ = [
    "LOCALIZATION_PRESETS",
    "GPHyperparameters",
    "GPMap",
    "LocalizationConfig",
    "LocalizationData",
    "LocalizationScenario",
    "fit_admm",
    "fit_centralized",
    "fit_federated",
    "gaussian_random_field",
    "gp_log_marginal_likelihood",
    "localize",
]
