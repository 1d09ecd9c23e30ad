"""Client selection in Flower driven by an fl_gym policy.

:class:`FlGymClientSelection` is Flower's ``FedAvg`` with one change: in ``configure_fit`` it
asks every available client for its properties, assembles the observation an fl_gym wireless FL
environment would give (``DEVICE_FEATURES`` columns and ``SERVER_FEATURES`` entries, scaled as
:class:`~fl_gym.envs.wireless_fl.env.WirelessFLEnv` documents), calls the policy's ``predict`` and
decodes the action with the environment's action codec (``env.unwrapped.codec``, the one the
environment's ``decode_action`` uses: the top-M rule and every other decoding rule stay there),
for the clients' availability and the strategy's selection history. Fit instructions go to the
selected clients only; aggregation and evaluation are FedAvg's.

The client side reports its device through Flower's ``get_properties``: subclass
:class:`DeviceClient` (a ``NumPyClient``) or return :func:`device_properties` from your own
``get_properties``. The properties, in physical units:

| property | meaning |
| --- | --- |
| `snr_db` | SNR at the environment's ``p_max`` on the current channel, dB |
| `distance_m` | distance to the base station, m |
| `battery_j` | energy left, J |
| `battery_capacity_j` | full battery, J |
| `cpu_hz` | CPU frequency, Hz |
| `train_loss` | its last local training loss (0 before it trains) |
| `num_examples` | its number of training samples |

What only the server knows it keeps itself: per client the rounds since its update was last
aggregated (``staleness``), whether it was selected and whether its update arrived in the last
round (``selected``, ``delivered``); and the server entries: rounds played, the accuracy and loss
of the last evaluation (centralised ``evaluate_fn`` metrics, else the aggregated federated
evaluation metrics, key ``"accuracy"``), the energy spent (the sum of ``battery_capacity_j -
battery_j`` over the clients), the duration of the last round (the largest ``"round_time_s"``
fit metric of the round's clients, else the server's wall-clock time of the round) and the
accuracy change of the last round. ``available`` is ``battery_j > battery_floor_j`` of the
environment's configuration, ``data_share`` is ``num_examples`` over the largest.

Rules:

* Devices are the available clients sorted by client id (numerically when every id is an
  integer); the environment behind the strategy is made with ``num_devices`` equal to their
  number, re-made when it changes. A policy given by name (a baseline name or ``ALGO:PATH``) is
  built for that environment, so a baseline or a device-set agent handles any number of
  clients; an agent whose network depends on K (an MLP agent) or a policy object built for
  another K raises ``ValueError`` naming both numbers.
* If the policy selects no client, the round is skipped (``empty_selection="skip"``, the
  environment's empty round: no training, Flower logs that no clients were selected) or FedAvg
  samples clients as usual (``empty_selection="fedavg"``).
* A client that does not report every property, or reports a non-number or NaN, raises
  ``ValueError`` naming the client and the properties.

Fit instructions carry, beside ``on_fit_config_fn``'s entries, the plan's ``local_steps``,
``power_w`` and ``compression_level`` for that client, for clients that act on them.

:func:`run_in_process` runs Flower's own server loop (``flwr.server.Server.fit``) with in-process
clients and needs nothing beyond ``flwr``; Flower's simulation engine (``run_simulation``) also
works with the strategy but needs Ray (``flwr[simulation]``).
"""

from __future__ import annotations

import abc
import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

try:
    from flwr.client import Client, NumPyClient
    from flwr.common import (
        Code,
        DisconnectRes,
        EvaluateIns,
        EvaluateRes,
        FitIns,
        FitRes,
        GetParametersIns,
        GetParametersRes,
        GetPropertiesIns,
        GetPropertiesRes,
        Parameters,
        ReconnectIns,
        Scalar,
    )
    from flwr.server import Server
    from flwr.server.client_manager import ClientManager, SimpleClientManager
    from flwr.server.client_proxy import ClientProxy
    from flwr.server.history import History
    from flwr.server.strategy import FedAvg
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'fl_gym.integrations.flower needs Flower: pip install "fl-gym[flower]"'
    ) from error

