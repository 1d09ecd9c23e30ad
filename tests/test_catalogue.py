"""One catalogue of every environment, and one set of errors for presets, keys and arguments."""

from __future__ import annotations

import json
import pkgutil
import re
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import pytest

import fl_gym
import fl_gym.envs
from fl_gym._catalogue import unit_of
from fl_gym.cli import main
from fl_gym.envs import uav_swarm_v0, vehicular_v1
from fl_gym.envs.vehicular.env import VehicularURLLCConfig
from fl_gym.envs.wireless_fl.config import WirelessFLConfig
from fl_gym.sim.uav.swarm import UAVSwarmConfig

CATALOGUE = fl_gym.catalogue()
BY_NAME = {e.name: e for e in CATALOGUE}


def _builder(name: str) -> Callable[..., Any]:
    if name.startswith("fl_gym/"):
        return lambda **kwargs: gym.make(name, **kwargs)
    module = {"fl_gym.envs.uav_swarm_v0": uav_swarm_v0, "fl_gym.envs.vehicular_v1": vehicular_v1}
    return module[name].parallel_env


def test_every_env_of_every_family_is_listed() -> None:
    versioned = sorted(
        f"fl_gym.envs.{m.name}"
        for m in pkgutil.iter_modules(fl_gym.envs.__path__)
        if re.fullmatch(r".+_v\d+", m.name)
    )
    assert versioned == ["fl_gym.envs.uav_swarm_v0", "fl_gym.envs.vehicular_v1"]
    assert [e.name for e in CATALOGUE] == [*fl_gym.ENV_IDS, *reversed(versioned)]
    assert {e.family for e in CATALOGUE} == {"wireless-fl", "vehicular", "uav"}
    for e in CATALOGUE:
        assert e.presets and e.policies and e.config_keys and e.controls
        assert all(key.doc for key in e.config_keys), e.name


@pytest.mark.parametrize("entry", CATALOGUE, ids=lambda e: e.name)
def test_every_listed_key_and_preset_is_accepted(entry: Any) -> None:
    build = _builder(entry.name)
    for key in entry.config_keys:
        env = build(config={key.name: key.default})  # the listed default round-trips
        env.close()
    for preset in entry.presets:
        if preset == "swarm-10k":
            continue  # 10,000 agents: accepted by make_uav_config in test_uav_sim
        build(preset=preset).close()


def test_config_key_defaults_are_the_envs() -> None:
    keys = {k.name: k for k in BY_NAME["fl_gym/WirelessFL-v0"].config_keys}
    assert keys["wireless.deadline_s"].default == WirelessFLConfig().wireless.deadline_s
    assert keys["wireless.deadline_s"].unit == "s"
    assert keys["wireless.p_max_dbm"].unit == "dBm"
    assert keys["energy_weight_per_j"].unit == "1/J"
    assert keys["num_devices"].unit is None
    keys = {k.name: k for k in BY_NAME["fl_gym.envs.uav_swarm_v0"].config_keys}
    assert keys["swarm.max_accel_mps2"].default == UAVSwarmConfig().max_accel_mps2
    assert keys["swarm.max_accel_mps2"].unit == "m/s^2"
    assert keys["energy_weight_per_m2_s3"].unit == "1/(m^2/s^3)"
    assert keys["flocking_weight_per_m2_s"].unit == "1/(m^2/s)"
    assert keys["progress_reward_per_m"].unit == "1/m"
    assert keys["collision_cost_per_pair"].unit == "per pair"
    keys = {k.name: k for k in BY_NAME["fl_gym/VehicularURLLC-v1"].config_keys}
    assert keys["system.num_pairs"].default == VehicularURLLCConfig().system.num_pairs


def test_units_read_as_written() -> None:
    assert unit_of("wireless.bandwidth_hz") == "Hz"
    assert unit_of("max_speed_mps") == "m/s"
    assert unit_of("cost_per_pair") == "per pair"
    assert unit_of("mass") is None
    assert BY_NAME["fl_gym/WirelessFL-v0"].action_space == "Box(-1.0, 1.0, (31,), float32)"
    assert BY_NAME["fl_gym/VehicularURLLC-v1"].action_space == "MultiDiscrete([6, 10] * 20)"


def test_fl_gym_list_shows_everything_unwrapped_when_piped(capsys: Any) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for e in CATALOGUE:
        assert e.name in out
        for preset in e.presets:
            assert preset in out
    # Piped output is not wrapped at 80 columns: a whole overview row stays on one line.
    row = next(line for line in out.splitlines() if "fl_gym/WirelessFL-v0" in line)
    assert len(row) > 80 and "Box(-1.0, 1.0, (31,), float32)" in row
    assert "\n  [" not in out  # no multi-line numpy repr of a space


def test_fl_gym_list_name_shows_config_keys_and_json(capsys: Any) -> None:
    assert main(["list", "uav_swarm_v0"]) == 0
    out = capsys.readouterr().out
    assert "max_accel_mps2" in out and "m/s^2" in out and "swarm-1k" in out
    assert main(["list", "fl_gym/WirelessFL-v0", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in data] == ["fl_gym/WirelessFL-v0"]
    assert {k["name"] for k in data[0]["config_keys"]} >= {"num_devices", "wireless.deadline_s"}
    assert main(["list", "nope_v0"]) == 2
    assert "unknown environment 'nope_v0'" in capsys.readouterr().err


FAMILIES = [
    ("fl_gym/ClientSelection-v0", "the wireless FL envs", "num_devices", WirelessFLConfig),
    ("fl_gym/OverTheAirFL-v0", "the wireless FL envs", "deadline_s", WirelessFLConfig),
    ("fl_gym/VehicularURLLC-v1", "the vehicular envs", "num_pairs", VehicularURLLCConfig),
    ("fl_gym.envs.vehicular_v1", "the vehicular envs", "num_pairs", VehicularURLLCConfig),
    ("fl_gym.envs.uav_swarm_v0", "uav_swarm_v0", "num_uavs", UAVSwarmConfig),
]


@pytest.mark.parametrize(("name", "family", "key", "config_class"), FAMILIES)
def test_one_set_of_errors_for_every_family(
    name: str, family: str, key: str, config_class: type
) -> None:
    build = _builder(name)
    with pytest.raises(ValueError, match=rf"unknown preset 'nope' for {family}; allowed: \["):
        build(preset="nope")
    with pytest.raises(ValueError, match=rf"unknown config key\(s\) \['nope'\] for {family}"):
        build(config={"nope": 1})
    with pytest.raises(
        TypeError, match=rf"\['{key}'\] as keyword argument.*config=\{{'{key}': 5\}}"
    ):
        build(**{key: 5})
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['bogus'\]; allowed"):
        build(bogus=1)
    preset = next(iter(BY_NAME[name].presets))
    with pytest.raises(ValueError, match=f"preset='{preset}' and a {config_class.__name__} object"):
        build(preset=preset, config=config_class())
