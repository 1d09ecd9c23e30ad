"""Plausible ranges and size limits of every configuration field.

Property test: for every numeric field of every family's configuration (the field's ``RANGES``
entry), a value drawn within the documented range or at its edges, set alone on small
defaults, builds an environment whose observations and rewards stay finite over a few steps
(the mean-field controller's actions too). Explicit tests: the sizes that once stalled or failed
deep in numpy or torch are refused at construction, with a message naming the value, the
estimate and the limit.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

import fl_gym  # noqa: F401  (registers the environments)
from fl_gym.baselines.mean_field import MeanFieldConfig
from fl_gym.baselines.uav import MeanFieldController
from fl_gym.envs import uav_swarm_v0
from fl_gym.envs.uav.env import UAVSwarmEnvConfig, make_uav_env_config
from fl_gym.envs.vehicular.env import VehicularURLLCConfig, make_urllc_config
from fl_gym.envs.wireless_fl.config import WirelessFLConfig, make_config
from fl_gym.sim.config import (
    MAX_BATCH_SIZE,
    MAX_DEVICES,
    MAX_LOCAL_STEPS,
    MEMORY_LIMIT_BYTES,
    Range,
    check_memory,
)
from fl_gym.sim.learning.data import make_federated_dataset, synthetic_fedprox
from fl_gym.sim.learning.federation import Federation, FederationConfig
from fl_gym.sim.radio.cell import WirelessConfig
from fl_gym.sim.uav.swarm import UAVSwarmConfig
from fl_gym.sim.vehicular.system import VehicularConfig

# Integer sizes are drawn up to this many (and their documented edge is checked by
# construction only), so that one case runs in milliseconds.
SMALL_SIZE = 6

WIRELESS_BASE: dict[str, Any] = {
    "num_devices": 4,
    "local_step_choices": (1, 2),
    "default_local_steps": 1,
    "learning.hidden_units": (8,),
    "wireless.num_subchannels": 2,
}
VEHICULAR_BASE: dict[str, Any] = {"num_pairs": 3, "num_resource_blocks": 2}
UAV_BASE: dict[str, Any] = {"num_uavs": 4}

FAMILIES: dict[str, tuple[tuple[str, type], ...]] = {
    "wireless_fl": (
        ("", WirelessFLConfig),
        ("learning.", FederationConfig),
        ("wireless.", WirelessConfig),
    ),
    "vehicular": (("", VehicularURLLCConfig), ("system.", VehicularConfig)),
    "uav": (("", UAVSwarmEnvConfig), ("swarm.", UAVSwarmConfig)),
    "mean_field": (("", MeanFieldConfig),),
}


def _fields(family: str) -> list[tuple[str, Range]]:
    return [
        (prefix + name, allowed)
        for prefix, cls in FAMILIES[family]
        for name, allowed in cls.RANGES.items()
    ]


def _edges(allowed: Range) -> list[float]:
    low, high = allowed.low, allowed.high
    assert low is not None and high is not None, "every documented range is bounded"
    if allowed.integer:
        return [int(low), int(high)]
    first = math.nextafter(low, math.inf) if allowed.low_open else low
    last = math.nextafter(high, -math.inf) if allowed.high_open else high
    return [first, last]


def _values(allowed: Range, small: bool) -> st.SearchStrategy[Any]:
    low, high = _edges(allowed)
    if allowed.integer:
        top = min(high, max(low, SMALL_SIZE)) if small else high
        return st.sampled_from(sorted({low, top})) | st.integers(low, top)
    inside = st.floats(
        low,
        high,
        exclude_min=allowed.low_open,
        exclude_max=allowed.high_open,
        allow_nan=False,
        allow_infinity=False,
    )
    return st.sampled_from([low, high]) | inside


def _one_field(family: str, small: bool = True) -> st.SearchStrategy[tuple[str, Any]]:
    fields = _fields(family)
    return st.sampled_from(fields).flatmap(
        lambda item: st.tuples(st.just(item[0]), _values(item[1], small))
    )


def _finite(value: Any) -> bool:
    if isinstance(value, Mapping):
        return all(_finite(v) for v in value.values())
    return bool(np.all(np.isfinite(np.asarray(value, dtype=np.float64))))


class Refused(Exception):
    """A rule between fields refused the combination (e.g. ``cpu_min_hz <= cpu_max_hz``)."""


def _refusing(build):
    def wrapped(overrides: dict[str, Any]) -> Any:
        try:
            return build(overrides)
        except ValueError as exc:
            raise Refused(str(exc)) from exc

    return wrapped


# Fields that act only in a mode are exercised in it.
_WIRELESS_MODE = {
    "synthetic_alpha": {"dataset": "synthetic", "learning.model": "logreg"},
    "synthetic_beta": {"dataset": "synthetic", "learning.model": "logreg"},
    "dirichlet_alpha": {"partition": "dirichlet"},
    "learning.trim_ratio": {"learning.aggregator": "trimmed_mean"},
    "wireless.edge_inner_radius_m": {"wireless.edge_fraction": 0.5},
}
_PDE_FIELDS = {
    "hjb_pde_learning_rate",
    "fpk_pde_learning_rate",
    "energy_weight",
    "collision_weight",
    "discount_per_s",
    "fpk_diffusion_m2_s",
    "fpk_residual_weight",
    "collocation_points",
    "collocation_horizon_s",
    "collocation_spread_m",
    "collocation_speed_spread_mps",
    "max_grad_norm",
    "pde_iterations",
}


def _with_mode(overrides: dict[str, Any]) -> dict[str, Any]:
    (key,) = overrides
    return {**_WIRELESS_MODE.get(key, {}), **overrides}


BUILDERS = {
    "wireless_fl": lambda o: make_config(None, {**WIRELESS_BASE, **_with_mode(o)}),
    "vehicular": lambda o: make_urllc_config(None, {**VEHICULAR_BASE, **o}),
    "uav": lambda o: make_uav_env_config(None, {**UAV_BASE, **o}),
    "mean_field": lambda o: MeanFieldConfig(
        **({"training": "pde"} if set(o) & _PDE_FIELDS else {}), **o
    ),
}


# -- running one case per family -----------------------------------------------------------------


def _wireless_case(key: str, value: Any) -> None:
    config = _refusing(BUILDERS["wireless_fl"])({key: value})
    env = gym.make("fl_gym/WirelessFL-v0", config=config)
    env.action_space.seed(0)
    obs, _ = env.reset(seed=0)
    assert _finite(obs), (key, value, obs)
    for _ in range(2):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert _finite(obs) and math.isfinite(reward), (key, value, obs, reward)
        if terminated or truncated:
            break
    env.close()


def _vehicular_case(key: str, value: Any) -> None:
    config = _refusing(BUILDERS["vehicular"])({key: value})
    env = gym.make("fl_gym/VehicularURLLC-v1", config=config)
    env.action_space.seed(0)
    obs, _ = env.reset(seed=0)
    assert _finite(obs), (key, value, obs)
    for _ in range(3):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert _finite(obs) and math.isfinite(reward), (key, value, obs, reward)
        if terminated or truncated:
            break
    env.close()


def _uav_rollout(config: UAVSwarmEnvConfig, mean_field: MeanFieldConfig | None) -> None:
    env = uav_swarm_v0.parallel_env(config=config)
    obs, _ = env.reset(seed=0)
    assert _finite(obs)
    rng = np.random.default_rng(0)
    controller = None
    if mean_field is not None:
        controller = MeanFieldController(config.swarm, mean_field)
        controller.reset(0)
    for _ in range(3):
        if not env.agents:
            break
        if controller is None:
            actions = {a: rng.uniform(-1, 1, 2).astype(np.float32) for a in env.agents}
        else:
            actions, _ = controller.predict(obs)
            assert _finite(actions), actions
        obs, rewards, _, _, _ = env.step(actions)
        assert _finite(obs) and _finite(rewards), (obs, rewards)
    env.close()


def _uav_case(key: str, value: Any) -> None:
    config = _refusing(BUILDERS["uav"])({key: value})
    _uav_rollout(config, None)


def _mean_field_case(key: str, value: Any) -> None:
    mean_field = _refusing(BUILDERS["mean_field"])({key: value})
    _uav_rollout(make_uav_env_config(None, UAV_BASE), mean_field)


CASES = {
    "wireless_fl": _wireless_case,
    "vehicular": _vehicular_case,
    "uav": _uav_case,
    "mean_field": _mean_field_case,
}

_SETTINGS = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.filter_too_much, HealthCheck.too_slow],
}
ALL_FIELDS = [(family, key) for family in sorted(CASES) for key, _ in _fields(family)]


def _range_of(family: str, key: str) -> Range:
    return dict(_fields(family))[key]


@pytest.mark.parametrize(("family", "key"), ALL_FIELDS)
def test_both_edges_of_every_range_keep_observations_and_rewards_finite(family, key) -> None:
    allowed = _range_of(family, key)
    for value in _edges(allowed):
        if allowed.integer and value > SMALL_SIZE:
            continue  # a large size's edge: construction only, in the test below
        try:
            CASES[family](key, value)
        except Refused as exc:
            # A rule between fields or a memory estimate may refuse a value in range; the
            # field's own range may not.
            assert f"{key.split('.')[-1]} must be a finite number in" not in str(exc), exc
            assert f"{key.split('.')[-1]} must be an integer in" not in str(exc), exc


@pytest.mark.parametrize(("family", "key"), ALL_FIELDS)
def test_largest_size_is_accepted_or_refused_by_a_memory_estimate(family, key) -> None:
    allowed = _range_of(family, key)
    if not allowed.integer:
        return
    high = _edges(allowed)[1]
    try:
        BUILDERS[family]({key: high})
    except ValueError as exc:
        # Accepted alone unless the memory it scales is estimated above the limit, or a rule
        # between fields refuses it (e.g. more UAVs than lattice sites of the source disc).
        assert "estimated" in str(exc) or key not in str(exc).split(" must ")[0], exc


@pytest.mark.parametrize(("family", "key"), ALL_FIELDS)
def test_every_field_within_its_range_keeps_observations_and_rewards_finite(family, key) -> None:
    @settings(max_examples=3, **_SETTINGS)
    @given(_values(_range_of(family, key), small=True))
    def check(value: Any) -> None:
        try:
            CASES[family](key, value)
        except Refused:
            reject()

    check()


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(CASES))
def test_every_field_within_its_range_keeps_observations_and_rewards_finite_exhaustive(
    family,
) -> None:
    @settings(max_examples=400, **_SETTINGS)
    @given(_one_field(family))
    def check(item: tuple[str, Any]) -> None:
        try:
            CASES[family](*item)
        except Refused:
            reject()

    check()


# -- the sizes that once stalled or failed deep in numpy / torch ---------------------------------

_LIMIT = r"limit of 8 GiB \(fl_gym\.sim\.config\.MEMORY_LIMIT_BYTES\)"


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"num_devices": 10**7}, rf"num_devices must be an integer in \[1, {MAX_DEVICES}\]"),
        ({"num_devices": 10**9}, rf"num_devices must be an integer in \[1, {MAX_DEVICES}\]"),
        (
            {"dataset": "synthetic", "num_devices": 10**5},
            rf"num_devices x model parameters=\(100000, 4554\) needs an estimated 20\.4 GiB .*"
            rf"{_LIMIT}",
        ),
        (
            {"dataset": "synthetic", "num_devices": 10**4, "learning.model": "logreg"},
            rf"num_devices=10000 needs an estimated 12\.2 GiB for the synthetic data set .*"
            rf"{_LIMIT}",
        ),
        ({"batch_size": 10**9}, rf"batch_size must be an integer in \[1, {MAX_BATCH_SIZE}\]"),
        (
            {"batch_size": 60_000, "num_devices": 1_000},
            rf"num_devices x local_steps x batch_size=\(1000, 20, 60000\) needs an estimated "
            rf"51\.9 GiB .*{_LIMIT}",
        ),
        (
            {"local_step_choices": (10**7, 1)},
            rf"local_step_choices must hold integers in \[1, {MAX_LOCAL_STEPS}\] "
            r".*got \(10000000, 1\)",
        ),
        (
            {"hidden_units": (10**5, 10**5)},
            r"hidden_units must hold at most 16 widths in \[1, 4096\]",
        ),
        (
            {"cpu_max_hz": 1e308},
            r"cpu_max_hz must be a finite number in \[1000, 1e\+12\], got 1e\+308",
        ),
        ({"cell_radius_m": 1e308}, r"cell_radius_m must be a finite number in \(0, 100000\]"),
        ({"learning_rate": 1e308}, r"learning_rate must be a finite number in \(0, 1e\+38\]"),
    ],
)
def test_wireless_fl_sizes_and_absurd_values_are_refused_at_make(overrides, match) -> None:
    with pytest.raises(ValueError, match=match):
        gym.make("fl_gym/WirelessFL-v0", config=overrides)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (
            {"energy_weight_per_m2_s3": 1e308},
            r"energy_weight_per_m2_s3 must be a finite number in \[0, 1e\+06\]",
        ),
        ({"time_step_s": 1e308}, r"time_step_s must be a finite number in \[0\.0001, 10\]"),
        ({"max_speed_mps": 1e308}, r"max_speed_mps must be a finite number in \[0\.001, 1e\+06\]"),
        (
            {"collision_distance_m": 1e308},
            r"collision_distance_m must be a finite number in \(0, 1000\]",
        ),
        ({"density_cell_m": 1e308}, r"density_cell_m must be a finite number in \[0\.01, 10000\]"),
        ({"max_accel_mps2": 1e308}, r"max_accel_mps2 must be a finite number in \[0\.001, 100\]"),
        ({"num_uavs": 10**9}, r"num_uavs must be an integer in \[1, 100000\]"),
        (
            {"source_radius_m": 1e5, "initial_spacing_m": 1e-3},
            rf"source_radius_m / initial_spacing_m=\(100000\.0, 0\.001\) needs an estimated .*"
            rf"lattice sites, above the {_LIMIT}",
        ),
    ],
)
def test_uav_absurd_values_are_refused_at_construction(overrides, match) -> None:
    with pytest.raises(ValueError, match=match):
        uav_swarm_v0.parallel_env(config=overrides)


def test_vehicular_pairs_are_refused_by_their_limit_and_memory_estimate() -> None:
    with pytest.raises(ValueError, match=r"num_pairs must be an integer in \[1, 10000\]"):
        gym.make("fl_gym/VehicularURLLC-v1", config={"num_pairs": 10**5})
    with pytest.raises(
        ValueError,
        match=rf"num_pairs=9000 needs an estimated 9\.66 GiB for the \(K, K\) link arrays, "
        rf".*{_LIMIT}",
    ):
        gym.make("fl_gym/VehicularURLLC-v1", config={"num_pairs": 9_000})
    with pytest.raises(ValueError, match=r"num_pairs x tail_buffer_size=\(5000, 1000000\)"):
        gym.make("fl_gym/VehicularURLLC-v1", config={"num_pairs": 5_000, "tail_buffer_size": 10**6})


def _digits_federation(**config: Any) -> Federation:
    rng = np.random.default_rng(0)
    data = make_federated_dataset("digits", 10, rng=rng)
    return Federation(data, FederationConfig(**config), rng=rng)


def test_plan_refuses_local_steps_beyond_the_limit_before_running() -> None:
    fed = _digits_federation()
    with pytest.raises(
        ValueError, match=rf"local_steps must be integers in \[1, {MAX_LOCAL_STEPS}\]"
    ):
        fed.plan(local_steps=10**9)
    with pytest.raises(
        ValueError, match=rf"local_steps must be integers in \[1, {MAX_LOCAL_STEPS}\]"
    ):
        fed.plan(local_steps=np.full(10, 10**9))
    big = _digits_federation(batch_size=MAX_BATCH_SIZE)
    with pytest.raises(
        ValueError,
        match=r"num_devices x local_steps x batch_size=\(10, 10000, 65536\) needs an estimated "
        rf"49\.3 GiB for one round's minibatch indices and activations, above the {_LIMIT}",
    ):
        big.plan(local_steps=MAX_LOCAL_STEPS)
    # Within the limits the plan is built as before.
    assert fed.plan(local_steps=MAX_LOCAL_STEPS).local_steps.max() == MAX_LOCAL_STEPS


def test_synthetic_data_is_refused_once_its_drawn_size_is_known() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"num_users must be an integer in \[1, 100000\]"):
        synthetic_fedprox(1.0, 1.0, num_users=10**9, rng=rng)
    with pytest.raises(
        ValueError,
        match=rf"num_users x samples x dimension=\(100000, \d+, 60\) needs an estimated .* for "
        rf"generating the synthetic data set, above the {_LIMIT}",
    ):
        synthetic_fedprox(1.0, 1.0, num_users=10**5, rng=rng)


def test_check_memory_names_value_estimate_and_limit() -> None:
    check_memory("n", 3, MEMORY_LIMIT_BYTES, "x")  # the limit itself is allowed
    with pytest.raises(ValueError) as info:
        check_memory("n", 3, MEMORY_LIMIT_BYTES + 2**30, "the things")
    assert str(info.value) == (
        "n=3 needs an estimated 9 GiB for the things, above the limit of 8 GiB "
        "(fl_gym.sim.config.MEMORY_LIMIT_BYTES); allowed: smaller sizes"
    )


# Numeric fields whose allowed values are another field's (a level index of
# learning.compression_levels).
_NOT_RANGED = {"default_compression"}


def test_every_numeric_field_of_every_config_has_a_documented_range() -> None:
    for family, parts in FAMILIES.items():
        for _, cls in parts:
            numeric = {
                f.name
                for f in dataclasses.fields(cls)
                if isinstance(getattr(cls(), f.name), (int, float))
                and not isinstance(getattr(cls(), f.name), bool)
            }
            numeric -= _NOT_RANGED
            assert numeric <= set(cls.RANGES), (family, cls.__name__, numeric - set(cls.RANGES))
            doc = " ".join((cls.__doc__ or "").split())
            starts = sorted(
                (doc.index(f" {f.name}: "), f.name)
                for f in dataclasses.fields(cls)
                if f" {f.name}: " in doc
            )
            entries = {
                name: doc[at : (starts[i + 1][0] if i + 1 < len(starts) else len(doc))]
                for i, (at, name) in enumerate(starts)
            }
            for name, allowed in cls.RANGES.items():
                entry = entries[name]
                assert f"in {allowed}" in entry.lower(), (cls.__name__, name, str(allowed), entry)
