"""The vehicular URLLC system (V2V mobility, path loss, interference, queues) and the federated
generalised-Pareto tail estimation its roadside unit runs."""

from fl_gym.sim.vehicular.system import (
    PRESETS,
    SlotReport,
    VehicularConfig,
    VehicularSystem,
    make_vehicular_config,
)

__all__ = ["PRESETS", "SlotReport", "VehicularConfig", "VehicularSystem", "make_vehicular_config"]