import fl_gym  # noqa: F401  (registers the environments)
from fl_gym.envs.wireless_fl.codec import SelectionState
from fl_gym.envs.wireless_fl.env import (
    DEVICE_FEATURES,
    ServerQuantities,
    WirelessFLEnv,
    data_share,
    scale_observation,
)
from fl_gym.sim.radio.cell import WirelessCell

__all__ = [
    "DEVICE_PROPERTIES",
    "DeviceClient",
    "FlGymClientSelection",
    "InProcessClientProxy",
    "ServerState",
    "build_observation",
    "cell_device_properties",
    "device_properties",
    "run_in_process",
]

DEVICE_PROPERTIES = (
    "snr_db",
    "distance_m",
    "battery_j",
    "battery_capacity_j",
    "cpu_hz",
    "train_loss",
    "num_examples",
)
"""The properties a client reports (see the module docstring for their units)."""

EMPTY_SELECTION_RULES = ("skip", "fedavg")


@dataclasses.dataclass(frozen=True)
class ServerState:
    """What the server knows of the federation before a round, in physical units.

    Attributes:
        round_index: Rounds played so far.
        accuracy: Global test accuracy after the last round (before any: of the initial model).
        loss: Global test loss, likewise (NaN or infinite if the model diverged).
        energy_spent_j: Energy the devices have spent so far, J.
        round_time_s: Duration of the last round, s (0 before any).
        accuracy_gain: Accuracy change in the last round (0 before any).
    """

    round_index: int = 0
    accuracy: float = 0.0
    loss: float = 0.0
    energy_spent_j: float = 0.0
    round_time_s: float = 0.0
    accuracy_gain: float = 0.0


def device_properties(
    *,
    snr_db: float,
    distance_m: float,
    battery_j: float,
    battery_capacity_j: float,
    cpu_hz: float,
    train_loss: float,
    num_examples: int,
) -> dict[str, Scalar]:
    """The properties a client reports for :class:`FlGymClientSelection`, checked.

    Args:
        snr_db: SNR at the environment's ``p_max`` on the current channel, dB.
        distance_m: Distance to the base station, m (> 0).
        battery_j: Energy left, J, in ``[0, battery_capacity_j]``.
        battery_capacity_j: Full battery, J (> 0).
        cpu_hz: CPU frequency, Hz (> 0).
        train_loss: Last local training loss (>= 0; 0 before it trains).
        num_examples: Number of training samples (>= 1).

    Returns:
        ``{name: value}`` with the names of :data:`DEVICE_PROPERTIES`.
    """
    props: dict[str, Scalar] = {
        "snr_db": float(snr_db),
        "distance_m": float(distance_m),
        "battery_j": float(battery_j),
        "battery_capacity_j": float(battery_capacity_j),
        "cpu_hz": float(cpu_hz),
        "train_loss": float(train_loss),
        "num_examples": int(num_examples),
    }
    for name in ("distance_m", "battery_capacity_j", "cpu_hz", "num_examples"):
        if not props[name] > 0:  # also catches NaN
            raise ValueError(f"{name} must be > 0, got {props[name]!r}")
    if not 0.0 <= props["battery_j"] <= props["battery_capacity_j"]:
        raise ValueError(
            f"battery_j must lie in [0, battery_capacity_j = {props['battery_capacity_j']}], "
            f"got {props['battery_j']!r}"
        )
    if not props["train_loss"] >= 0.0:
        raise ValueError(f"train_loss must be >= 0, got {props['train_loss']!r}")
    if math.isnan(props["snr_db"]):
        raise ValueError("snr_db must be a number, got nan")
    return props


def cell_device_properties(
    cell: WirelessCell, device: int, *, train_loss: float, num_examples: int
) -> dict[str, Scalar]:
    """The properties of device ``device`` of an fl_gym :class:`WirelessCell`.

    For clients that emulate their radio with fl_gym's simulator (examples, tests): the SNR,
    distance, battery and CPU are the cell's, computed as the environment computes them.

    Args:
        cell: A cell after ``reset``.
        device: Index of the device in the cell.
        train_loss: The client's last local training loss (0 before it trains).
        num_examples: The client's number of training samples.

    Returns:
        The checked properties (:func:`device_properties`).
    """
    if not 0 <= device < cell.num_devices:
        raise ValueError(f"device must be in [0, {cell.num_devices}), got {device!r}")
    cfg = cell.config
    snr = cfg.p_max_w * cell.channel_gain[device] / cfg.noise_power_w
    with np.errstate(divide="ignore"):
        snr_db = float(10.0 * np.log10(snr))
    return device_properties(
        snr_db=snr_db,
        distance_m=float(cell.distance_m[device]),
        battery_j=float(cell.battery_j[device]),
        battery_capacity_j=float(cell.battery_capacity_j[device]),
        cpu_hz=float(cell.cpu_hz[device]),
        train_loss=train_loss,
        num_examples=num_examples,
    )


