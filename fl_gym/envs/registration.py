"""Registration of every fl_gym environment with Gymnasium, in one place.

``import fl_gym`` calls :func:`register_envs`; a second call (or a second import) registers
nothing again. Gymnasium >= 1.0 ignores plugin entry points, so none are relied on.
"""

from __future__ import annotations

import gymnasium as gym

__all__ = ["ENV_IDS", "register_envs"]

_WIRELESS_FL_ENTRY = "fl_gym.envs.wireless_fl.env:WirelessFLEnv"

_WIRELESS_FL_VARIANTS = {
    "fl_gym/ClientSelection-v0": ("selection",),
    "fl_gym/PowerControl-v0": ("power",),
    "fl_gym/GradientCompression-v0": ("compression",),
    "fl_gym/AggregationFrequency-v0": ("frequency",),
    "fl_gym/WirelessFL-v0": ("selection", "power", "compression", "frequency"),
}

_OTHER_ENVS = {
    "fl_gym/OverTheAirFL-v0": "fl_gym.envs.wireless_fl.over_the_air:OverTheAirFLEnv",
    "fl_gym/PrivateFL-v0": "fl_gym.envs.wireless_fl.private:PrivateFLEnv",
    "fl_gym/VehicularURLLC-v1": "fl_gym.envs.vehicular.env:VehicularURLLCEnv",
    "fl_gym/FederatedLocalization-v0": (
        "fl_gym.envs.wireless_fl.localization:FederatedLocalizationEnv"
    ),
    "fl_gym/ByzantineSelection-v0": "fl_gym.envs.wireless_fl.byzantine:ByzantineSelectionEnv",
    "fl_gym/ByzantineSelection-v1": "fl_gym.envs.wireless_fl.byzantine:ByzantineSelectionEnv",
}
_OTHER_KWARGS = {"fl_gym/ByzantineSelection-v1": {"remember_updates": True}}
"""Constructor arguments that make an id's version."""

_VECTOR_ENTRY = "fl_gym.envs.wireless_fl.vector:WirelessFLVectorEnv"
_OTHER_VECTOR_ENTRIES = {
    "fl_gym/OverTheAirFL-v0": "fl_gym.envs.wireless_fl.vector:OverTheAirFLVectorEnv",
    "fl_gym/FederatedLocalization-v0": (
        "fl_gym.envs.wireless_fl.vector:FederatedLocalizationVectorEnv"
    ),
    "fl_gym/PrivateFL-v0": "fl_gym.envs.wireless_fl.vector:PrivateFLVectorEnv",
    "fl_gym/ByzantineSelection-v0": "fl_gym.envs.wireless_fl.vector:ByzantineSelectionVectorEnv",
    "fl_gym/ByzantineSelection-v1": "fl_gym.envs.wireless_fl.vector:ByzantineSelectionVectorEnv",
}
"""Native vector envs (``gym.make_vec(id, num_envs=E)``); the other ids vectorise as "sync"."""

ENV_IDS: tuple[str, ...] = (*_WIRELESS_FL_VARIANTS, *_OTHER_ENVS)
"""Every Gymnasium environment id this package registers."""

MAX_EPISODE_STEPS = 100


def register_envs() -> None:
    """Register every fl_gym environment (idempotent)."""
    for env_id, controls in _WIRELESS_FL_VARIANTS.items():
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point=_WIRELESS_FL_ENTRY,
            vector_entry_point=_VECTOR_ENTRY,
            max_episode_steps=MAX_EPISODE_STEPS,
            kwargs={"controls": controls},
        )
    for env_id, entry_point in _OTHER_ENVS.items():
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point=entry_point,
            vector_entry_point=_OTHER_VECTOR_ENTRIES.get(env_id),
            max_episode_steps=MAX_EPISODE_STEPS,
            kwargs=dict(_OTHER_KWARGS.get(env_id, {})),
        )
