"""Policies over a set of devices: one network for any number of devices, in any order.

The FL environments observe ``Dict(devices=Box(K, F), server=Box(G))``. Flattening that for an
MLP ties the network to one K and to one device order: the same cell with its devices listed in
another order looks like a different state. :class:`DeviceSetExtractor` instead encodes every
device with one shared network, mixes the devices with self-attention (or DeepSets pooling),
and pools them into a global summary that the server features join; no weight depends on K.
:class:`DeviceSetPolicy` adds per-device action heads on top, so the policy is *equivariant*:
permuting the devices permutes the per-device actions the same way and leaves the global actions
and the value unchanged (tested).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.distributions import DiagGaussianDistribution, Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

__all__ = ["ActionLayout", "DeviceSetExtractor", "DeviceSetPolicy", "action_layout"]

POOLINGS = ("attention", "deepsets")


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _device_space(observation_space: gym.Space) -> tuple[int, int, int]:
    """(K, F, G) of a ``Dict(devices=Box(K, F), server=Box(G))`` space."""
    if not (
        isinstance(observation_space, spaces.Dict)
        and set(observation_space.spaces) == {"devices", "server"}
        and len(observation_space["devices"].shape) == 2
        and len(observation_space["server"].shape) == 1
    ):
        raise ValueError(
            "a device-set network needs Dict(devices=Box(K, F), server=Box(G)) observations, "
            f"got {observation_space}"
        )
    k, f = observation_space["devices"].shape
    return int(k), int(f), int(observation_space["server"].shape[0])


class DeviceSetExtractor(BaseFeaturesExtractor):
    """Shared per-device encoder, attention or DeepSets mixing, pooling over the devices.

    Every device's features go through one MLP (``embed_dim`` wide); with ``pooling=
    "attention"`` one multi-head self-attention block (residual, layer norm) lets each device see
    the others. The devices are pooled (mean and max) and joined with the encoded server
    features into a ``embed_dim`` global summary; each device's embedding is then refined with
    that summary. The output is the flat concatenation ``[device_1, ..., device_K, global]``
    (``(K + 1) * embed_dim`` values): :class:`DeviceSetPolicy` reads it back per device; with
    SB3's default heads it is an order-aware but still weight-shared encoding.

    Args:
        observation_space: ``Dict(devices=Box(K, F), server=Box(G))``.
        embed_dim: Width of every embedding.
        pooling: ``"attention"`` or ``"deepsets"`` (mean/max pooling only, no attention).
        num_heads: Attention heads (``embed_dim`` must be divisible by it).
    """

    def __init__(
        self,
        observation_space: gym.Space,
        embed_dim: int = 64,
        pooling: str = "attention",
        num_heads: int = 4,
    ) -> None:
        k, f, g = _device_space(observation_space)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if not (isinstance(embed_dim, int) and embed_dim >= 1):
            raise ValueError(f"embed_dim must be an integer >= 1, got {embed_dim!r}")
        if pooling == "attention" and embed_dim % num_heads:
            raise ValueError(
                f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})"
            )
        super().__init__(observation_space, features_dim=(k + 1) * embed_dim)
        self.embed_dim = embed_dim
        self.pooling = pooling
        self.device_encoder = _mlp([f, embed_dim, embed_dim])
        self.server_encoder = _mlp([g, embed_dim])
        if pooling == "attention":
            self.attention: nn.MultiheadAttention | None = nn.MultiheadAttention(
                embed_dim, num_heads, batch_first=True
            )
            self.norm: nn.Module = nn.LayerNorm(embed_dim)
        else:
            self.attention = None
            self.norm = nn.Identity()
        self.global_mlp = _mlp([3 * embed_dim, embed_dim])
        self.refine = _mlp([2 * embed_dim, embed_dim])

    def encode(self, observations: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, K, E)`` device embeddings and the ``(B, E)`` global summary."""
        devices = self.device_encoder(observations["devices"])
        if self.attention is not None:
            mixed, _ = self.attention(devices, devices, devices, need_weights=False)
            devices = self.norm(devices + mixed)
        pooled = torch.cat([devices.mean(dim=1), devices.amax(dim=1)], dim=-1)
        summary = self.global_mlp(
            torch.cat([pooled, self.server_encoder(observations["server"])], dim=-1)
        )
        context = summary.unsqueeze(1).expand_as(devices)
        return self.refine(torch.cat([devices, context], dim=-1)), summary

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        devices, summary = self.encode(observations)
        return torch.cat([devices.flatten(1), summary], dim=-1)


class ActionLayout:
    """How a flat action splits into per-device and global parts.

    Attributes:
        per_device: Outputs per device (``c``).
        device_major: ``True`` when a device's ``c`` outputs are contiguous (MultiDiscrete
            logits), ``False`` when the action holds ``c`` blocks of K (the Box layouts).
        num_global: Outputs that belong to no device, after the per-device part.
    """

    def __init__(self, per_device: int, device_major: bool, num_global: int) -> None:
        self.per_device = per_device
        self.device_major = device_major
        self.num_global = num_global

    def __repr__(self) -> str:
        return (
            f"ActionLayout(per_device={self.per_device}, device_major={self.device_major}, "
            f"num_global={self.num_global})"
        )


