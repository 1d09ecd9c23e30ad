"""Device selection by per-device Q-values: the DQN form of FAVOR's selection agent.

FAVOR (Wang, Kaplan, Niu and Li, "Optimizing Federated Learning on Non-IID Data with
Reinforcement Learning", INFOCOM 2020) trains a Double DQN whose Q-network scores every device
with one Q-value and runs the K devices with the highest values each round. Stable-Baselines3's
DQN needs a ``Discrete`` action space, while the selection environments take one score per
device, so three pieces make the same agent out of SB3's parts:

* :class:`DeviceChoiceWrapper` turns ``fl_gym/ClientSelection-v0`` (or any environment that
  controls selection alone) into ``Discrete(K)``: the action names one device, which takes part
  in the round together with ``M - 1`` companions drawn at random (or alone).
* :class:`DeviceQPolicy` is a DQN policy whose Q-network is the
  :class:`~fl_gym.agents.device_set.DeviceSetExtractor` followed by one shared head per device:
  ``Q(s, k)`` is a function of device ``k``'s embedding, so no weight depends on K and permuting
  the devices permutes the Q-values. :class:`DoubleDQN` is SB3's DQN with the Double-DQN target
  (van Hasselt et al. 2016), the learner FAVOR uses.
* :class:`TopMQSelector` plays the trained Q-network on the unwrapped environment: the M
  available devices with the highest Q-values upload, as FAVOR selects its top K.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import DQN
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork
from torch import nn
from torch.nn import functional

from fl_gym.agents.device_set import DeviceSetExtractor, _device_space, _mlp
from fl_gym.envs.wireless_fl.env import DEVICE_FEATURES
from fl_gym.sim.config import check_choice

__all__ = ["DeviceChoiceWrapper", "DeviceQPolicy", "DoubleDQN", "TopMQSelector"]

_AVAILABLE = DEVICE_FEATURES.index("available")
_WRAPPER_STREAM = 0xFA0
"""Second word of the wrapper's seed, so that its draws are not the environment's own stream."""


def _selection_codec(env: gym.Env) -> Any:
    """The codec of a wireless FL environment whose action is the selection scores alone."""
    base = env.unwrapped
    codec = getattr(base, "codec", None)
    controls = tuple(getattr(base, "controls", ()))
    if codec is None or controls != ("selection",):
        raise ValueError(
            "a device-choice agent needs a wireless FL environment that controls selection "
            f"alone (fl_gym/ClientSelection-v0), got {base!r} with controls {controls!r}"
        )
    return codec


class DeviceChoiceWrapper(gym.ActionWrapper):
    """``Discrete(K)`` selection: the action names one device that takes part in the round.

    The named device uploads in the round together with, for ``companions="random"``, ``M - 1``
    other available devices drawn uniformly without replacement (M = ``max_selected``, the
    sub-channels), so every round trains on M devices as it will when the agent plays its top-M;
    with ``companions="none"`` it uploads alone. The wrapper emits the unwrapped environment's
    score action: +1 for the selected devices, -1 for the others, which that environment decodes
    into exactly this set (:meth:`selection` says which set an action names). A named device
    with an empty battery is dropped by the environment as any unavailable device is.

    The companions come from the wrapper's own generator, seeded by ``reset(seed=s)`` from
    ``(s, 0xFA0)`` (a stream apart from the environment's); an unseeded first reset seeds it
    from the operating system, later unseeded resets continue it.

    Args:
        env: An environment that controls selection alone (``fl_gym/ClientSelection-v0``),
            with ``Dict`` or flat observations (they pass through unchanged).
        companions: ``"random"`` or ``"none"``.
    """

    COMPANIONS: ClassVar[tuple[str, ...]] = ("random", "none")

    def __init__(self, env: gym.Env, companions: str = "random") -> None:
        super().__init__(env)
        check_choice("companions", companions, self.COMPANIONS)
        self.companions = companions
        self.num_devices = int(_selection_codec(env).num_devices)
        self.action_space = spaces.Discrete(self.num_devices)
        self._rng: np.random.Generator | None = None
        self.last_selection: np.ndarray | None = None
        """The mask of the devices the last stepped action selected."""
        self._available = np.ones(self.num_devices, dtype=bool)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        if seed is not None:
            self._rng = np.random.default_rng((int(seed), _WRAPPER_STREAM))
        elif self._rng is None:
            self._rng = np.random.default_rng()
        observation, info = self.env.reset(seed=seed, options=options)
        self._available = self._read_available()
        return observation, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = super().step(action)
        self._available = self._read_available()
        return observation, reward, terminated, truncated, info

    @property
    def max_selected(self) -> int:
        """M, the most devices a round selects (the environment's current configuration)."""
        return int(_selection_codec(self.env).max_selected)

    def _read_available(self) -> np.ndarray:
        cell = self.env.unwrapped.federation.cell
        return np.asarray(cell.available, dtype=bool).copy()

    def selection(self, action: Any) -> np.ndarray:
        """The ``(K,)`` bool mask of the devices ``action`` selects (draws the companions).

        Raises:
            ValueError: If ``action`` is not a device index in ``0..K-1``.
        """
        if isinstance(action, np.ndarray) and action.size == 1:
            action = action.reshape(()).item()
        if (
            isinstance(action, (bool, np.bool_))
            or not isinstance(action, (int, np.integer))
            or not 0 <= action < self.num_devices
        ):
            raise ValueError(
                f"action must be a device index in 0..{self.num_devices - 1}, got {action!r}"
            )
        selected = np.zeros(self.num_devices, dtype=bool)
        selected[int(action)] = True
        m = self.max_selected
        if self.companions == "random" and m > 1:
            if self._rng is None:
                raise RuntimeError("call reset() before step()")
            others = np.flatnonzero(self._available & ~selected)
            count = min(m - 1, others.size)
            selected[self._rng.choice(others, size=count, replace=False)] = True
        return selected

    def action(self, action: Any) -> np.ndarray:
        self.last_selection = self.selection(action)
        return np.where(self.last_selection, 1.0, -1.0).astype(np.float32)


class _PerDeviceQHead(nn.Module):
    """One shared MLP from a device's embedding (and the global summary) to its Q-value."""

    def __init__(self, embed_dim: int, net_arch: list[int]) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.body = _mlp([2 * embed_dim, *net_arch])
        self.out = nn.Linear(net_arch[-1] if net_arch else 2 * embed_dim, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        e = self.embed_dim
        devices = features[:, :-e].reshape(features.shape[0], -1, e)  # (B, K, E), any K
        summary = features[:, -e:].unsqueeze(1).expand_as(devices)
        return self.out(self.body(torch.cat([devices, summary], dim=-1))).squeeze(-1)


class _DeviceQNetwork(QNetwork):
    """SB3's Q-network with the per-device head in place of its flat MLP."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        extractor = self.features_extractor
        if not isinstance(extractor, DeviceSetExtractor):
            raise TypeError(
                f"DeviceQPolicy needs a DeviceSetExtractor, got {type(extractor).__name__}"
            )
        self.q_net = _PerDeviceQHead(extractor.embed_dim, list(self.net_arch))


class DeviceQPolicy(DQNPolicy):
    """DQN policy that scores each device with one Q-value, ``Discrete(K)`` actions.

    The observation must be ``Dict(devices=Box(K, F), server=Box(G))`` and the action space
    ``Discrete(K)`` (:class:`DeviceChoiceWrapper`): action ``k`` is device ``k``. The
    :class:`~fl_gym.agents.device_set.DeviceSetExtractor` embeds the devices; ``net_arch`` (64
    by default) is the hidden layers of the head shared by all devices, which reads a device's
    embedding beside the global summary. Use as ``DQN(DeviceQPolicy, env)`` or with
    :class:`DoubleDQN`; ``features_extractor_kwargs`` passes to the extractor.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Discrete,
        lr_schedule: Any,
        net_arch: list[int] | None = None,
        **kwargs: Any,
    ) -> None:
        num_devices = _device_space(observation_space)[0]
        if not (isinstance(action_space, spaces.Discrete) and int(action_space.n) == num_devices):
            raise ValueError(
                f"DeviceQPolicy needs Discrete({num_devices}) actions (one per device), got "
                f"{action_space}"
            )
        kwargs.setdefault("features_extractor_class", DeviceSetExtractor)
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=[64] if net_arch is None else net_arch,
            **kwargs,
        )

    def make_q_net(self) -> QNetwork:
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        return _DeviceQNetwork(**net_args).to(self.device)


class DoubleDQN(DQN):
    """SB3's DQN with the Double-DQN target: the online network picks the next action, the
    target network values it, ``y = r + gamma (1 - done) Q_target(s', argmax_a Q(s', a))``
    (van Hasselt, Guez and Silver, AAAI 2016), which FAVOR trains with."""

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        losses = []
        for _ in range(gradient_steps):
            batch = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
            discounts = batch.discounts if batch.discounts is not None else self.gamma
            with torch.no_grad():
                greedy = self.q_net(batch.next_observations).argmax(dim=1, keepdim=True)
                next_values = self.q_net_target(batch.next_observations).gather(1, greedy)
                targets = batch.rewards + (1 - batch.dones) * discounts * next_values
            values = self.q_net(batch.observations).gather(1, batch.actions.long())
            loss = functional.smooth_l1_loss(values, targets)
            losses.append(float(loss.item()))
            self.policy.optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", float(np.mean(losses)))


class TopMQSelector:
    """Plays a per-device Q-network on the selection environment: the top-M devices upload.

    Each round the Q-network scores every device and the M (``max_selected``) available
    devices with the highest Q-values are selected, lower index first on ties (the
    environment's own ranking rule, :meth:`~fl_gym.envs.wireless_fl.codec.WirelessFLCodec.top`).
    The action is the unwrapped environment's score vector, +1 for those devices and -1 for
    the others, so the selector has the baselines' ``predict`` and plays wherever they do.

    Args:
        model: A DQN (or :class:`DoubleDQN`) trained with :class:`DeviceQPolicy` on the
            :class:`DeviceChoiceWrapper` of this environment, or its policy.
        env: The environment it will play (its unwrapped form is the selection environment).
        name: What evaluation tables call it.
    """

    def __init__(self, model: Any, env: gym.Env, name: str = "dqn-top-m") -> None:
        self.policy = getattr(model, "policy", model)
        if not isinstance(self.policy, DQNPolicy):
            raise TypeError(f"model must be an SB3 DQN or DQN policy, got {type(model).__name__}")
        _selection_codec(env)
        self.env = env
        self.name = name

    def q_values(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """The Q-values of every device, ``(K,)`` for one observation or ``(B, K)`` batched."""
        tensor, vectorized = self.policy.obs_to_tensor(observation)
        with torch.no_grad():
            q = self.policy.q_net(tensor).cpu().numpy()
        return q if vectorized else q[0]

    def predict(
        self,
        observation: dict[str, np.ndarray],
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, Any]:
        """The score action of the top-M devices by Q-value (one observation or a batch)."""
        q = self.q_values(observation)
        available = np.asarray(observation["devices"])[..., _AVAILABLE] > 0.5
        rows = np.atleast_2d(q)
        masks = np.atleast_2d(available)
        codec = _selection_codec(self.env)
        actions = np.stack(
            [
                np.where(codec.top(row, mask), 1.0, -1.0).astype(np.float32)
                for row, mask in zip(rows, masks, strict=True)
            ]
        )
        return (actions if q.ndim == 2 else actions[0]), state
