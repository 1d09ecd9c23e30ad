"""Observation modes of the Gymnasium environments: the Dict observation or one flat Box.

Every Gymnasium environment of fl_gym observes ``Dict(devices=Box(K, F), server=Box(G))``.
With ``obs_mode="flat"`` it returns the same numbers as one 1-D float32 ``Box(K * F + G)``
instead: the ``devices`` matrix row-major (device 0's F features, then device 1's, ...), then
the ``server`` vector, with the same bounds. That is what ``MlpPolicy``, rl-zoo3 and CleanRL
expect; the Dict form is what the device-set policies (and SB3's ``MultiInputPolicy``) read.

The layout is exposed on the environment (``env.unwrapped``), in both modes:

* ``observation_slices``: ``{"devices": slice(0, K * F), "server": slice(K * F, K * F + G)}``;
* ``observation_feature_names``: the name of every flat entry, ``"devices[k].<column>"`` then
  ``"server.<entry>"``;
* ``dict_observation_space``: the Dict space (equal to ``observation_space`` in dict mode).

``flat[env.observation_slices["devices"]].reshape(K, F)`` is ``obs["devices"]`` and
``flat[env.observation_slices["server"]]`` is ``obs["server"]``, bit for bit;
:func:`unflatten_observation` does this for single observations and batches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
from gymnasium import spaces

__all__ = [
    "OBS_MODES",
    "Observation",
    "check_obs_mode",
    "flat_feature_names",
    "flat_observation_space",
    "flat_slices",
    "flatten_observation",
    "unflatten_observation",
]

OBS_MODES = ("dict", "flat")
"""Allowed values of the environments' ``obs_mode`` argument."""

Observation: TypeAlias = "dict[str, np.ndarray] | np.ndarray"
"""What an environment returns: the Dict observation or, in flat mode, one 1-D array."""

_KEYS = ("devices", "server")


def check_obs_mode(obs_mode: Any) -> str:
    """Return ``obs_mode`` if it is one of :data:`OBS_MODES`, else raise ``ValueError``."""
    if not isinstance(obs_mode, str) or obs_mode not in OBS_MODES:
        raise ValueError(f"obs_mode must be one of {list(OBS_MODES)}, got {obs_mode!r}")
    return obs_mode


def flat_slices(devices_shape: Sequence[int], server_size: int) -> dict[str, slice]:
    """Where ``devices`` (row-major) and ``server`` lie in a flat observation.

    Args:
        devices_shape: ``(K, F)``.
        server_size: ``G``.

    Returns:
        ``{"devices": slice(0, K * F), "server": slice(K * F, K * F + G)}``.
    """
    size = int(np.prod(devices_shape))
    return {"devices": slice(0, size), "server": slice(size, size + int(server_size))}


def flat_feature_names(
    num_devices: int, device_features: Sequence[str], server_features: Sequence[str]
) -> tuple[str, ...]:
    """The names of the entries of a flat observation, in order.

    Returns:
        ``("devices[0].<column 0>", ..., "devices[K-1].<column F-1>", "server.<entry 0>", ...)``.
    """
    return (
        *(f"devices[{k}].{name}" for k in range(num_devices) for name in device_features),
        *(f"server.{name}" for name in server_features),
    )


def flat_observation_space(dict_space: spaces.Dict) -> spaces.Box:
    """The 1-D float32 Box of the flat mode: the Dict's bounds, ``devices`` row-major first."""
    devices, server = (dict_space[key] for key in _KEYS)
    assert isinstance(devices, spaces.Box) and isinstance(server, spaces.Box)
    low = np.concatenate([devices.low.reshape(-1), server.low]).astype(np.float32)
    high = np.concatenate([devices.high.reshape(-1), server.high]).astype(np.float32)
    return spaces.Box(low, high, dtype=np.float32)


def flatten_observation(observation: Mapping[str, np.ndarray]) -> np.ndarray:
    """One Dict observation (or a batch, stacked on a leading axis) as flat float32 rows.

    Args:
        observation: ``{"devices": (..., K, F), "server": (..., G)}``.

    Returns:
        ``(..., K * F + G)``: the same float32 values, ``devices`` row-major then ``server``.
    """
    devices = np.asarray(observation["devices"], dtype=np.float32)
    server = np.asarray(observation["server"], dtype=np.float32)
    lead = server.shape[:-1]
    return np.concatenate([devices.reshape(*lead, -1), server], axis=-1)


def unflatten_observation(flat: Any, dict_space: spaces.Dict) -> dict[str, np.ndarray]:
    """The Dict observation(s) of flat row(s) of ``dict_space``'s layout.

    Args:
        flat: ``(D,)`` or ``(n, D)``, ``D = K * F + G``.
        dict_space: The environment's ``dict_observation_space``.

    Returns:
        ``{"devices": (K, F) or (n, K, F), "server": (G,) or (n, G)}`` (views of ``flat``).
    """
    arr = np.asarray(flat)
    devices_shape = dict_space["devices"].shape
    server_shape = dict_space["server"].shape
    assert devices_shape is not None and server_shape is not None
    slices = flat_slices(devices_shape, server_shape[0])
    size = slices["server"].stop
    if arr.ndim not in (1, 2) or arr.shape[-1] != size:
        raise ValueError(
            f"a flat observation must have shape ({size},) or (n, {size}) (devices "
            f"{tuple(devices_shape)} row-major, then server {tuple(server_shape)}), "
            f"got shape {arr.shape}"
        )
    lead = arr.shape[:-1]
    return {
        "devices": arr[..., slices["devices"]].reshape(*lead, *devices_shape),
        "server": arr[..., slices["server"]],
    }
