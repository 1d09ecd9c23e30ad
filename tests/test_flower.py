"""The Flower integration: observation from properties, selection through decode_action."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.common import ndarrays_to_parameters
from flwr.server.client_manager import SimpleClientManager

import fl_gym  # noqa: F401
from fl_gym.agents import TrainedAgent
from fl_gym.baselines import make_baseline
from fl_gym.envs.wireless_fl.env import DEVICE_FEATURES, SERVER_FEATURES
from fl_gym.integrations.flower import (
    DeviceClient,
    FlGymClientSelection,
    InProcessClientProxy,
    ServerState,
    build_observation,
    cell_device_properties,
    device_properties,
    run_in_process,
)
from fl_gym.sim.radio.cell import WirelessCell, WirelessConfig

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_PPO = ROOT / "models" / "ClientSelection-v0_ppo"
SHIPPED_MLP = ROOT / "models" / "ClientSelection-v0_ppo_mlp"
PARAMETERS = ndarrays_to_parameters([np.zeros(3)])


class StaticClient(DeviceClient):
    """A client whose device properties are given."""

    def __init__(self, props: dict) -> None:
        self.props = props

    def device_properties(self) -> dict:
        return self.props

    def get_parameters(self, config: dict) -> list[np.ndarray]:
        return [np.zeros(3)]

    def fit(self, parameters: list[np.ndarray], config: dict) -> tuple[list, int, dict]:
        return [parameters[0] + 1.0], int(self.props["num_examples"]), {}

    def evaluate(self, parameters: list[np.ndarray], config: dict) -> tuple[float, int, dict]:
        return 0.0, 1, {}


class FixedScores:
    """A policy that always returns the same action."""

    def __init__(self, action: np.ndarray) -> None:
        self.action = np.asarray(action, dtype=np.float32)

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        return self.action, None


def cell_properties(num_clients: int, seed: int) -> list[dict]:
    cell = WirelessCell(WirelessConfig(), num_clients)
    cell.reset(np.random.default_rng(seed))
    sizes = np.random.default_rng(seed + 1).integers(20, 200, num_clients)
    losses = np.random.default_rng(seed + 2).uniform(0.0, 3.0, num_clients)
    return [
        cell_device_properties(cell, k, train_loss=float(losses[k]), num_examples=int(sizes[k]))
        for k in range(num_clients)
    ]


def manager_for(properties: list[dict]) -> SimpleClientManager:
    manager = SimpleClientManager()
    for i, props in enumerate(properties):
        manager.register(InProcessClientProxy(str(i), StaticClient(props)))
    return manager


def test_observation_from_properties_equals_the_env_observation() -> None:
    env = gym.make("fl_gym/ClientSelection-v0", config={"num_devices": 8})
    unwrapped = env.unwrapped
    obs, info = env.reset(seed=3)
    k = unwrapped.num_devices
    policy = make_baseline("proportional-fair", env)
    train_loss, selected, delivered = np.zeros(k), np.zeros(k, bool), np.zeros(k, bool)
    previous_accuracy, round_time_s = info["accuracy"], 0.0
    checked = 0
    for _ in range(6):
        fed = unwrapped.federation
        properties = [
            cell_device_properties(
                fed.cell,
                i,
                train_loss=float(train_loss[i]),
                num_examples=int(fed.data.client_sizes[i]),
            )
            for i in range(k)
        ]
        server = ServerState(
            round_index=info["round"],
            accuracy=info["accuracy"],
            loss=info["loss"],
            energy_spent_j=info["energy_spent_j"],
            round_time_s=round_time_s,
            accuracy_gain=info["accuracy"] - previous_accuracy,
        )
        built = build_observation(
            env,
            properties,
            rounds_since_delivery=fed.rounds_since_delivery(),
            selected=selected,
            delivered=delivered,
            server=server,
        )
        np.testing.assert_array_equal(built["devices"], obs["devices"])
        np.testing.assert_array_equal(built["server"], obs["server"])
        checked += 1
        action, _ = policy.predict(obs)
        previous_accuracy = info["accuracy"]
        obs, _, terminated, _, info = env.step(action)
        train_loss = np.where(info["selected"], info["train_loss"], train_loss)
        selected, delivered = info["selected"], info["delivered"]
        round_time_s = info["round_time_s"]
        if terminated:
            break
    assert checked >= 2
    assert obs["devices"][:, 5].any()  # train losses were really compared


def _flower_observation(env: gym.Env, info: dict, previous_accuracy: float) -> dict:
    """build_observation of what a Flower server would see of ``env`` now: each device's
    properties from the simulator's cell (its train loss the environment's, as the client would
    report it), the server's book-keeping from the last step's ``info``."""
    unwrapped = env.unwrapped
    fed = unwrapped.federation
    k = unwrapped.num_devices
    properties = [
        cell_device_properties(
            fed.cell,
            i,
            train_loss=float(unwrapped._train_loss[i]),
            num_examples=int(fed.data.client_sizes[i]),
        )
        for i in range(k)
    ]
    server = ServerState(
        round_index=info["round"],
        accuracy=fed.accuracy,
        loss=fed.loss,
        energy_spent_j=info["energy_spent_j"],
        round_time_s=info.get("round_time_s", 0.0),
        accuracy_gain=fed.accuracy - previous_accuracy,
    )
    return build_observation(
        env,
        properties,
        rounds_since_delivery=fed.rounds_since_delivery(),
        selected=info.get("selected", np.zeros(k, bool)),
        delivered=info.get("delivered", np.zeros(k, bool)),
        server=server,
    )


@pytest.mark.parametrize(
    ("loss", "train_loss"),
    [(None, None), (float("nan"), np.inf), (np.inf, np.inf), (-np.inf, None), (1e6, 1e6)],
)
def test_flower_and_the_env_share_one_observation(loss: float | None, train_loss: float | None):
    """The joint environment after reset and a few rounds: the observation Flower builds from
    the clients' properties is the environment's own, bit for bit, also for a diverged model
    (a NaN or infinite test loss shows as the worst value, 1, in both) and an infinite or huge
    train loss (capped at 1). A NaN train loss is not compared: a client reporting one is an
    error (test_missing_or_bad_properties_are_clear_errors)."""
    env = gym.make("fl_gym/WirelessFL-v0")
    unwrapped = env.unwrapped
    obs, info = env.reset(seed=11)
    env.action_space.seed(11)
    previous_accuracy = info["accuracy"]
    built = _flower_observation(env, info, previous_accuracy)
    np.testing.assert_array_equal(built["devices"], obs["devices"])
    np.testing.assert_array_equal(built["server"], obs["server"])
    for _ in range(3):
        previous_accuracy = info["accuracy"]
        obs, _, terminated, _, info = env.step(env.action_space.sample())
        assert not terminated
        built = _flower_observation(env, info, previous_accuracy)
        np.testing.assert_array_equal(built["devices"], obs["devices"])
        np.testing.assert_array_equal(built["server"], obs["server"])
    assert obs["devices"][:, DEVICE_FEATURES.index("selected")].any()
    fed = unwrapped.federation
    if loss is not None:
        fed.loss = loss  # the state a diverged global model leaves
    if train_loss is not None:
        unwrapped._train_loss[[0, 2]] = train_loss  # two clients diverged locally
    obs = unwrapped.observe()
    built = _flower_observation(env, info, previous_accuracy)
    np.testing.assert_array_equal(built["devices"], obs["devices"])
    np.testing.assert_array_equal(built["server"], obs["server"])
    if loss is not None and not np.isfinite(loss):
        assert obs["server"][SERVER_FEATURES.index("loss")] == 1.0
    if train_loss is not None:
        assert (obs["devices"][[0, 2], DEVICE_FEATURES.index("train_loss")] == 1.0).all()


@pytest.mark.parametrize("policy", ["proportional-fair", "best-channel", f"ppo:{SHIPPED_PPO}"])
def test_configure_fit_selects_what_the_action_decodes_to(policy: str) -> None:
    num_clients = 7  # not the environments' default K = 10
    properties = cell_properties(num_clients, seed=0)
    strategy = FlGymClientSelection(policy, min_available_clients=num_clients)
    manager = manager_for(properties)
    reference = gym.make("fl_gym/ClientSelection-v0", config={"num_devices": num_clients})
    reference.reset(seed=0)
    for server_round in (1, 2, 3):
        instructions = strategy.configure_fit(server_round, PARAMETERS, manager)
        obs = strategy.last_observation
        # The same observation decoded by a separate environment of the same K.
        action, _ = strategy.policy.predict(obs, deterministic=True)
        plan, _ = reference.unwrapped.decode_action(action)
        expected = [str(i) for i in np.flatnonzero(plan.selected)]
        assert sorted(c.cid for c, _ in instructions) == expected
        assert strategy.selection_history[-1] == (server_round, expected)
        results = [(client, client.fit(ins, None, None)) for client, ins in instructions]
        strategy.aggregate_fit(server_round, results, [])
        if expected:
            assert obs["devices"][:, 7].sum() <= reference.unwrapped.config.wireless.num_subchannels
    if not policy.startswith("ppo:"):
        assert all(cids for _, cids in strategy.selection_history)
    else:
        assert isinstance(strategy.policy, TrainedAgent)
        assert strategy.policy.model.observation_space["devices"].shape[0] == num_clients


def test_selection_follows_the_top_m_rule_and_availability() -> None:
    properties = cell_properties(8, seed=1)
    properties[3] = {**properties[3], "battery_j": 0.0}  # exhausted: not selectable
    scores = np.array([0.9, -0.5, 0.5, 1.0, 0.1, 0.7, 0.3, 0.8])
    strategy = FlGymClientSelection(FixedScores(scores), min_available_clients=8)
    instructions = strategy.configure_fit(1, PARAMETERS, manager_for(properties))
    # M = 5 highest positive scores among the available devices (device 3 has no energy).
    assert sorted(int(c.cid) for c, _ in instructions) == [0, 2, 5, 6, 7]
    assert strategy.last_observation["devices"][3, 6] == 0.0  # available column
    for _, ins in instructions:
        assert ins.config["local_steps"] == 5
        assert ins.config["power_w"] == pytest.approx(10 ** (23 / 10) / 1000)  # p_max = 23 dBm


def test_bookkeeping_feeds_staleness_selected_and_delivered() -> None:
    properties = cell_properties(4, seed=2)
    scores = np.array([1.0, 1.0, -1.0, -1.0])
    strategy = FlGymClientSelection(FixedScores(scores), min_available_clients=4)
    manager = manager_for(properties)
    instructions = strategy.configure_fit(1, PARAMETERS, manager)
    first = instructions[0]
    results = [(first[0], first[0].fit(first[1], None, None))]  # client 1's update is lost
    strategy.aggregate_fit(1, results, [])
    strategy.configure_fit(2, PARAMETERS, manager)
    devices = strategy.last_observation["devices"]
    np.testing.assert_array_equal(devices[:, 7], [1, 1, 0, 0])  # selected
    np.testing.assert_array_equal(devices[:, 8], [1, 0, 0, 0])  # delivered
    # Staleness (the env's rounds_since_delivery): 1 round for client 0, never for the others
    # (round_index + 1 = 2); scaled by 1 / 50.
    np.testing.assert_allclose(devices[:, 4], np.float32([1, 2, 2, 2]) / 50)
    assert strategy.last_observation["server"][0] == np.float32(1 / 100)  # one round played


def test_no_client_selected_skips_or_falls_back_to_fedavg() -> None:
    properties = cell_properties(4, seed=3)
    nobody = FixedScores(-np.ones(4))
    skip = FlGymClientSelection(nobody, min_available_clients=4)
    assert skip.configure_fit(1, PARAMETERS, manager_for(properties)) == []
    assert skip.selection_history == [(1, [])]
    fallback = FlGymClientSelection(
        nobody, min_available_clients=4, empty_selection="fedavg", fraction_fit=0.5
    )
    instructions = fallback.configure_fit(1, PARAMETERS, manager_for(properties))
    assert len(instructions) == 2  # FedAvg's sample: half of the 4 clients


def test_missing_or_bad_properties_are_clear_errors() -> None:
    properties = cell_properties(3, seed=4)
    incomplete = {k: v for k, v in properties[1].items() if k != "cpu_hz"}
    strategy = FlGymClientSelection("proportional-fair", min_available_clients=3)
    manager = manager_for([properties[0], incomplete, properties[2]])
    with pytest.raises(ValueError, match=r"client '1' did not report the properties \['cpu_hz'\]"):
        strategy.configure_fit(1, PARAMETERS, manager)
    bad = {**properties[2], "snr_db": "high"}
    manager = manager_for([properties[0], properties[1], bad])
    with pytest.raises(ValueError, match="client '2' reported snr_db = 'high'"):
        strategy.configure_fit(1, PARAMETERS, manager)
    with pytest.raises(ValueError, match="battery_j must lie in"):
        device_properties(
            snr_db=10.0,
            distance_m=100.0,
            battery_j=2.0,
            battery_capacity_j=1.0,
            cpu_hz=1e9,
            train_loss=0.0,
            num_examples=10,
        )


def test_a_k_specific_policy_needs_its_number_of_clients() -> None:
    properties = cell_properties(7, seed=5)
    strategy = FlGymClientSelection(f"ppo:{SHIPPED_MLP}", min_available_clients=7)
    with pytest.raises(ValueError, match="built for K = 10 devices but 7 Flower clients"):
        strategy.configure_fit(1, PARAMETERS, manager_for(properties))
    env = gym.make("fl_gym/ClientSelection-v0")
    baseline = make_baseline("proportional-fair", env)
    strategy = FlGymClientSelection(baseline, min_available_clients=7)
    with pytest.raises(ValueError, match="K = 10 devices but 7"):
        strategy.configure_fit(1, PARAMETERS, manager_for(properties))
    # The same MLP agent with its 10 clients plays.
    properties = cell_properties(10, seed=5)
    strategy = FlGymClientSelection(f"ppo:{SHIPPED_MLP}", min_available_clients=10)
    strategy.configure_fit(1, PARAMETERS, manager_for(properties))
    assert strategy.last_observation["devices"].shape == (10, 10)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_devices"):
        FlGymClientSelection("random", env_config={"num_devices": 5})
    with pytest.raises(ValueError, match="empty_selection"):
        FlGymClientSelection("random", empty_selection="all")
    with pytest.raises(TypeError, match="predict"):
        FlGymClientSelection(42)
    strategy = FlGymClientSelection("fixed-steps", env_id="fl_gym/AggregationFrequency-v0")
    with pytest.raises(ValueError, match="controls selection"):
        strategy.prepare(4)


def _load_example():
    path = ROOT / "examples" / "flower_selection.py"
    spec = importlib.util.spec_from_file_location("flower_selection_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_runs_flower_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    example = _load_example()
    rows = example.main(["--policy", "proportional-fair", "--rounds", "3", "--clients", "6"])
    assert [r for r, _, _ in rows] == [1, 2, 3]
    assert all(1 <= len(cids) <= 5 for _, cids, _ in rows)  # M = 5 sub-channels
    assert rows[-1][2] > 0.5  # FedAvg of the selected clients really trained the model
    assert "round   3" in capsys.readouterr().out


def test_run_in_process_drains_the_emulated_batteries() -> None:
    example = _load_example()
    clients, strategy, radio = example.build("proportional-fair", 6, seed=1)
    full = radio.cell.battery_j.copy()
    history = run_in_process(clients, strategy, 2)
    chosen = {int(c) for _, cids in strategy.selection_history for c in cids}
    drained = np.flatnonzero(radio.cell.battery_j < full)
    assert set(drained.tolist()) == chosen
    assert len(history.metrics_centralized["accuracy"]) == 3  # initial + 2 rounds