class DeviceClient(NumPyClient):
    """A Flower ``NumPyClient`` that reports its fl_gym device through ``get_properties``.

    Subclasses implement :meth:`device_properties` (usually with :func:`device_properties`)
    and, as for any ``NumPyClient``, ``get_parameters``, ``fit`` and ``evaluate``.
    """

    @abc.abstractmethod
    def device_properties(self) -> dict[str, Scalar]:
        """The device's properties now (:data:`DEVICE_PROPERTIES`)."""

    def get_properties(self, config: dict[str, Scalar]) -> dict[str, Scalar]:
        """Flower's ``get_properties``: the device's properties."""
        return self.device_properties()


def _wireless_env(env: gym.Env) -> WirelessFLEnv:
    unwrapped = getattr(env, "unwrapped", None)
    if not isinstance(unwrapped, WirelessFLEnv):
        raise TypeError(f"env must be a wireless FL environment (WirelessFLEnv), got {env!r}")
    return unwrapped


def _property_columns(
    properties: Sequence[Mapping[str, Any]], client_ids: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """``{property: (K,) float64}`` from the clients' reports, or a ``ValueError``."""
    ids = list(client_ids) if client_ids is not None else [str(i) for i in range(len(properties))]
    columns: dict[str, list[float]] = {name: [] for name in DEVICE_PROPERTIES}
    for cid, props in zip(ids, properties, strict=True):
        missing = [name for name in DEVICE_PROPERTIES if name not in props]
        if missing:
            raise ValueError(
                f"client {cid!r} did not report the properties {missing} (it reported "
                f"{sorted(props)}); fl_gym client selection needs {list(DEVICE_PROPERTIES)}: "
                "report them from get_properties, e.g. with "
                "fl_gym.integrations.flower.device_properties"
            )
        for name in DEVICE_PROPERTIES:
            value = props[name]
            if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                raise ValueError(f"client {cid!r} reported {name} = {value!r}; it must be a number")
            if math.isnan(float(value)):
                raise ValueError(f"client {cid!r} reported {name} = nan; it must be a number")
            columns[name].append(float(value))
    return {name: np.asarray(values, dtype=np.float64) for name, values in columns.items()}


def build_observation(
    env: gym.Env,
    properties: Sequence[Mapping[str, Any]],
    *,
    rounds_since_delivery: Sequence[int] | np.ndarray,
    selected: Sequence[bool] | np.ndarray,
    delivered: Sequence[bool] | np.ndarray,
    server: ServerState,
    client_ids: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """The ``Dict`` observation of ``env`` for devices described by their properties.

    The scaling is :class:`~fl_gym.envs.wireless_fl.env.WirelessFLEnv`'s (its docstring's
    Observation Space tables), with the environment's configuration (cell radius, maximum CPU
    frequency, battery floor, deadline, ``max_rounds``): the same function,
    :func:`~fl_gym.envs.wireless_fl.env.scale_observation`, makes the environment's
    observations, so a NaN or infinite ``server.loss`` shows as 1 (the worst value) and an
    infinite train loss as 1 there too.

    Args:
        env: A wireless FL environment (wrapped or not) with ``num_devices == len(properties)``.
        properties: Per device, the :data:`DEVICE_PROPERTIES`.
        rounds_since_delivery: ``(K,)`` rounds since each device's update was last aggregated
            (``round_index + 1`` if never).
        selected: ``(K,)`` selected in the last round.
        delivered: ``(K,)`` update aggregated in the last round.
        server: The server's book-keeping.
        client_ids: Names of the devices in error messages (default: their indices).

    Returns:
        ``{"devices": (K, 10) float32, "server": (7,) float32}``.
    """
    unwrapped = _wireless_env(env)
    k = len(properties)
    if k != unwrapped.num_devices:
        raise ValueError(
            f"the environment has K = {unwrapped.num_devices} devices but properties of {k} "
            "clients were given"
        )
    per_device = {
        "rounds_since_delivery": np.asarray(rounds_since_delivery, dtype=np.float64),
        "selected": np.asarray(selected, dtype=bool),
        "delivered": np.asarray(delivered, dtype=bool),
    }
    for name, values in per_device.items():
        if values.shape != (k,):
            raise ValueError(f"{name} must have shape ({k},), got {values.shape}")
    p = _property_columns(properties, client_ids)
    cfg = unwrapped.config
    wcfg = cfg.wireless
    # One federation (E = 1): the rows of the environment's own scaling.
    devices, server_vector = scale_observation(
        snr_db=p["snr_db"][None],
        distance_m=p["distance_m"][None],
        cell_radius_m=wcfg.cell_radius_m,
        battery_j=p["battery_j"][None],
        battery_capacity_j=p["battery_capacity_j"][None],
        cpu_hz=p["cpu_hz"][None],
        cpu_max_hz=wcfg.cpu_max_hz,
        rounds_since_delivery=per_device["rounds_since_delivery"][None],
        train_loss=p["train_loss"][None],
        available=(p["battery_j"] > wcfg.battery_floor_j)[None],
        selected=per_device["selected"][None],
        delivered=per_device["delivered"][None],
        data_share=data_share(p["num_examples"])[None],
        server=[
            ServerQuantities(
                round_index=server.round_index,
                max_rounds=cfg.max_rounds,
                accuracy=server.accuracy,
                loss=server.loss,
                energy_spent_j=server.energy_spent_j,
                round_time_s=server.round_time_s,
                deadline_s=wcfg.deadline_s,
                accuracy_gain=server.accuracy_gain,
            )
        ],
    )
    return {"devices": devices[0], "server": server_vector[0]}


def _sorted_clients(clients: Mapping[str, ClientProxy]) -> list[ClientProxy]:
    cids = list(clients)
    if all(cid.lstrip("-").isdigit() for cid in cids):
        cids.sort(key=int)
    else:
        cids.sort()
    return [clients[cid] for cid in cids]


def _policy_num_devices(policy: Any) -> int | None:
    """The K a policy object was built for, where it says so."""
    space = getattr(getattr(policy, "model", policy), "observation_space", None)
    if isinstance(space, spaces.Dict) and "devices" in space.spaces:
        return int(space["devices"].shape[0])
    env = getattr(policy, "env", None)
    num_devices = getattr(getattr(env, "unwrapped", env), "num_devices", None)
    return int(num_devices) if isinstance(num_devices, int) else None


class FlGymClientSelection(FedAvg):
    """Flower ``FedAvg`` whose ``configure_fit`` selects clients with an fl_gym policy.

    See the module docstring for the properties clients report, the observation, the rule for
    the number of clients and the empty-selection fallback.

    Args:
        policy: A baseline name (optionally ``name:key=value,...``), ``"ALGO:PATH"`` of an agent
            trained with ``fl-gym train`` (e.g. ``"ppo:models/ClientSelection-v0_ppo"``), or an
            object with SB3's ``predict`` built for an environment with as many devices as there
            are clients.
        env_id: The fl_gym environment the policy plays; its action must control selection.
        env_config: Overrides of the environment's configuration (a dict, as ``gym.make``'s
            ``config``); ``num_devices`` is the number of clients and may not be set.
        preset: A named scenario of the environment.
        seed: Seed of the environment's ``reset`` (its configuration is what matters here).
        deterministic: Passed to ``predict``.
        empty_selection: ``"skip"`` or ``"fedavg"``, what to do when no client is selected.
        properties_timeout_s: Timeout of each ``get_properties`` request (``None``: none).
        **fedavg_kwargs: Flower ``FedAvg``'s arguments (``evaluate_fn``, ``on_fit_config_fn``,
            ``min_available_clients``, ...).
    """

    def __init__(
        self,
        policy: str | Any,
        *,
        env_id: str = "fl_gym/ClientSelection-v0",
        env_config: Mapping[str, Any] | None = None,
        preset: str | None = None,
        seed: int = 0,
        deterministic: bool = True,
        empty_selection: str = "skip",
        properties_timeout_s: float | None = None,
        **fedavg_kwargs: Any,
    ) -> None:
        super().__init__(**fedavg_kwargs)
        if not isinstance(policy, str) and not callable(getattr(policy, "predict", None)):
            raise TypeError(
                f"policy must be a policy name or have SB3's predict(), got {type(policy).__name__}"
            )
        if empty_selection not in EMPTY_SELECTION_RULES:
            raise ValueError(
                f"empty_selection must be one of {list(EMPTY_SELECTION_RULES)}, "
                f"got {empty_selection!r}"
            )
        env_config = dict(env_config or {})
        if "num_devices" in env_config:
            raise ValueError(
                f"env_config may not set num_devices (got {env_config['num_devices']!r}): the "
                "environment has one device per available Flower client"
            )
        self.policy_spec = policy
        self.env_id = env_id
        self.env_config = env_config
        self.preset = preset
        self.seed = seed
        self.deterministic = deterministic
        self.empty_selection = empty_selection
        self.properties_timeout_s = properties_timeout_s
        self.env: gym.Env | None = None
        self.policy: Any = None
        self.last_observation: dict[str, np.ndarray] | None = None
        self.last_plan: Any = None
        self.selection_history: list[tuple[int, list[str]]] = []
        """``(server_round, selected client ids)`` of every configured round."""
        self._last_delivered_round: dict[str, int] = {}
        self._selected: set[str] = set()
        self._delivered: set[str] = set()
        self._pending: tuple[int, float] | None = None  # (server_round, wall-clock start)
        self._accuracy: float | None = None
        self._previous_accuracy: float | None = None
        self._loss = 0.0
        self._round_time_s = 0.0

    def __repr__(self) -> str:
        return f"FlGymClientSelection(policy={self.policy_spec!r}, env_id={self.env_id!r})"

    # -- the environment and policy for K clients --------------------------------------------------

    def prepare(self, num_clients: int) -> gym.Env:
        """The environment (and policy) for ``num_clients`` devices, made once per K."""
        if self.env is not None and self.env.unwrapped.num_devices == num_clients:
            return self.env
        env = gym.make(
            self.env_id,
            config={**self.env_config, "num_devices": num_clients},
            preset=self.preset,
        )
        unwrapped = _wireless_env(env)
        if "selection" not in unwrapped.controls:
            raise ValueError(
                f"{self.env_id} controls {list(unwrapped.controls)}; client selection needs an "
                "environment whose action controls selection (e.g. fl_gym/ClientSelection-v0 or "
                "fl_gym/WirelessFL-v0)"
            )
        if not isinstance(env.observation_space, spaces.Dict):
            raise ValueError("the environment must give Dict observations (obs_mode='dict')")
        env.reset(seed=self.seed)
        if isinstance(self.policy_spec, str):
            from fl_gym.agents.evaluation import resolve_policy

            policy = resolve_policy(self.policy_spec, env)
        else:
            policy = self.policy_spec
        expected = _policy_num_devices(policy)
        if expected is not None and expected != num_clients:
            raise ValueError(
                f"the policy {self.policy_spec!r} was built for K = {expected} devices but "
                f"{num_clients} Flower clients are available; an agent whose network depends on "
                "K (an MLP agent) needs exactly that many clients, while a baseline name or a "
                "device-set agent given as 'ALGO:PATH' is built for any K"
            )
        space = getattr(getattr(policy, "model", policy), "observation_space", None)
        if space is not None and not isinstance(space, spaces.Dict):
            raise ValueError(
                f"the policy {self.policy_spec!r} takes {space}; the strategy gives the "
                "environment's Dict observation"
            )
        self.env, self.policy = env, policy
        return env

    # -- Flower's strategy hooks -------------------------------------------------------------------

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """Select the clients of round ``server_round`` with the policy."""
        self._close_pending_round()
        client_manager.wait_for(self.min_available_clients)
        clients = _sorted_clients(client_manager.all())
        if not clients:
            return []
        cids = [client.cid for client in clients]
        properties = [self._properties(client, server_round) for client in clients]
        env = self.prepare(len(clients))
        obs = self.observation(cids, properties, server_round)
        action, _ = self.policy.predict(
            obs, episode_start=np.array([server_round == 1]), deterministic=self.deterministic
        )
        plan, _ = env.unwrapped.codec.decode(action, self.selection_state(cids, obs))
        self.last_observation, self.last_plan = obs, plan
        chosen = np.flatnonzero(plan.selected)
        self._pending = (server_round, time.monotonic())
        if chosen.size == 0:
            self.selection_history.append((server_round, []))
            self._selected = set()
            if self.empty_selection == "fedavg":
                fallback = super().configure_fit(server_round, parameters, client_manager)
                self._selected = {client.cid for client, _ in fallback}
                self.selection_history[-1] = (server_round, sorted(self._selected))
                return fallback
            return []
        base = dict(self.on_fit_config_fn(server_round)) if self.on_fit_config_fn else {}
        local_steps = np.broadcast_to(plan.local_steps, plan.selected.shape)
        compression = np.broadcast_to(plan.compression, plan.selected.shape)
        instructions = []
        for i in chosen:
            config: dict[str, Scalar] = {
                **base,
                "local_steps": int(local_steps[i]),
                "compression_level": int(compression[i]),
            }
            if plan.power_w is not None:
                config["power_w"] = float(plan.power_w[i])
            instructions.append((clients[i], FitIns(parameters, config)))
        self._selected = {cids[i] for i in chosen}
        self.selection_history.append((server_round, [cids[i] for i in chosen]))
        return instructions

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """FedAvg's aggregation; records which updates arrived and the round's duration."""
        reported = [
            float(res.metrics["round_time_s"])
            for _, res in results
            if isinstance(res.metrics.get("round_time_s"), int | float)
        ]
        self._close_pending_round(
            delivered={proxy.cid for proxy, _ in results},
            round_time_s=max(reported) if reported else None,
        )
        return super().aggregate_fit(server_round, results, failures)

    def evaluate(
        self, server_round: int, parameters: Parameters
    ) -> tuple[float, dict[str, Scalar]] | None:
        """FedAvg's centralised evaluation; records its accuracy and loss."""
        result = super().evaluate(server_round, parameters)
        if result is not None:
            self._record_evaluation(result[0], result[1])
        return result

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        """FedAvg's federated evaluation; records it when there is no centralised one."""
        loss, metrics = super().aggregate_evaluate(server_round, results, failures)
        if self.evaluate_fn is None and loss is not None:
            self._record_evaluation(loss, metrics)
        return loss, metrics

    # -- book-keeping ------------------------------------------------------------------------------

    def observation(
        self, client_ids: Sequence[str], properties: Sequence[Mapping[str, Any]], server_round: int
    ) -> dict[str, np.ndarray]:
        """The observation before round ``server_round`` (1-based) from the clients' properties
        and the strategy's book-keeping."""
        round_index = server_round - 1
        p = _property_columns(properties, client_ids)
        energy = float(np.maximum(p["battery_capacity_j"] - p["battery_j"], 0.0).sum())
        gain = (
            0.0
            if round_index == 0 or self._accuracy is None or self._previous_accuracy is None
            else self._accuracy - self._previous_accuracy
        )
        server = ServerState(
            round_index=round_index,
            accuracy=0.0 if self._accuracy is None else self._accuracy,
            loss=self._loss,
            energy_spent_j=energy,
            round_time_s=self._round_time_s if round_index > 0 else 0.0,
            accuracy_gain=gain,
        )
        return build_observation(
            self.prepare(len(client_ids)),
            properties,
            rounds_since_delivery=[
                round_index - self._last_delivered_round.get(cid, -1) for cid in client_ids
            ],
            selected=[cid in self._selected for cid in client_ids],
            delivered=[cid in self._delivered for cid in client_ids],
            server=server,
            client_ids=client_ids,
        )

    def _properties(self, client: ClientProxy, server_round: int) -> dict[str, Scalar]:
        res: GetPropertiesRes = client.get_properties(
            GetPropertiesIns(config={}), timeout=self.properties_timeout_s, group_id=server_round
        )
        if res.status.code != Code.OK:
            raise ValueError(
                f"client {client.cid!r} did not report its properties: {res.status.message} "
                f"({res.status.code.name})"
            )
        return dict(res.properties)

    def selection_state(
        self, client_ids: Sequence[str], observation: Mapping[str, np.ndarray]
    ) -> SelectionState:
        """What the codec decodes an action against: the availability the observation shows
        (``battery_j > battery_floor_j``) and the round in which each client was last selected
        (0-based, -1 if never), from :attr:`selection_history`."""
        last = {
            cid: server_round - 1 for server_round, ids in self.selection_history for cid in ids
        }
        available = np.asarray(observation["devices"])[:, DEVICE_FEATURES.index("available")] > 0.5
        rounds = np.array([last.get(cid, -1) for cid in client_ids], dtype=np.int64)
        return SelectionState(available, rounds)

    def _close_pending_round(
        self, delivered: set[str] | None = None, round_time_s: float | None = None
    ) -> None:
        """Book the configured round: its delivered updates (none if it never aggregated)."""
        if self._pending is None:
            return
        server_round, started = self._pending
        self._pending = None
        self._delivered = set(delivered or ())
        for cid in self._delivered:
            self._last_delivered_round[cid] = server_round - 1
        self._round_time_s = (
            round_time_s if round_time_s is not None else time.monotonic() - started
        )

    def _record_evaluation(self, loss: float, metrics: Mapping[str, Scalar]) -> None:
        self._loss = float(loss)
        if "accuracy" in metrics:
            self._previous_accuracy = self._accuracy
            self._accuracy = float(metrics["accuracy"])


# -- Flower's server loop with in-process clients ----------------------------------------------


class InProcessClientProxy(ClientProxy):
    """A Flower ``ClientProxy`` that calls a client in this process (no Ray, no network).

    Args:
        cid: The client's id.
        client: A Flower ``Client`` or ``NumPyClient``.
    """

    def __init__(self, cid: str, client: Client | NumPyClient) -> None:
        super().__init__(cid)
        self.client = client.to_client() if isinstance(client, NumPyClient) else client

    def get_properties(
        self, ins: GetPropertiesIns, timeout: float | None, group_id: int | None
    ) -> GetPropertiesRes:
        return self.client.get_properties(ins)

    def get_parameters(
        self, ins: GetParametersIns, timeout: float | None, group_id: int | None
    ) -> GetParametersRes:
        return self.client.get_parameters(ins)

    def fit(self, ins: FitIns, timeout: float | None, group_id: int | None) -> FitRes:
        return self.client.fit(ins)

    def evaluate(
        self, ins: EvaluateIns, timeout: float | None, group_id: int | None
    ) -> EvaluateRes:
        return self.client.evaluate(ins)

    def reconnect(
        self, ins: ReconnectIns, timeout: float | None, group_id: int | None
    ) -> DisconnectRes:
        return DisconnectRes(reason="")


def run_in_process(
    clients: Sequence[Client | NumPyClient],
    strategy: FedAvg,
    num_rounds: int,
    *,
    max_workers: int | None = 1,
) -> History:
    """Run Flower's server loop (``flwr.server.Server.fit``) with in-process clients.

    Client ``i`` gets the id ``str(i)``. Flower's simulation engine needs Ray; this runs the
    same strategy hooks in the same order with nothing beyond ``flwr``.

    Args:
        clients: The clients.
        strategy: The strategy, e.g. :class:`FlGymClientSelection`.
        num_rounds: Number of rounds (>= 1).
        max_workers: Threads that run the clients of a round (1: one after the other).

    Returns:
        Flower's ``History`` of losses and metrics.
    """
    if not isinstance(num_rounds, int) or num_rounds < 1:
        raise ValueError(f"num_rounds must be an int >= 1, got {num_rounds!r}")
    manager = SimpleClientManager()
    for i, client in enumerate(clients):
        manager.register(InProcessClientProxy(str(i), client))
    server = Server(client_manager=manager, strategy=strategy)
    server.set_max_workers(max_workers)
    history, _ = server.fit(num_rounds=num_rounds, timeout=None)
    return history
