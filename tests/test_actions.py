"""The one input policy for actions (fl_gym.envs.actions) and the hardening issue's raw errors.

Every family checks its actions through the same two functions, so the same bad action gets the
same words everywhere; integer checks read the values as given (no wrap-around through int64);
booleans are 0 / 1 in every space. Beside the actions: ``device=`` of the envs and the
federation, the federation's config type, the seed ranges of ``fl-gym eval`` / ``bench`` and
the thread-count independence of the over-the-air ``aggregation_mse``.
"""

from __future__ import annotations

import ast
import re
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import data_equivalence

import fl_gym
from fl_gym.agents.evaluation import MAX_SEEDS, parse_seeds
from fl_gym.envs import uav_swarm_v0, vehicular_v1
from fl_gym.envs.actions import check_box_action, check_discrete_action, show_action
from fl_gym.envs.vehicular.codec import VehicularCodec
from fl_gym.sim import Federation, FederationConfig, make_federated_dataset
from fl_gym.sim.learning.federation import check_torch_device
from fl_gym.sim.radio.over_the_air import ota_aggregate
from fl_gym.sim.threads import torch_threads

POLICY_WORDS = "allowed: numbers (bool, int, float or arrays of them), not strings, complex"
NOT_NUMBERS = [
    "0.5",
    b"1",
    None,
    0.5 + 1j,
    np.zeros(2, complex),
    np.zeros(2, object),
    [[0], [0, 1]],
]


@pytest.fixture(autouse=True)
def _warnings_are_errors() -> Any:
    # Checking an action must not warn (a cast of 1e300 to int64 raised a RuntimeWarning).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# -- the module --------------------------------------------------------------------------------


@pytest.mark.parametrize("action", NOT_NUMBERS, ids=repr)
def test_non_numbers_get_the_same_words_in_box_and_discrete(action: Any) -> None:
    with pytest.raises(TypeError) as box:
        check_box_action(action, (2,))
    with pytest.raises(TypeError) as discrete:
        check_discrete_action(action, (2,), 3)
    for message in (str(box.value), str(discrete.value)):
        assert POLICY_WORDS in message
        assert show_action(action) in message


@pytest.mark.parametrize(
    ("action", "shown"),
    [
        (1e300, "1e+300"),
        (2**63, "9223372036854775808"),
        (np.uint64(2**64 - 1), "18446744073709551615"),
        (10**30, "1000000000000000000000000000000"),
        (-(2**70), "-1180591620717411303424"),
        (np.int8(-1), "-1"),
        (5, "5"),
    ],
)
def test_discrete_range_errors_report_the_value_as_given(action: Any, shown: str) -> None:
    pattern = rf"^action must hold integers in 0\.\.4, got {re.escape(shown)}$"
    with pytest.raises(ValueError, match=pattern):
        check_discrete_action(action, (), 5)


def test_discrete_accepts_whole_numbers_and_bools_as_int64() -> None:
    assert check_discrete_action(np.array([True, False]), (2,), 2).tolist() == [1, 0]
    assert check_discrete_action(True, (), 2) == 1
    assert check_discrete_action(np.float32(3.0), (), 4) == 3
    assert check_discrete_action(-0.0, (), 4) == 0
    out = check_discrete_action(np.array([2, 0], np.uint64), (2,), np.array([3, 1]))
    assert out.dtype == np.int64 and out.tolist() == [2, 0]
    with pytest.raises(ValueError, match=r"whole numbers.*\[0\.5, nan\]"):
        check_discrete_action([0.5, np.nan], (2,), 3)
    with pytest.raises(ValueError, match=r"got \[0, 1\]$"):
        check_discrete_action([0, 1], (2,), np.array([3, 1]))
    with pytest.raises(ValueError, match=r"shape \(\), got shape \(1,\)"):
        check_discrete_action([0], (), 3)


