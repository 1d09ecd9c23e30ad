"""The shared validators of fl_gym.sim.config, and every config field rejecting bad values.

Every field of every configuration dataclass is tried with values of a small table of bad
values chosen by the kind of its default (whole number, real number, choice, flag, tuple, nested
config); each must raise an error that names the field and shows the value given.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import numpy as np
import pytest
import torch

from fl_gym.baselines.mean_field import MeanFieldConfig
from fl_gym.envs.uav.env import UAVSwarmEnvConfig
from fl_gym.envs.vehicular.env import VehicularURLLCConfig
from fl_gym.envs.wireless_fl.config import WirelessFLConfig
from fl_gym.sim.config import (
    ConfigTypeError,
    check_bool,
    check_choice,
    check_int,
    check_int_tuple,
    check_point,
    check_positive,
    check_real,
    check_rng,
    check_rows,
)
from fl_gym.sim.learning.federation import FederationConfig
from fl_gym.sim.radio.cell import WirelessConfig
from fl_gym.sim.uav.swarm import UAVSwarmConfig
from fl_gym.sim.vehicular.system import VehicularConfig

CONFIGS = [
    WirelessFLConfig,
    FederationConfig,
    WirelessConfig,
    VehicularConfig,
    VehicularURLLCConfig,
    UAVSwarmConfig,
    UAVSwarmEnvConfig,
    MeanFieldConfig,
]

BAD_INT = ["many", 2.5, True, -(10**9), None]
BAD_REAL = ["high", math.nan, math.inf, -math.inf, True, None]
BAD_CHOICE = ["no-such-choice", 3, None]
BAD_FLAG = ["yes", 1, None]
BAD_TUPLE = ["abc", 5, None]
BAD_NESTED = [5, "config", {"a": 1}]


def _bad_values(default: Any) -> list[Any]:
    if isinstance(default, bool):
        return BAD_FLAG
    if isinstance(default, int):
        return BAD_INT
    if isinstance(default, float):
        return BAD_REAL
    if isinstance(default, str):
        return BAD_CHOICE
    if isinstance(default, tuple):
        return BAD_TUPLE
    if dataclasses.is_dataclass(default):
        return BAD_NESTED
    raise AssertionError(f"no bad values for a default of type {type(default).__name__}")


def _cases() -> list[Any]:
    cases = []
    for cls in CONFIGS:
        default = cls()
        for f in dataclasses.fields(cls):
            value = getattr(default, f.name)
            for bad in _bad_values(value):
                cases.append(pytest.param(cls, f.name, bad, id=f"{cls.__name__}.{f.name}={bad!r}"))
    return cases


@pytest.mark.parametrize(("cls", "name", "bad"), _cases())
def test_every_config_field_rejects_a_bad_value_naming_the_field(
    cls: type, name: str, bad: Any
) -> None:
    with pytest.raises((TypeError, ValueError)) as info:
        cls(**{name: bad})
    message = str(info.value)
    assert name in message, message
    assert repr(bad) in message or str(bad) in message, message


def test_every_config_has_cases() -> None:
    """The table covers every field of every config (a new field kind needs bad values)."""
    for cls in CONFIGS:
        for f in dataclasses.fields(cls):
            assert _bad_values(getattr(cls(), f.name))


@pytest.mark.parametrize("cls", CONFIGS)
def test_defaults_are_valid_and_numpy_scalars_are_accepted(cls: type) -> None:
    default = cls()
    numpy_scalars = {
        f.name: (np.int64 if isinstance(v, int) else np.float64)(v)
        for f in dataclasses.fields(cls)
        if isinstance(v := getattr(default, f.name), (int, float)) and not isinstance(v, bool)
    }
    assert cls(**numpy_scalars) == default


# -- the validators themselves -------------------------------------------------------------------


def test_check_int_messages_and_types() -> None:
    assert check_int("n", np.int32(3), minimum=1) == 3
    assert type(check_int("n", np.int32(3))) is int
    with pytest.raises(ValueError, match=r"^n must be an integer >= 1, got 0$"):
        check_int("n", 0, minimum=1)
    with pytest.raises(ValueError, match=r"^n must be an integer in \[1, 5\], got 6$"):
        check_int("n", 6, minimum=1, maximum=5)
    with pytest.raises(ValueError, match=r"^n must be an integer <= 5, got 6$"):
        check_int("n", 6, maximum=5)
    for wrong in (2.0, True, np.bool_(True), "3", None):
        with pytest.raises(ConfigTypeError, match=r"^n must be an integer >= 1, got "):
            check_int("n", wrong, minimum=1)
    # A wrong type is both a TypeError and a ValueError.
    assert issubclass(ConfigTypeError, TypeError) and issubclass(ConfigTypeError, ValueError)


def test_check_real_bounds() -> None:
    assert check_real("x", 0.5, low=0.0, high=1.0, low_open=True) == 0.5
    assert check_real("x", 1, low=0.0, high=1.0) == 1.0
    cases = [
        (dict(low=0.0, high=1.0, low_open=True), 0.0, r"in \(0, 1\], got 0\.0"),
        (dict(low=0.0, high=0.5, high_open=True), 0.5, r"in \[0, 0\.5\), got 0\.5"),
        (dict(low=0.0), -1.0, r">= 0, got -1\.0"),
        (dict(low=0.0, low_open=True), 0.0, r"> 0, got 0\.0"),
        (dict(high=3.0, high_open=True), 3.0, r"< 3, got 3\.0"),
        (dict(high=1e9), 2e9, r"<= 1e\+09, got 2000000000\.0"),
        ({}, math.nan, r", got nan"),
        ({}, -math.inf, r", got -inf"),
    ]
    for kwargs, value, pattern in cases:
        with pytest.raises(ValueError, match=r"^x must be a finite number.*" + pattern + "$"):
            check_real("x", value, **kwargs)
    with pytest.raises(ConfigTypeError, match="x must be a finite number > 0, got 'a'"):
        check_positive("x", "a")
    assert check_positive("x", 0, allow_zero=True) == 0.0


def test_choice_bool_tuple_point_rng() -> None:
    assert check_choice("mode", "a", ("a", "b")) == "a"
    with pytest.raises(ValueError, match=r"^mode must be one of \['a', 'b'\], got 'c'$"):
        check_choice("mode", "c", ("a", "b"))
    with pytest.raises(ValueError, match=r"mode must be one of .*got \['a'\]"):
        check_choice("mode", ["a"], ("a", "b"))  # unhashable: not a choice
    assert check_bool("flag", np.bool_(False)) is False
    with pytest.raises(ConfigTypeError, match=r"^flag must be True or False, got 1$"):
        check_bool("flag", 1)
    assert check_int_tuple("steps", [1, np.int64(2)], distinct=True) == (1, 2)
    for bad in ((1, 1), (), (0, 1), (1.5,), "12", np.zeros((1, 1), dtype=int)):
        with pytest.raises(ValueError, match=r"steps must be a non-empty tuple of distinct"):
            check_int_tuple("steps", bad, distinct=True)
    assert check_int_tuple("hidden", (), nonempty=False) == ()
    assert check_point("p", [1, 2.5]) == (1.0, 2.5)
    with pytest.raises(ValueError, match=r"p must be two finite numbers \(x_m, y_m\), got"):
        check_point("p", (1.0, math.nan))
    rng = np.random.default_rng(0)
    assert check_rng(rng) is rng
    with pytest.raises(TypeError, match=r"^rng must be a numpy\.random\.Generator .*got int$"):
        check_rng(3)
    with pytest.raises(TypeError, match=r"^f needs rng=numpy\.random\.Generator"):
        check_rng(None, "f")


def test_check_rows_names_what_is_wrong() -> None:
    rows = torch.zeros(3, 4)
    assert check_rows("updates", rows) is rows
    assert check_rows("updates", torch.zeros(0, 4)).shape == (0, 4)  # an empty round
    with pytest.raises(TypeError, match=r"updates must be a torch\.Tensor of shape \(K, d\)"):
        check_rows("updates", np.zeros((3, 4)))
    with pytest.raises(TypeError, match=r"floating-point tensor, got dtype torch\.int64"):
        check_rows("updates", torch.zeros(3, 4, dtype=torch.int64))
    for shape in [(4,), (3, 0), (2, 2, 2)]:
        with pytest.raises(ValueError, match=rf"got shape {re.escape(str(shape))}"):
            check_rows("updates", torch.zeros(shape))
    with pytest.raises(ValueError, match=r"K >= 1, got shape \(0, 4\)"):
        check_rows("updates", torch.zeros(0, 4), min_rows=1)
    assert check_rows("updates", torch.zeros(2, 0), min_width=0).shape == (2, 0)
    bad = torch.zeros(4, 3)
    bad[1, 0], bad[3, 2] = math.nan, -math.inf
    assert check_rows("updates", bad) is bad  # non-finite rows pass unless finite=True
    with pytest.raises(ValueError, match=r"updates must be finite; rows \[1, 3\] hold NaN or inf"):
        check_rows("updates", bad, finite=True)