def action_layout(action_space: gym.Space, num_devices: int) -> ActionLayout:
    """The per-device / global split of an FL environment's action (or its logits).

    ``Box((c K + g,))`` is ``c`` blocks of K device values followed by ``g`` global values
    (selection scores, powers, compression, then the local-steps value); ``MultiDiscrete(
    [n_1, ..., n_c] * K)`` (one compression level per device, or a power level and a resource
    block per vehicle pair) is ``n_1 + ... + n_c`` logits per device, device after device;
    ``Discrete(n)`` is global.

    Args:
        action_space: The environment's action space.
        num_devices: K.

    Returns:
        The layout.

    Raises:
        ValueError: For a space that does not decompose over the devices.
    """
    k = num_devices
    if isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
        size = int(action_space.shape[0])
        per_device = size // k
        return ActionLayout(per_device, False, size - per_device * k)
    if isinstance(action_space, spaces.MultiDiscrete) and action_space.nvec.ndim == 1:
        nvec = action_space.nvec
        if nvec.size % k == 0:
            rows = nvec.reshape(k, -1)  # one row of sub-actions per device
            if np.all(rows == rows[0]):
                return ActionLayout(int(rows[0].sum()), True, 0)
    if isinstance(action_space, spaces.Discrete):
        return ActionLayout(0, True, int(action_space.n))
    raise ValueError(
        f"cannot split the action space {action_space} over {k} devices: expected "
        "Box((c K + g,)), MultiDiscrete([n_1, ..., n_c] * K) or Discrete(n)"
    )


class _DeviceSetHeads(nn.Module):
    """Per-device actor head (shared weights), global actor head, value from the summary."""

    def __init__(self, embed_dim: int, num_devices: int, layout: ActionLayout) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.layout = layout
        self.latent_dim_pi = layout.per_device * num_devices + layout.num_global
        self.latent_dim_vf = embed_dim
        self.device_head = (
            nn.Sequential(_mlp([embed_dim, embed_dim]), nn.Linear(embed_dim, layout.per_device))
            if layout.per_device
            else None
        )
        self.global_head = (
            nn.Sequential(_mlp([embed_dim, embed_dim]), nn.Linear(embed_dim, layout.num_global))
            if layout.num_global
            else None
        )
        self.value_head = _mlp([embed_dim, embed_dim])

    def _split(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.embed_dim
        devices = features[:, :-e].reshape(features.shape[0], -1, e)  # any K
        return devices, features[:, -e:]

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        devices, summary = self._split(features)
        parts = []
        if self.device_head is not None:
            out = self.device_head(devices)  # (B, K, c)
            if not self.layout.device_major:
                out = out.transpose(1, 2)  # c blocks of K
            parts.append(out.flatten(1))
        if self.global_head is not None:
            parts.append(self.global_head(summary))
        return torch.cat(parts, dim=-1)

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        return self.value_head(self._split(features)[1])

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)


class DeviceSetPolicy(ActorCriticPolicy):
    """Actor-critic policy (PPO, A2C) that is equivariant in the devices.

    The :class:`DeviceSetExtractor` embeds the devices; one shared head turns each device's
    embedding into its part of the action (selection score, power, compression logits), a
    global head produces the non-device part (local steps, power budget), and the value comes
    from the global summary. The distribution's parameters are these outputs themselves (SB3's
    final linear layer is replaced by the identity), so no weight depends on K. Use as
    ``PPO(DeviceSetPolicy, env)``; ``policy_kwargs`` may set ``features_extractor_kwargs`` (e.g.
    ``{"pooling": "deepsets", "embed_dim": 32}``).
    """

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        lr_schedule: Any,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        self._num_devices = _device_space(observation_space)[0]
        self._layout = action_layout(action_space, self._num_devices)
        kwargs.setdefault("features_extractor_class", DeviceSetExtractor)
        kwargs.setdefault("share_features_extractor", True)
        super().__init__(observation_space, action_space, lr_schedule, *args, **kwargs)

    def _build_mlp_extractor(self) -> None:
        extractor = self.features_extractor
        if not isinstance(extractor, DeviceSetExtractor):
            raise TypeError(
                f"DeviceSetPolicy needs a DeviceSetExtractor, got {type(extractor).__name__}"
            )
        self.mlp_extractor = _DeviceSetHeads(extractor.embed_dim, self._num_devices, self._layout)

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        # The heads already output the distribution's parameters (means or logits); SB3's
        # final linear layer would mix the devices and tie the policy to one K.
        self.action_net = nn.Identity()
        if isinstance(self.action_dist, DiagGaussianDistribution):
            # One log standard deviation per action channel (per-device knob or global value),
            # shared by the devices, instead of one per action entry.
            layout = self._layout
            self.log_std = nn.Parameter(
                torch.full((layout.per_device + layout.num_global,), float(self.log_std_init))
            )
        if self.ortho_init:  # the last layers play SB3's action_net: small initial actions
            for head in (self.mlp_extractor.device_head, self.mlp_extractor.global_head):
                if head is not None:
                    self.init_weights(head[-1], gain=0.01)
        self.optimizer = self.optimizer_class(
            self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )

    def _get_action_dist_from_latent(self, latent_pi: torch.Tensor) -> Distribution:
        if not isinstance(self.action_dist, DiagGaussianDistribution):
            return super()._get_action_dist_from_latent(latent_pi)
        layout = self._layout
        c, g = layout.per_device, layout.num_global
        k = (latent_pi.shape[-1] - g) // c if c else 0
        log_std = torch.cat([self.log_std[:c].repeat_interleave(k), self.log_std[c:]])
        return self.action_dist.proba_distribution(latent_pi, log_std)