def test_box_rejects_non_finite_and_passes_out_of_bounds_values() -> None:
    assert check_box_action([True, 0], (2,)).tolist() == [1.0, 0.0]
    assert check_box_action([10**30, -(10**30)], (2,)).tolist() == [1e30, -1e30]
    assert check_box_action(np.array([2**63], np.uint64), (1,)).tolist() == [2.0**63]
    with pytest.raises(ValueError, match=r"non-finite entries at \[1\]"):
        check_box_action([0.0, 10**400], (2,))
    with pytest.raises(ValueError, match=r"non-finite entries at \[0, 2\]"):
        check_box_action([np.nan, 0.0, -np.inf], (3,))
    with pytest.raises(ValueError, match=r"shape \(2,\), got shape \(1, 2\)"):
        check_box_action([[0.0, 0.0]], (2,))
    out = check_box_action(np.zeros(2, np.float32), (2,))
    assert out.dtype == np.float64


def test_show_action_cuts_long_representations() -> None:
    text = show_action(list(range(10_000)))
    assert len(text) <= 200 and text.endswith("...")


# -- every family through the module -----------------------------------------------------------


def _step_error(env: Any, action: Any) -> Exception:
    with pytest.raises((TypeError, ValueError)) as caught:
        env.step(action)
    return caught.value


def test_every_family_gives_the_same_type_error_text() -> None:
    """One string action, four families: the same policy sentence after the family's prefix."""
    box = gym.make("fl_gym/ClientSelection-v0")
    discrete = gym.make("fl_gym/AggregationFrequency-v0")
    vehicular = vehicular_v1.parallel_env(config={"num_pairs": 2})
    uav = uav_swarm_v0.parallel_env(config={"num_uavs": 2})
    for env in (box, discrete, vehicular, uav):
        env.reset(seed=0)
    errors = [
        _step_error(box, "0.5"),
        _step_error(discrete, "0.5"),
        _step_error(vehicular, {"pair_0": "0.5"}),
        _step_error(uav, {"uav_0": "0.5"}),
    ]
    for error in errors:
        assert isinstance(error, TypeError)
        assert str(error).endswith(
            "got '0.5' (a str); " + POLICY_WORDS + " numbers, None or other objects"
        )
    assert str(errors[2]).startswith("action of 'pair_0': ")
    assert str(errors[3]).startswith("action for 'uav_0': ")


def test_uav_rejects_what_it_used_to_parse() -> None:
    env = uav_swarm_v0.parallel_env(config={"num_uavs": 2})
    env.reset(seed=0)
    for bad in (["0.5", "0.5"], np.array([0.5 + 1j, 0.0]), np.array([0.1, 0.2], dtype=object)):
        assert isinstance(_step_error(env, {"uav_0": bad}), TypeError)


@pytest.mark.parametrize(
    ("env_id", "action", "plain"),
    [
        ("fl_gym/AggregationFrequency-v0", True, 1),
        ("fl_gym/AggregationFrequency-v0", np.bool_(False), 0),
        ("fl_gym/GradientCompression-v0", np.ones(10, bool), np.ones(10, np.int64)),
        ("fl_gym/ClientSelection-v0", np.ones(10, bool), np.ones(10, np.float32)),
        ("fl_gym/VehicularURLLC-v1", np.ones(40, bool), np.ones(40, np.int64)),
    ],
)
def test_bools_are_zero_and_one_everywhere(env_id: str, action: Any, plain: Any) -> None:
    env, twin = gym.make(env_id), gym.make(env_id)
    env.reset(seed=1)
    twin.reset(seed=1)
    assert data_equivalence(env.step(action), twin.step(plain), exact=True)


def test_huge_integers_are_reported_as_given_by_the_envs() -> None:
    env = gym.make("fl_gym/AggregationFrequency-v0")
    env.reset(seed=0)
    for action, shown in [(1e300, "1e+300"), (2**63, "9223372036854775808")]:
        assert str(_step_error(env, action)).endswith(f"got {shown}")
    assert str(_step_error(env, np.uint64(2**64 - 1))).endswith("got 18446744073709551615")
    codec = VehicularCodec(2, 6, 3)
    with pytest.raises(
        ValueError, match=r"resource blocks in 0\.\.2.*got \[0, 0, 9223372036854775808, 0\]"
    ):
        codec.check(np.array([0, 0, 2**63, 0], np.uint64))


