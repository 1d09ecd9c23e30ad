"""fl_gym.sim.config.resolve_config: one override resolver for every frozen config dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from fl_gym.envs.vehicular.env import VehicularURLLCConfig, make_urllc_config
from fl_gym.envs.wireless_fl.config import WirelessFLConfig, make_config
from fl_gym.sim.config import apply_overrides, resolve_config, with_overrides
from fl_gym.sim.learning.federation import FederationConfig
from fl_gym.sim.vehicular.system import VehicularConfig, make_vehicular_config

FAMILY = "the toy envs"


@dataclass(frozen=True)
class Deep:
    depth_m: float = 1.0


@dataclass(frozen=True)
class Radio:
    power_w: float = 1.0
    shared: int = 1
    deep: Deep = field(default_factory=Deep)

    def __post_init__(self) -> None:
        if self.power_w <= 0:
            raise ValueError(f"power_w must be > 0, got {self.power_w!r}")


@dataclass(frozen=True)
class Learn:
    rate: float = 0.1
    shared: int = 2


@dataclass(frozen=True)
class Top:
    steps: int = 10
    rate: float = 5.0  # an own field beside a nested one of the same name
    radio: Radio = field(default_factory=Radio)
    learn: Learn = field(default_factory=Learn)


PRESETS: dict[str, dict[str, Any]] = {"busy": {"steps": 20, "radio.power_w": 2.0}, "plain": {}}


def resolve(preset: str | None = None, overrides: Any = None, base: Top | None = None) -> Top:
    return resolve_config(
        Top() if base is None else base, preset, overrides, presets=PRESETS, family=FAMILY
    )


def test_keys_in_every_syntax_reach_the_same_field() -> None:
    expected = Top(radio=Radio(power_w=3.0))
    for overrides in (
        {"radio.power_w": 3.0},
        {"power_w": 3.0},
        {"radio": {"power_w": 3.0}},
        {"radio": Radio(power_w=3.0)},
    ):
        assert resolve(None, overrides) == expected, overrides


def test_deep_nesting_dotted_bare_and_dict() -> None:
    expected = Top(radio=Radio(deep=Deep(depth_m=7.0)))
    for overrides in (
        {"radio.deep.depth_m": 7.0},
        {"depth_m": 7.0},
        {"radio": {"deep": {"depth_m": 7.0}}},
        {"radio.deep": Deep(7.0)},
        {"deep.depth_m": 7.0},  # a bare name of a nested config, then a dotted path inside it
    ):
        assert resolve(None, overrides) == expected, overrides


def test_an_own_field_wins_over_a_nested_bare_name() -> None:
    config = resolve(None, {"rate": 9.0})
    assert config.rate == 9.0 and config.learn.rate == 0.1
    assert resolve(None, {"learn.rate": 9.0}).learn.rate == 9.0


def test_an_ambiguous_bare_name_is_an_error_listing_the_candidates() -> None:
    with pytest.raises(
        ValueError, match=r"'shared' is ambiguous.*\['radio\.shared', 'learn\.shared'\]"
    ):
        resolve(None, {"shared": 3})
    assert resolve(None, {"learn.shared": 3}).learn.shared == 3


def test_a_config_object_for_a_nested_field_then_keys_inside_it() -> None:
    config = resolve(None, {"radio": Radio(power_w=4.0, shared=9), "radio.shared": 5})
    assert config.radio == Radio(power_w=4.0, shared=5)
    # A bare name applies on top of the object given for its nested config too.
    assert resolve(None, {"power_w": 6.0, "radio": Radio(shared=9)}).radio == Radio(6.0, 9)


def test_a_complete_object_is_used_as_is_and_refused_beside_a_preset() -> None:
    mine = Top(steps=3)
    assert resolve(None, mine) is mine
    with pytest.raises(ValueError, match="preset='busy' and a Top object cannot be combined"):
        resolve("busy", mine)


def test_presets_then_overrides_on_a_base() -> None:
    config = resolve("busy", {"power_w": 5.0})
    assert config == Top(steps=20, radio=Radio(power_w=5.0))
    assert resolve("busy", base=Top(steps=1, learn=Learn(rate=0.5))).learn.rate == 0.5
    with pytest.raises(
        ValueError, match=r"unknown preset 'nope' for the toy envs; allowed: \['busy', 'plain'\]"
    ):
        resolve("nope")


def test_unknown_keys_name_their_full_path_and_the_allowed_keys() -> None:
    with pytest.raises(
        ValueError,
        match=r"unknown config key\(s\) \['nope', 'radio\.nope'\] for the toy envs; "
        r"allowed: \[.*'radio\.deep\.depth_m'",
    ):
        resolve(None, {"nope": 1, "radio": {"nope": 2}})
    with pytest.raises(ValueError, match=r"\['steps\.x'\]"):
        resolve(None, {"steps": {"x": 1}})  # a dict under a field that is no config
    with pytest.raises(ValueError, match=r"\['radio\.deep\.nope'\]"):
        resolve(None, {"deep.nope": 1})


def test_values_are_validated_and_bad_types_named() -> None:
    with pytest.raises(ValueError, match=r"power_w must be > 0, got -1\.0"):
        resolve(None, {"power_w": -1.0})
    with pytest.raises(TypeError, match="config must be a Top or a dict of overrides, got int"):
        resolve(None, 5)
    with pytest.raises(TypeError, match="config keys must be strings"):
        resolve(None, {1: 2})
    with pytest.raises(TypeError, match="config overrides must be a dict"):
        apply_overrides(Top(), [("steps", 1)], FAMILY)  # type: ignore[arg-type]


def test_nothing_to_apply_returns_the_base() -> None:
    base = Top(steps=4)
    assert resolve(None, None, base) is base
    assert resolve(None, {}, base) is base
    assert with_overrides(base, None) is base
    assert with_overrides(base, {"power_w": 2.0}).radio.power_w == 2.0


# -- the families' builders are thin calls to it -------------------------------------------------


def test_wireless_builder() -> None:
    config = make_config("noniid-digits", {"deadline_s": 0.5, "learning": {"model": "logreg"}})
    assert config.partition == "dirichlet" and config.wireless.deadline_s == 0.5
    assert config.learning.model == "logreg"
    learning = FederationConfig(learning_rate=0.3)
    config = make_config(None, {"learning": learning, "batch_size": 8})
    assert config.learning == FederationConfig(learning_rate=0.3, batch_size=8)
    with pytest.raises(ValueError, match="preset='cell-edge' and a WirelessFLConfig object"):
        make_config("cell-edge", WirelessFLConfig())


def test_vehicular_builders() -> None:
    config = make_urllc_config("freeway", {"num_pairs": 7, "max_steps": 50})
    assert config.system.layout == "freeway" and config.system.num_pairs == 7
    assert config.max_steps == 50
    system = VehicularConfig(num_pairs=4)
    assert make_urllc_config(None, {"system": system}).system is system
    assert make_urllc_config(None, {"system.num_pairs": 4}) == VehicularURLLCConfig(system=system)
    with pytest.raises(
        ValueError, match=r"unknown config key\(s\) \['system\.nope'\] for the vehicular envs"
    ):
        make_urllc_config(None, {"system": {"nope": 1}})
    assert make_vehicular_config("freeway", {"num_pairs": 7}).num_pairs == 7
    with pytest.raises(ValueError, match="preset='freeway' and a VehicularConfig object"):
        make_vehicular_config("freeway", VehicularConfig())
