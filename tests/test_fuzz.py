"""Fuzzing of every user input: actions, configuration keys and the command line.

Each table below generates bad inputs (wrong types, shapes, NaN / infinities, huge integers,
booleans, strings, complex numbers, object arrays, nested lists, None, ...) and each case must be
*handled*: a ``TypeError`` / ``ValueError`` whose message names what was given (and, for a
config key, the key), or a documented acceptance (a Box action outside its bounds is clipped and
``info["action_clipped"]`` says so; booleans are 0 / 1, the policy of
:mod:`fl_gym.envs.actions`), never a raw numpy / torch / Python error; and the environment stays
usable (the next valid step gives exactly what a twin that never saw the bad input gives).

The default run plays every case of the action and CLI tables and every config key of every
family once (one environment per family, deterministic), and counts them against the figures of
the project's hardening issue: 245 bad actions, about 940 bad configs, 28 CLI cases. The
``slow`` tests sweep every config key on every environment of its family, and replay the
accepted action cases on the native vector env.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import data_equivalence

import fl_gym
from fl_gym.cli import main as cli_main
from fl_gym.envs.actions import show_action

SEED = 5
ISSUE_ACTION_CASES = 245
ISSUE_CONFIG_CASES = 940
ISSUE_CLI_CASES = 28

PARALLEL_KWARGS = {
    "fl_gym.envs.vehicular_v1": {"config": {"num_pairs": 4, "num_resource_blocks": 3}},
    "fl_gym.envs.uav_swarm_v0": {"config": {"num_uavs": 6}},
}
"""Small configurations of the PettingZoo environments (the actions' shapes do not change)."""

# -- actions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionCase:
    """A bad (or borderline) action and what must happen to it.

    Attributes:
        label: What the case tries.
        action: The action.
        outcome: ``"error"`` (a clear TypeError / ValueError), ``"clip"`` (accepted, clipped to
            the bounds and reported) or ``"valid"`` (accepted as the action ``equivalent``).
        equivalent: For accepted cases, the plain action the environment must treat it as.
    """

    label: str
    action: Any
    outcome: str
    equivalent: Any = None


def _type_cases(shape: tuple[int, ...]) -> list[ActionCase]:
    """Non-numbers: rejected by every space, with the one policy's TypeError."""
    size = int(np.prod(shape)) if shape else 1
    full = (lambda value, dtype=None: np.full(shape, value, dtype=dtype)) if shape else None
    cases = [
        ActionCase("string", "abc", "error"),
        ActionCase("numeric string", "0.5", "error"),
        ActionCase("bytes", b"1", "error"),
        ActionCase("None", None, "error"),
        ActionCase("dict", {"action": 0}, "error"),
        ActionCase("set", {0, 1}, "error"),
        ActionCase("object", object(), "error"),
        ActionCase("complex scalar", 0.5 + 1j, "error"),
        ActionCase("ragged list", [[0], [0, 1]], "error"),
        ActionCase("list of strings", ["0"] * size, "error"),
        ActionCase("list with None", [None] * size, "error"),
        ActionCase("datetime64", np.datetime64("2020-01-01"), "error"),
    ]
    if full is not None:
        cases += [
            ActionCase("complex array", full(0.5 + 1j), "error"),
            ActionCase("complex, zero imaginary", full(0, complex), "error"),
            ActionCase("object array of ints", full(0, object), "error"),
            ActionCase("string array", full("1"), "error"),
            ActionCase("timedelta array", full(1, "timedelta64[s]"), "error"),
        ]
    return cases


def _shape_cases(shape: tuple[int, ...], dtype: Any) -> list[ActionCase]:
    n = shape[0] if shape else 1
    cases = [
        ActionCase("one entry too many", np.zeros((n + 1,), dtype), "error"),
        ActionCase("extra axis", np.zeros((1, *shape), dtype), "error"),
        ActionCase("empty array", np.zeros((0,), dtype), "error"),
        ActionCase("nested one level deeper", [np.zeros(shape, dtype).tolist()], "error"),
    ]
    if shape:
        cases += [ActionCase("scalar", dtype(0), "error")]
        if n > 1:
            cases += [ActionCase("one entry too few", np.zeros((n - 1,), dtype), "error")]
    else:
        cases += [ActionCase("shape (1,)", np.zeros(1, dtype), "error")]
    return cases


def box_cases(space: spaces.Box) -> list[ActionCase]:
    """Bad and borderline actions of a ``Box(-1, 1)`` space."""
    shape = space.shape
    low = np.full(shape, -1.0, np.float32)
    high = np.full(shape, 1.0, np.float32)
    one_nan = np.zeros(shape)
    one_nan.flat[0] = np.nan
    one_inf = np.zeros(shape)
    one_inf.flat[-1] = -np.inf
    huge_python = [10**30] * shape[0] if len(shape) == 1 else np.full(shape, 10**30).tolist()
    beyond_float = [10**400] * shape[0] if len(shape) == 1 else None
    cases = _type_cases(shape) + _shape_cases(shape, np.float32)
    cases += [
        ActionCase("all NaN", np.full(shape, np.nan), "error"),
        ActionCase("one NaN", one_nan, "error"),
        ActionCase("+inf", np.full(shape, np.inf, np.float32), "error"),
        ActionCase("one -inf", one_inf, "error"),
        ActionCase("1e300", np.full(shape, 1e300), "clip", high),
        ActionCase("-1e300", np.full(shape, -1e300), "clip", low),
        ActionCase("2 as float32", np.full(shape, 2.0, np.float32), "clip", high),
        ActionCase("2**63 as uint64", np.full(shape, 2**63, np.uint64), "clip", high),
        ActionCase("uint64 max", np.full(shape, 2**64 - 1, np.uint64), "clip", high),
        ActionCase("int8 minimum", np.full(shape, -128, np.int8), "clip", low),
        ActionCase("Python ints beyond int64", huge_python, "clip", high),
        ActionCase(
            "float16 max", np.full(shape, np.finfo(np.float16).max, np.float16), "clip", high
        ),
        ActionCase("bools (True is 1)", np.ones(shape, bool), "valid", high),
        ActionCase(
            "bools (False is 0)", np.zeros(shape, bool), "valid", np.zeros(shape, np.float32)
        ),
        ActionCase(
            "ints in range", np.zeros(shape, np.int64), "valid", np.zeros(shape, np.float32)
        ),
        ActionCase(
            "float64 in range", np.full(shape, -0.25), "valid", np.full(shape, -0.25, np.float32)
        ),
    ]
    if beyond_float is not None:
        cases.append(ActionCase("Python ints beyond float64", beyond_float, "error"))
    return cases


def discrete_cases(space: spaces.Discrete | spaces.MultiDiscrete) -> list[ActionCase]:
    """Bad and borderline actions of a Discrete or MultiDiscrete space."""
    if isinstance(space, spaces.Discrete):
        shape: tuple[int, ...] = ()
        top = int(space.n)
    else:
        shape = space.shape
        top = int(np.max(space.nvec))

    def full(value: Any, dtype: Any = None) -> Any:
        return np.full(shape, value, dtype=dtype) if shape else (dtype(value) if dtype else value)

    def one(value: Any) -> Any:
        if not shape:
            return value
        arr = np.zeros(shape, dtype=np.asarray(value).dtype)
        arr.flat[-1] = value
        return arr

    zeros = np.zeros(shape, np.int64) if shape else 0
    ones = np.ones(shape, np.int64) if shape else 1
    huge_python = full(10**30).tolist() if shape else 10**30
    cases = _type_cases(shape) + _shape_cases(shape, np.int64)
    cases += [
        ActionCase("NaN", full(np.nan), "error"),
        ActionCase("inf", one(np.inf), "error"),
        ActionCase("-inf", one(-np.inf), "error"),
        ActionCase("1e300", one(1e300), "error"),
        ActionCase("2**63", full(2**63, np.uint64), "error"),
        ActionCase("uint64 max", one(np.uint64(2**64 - 1)), "error"),
        ActionCase("Python int beyond 64 bits", huge_python, "error"),
        ActionCase("-1", one(-1), "error"),
        ActionCase("int8 -1", one(np.int8(-1)), "error"),
        ActionCase("the upper bound", one(top) if not shape else np.asarray(space.nvec), "error"),
        ActionCase("0.5", one(0.5), "error"),
        ActionCase("whole float", full(1.0), "valid", ones),
        ActionCase("-0.0", full(-0.0), "valid", zeros),
        ActionCase("float32 whole", full(1.0, np.float32), "valid", ones),
        ActionCase("uint8", full(1, np.uint8), "valid", ones),
        ActionCase("bool True is 1", full(True, np.bool_), "valid", ones),
        ActionCase("bool False is 0", full(False, np.bool_), "valid", zeros),
    ]
    if not shape:
        cases += [ActionCase("Python True", True, "valid", 1)]
    return cases


def action_cases(space: spaces.Space) -> list[ActionCase]:
    """The action table of ``space``."""
    if isinstance(space, spaces.Box):
        return box_cases(space)
    return discrete_cases(space)


def _message_names(message: str, case: ActionCase) -> bool:
    """Whether an action error says what was wrong with the value given (its repr, its shape,
    the positions of non-finite entries, or the values as given)."""
    if "action" not in message:
        return False
    shown = show_action(case.action)
    return shown[:40] in message or "got" in message or "non-finite" in message


def _check_action_error(exc: Exception, case: ActionCase, where: str) -> None:
    assert isinstance(exc, (TypeError, ValueError)), (
        f"{where}, {case.label}: raw {type(exc).__name__}: {exc}"
    )
    message = str(exc)
    assert _message_names(message, case), f"{where}, {case.label}: unclear message {message!r}"
    assert "\n" not in message, f"{where}, {case.label}: message of several lines {message!r}"
    if case.outcome == "error" and isinstance(exc, TypeError):
        # Not numbers: the one policy's words, the same in every family.
        assert "allowed: numbers" in message or "shape" in message, (where, case.label, message)


def _reset_both(env: Any, twin: Any) -> None:
    env.reset(seed=SEED)
    twin.reset(seed=SEED)


def fuzz_gymnasium_actions(env_id: str) -> int:
    """Every action case on ``env_id``; returns the number of cases tried."""
    env, twin = gym.make(env_id), gym.make(env_id)
    _reset_both(env, twin)
    space = env.action_space
    space.seed(SEED)
    cases = action_cases(space)
    for case in cases:
        where = env_id
        try:
            out = env.step(case.action)
        except Exception as exc:
            assert case.outcome == "error", f"{where}, {case.label}: rejected: {exc!r}"
            _check_action_error(exc, case, where)
        else:
            assert case.outcome != "error", f"{where}, {case.label}: accepted {case.action!r}"
            expected = twin.step(case.equivalent)
            info, twin_info = dict(out[4]), dict(expected[4])
            if "action_clipped" in info:
                assert info.pop("action_clipped") is (case.outcome == "clip"), (where, case.label)
                twin_info.pop("action_clipped")
            assert data_equivalence((*out[:4], info), (*expected[:4], twin_info), exact=True), (
                f"{where}, {case.label}: not the same step as {case.equivalent!r}"
            )
            if out[2] or out[3]:
                _reset_both(env, twin)
        valid = space.sample()
        mine, theirs = env.step(valid), twin.step(valid)
        assert data_equivalence(mine, theirs, exact=True), f"{where}: state changed by {case.label}"
        if mine[2] or mine[3]:
            _reset_both(env, twin)
    env.close()
    twin.close()
    return len(cases)


def _parallel_env(module_name: str) -> Any:
    module = importlib.import_module(module_name)
    return module.parallel_env(**PARALLEL_KWARGS[module_name])


def fuzz_parallel_actions(module_name: str) -> int:
    """Every action case for one agent of a PettingZoo env, the others acting validly, and the
    container cases (not a dict, unknown agents); returns the number of cases tried."""
    env, twin = _parallel_env(module_name), _parallel_env(module_name)
    _reset_both(env, twin)
    agent = env.agents[0]
    space = env.action_space(agent)
    space.seed(SEED)
    rng = np.random.default_rng(SEED)

    def valid_actions() -> dict[str, Any]:
        agent_space = env.action_space(agent)
        if isinstance(agent_space, spaces.Box):
            return {a: rng.uniform(-1, 1, agent_space.shape).astype(np.float32) for a in env.agents}
        return {a: rng.integers(0, agent_space.nvec) for a in env.agents}

    containers = [
        ActionCase("list of actions", [space.sample()], "error"),
        ActionCase("None", None, "error"),
        ActionCase("unknown agent", {"agent_999": space.sample()}, "error"),
        ActionCase("non-string agent", {3: space.sample()}, "error"),
    ]
    cases = action_cases(space)
    for case in [*cases, *containers]:
        where = module_name
        base = valid_actions()
        actions = case.action if case in containers else {**base, agent: case.action}
        try:
            out = env.step(actions)
        except Exception as exc:
            assert case.outcome == "error", f"{where}, {case.label}: rejected: {exc!r}"
            assert isinstance(exc, (TypeError, ValueError)), f"{where}, {case.label}: {exc!r}"
            if case not in containers:
                assert repr(agent) in str(exc), f"{where}, {case.label}: agent not named: {exc}"
                _check_action_error(exc, case, where)
        else:
            assert case.outcome != "error", f"{where}, {case.label}: accepted {case.action!r}"
            expected = twin.step({**base, agent: case.equivalent})
            assert data_equivalence(out, expected, exact=True), f"{where}, {case.label}"
            if not env.agents:
                _reset_both(env, twin)
        valid = valid_actions()
        assert data_equivalence(env.step(valid), twin.step(valid), exact=True), (
            f"{where}: state changed by {case.label}"
        )
        if not env.agents:
            _reset_both(env, twin)
    return len(cases) + len(containers)


def test_bad_actions_every_env() -> None:
    """Every registered env and both PettingZoo envs: at least the issue's 245 cases."""
    counts = {env_id: fuzz_gymnasium_actions(env_id) for env_id in fl_gym.ENV_IDS}
    counts.update({name: fuzz_parallel_actions(name) for name in PARALLEL_KWARGS})
    assert set(counts) >= {*fl_gym.ENV_IDS, *PARALLEL_KWARGS}
    assert sum(counts.values()) >= ISSUE_ACTION_CASES, counts


@pytest.mark.slow
def test_bad_actions_native_vector_env() -> None:
    """The native vector env splits the batch and checks each env's action by the same policy:
    a bad action in any row is rejected naming its environment and moves nothing."""
    for env_id in ("fl_gym/WirelessFL-v0", "fl_gym/GradientCompression-v0"):
        vec = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point")
        twin = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point")
        vec.reset(seed=SEED)
        twin.reset(seed=SEED)
        single = vec.single_action_space
        single.seed(SEED)
        tried = 0
        for case in action_cases(single):
            if case.outcome != "error":
                continue
            good = single.sample()
            with pytest.raises((TypeError, ValueError), match=r"environment 1|actions must"):
                vec.step([good, case.action])
            tried += 1
            # A valid batch steps both alike; an env whose episode just ended ignores its next
            # action (autoreset), so step on until none is pending.
            pending = True
            while pending:
                batch = vec.action_space.sample()
                mine = vec.step(batch)
                assert data_equivalence(mine, twin.step(batch), exact=True), case.label
                pending = bool(np.any(mine[2] | mine[3]))
        assert tried >= 20


# -- configs -----------------------------------------------------------------------------------

MUST_FAIL = "must fail"
MAY_PASS = "may pass"


def _bad_values(default: Any) -> list[tuple[Any, str]]:
    """Bad values for a config key with ``default``: (value, must fail / may pass).

    "May pass" values (negatives, zeros, huge values, empty tuples) are out of range for most
    keys but plausible for some (a power in dBm is negative; a key without an upper bound takes
    1e300): they either raise a clear error or build a working env. Exact bounds are not assumed.
    """
    common = [
        (None, MUST_FAIL),
        ({"nested": 1}, MUST_FAIL),
        (1 + 1j, MUST_FAIL),
    ]
    if isinstance(default, bool):
        return [*common, ("yes", MUST_FAIL), (2, MUST_FAIL), (math.nan, MUST_FAIL), ("", MUST_FAIL)]
    if isinstance(default, int):
        return [
            *common,
            ("a", MUST_FAIL),
            (math.nan, MUST_FAIL),
            (math.inf, MUST_FAIL),
            (2.5, MUST_FAIL),
            ([1], MUST_FAIL),
            (-1, MAY_PASS),
            (10**30, MAY_PASS),
            (-(10**30), MAY_PASS),
        ]
    if isinstance(default, float):
        return [
            *common,
            ("a", MUST_FAIL),
            (math.nan, MUST_FAIL),
            (math.inf, MUST_FAIL),
            (-math.inf, MUST_FAIL),
            ([1.0], MUST_FAIL),
            (-1.0, MAY_PASS),
            (1e300, MAY_PASS),
            (-1e300, MAY_PASS),
        ]
    if isinstance(default, str):
        return [
            *common,
            ("no-such-choice", MUST_FAIL),
            (1, MUST_FAIL),
            (1.5, MUST_FAIL),
            (b"x", MUST_FAIL),
        ]
    if isinstance(default, tuple):
        element = default[0] if default else 0
        if isinstance(element, str):
            wrong_element: tuple[Any, ...] = (1,)
        else:
            wrong_element = ("a",) * len(default)
        return [
            *common,
            ("ab", MUST_FAIL),
            (5, MUST_FAIL),
            (wrong_element, MUST_FAIL),
            ((None,) * max(len(default), 1), MUST_FAIL),
            (((),), MUST_FAIL),
            ((math.nan,) * max(len(default), 1), MUST_FAIL),
            ((), MAY_PASS),
            ((10**30,) * max(len(default), 1), MAY_PASS),
        ]
    return [*common, ("a", MAY_PASS)]


def _shown(value: Any) -> list[str]:
    """Ways a message may quote ``value``."""
    texts = {repr(value), str(value)}
    if isinstance(value, float):
        texts |= {f"{value:g}", f"{value:.6g}"}
    if isinstance(value, tuple):
        for element in value:
            texts |= set(_shown(element))
    if isinstance(value, dict):
        texts |= set(value)
    return sorted(texts)


def _builder(entry: Any) -> Callable[[dict[str, Any]], Any]:
    if entry.api == "pettingzoo":
        module = importlib.import_module(entry.name)
        return lambda config: module.parallel_env(config=config)
    return lambda config: gym.make(entry.name, config=config)


@dataclass(frozen=True)
class ConfigCase:
    entry: Any
    key: str
    value: Any
    kind: str


def config_cases(exhaustive: bool) -> Iterator[ConfigCase]:
    """Every config key of every family with the bad values of its default's kind.

    The default run gives each key to one environment of its family (the family's entries in
    turn, by key index: deterministic); the exhaustive run tries every key on every entry.
    """
    by_family: dict[str, list[Any]] = {}
    for entry in fl_gym.catalogue():
        by_family.setdefault(entry.family, []).append(entry)
    for entries in by_family.values():
        keys = entries[0].config_keys
        for i, key in enumerate(keys):
            chosen = entries if exhaustive else [entries[i % len(entries)]]
            for entry in chosen:
                for value, kind in _bad_values(key.default):
                    yield ConfigCase(entry, key.name, value, kind)


def _check_config_case(case: ConfigCase, accepted_steps: bool) -> None:
    where = f"{case.entry.name} config {case.key}={case.value!r}"
    leaf = case.key.rsplit(".", 1)[-1]
    try:
        env = _builder(case.entry)({case.key: case.value})
    except (TypeError, ValueError) as exc:
        message = str(exc)
        assert leaf in message, f"{where}: the key is not named: {message!r}"
        assert any(text in message for text in _shown(case.value)), (
            f"{where}: the value is not named: {message!r}"
        )
        return
    except Exception as exc:
        pytest.fail(f"{where}: raw {type(exc).__name__}: {exc}")
    assert case.kind == MAY_PASS, f"{where}: accepted"
    try:
        if accepted_steps:
            # A value accepted at construction may still be refused by the first reset (a
            # check that needs the data, e.g. an MLP without hidden layers): clearly, naming
            # the key.
            try:
                env.reset(seed=SEED)
            except (TypeError, ValueError) as exc:
                assert leaf in str(exc), f"{where}: refused at reset without the key: {exc}"
    finally:
        env.close()


def _run_config_cases(exhaustive: bool) -> int:
    count = 0
    for case in config_cases(exhaustive):
        _check_config_case(case, accepted_steps=exhaustive)
        count += 1
    return count


def test_bad_configs_every_key_of_every_family() -> None:
    count = _run_config_cases(exhaustive=False)
    assert count >= ISSUE_CONFIG_CASES, count


@pytest.mark.slow
def test_bad_configs_every_key_on_every_env() -> None:
    count = _run_config_cases(exhaustive=True)
    assert count >= 3 * ISSUE_CONFIG_CASES, count


# -- command line ------------------------------------------------------------------------------

ENV = "fl_gym/ClientSelection-v0"
CLI_CASES: list[list[str]] = [
    [],
    ["nope"],
    ["--threads", "0"],
    ["--threads", "abc"],
    ["run", "fl_gym/Nope-v0", "--policy", "random"],
    ["run", ENV, "--policy", "nope"],
    ["run", ENV],
    ["run", ENV, "--policy", "random", "--config", "num_devices=0"],
    ["run", ENV, "--policy", "random", "--config", "no_such_key=1"],
    ["run", ENV, "--policy", "random", "--config", "wireless.deadline_s=nan"],
    ["run", ENV, "--policy", "random", "--config", "novalue"],
    ["run", ENV, "--policy", "random", "--preset", "nope"],
    ["run", ENV, "--policy", "random", "--episodes", "0"],
    ["run", ENV, "--policy", "random", "--episodes=-3"],
    ["run", ENV, "--policy", "random", "--seed", "x"],
    ["run", ENV, "--policy", "random", "--seed=-1"],
    ["run", "uav_swarm_v0", "--policy", "nope"],
    ["run", "vehicular_v1", "--policy", "nope"],
    ["run", "fl_gym/VehicularURLLC-v1", "--policy", "random", "--config", "num_pairs=-2"],
    ["eval", ENV, "--policy", "random", "--seeds", "0-999999999999"],
    ["eval", ENV, "--policy", "random", "--seeds", "a"],
    ["eval", ENV, "--policy", "random", "--seeds", "5-1"],
    ["eval", ENV, "--policy", "random", "--seeds=-1"],
    ["eval", ENV, "--policy", "ppo:/no/such/path"],
    ["eval", ENV, "--policy", "random", "--max-episode-steps", "0"],
    ["eval", ENV, "--policy", "random", "--config", "learning.model=cnn"],
    ["bench", "--envs", ENV, "--policies", "random", "--seeds", "0-999999999999"],
    ["bench", "--envs", "fl_gym/Nope-v0", "--policies", "random", "--seeds", "0"],
    ["bench", "--backend", "nope"],
    ["bench", "--envs", ENV, "--policies", "nope", "--seeds", "0"],
    ["train", ENV, "--algo", "nope", "--timesteps", "1"],
    ["train", ENV, "--timesteps", "0"],
    ["train", ENV, "--algo-kwargs", "n_steps"],
    ["train", ENV, "--vec", "nope"],
    ["train", ENV, "--timesteps", "1", "--config", "num_devices=1e300"],
    ["fedavg", "--rounds", "0"],
    ["fedavg", "--partition", "nope"],
    ["fedavg", "--compression", "nope"],
    ["fedavg", "--aggregator", "nope"],
    ["fedavg", "--clients", "abc"],
    ["fedavg", "--partition", "dirichlet", "--alpha", "nan", "--rounds", "1"],
    ["uav", "--controller", "nope"],
    ["uav", "--preset", "nope"],
    ["uav", "--config", "num_uavs=-5"],
    ["uav", "--training", "nope"],
    ["list", "nope"],
]
"""Bad command lines; each must exit with status 2 and one ``fl-gym ...: error: ...`` line."""

ERROR_LINE = re.compile(r"^fl-gym( [a-z]+)?: error: \S")


def _cli_exit_code(argv: list[str]) -> int:
    try:
        return cli_main(argv)
    except SystemExit as exc:  # argparse's own errors
        return int(exc.code) if exc.code is not None else 0


def test_bad_command_lines(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in CLI_CASES:
        code = _cli_exit_code(argv)
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        errors = [line for line in lines if ERROR_LINE.match(line)]
        assert code == 2, f"fl-gym {' '.join(argv)}: exit {code}\n{err}"
        assert "Traceback" not in err, f"fl-gym {' '.join(argv)}: traceback\n{err}"
        assert len(errors) == 1 and lines[-1] == errors[0], f"fl-gym {' '.join(argv)}:\n{err}"
    assert len(CLI_CASES) >= ISSUE_CLI_CASES
