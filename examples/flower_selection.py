"""Flower FedAvg whose client selection is an fl_gym policy, end to end.

Ten Flower clients hold Dirichlet shards of scikit-learn's bundled digits and train a softmax
regression with local SGD (NumPy). Each client emulates its radio with fl_gym's wireless cell
(device k of one :class:`~fl_gym.sim.radio.cell.WirelessCell`): it reports its SNR, distance,
battery and CPU through Flower's ``get_properties``, and the cell's uplink drains the batteries
of the clients that train. Every round :class:`~fl_gym.integrations.flower.FlGymClientSelection`
turns the reports into an fl_gym observation, asks the policy and sends fit instructions to the
clients it selects.

    python examples/flower_selection.py --policy proportional-fair
    python examples/flower_selection.py --policy ppo:models/ClientSelection-v0_ppo
    python examples/flower_selection.py --policy best-channel --clients 6 --rounds 5

Flower's server loop (``flwr.server.Server.fit``) runs with in-process clients
(:func:`~fl_gym.integrations.flower.run_in_process`), so the example needs only
``pip install "fl-gym[flower]"``. The strategy itself also runs in Flower's Ray simulation engine
(``flwr.simulation.run_simulation``, ``flwr[simulation]``); the example stays in one process
because its clients share one emulated cell.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np

from fl_gym.integrations.flower import (
    DeviceClient,
    FlGymClientSelection,
    cell_device_properties,
    run_in_process,
)
from fl_gym.sim import make_federated_dataset
from fl_gym.sim.radio.cell import WirelessCell, WirelessConfig

NUM_CLASSES = 10
UPDATE_BITS = 32 * (64 + 1) * NUM_CLASSES  # float32 weights and biases of the model


class Radio:
    """The clients' shared radio: an fl_gym cell whose uplink drains the trainers' batteries."""

    def __init__(self, num_clients: int, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.cell = WirelessCell(WirelessConfig(), num_clients)
        self.cell.reset(self.rng)
        self.round_time_s = 0.0

    def play_round(self, selected: np.ndarray, local_steps: int, batch_size: int) -> None:
        """Upload the selected devices' updates, then move to the next round's channel."""
        if selected.any():
            report = self.cell.uplink(
                selected & self.cell.available,
                self.cell.config.p_max_w,
                UPDATE_BITS,
                local_steps,
                batch_size,
                self.rng,
            )
            self.round_time_s = float(np.max(report.latency_s, initial=0.0))
        self.cell.advance(self.rng)


def softmax_regression_step(
    weights: np.ndarray, x: np.ndarray, y: np.ndarray, lr: float
) -> tuple[np.ndarray, float]:
    """One full-batch gradient step of softmax regression; returns the weights and the loss."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    logits = xb @ weights
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    loss = float(-np.log(probs[np.arange(len(y)), y] + 1e-12).mean())
    probs[np.arange(len(y)), y] -= 1.0
    return weights - lr * xb.T @ probs / len(y), loss


def accuracy_and_loss(weights: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    logits = np.hstack([x, np.ones((len(x), 1))]) @ weights
    logits -= logits.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    loss = float(-log_probs[np.arange(len(y)), y].mean())
    return float((logits.argmax(axis=1) == y).mean()), loss


class DigitsClient(DeviceClient):
    """A Flower client: local softmax regression on its digits shard, device k of the radio."""

    def __init__(self, device: int, x: np.ndarray, y: np.ndarray, radio: Radio) -> None:
        self.device, self.x, self.y, self.radio = device, x, y, radio
        self.train_loss = 0.0

    def device_properties(self) -> dict:
        return cell_device_properties(
            self.radio.cell, self.device, train_loss=self.train_loss, num_examples=len(self.y)
        )

    def get_parameters(self, config: dict) -> list[np.ndarray]:
        return [np.zeros((65, NUM_CLASSES))]

    def fit(self, parameters: list[np.ndarray], config: dict) -> tuple[list, int, dict]:
        weights = parameters[0]
        for _ in range(int(config.get("local_steps", 5))):
            weights, self.train_loss = softmax_regression_step(weights, self.x, self.y, lr=0.5)
        return [weights], len(self.y), {}

    def evaluate(self, parameters: list[np.ndarray], config: dict) -> tuple[float, int, dict]:
        accuracy, loss = accuracy_and_loss(parameters[0], self.x, self.y)
        return loss, len(self.y), {"accuracy": accuracy}


class RadioSelection(FlGymClientSelection):
    """The strategy, plus the emulated radio's round after each aggregation."""

    def __init__(self, radio: Radio, **kwargs) -> None:
        super().__init__(**kwargs)
        self.radio = radio

    def aggregate_fit(self, server_round, results, failures):
        selected = np.zeros(self.radio.cell.num_devices, dtype=bool)
        selected[[int(cid) for cid in self.selection_history[-1][1]]] = True
        local_steps = int(np.max(self.last_plan.local_steps))
        self.radio.play_round(selected, local_steps, batch_size=32)
        for _, res in results:  # the emulated uplink's duration, as a real client would report it
            res.metrics["round_time_s"] = self.radio.round_time_s
        return super().aggregate_fit(server_round, results, failures)


def build(
    policy: str, num_clients: int, seed: int, empty_selection: str = "skip"
) -> tuple[list[DigitsClient], RadioSelection, Radio]:
    """The clients, the strategy and their radio."""
    rng = np.random.default_rng(seed)
    data = make_federated_dataset(
        "digits", num_clients=num_clients, partition="dirichlet", alpha=0.5, rng=rng
    )
    radio = Radio(num_clients, seed)
    clients = [
        DigitsClient(k, data.x_train[idx], data.y_train[idx], radio)
        for k, idx in enumerate(data.client_indices)
    ]
    x_test, y_test = data.x_test, data.y_test

    def evaluate_fn(server_round: int, parameters: list[np.ndarray], config: dict):
        accuracy, loss = accuracy_and_loss(parameters[0], x_test, y_test)
        return loss, {"accuracy": accuracy}

    strategy = RadioSelection(
        radio,
        policy=policy,
        evaluate_fn=evaluate_fn,
        fraction_evaluate=0.0,
        min_available_clients=num_clients,
        seed=seed,
        empty_selection=empty_selection,
    )
    return clients, strategy, radio


def main(argv: Sequence[str] | None = None) -> list[tuple[int, list[str], float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="proportional-fair", help="baseline or ALGO:PATH")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--empty-selection",
        choices=("skip", "fedavg"),
        default="skip",
        help="when the policy selects nobody: skip the round or let FedAvg sample",
    )
    args = parser.parse_args(argv)
    clients, strategy, _ = build(args.policy, args.clients, args.seed, args.empty_selection)
    history = run_in_process(clients, strategy, args.rounds)
    accuracy = dict(history.metrics_centralized["accuracy"])
    rows = [(rnd, cids, accuracy[rnd]) for rnd, cids in strategy.selection_history]
    print(f"policy {args.policy}: initial accuracy {accuracy[0]:.3f}")
    for rnd, cids, acc in rows:
        print(f"round {rnd:3d}  selected {','.join(cids) or '-':<20s} accuracy {acc:.3f}")
    return rows


if __name__ == "__main__":
    main()
