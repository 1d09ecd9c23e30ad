"""The simulator: federated learning over a wireless cell, usable without any RL library.

Layers below the environments only: nothing in ``fl_gym.sim`` imports gymnasium, pettingzoo or
stable-baselines3.
"""

from fl_gym.sim.learning.aggregation import (
    AGGREGATORS,
    AggregationResult,
    coordinate_median,
    fedavg,
    geometric_median,
    get_aggregator,
    trimmed_mean,
)
from fl_gym.sim.learning.compression import (
    COMPRESSORS,
    CompressionResult,
    Compressor,
    parse_compressor,
)
from fl_gym.sim.learning.data import (
    Dataset,
    FederatedDataset,
    federate,
    from_arrays,
    load_digits_dataset,
    make_federated_dataset,
    synthetic_fedprox,
)
from fl_gym.sim.learning.federation import ClientState, Federation, FederationConfig
from fl_gym.sim.learning.models import BatchedMLP, make_model
from fl_gym.sim.learning.training import ClientTensors, local_sgd
from fl_gym.sim.plan import RoundPlan, RoundReport
from fl_gym.sim.rounds import RoundPipeline, run_rounds
from fl_gym.sim.stages import PendingUpdates, Transport, UpdateTransform
from fl_gym.sim.transports import BroadbandAnalog, CSOverTheAir, DigitalUplink, OverTheAir

__all__ = [
    "AGGREGATORS",
    "COMPRESSORS",
    "AggregationResult",
    "BatchedMLP",
    "BroadbandAnalog",
    "CSOverTheAir",
    "ClientState",
    "ClientTensors",
    "CompressionResult",
    "Compressor",
    "Dataset",
    "DigitalUplink",
    "FederatedDataset",
    "Federation",
    "FederationConfig",
    "OverTheAir",
    "PendingUpdates",
    "RoundPipeline",
    "RoundPlan",
    "RoundReport",
    "Transport",
    "UpdateTransform",
    "coordinate_median",
    "fedavg",
    "federate",
    "from_arrays",
    "geometric_median",
    "get_aggregator",
    "load_digits_dataset",
    "local_sgd",
    "make_federated_dataset",
    "make_model",
    "parse_compressor",
    "run_rounds",
    "synthetic_fedprox",
    "trimmed_mean",
]