def test_only_the_actions_module_reads_raw_actions() -> None:
    """The codecs, the UAV env and the vector env hold no array conversion of their own for
    actions: ``np.asarray(action ...)`` appears in fl_gym.envs.actions only."""
    root = Path(fl_gym.__file__).parent / "envs"
    offenders = []
    for path in root.rglob("*.py"):
        if path.name == "actions.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and ast.unparse(node.func) in {"np.asarray", "np.array"}
                and node.args
                and ast.unparse(node.args[0]) in {"action", "actions"}
            ):
                offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not offenders


# -- device, federation config, seeds ------------------------------------------------------------


def test_device_errors_name_the_value_and_what_is_allowed() -> None:
    assert check_torch_device("cpu") == torch.device("cpu")
    assert check_torch_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match=r"got 'bogus'"):
        check_torch_device("bogus")
    with pytest.raises(TypeError, match=r"got 5"):
        check_torch_device(5)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"device='cuda'.*is_available\(\) is False.*'cpu'"):
            check_torch_device("cuda")
        with pytest.raises(ValueError, match=r"device='cuda'"):
            gym.make("fl_gym/ClientSelection-v0", device="cuda")
    with pytest.raises(ValueError, match=r"'bogus'"):
        gym.make("fl_gym/OverTheAirFL-v0", device="bogus")


def test_federation_checks_its_config_and_device() -> None:
    rng = np.random.default_rng(0)
    data = make_federated_dataset("digits", 3, rng=rng)
    with pytest.raises(TypeError, match=r"config must be a FederationConfig or None, got 'x'"):
        Federation(data, "x", rng=rng)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"FederationConfig.*\{'model': 'mlp'\}"):
        Federation(data, {"model": "mlp"}, rng=rng)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'bogus'"):
        Federation(data, FederationConfig(), rng=rng, device="bogus")


def test_seed_ranges_are_bounded_before_they_are_listed() -> None:
    assert parse_seeds(f"0-{MAX_SEEDS - 1}") == list(range(MAX_SEEDS))
    assert parse_seeds("3,0-2,3") == [3, 0, 1, 2]
    with pytest.raises(ValueError, match=r"at most 100,000 seeds.*got 1,000,000,000,000"):
        parse_seeds("0-999999999999")
    with pytest.raises(ValueError, match=r"at most 100,000 seeds"):
        parse_seeds(f"0-{MAX_SEEDS // 2},{MAX_SEEDS}-{2 * MAX_SEEDS}")
    with pytest.raises(ValueError, match=r"at most 100,000 seeds"):
        parse_seeds(range(10**12))
    with pytest.raises(TypeError, match=r"got 1\.5"):
        parse_seeds([1, 1.5])


# -- over-the-air aggregation_mse ----------------------------------------------------------------


def test_ota_aggregate_mse_does_not_depend_on_torch_threads() -> None:
    rng = np.random.default_rng(0)
    updates = torch.as_tensor(rng.standard_normal((6, 200_003)), dtype=torch.float32)
    channels = rng.standard_normal((6, 2)) + 1j * rng.standard_normal((6, 2))
    results = []
    for threads in (1, 2):
        with torch_threads(threads):
            results.append(
                ota_aggregate(
                    updates,
                    np.arange(1.0, 7.0),
                    channels,
                    channels.sum(axis=0),
                    power_w=0.1,
                    noise_power_w=1e-9,
                    generator=torch.Generator().manual_seed(3),
                )
            )
    assert results[0].aggregate_mse == results[1].aggregate_mse
    # The closed form: scale^2 * mse / (2 (sum phi)^2), the scale the largest row RMS in float64.
    rows = updates.double().numpy()
    scale = float(np.sqrt(np.mean(rows * rows, axis=1)).max())
    expected = scale**2 * results[0].mse / (2.0 * 21.0**2)
    assert results[0].aggregate_mse == pytest.approx(expected, rel=1e-15)


def test_over_the_air_env_aggregation_mse_same_with_one_and_two_threads() -> None:
    values = []
    for threads in (1, 2):
        env = gym.make("fl_gym/OverTheAirFL-v0", num_threads=threads)
        env.reset(seed=4)
        env.action_space.seed(4)
        values.append([env.step(env.action_space.sample())[4]["aggregation_mse"] for _ in range(4)])
    assert values[0] == values[1]
    assert any(v > 0 for v in values[0])
