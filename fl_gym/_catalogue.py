"""One catalogue of every fl_gym environment: :func:`fl_gym.catalogue` and ``fl-gym list``.

For each environment of every family (the Gymnasium ids and the PettingZoo modules): how to
build it, what it controls, its spaces in a readable form, its presets, the policies that play
it, and every configuration key with its default, unit and meaning (read from the configuration
dataclasses and their ``Attributes:`` docstrings, so the catalogue cannot drift from the code).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from fl_gym._console import format_space

__all__ = ["ConfigKey", "EnvEntry", "build_catalogue", "unit_of"]


@dataclass(frozen=True)
class ConfigKey:
    """One configuration key of an environment.

    Attributes:
        name: The key as ``config=`` takes it (dotted for nested fields, e.g.
            ``"wireless.deadline_s"``).
        default: Its value in the environment's default configuration.
        unit: The physical unit its name ends in (``"s"``, ``"dBm"``, ...), or ``None``.
        doc: Its meaning, from the configuration dataclass's docstring (may be empty).
    """

    name: str
    default: Any
    unit: str | None
    doc: str


@dataclass(frozen=True)
class EnvEntry:
    """One environment of the catalogue.

    Attributes:
        name: The Gymnasium id (``"fl_gym/WirelessFL-v0"``) or PettingZoo module
            (``"fl_gym.envs.uav_swarm_v0"``).
        api: ``"gymnasium"`` or ``"pettingzoo"``.
        family: ``"wireless-fl"``, ``"vehicular"`` or ``"uav"``.
        make: How to build it, as Python.
        controls: What the controller (or each agent) decides.
        agents: For PettingZoo environments, the agents by default (e.g. ``"20 x uav_i"``).
        action_space: The action space (one agent's for PettingZoo), in a readable form.
        observation_space: The observation space (one agent's for PettingZoo).
        presets: ``{name: overrides}`` of the named scenarios ``preset=`` accepts.
        policies: Names of the heuristic policies that play it.
        config_keys: Every key ``config=`` accepts, with defaults.
    """

    name: str
    api: str
    family: str
    make: str
    controls: tuple[str, ...]
    agents: str | None
    action_space: str
    observation_space: str
    presets: dict[str, dict[str, Any]]
    policies: tuple[str, ...]
    config_keys: tuple[ConfigKey, ...]


# Longest suffix first: "_per_j" before "_j", "_mps2" before "_mps".
_UNITS: tuple[tuple[str, str], ...] = (
    ("_per_m2_s3", "1/(m^2/s^3)"),
    ("_per_m2_s", "1/(m^2/s)"),
    ("_per_pair", "per pair"),
    ("_per_step", "per step"),
    ("_per_j", "1/J"),
    ("_per_s", "1/s"),
    ("_per_m", "1/m"),
    ("_mps2", "m/s^2"),
    ("_mps", "m/s"),
    ("_dbm", "dBm"),
    ("_db", "dB"),
    ("_hz", "Hz"),
    ("_bits2", "bits^2"),
    ("_bits", "bits"),
    ("_m", "m"),
    ("_s", "s"),
    ("_j", "J"),
    ("_w", "W"),
)


def unit_of(name: str) -> str | None:
    """The unit a field name ends in (``"deadline_s"`` -> ``"s"``), or ``None``."""
    leaf = name.rsplit(".", 1)[-1]
    for suffix, unit in _UNITS:
        if leaf.endswith(suffix):
            return unit
    return None


def _attribute_docs(cls: type) -> dict[str, str]:
    """``{field: text}`` from the ``Attributes:`` sections of a Google-style class docstring and
    of its base classes' (a subclass documents only the fields it adds)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        out.update(_own_attribute_docs(klass))
    return out


def _own_attribute_docs(cls: type) -> dict[str, str]:
    doc = cls.__dict__.get("__doc__") or ""
    doc = inspect.cleandoc(doc)
    match = re.search(r"^Attributes:\n((?:[ \t]+.*\n?|\n)+)", doc, flags=re.MULTILINE)
    if match is None:
        return {}
    out: dict[str, str] = {}
    current = None
    for line in match.group(1).splitlines():
        entry = re.match(r"^ {4}(\w+)(?: \([^)]*\))?: ?(.*)$", line)
        if entry:
            current = entry.group(1)
            out[current] = entry.group(2).strip()
        elif current is not None and line.strip():
            out[current] += " " + line.strip()
    return out


def _config_keys(config: Any, prefix: str = "") -> Iterator[ConfigKey]:
    docs: dict[str, str] = {}
    for cls in reversed(type(config).__mro__):  # a subclass documents the fields it adds
        docs.update(_attribute_docs(cls) if dataclasses.is_dataclass(cls) else {})
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        name = prefix + f.name
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            yield from _config_keys(value, f"{name}.")
        else:
            yield ConfigKey(name, value, unit_of(name), docs.get(f.name, ""))


def _wireless_entries() -> Iterator[EnvEntry]:
    import gymnasium as gym

    from fl_gym.baselines import baselines_for
    from fl_gym.envs.registration import ENV_IDS

    for env_id in ENV_IDS:
        env = gym.make(env_id)
        raw = env.unwrapped
        if not hasattr(raw, "federation"):  # not a wireless FL env
            env.close()
            continue
        yield EnvEntry(
            name=env_id,
            api="gymnasium",
            family="wireless-fl",
            make=f'gym.make("{env_id}", preset=None, config={{...}})',
            controls=tuple(raw.controls),
            agents=None,
            action_space=format_space(env.action_space),
            observation_space=format_space(env.observation_space),
            presets=raw.available_presets(),
            policies=tuple(baselines_for(env)),
            config_keys=tuple(_config_keys(raw.config)),
        )
        env.close()


def _vehicular_entries() -> Iterator[EnvEntry]:
    import gymnasium as gym

    from fl_gym.baselines import baselines_for
    from fl_gym.envs import vehicular_v1
    from fl_gym.sim.vehicular.system import PRESETS as SYSTEM_PRESETS

    env_id = "fl_gym/VehicularURLLC-v1"
    env = gym.make(env_id)
    keys = tuple(_config_keys(env.unwrapped.config))
    yield EnvEntry(
        name=env_id,
        api="gymnasium",
        family="vehicular",
        make=f'gym.make("{env_id}", preset=None, config={{...}})',
        controls=tuple(env.unwrapped.controls),
        agents=None,
        action_space=format_space(env.action_space),
        observation_space=format_space(env.observation_space),
        presets=dict(SYSTEM_PRESETS),
        policies=tuple(baselines_for(env)),
        config_keys=keys,
    )
    env.close()
    par = vehicular_v1.parallel_env()
    first = par.possible_agents[0]
    yield EnvEntry(
        name="fl_gym.envs.vehicular_v1",
        api="pettingzoo",
        family="vehicular",
        make="vehicular_v1.parallel_env(preset=None, config={...})",
        controls=("power", "resource_block"),
        agents=f"{len(par.possible_agents)} x pair_i",
        action_space=format_space(par.action_space(first)),
        observation_space=format_space(par.observation_space(first)),
        presets=dict(SYSTEM_PRESETS),
        policies=tuple(baselines_for(par)),
        config_keys=keys,
    )


def _uav_entries() -> Iterator[EnvEntry]:
    from fl_gym.baselines import baselines_for
    from fl_gym.envs import uav_swarm_v0
    from fl_gym.sim.uav.swarm import UAV_PRESETS

    par = uav_swarm_v0.parallel_env()
    first = par.possible_agents[0]
    yield EnvEntry(
        name="fl_gym.envs.uav_swarm_v0",
        api="pettingzoo",
        family="uav",
        make="uav_swarm_v0.parallel_env(preset=None, config={...})",
        controls=("acceleration",),
        agents=f"{len(par.possible_agents)} x uav_i",
        action_space=format_space(par.action_space(first)),
        observation_space=format_space(par.observation_space(first)),
        presets=dict(UAV_PRESETS),
        policies=tuple(baselines_for(par)),
        config_keys=tuple(_config_keys(par.config)),
    )


def build_catalogue() -> tuple[EnvEntry, ...]:
    """Every environment of every family, Gymnasium ids first (see :class:`EnvEntry`)."""
    entries = [*_wireless_entries(), *_vehicular_entries(), *_uav_entries()]
    return tuple(sorted(entries, key=lambda e: (e.api != "gymnasium", _order(e))))


def _order(entry: EnvEntry) -> int:
    from fl_gym.envs.registration import ENV_IDS

    return ENV_IDS.index(entry.name) if entry.name in ENV_IDS else len(ENV_IDS)


def preset_summary(overrides: Mapping[str, Any]) -> str:
    """``"partition=dirichlet, dirichlet_alpha=0.1"``, or ``"the defaults"``."""
    return ", ".join(f"{k}={v}" for k, v in overrides.items()) or "the defaults"
