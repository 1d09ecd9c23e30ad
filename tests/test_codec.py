"""The action codecs: one per environment family, used by the environments and every baseline.

Closed forms of the power map, round trips on every action layout, the top-M and round-robin
rules, each baseline's action decoding to the plan it decided, and a source check that nothing
else in fl_gym computes the dBm map or ranks devices.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import fl_gym
from fl_gym.baselines import baselines_for, make_baseline
from fl_gym.baselines.vehicular import VEHICULAR_BASELINES, make_vehicular_baseline
from fl_gym.envs import vehicular_v1
from fl_gym.envs.vehicular.codec import VehicularCodec
from fl_gym.envs.wireless_fl.codec import (
    CONTROLS,
    OverTheAirCodec,
    SelectionState,
    WirelessFLCodec,
    bin_levels,
    rank_select,
    unbin_levels,
)
from fl_gym.envs.wireless_fl.config import WirelessFLConfig, apply_overrides
from fl_gym.envs.wireless_fl.env import WirelessFLEnv
from fl_gym.sim.plan import RoundPlan

K, M = 10, 4
CONFIG = apply_overrides(
    WirelessFLConfig(),
    {
        "num_devices": K,
        "wireless.num_subchannels": M,
        "power_min_dbm": -7.0,
        "wireless.p_max_dbm": 23.0,
    },
)
# Every non-empty set of knobs an environment may control.
CONTROL_SETS = [
    combo for r in range(1, len(CONTROLS) + 1) for combo in itertools.combinations(CONTROLS, r)
]
FL_IDS = [i for i in fl_gym.ENV_IDS if isinstance(gym.make(i).unwrapped, WirelessFLEnv)]
PACKAGE = Path(fl_gym.__file__).resolve().parent


def _dbm_to_w(dbm: float) -> float:
    return 10.0 ** ((dbm - 30.0) / 10.0)


def _codecs() -> list[WirelessFLCodec]:
    return [WirelessFLCodec(CONFIG, c) for c in CONTROL_SETS] + [OverTheAirCodec(CONFIG)]


def _ids() -> list[str]:
    return ["+".join(c) for c in CONTROL_SETS] + ["over-the-air"]


ALL_AVAILABLE = SelectionState.fresh(np.ones(K, dtype=bool))


# -- the power map -------------------------------------------------------------------------------


def test_power_map_closed_forms() -> None:
    codec = WirelessFLCodec(CONFIG, ("power",))
    assert codec.power_range_dbm == (-7.0, 23.0)
    actions = np.array([-1.0, 0.0, 1.0, -0.5])
    # Linear in dBm: -1 -> -7 dBm, 0 -> the midpoint 8 dBm, +1 -> 23 dBm, -0.5 -> 0.5 dBm.
    expected = np.array([_dbm_to_w(-7.0), _dbm_to_w(8.0), _dbm_to_w(23.0), _dbm_to_w(0.5)])
    np.testing.assert_allclose(codec.action_to_power_w(actions), expected, rtol=1e-12)
    assert codec.action_to_power_w(np.array([1.0]))[0] <= CONFIG.wireless.p_max_w
    assert codec.min_power_w == pytest.approx(_dbm_to_w(-7.0), rel=1e-12)
    assert codec.max_power_w == pytest.approx(_dbm_to_w(23.0), rel=1e-12)
    # The inverse, and the nearest end for powers the action cannot reach (0 W included).
    watts = np.array([_dbm_to_w(-7.0), _dbm_to_w(8.0), _dbm_to_w(23.0), 0.0, _dbm_to_w(-40.0), 5.0])
    np.testing.assert_allclose(
        codec.power_w_to_action(watts), [-1.0, 0.0, 1.0, -1.0, -1.0, 1.0], atol=1e-12
    )
    # A heuristic's dBm values are clipped to the same range.
    np.testing.assert_allclose(
        codec.clip_power_dbm_to_w(np.array([-30.0, 8.0, 40.0])),
        [_dbm_to_w(-7.0), _dbm_to_w(8.0), _dbm_to_w(23.0)],
        rtol=1e-12,
    )


def test_over_the_air_power_budget_uses_the_same_map() -> None:
    codec = OverTheAirCodec(CONFIG)
    action = np.append(np.where(np.arange(K) < 3, 1.0, -1.0), 0.0).astype(np.float32)
    plan, info = codec.decode(action, ALL_AVAILABLE)
    assert info == {"action_clipped": False, "dropped_unavailable": []}
    np.testing.assert_array_equal(plan.selected, np.arange(K) < 3)
    np.testing.assert_allclose(plan.power_w[:3], _dbm_to_w(8.0), rtol=1e-6)
    assert codec.max_selected == K  # no sub-channel limit: no top-M cut


def test_binning_closed_forms() -> None:
    values = np.array([-1.0, -0.5, -0.49, 0.0, 0.99, 1.0])
    np.testing.assert_array_equal(bin_levels(values, 4), [0, 1, 1, 2, 3, 3])
    np.testing.assert_allclose(unbin_levels(np.arange(4), 4), [-0.75, -0.25, 0.25, 0.75])
    np.testing.assert_array_equal(bin_levels(unbin_levels(np.arange(5), 5), 5), np.arange(5))


# -- round trips ---------------------------------------------------------------------------------


# M = K: every device may be selected, so a round-robin default keeps every entry of an action.
CONFIG_ALL = apply_overrides(CONFIG, {"wireless.num_subchannels": K})


def _canonical_action(codec: WirelessFLCodec, rng: np.random.Generator) -> np.ndarray | int:
    """An action in the form encoding gives: scores +-1 (at least one device selected), powers
    anywhere in [-1, 1], compression and frequency at their bins' centres, and the entries of
    unselected devices (which a plan does not keep) at -1 power and level 0."""
    space = codec.action_space
    if isinstance(space, gym.spaces.Discrete):
        return int(rng.integers(space.n))
    if isinstance(space, gym.spaces.MultiDiscrete):
        return rng.integers(space.nvec).astype(np.int64)
    cfg = codec.config
    selected = np.ones(K, dtype=bool)
    if "selection" in codec.controls:
        selected = rng.random(K) < 0.5
        selected[rng.integers(K)] = True
    levels = cfg.num_compression_levels
    choices = len(cfg.local_step_choices)
    values = {
        "selection": np.where(selected, 1.0, -1.0),
        "power": np.where(selected, rng.uniform(-1.0, 1.0, K), -1.0),
        "compression": unbin_levels(np.where(selected, rng.integers(levels, size=K), 0), levels),
        "frequency": unbin_levels(rng.integers(choices, size=1), choices),
    }
    if isinstance(codec, OverTheAirCodec):
        values["power"] = rng.uniform(-1.0, 1.0, 1)
    return np.concatenate([values[name] for name in codec.slices]).astype(np.float32)


@pytest.mark.parametrize("controls", [*CONTROL_SETS, "over-the-air"], ids=_ids())
def test_encode_decode_round_trip_on_every_layout(controls: tuple[str, ...] | str) -> None:
    if controls == "over-the-air":
        codec: WirelessFLCodec = OverTheAirCodec(CONFIG_ALL)
    else:
        codec = WirelessFLCodec(CONFIG_ALL, controls)
    rng = np.random.default_rng(3)
    for _ in range(25):
        action = _canonical_action(codec, rng)
        plan, info = codec.decode(action, ALL_AVAILABLE)
        assert info["action_clipped"] is False
        again = codec.encode(plan)
        assert codec.action_space.contains(again)
        if isinstance(codec.action_space, gym.spaces.Box):
            np.testing.assert_allclose(again, action, rtol=0, atol=2e-6)
        else:
            np.testing.assert_array_equal(again, action)


@pytest.mark.parametrize("codec", _codecs(), ids=_ids())
def test_decode_of_encode_reproduces_expressible_plans(codec: WirelessFLCodec) -> None:
    """A plan the space can express (at most M selected, powers in range, local steps a
    choice, uncontrolled knobs at their defaults) comes back from its action."""
    cfg = codec.config
    rng = np.random.default_rng(5)
    low, high = codec.power_range_dbm
    for _ in range(25):
        selected = codec.round_robin(ALL_AVAILABLE)
        if "selection" in codec.controls:
            selected = np.zeros(K, dtype=bool)
            selected[rng.choice(K, size=rng.integers(1, codec.max_selected + 1), replace=False)] = 1
        power_w = np.full(K, cfg.wireless.p_max_w)
        if "power" in codec.controls:
            # The over-the-air budget is one value for all selected devices.
            size = 1 if isinstance(codec, OverTheAirCodec) else K
            power_w = np.broadcast_to(_dbm_to_w(rng.uniform(low, high, size)), (K,))
        compression: np.ndarray | int = cfg.default_compression
        if "compression" in codec.controls:
            compression = rng.integers(cfg.num_compression_levels, size=K)
        steps = cfg.default_local_steps
        if "frequency" in codec.controls:
            steps = int(rng.choice(cfg.local_step_choices))
        plan = RoundPlan(selected, steps, compression, power_w)
        decoded, _ = codec.decode(codec.encode(plan), ALL_AVAILABLE)
        np.testing.assert_array_equal(decoded.selected, plan.selected)
        np.testing.assert_array_equal(decoded.local_steps, plan.local_steps)
        np.testing.assert_array_equal(decoded.compression, plan.compression)
        np.testing.assert_allclose(decoded.power_w, plan.power_w, rtol=1e-5)


def test_uncontrolled_knobs_take_the_defaults() -> None:
    cfg = apply_overrides(CONFIG, {"default_local_steps": 2, "default_compression": 3})
    codec = WirelessFLCodec(cfg, ("selection",))
    action = np.where(np.arange(K) < 2, 1.0, -1.0)
    plan, _ = codec.decode(action, ALL_AVAILABLE)
    np.testing.assert_array_equal(plan.local_steps, np.where(np.arange(K) < 2, 2, 0))
    np.testing.assert_array_equal(plan.compression, np.where(np.arange(K) < 2, 3, 0))
    np.testing.assert_array_equal(plan.power_w, np.where(np.arange(K) < 2, cfg.wireless.p_max_w, 0))


# -- selection rules -----------------------------------------------------------------------------


def test_top_m_ties_go_to_the_lower_index() -> None:
    codec = WirelessFLCodec(CONFIG, ("selection",))
    scores = np.array([0.5, 0.9, 0.5, 0.9, 0.5, 0.5, 0.9, 0.1, 0.5, 0.0])
    # Three 0.9s, then the first 0.5 by index.
    np.testing.assert_array_equal(np.flatnonzero(codec.top(scores, scores > 0)), [0, 1, 3, 6])
    equal = np.full(K, 0.3)
    np.testing.assert_array_equal(np.flatnonzero(codec.top(equal, equal > 0)), [0, 1, 2, 3])
    # An ineligible device gives its place to the next one.
    eligible = np.ones(K, dtype=bool)
    eligible[[1, 2]] = False
    np.testing.assert_array_equal(np.flatnonzero(codec.top(equal, eligible)), [0, 3, 4, 5])
    # Through decode: only scores > 0 of available devices, the dropped ones reported.
    available = np.ones(K, dtype=bool)
    available[6] = False
    plan, info = codec.decode(scores.astype(np.float32), SelectionState.fresh(available))
    np.testing.assert_array_equal(plan.selected_ids, [0, 1, 2, 3])
    assert info["dropped_unavailable"] == [6]
    # Multi-key ranking: the second key breaks ties of the first, then the index.
    picked = rank_select((np.array([1, 1, 1, 0]), np.array([0, 2, 2, 9])), np.ones(4, bool), 2)
    np.testing.assert_array_equal(np.flatnonzero(picked), [1, 2])


def test_round_robin_order() -> None:
    codec = WirelessFLCodec(CONFIG, ("power",))
    available = np.ones(K, dtype=bool)
    available[5] = False  # exhausted: skipped, never returns
    last = np.full(K, -1, dtype=np.int64)
    rounds = []
    for t in range(5):
        selected = codec.round_robin(SelectionState(available, last))
        rounds.append(np.flatnonzero(selected).tolist())
        last = np.where(selected, t, last)
    assert rounds == [[0, 1, 2, 3], [4, 6, 7, 8], [0, 1, 2, 9], [3, 4, 6, 7], [0, 1, 2, 8]]
    # Through decode, where selection is not controlled.
    plan, _ = codec.decode(np.zeros(K, dtype=np.float32), SelectionState(available, last))
    np.testing.assert_array_equal(plan.selected, codec.round_robin(SelectionState(available, last)))


# -- the environments and the baselines use the codec -------------------------------------------


@pytest.mark.parametrize("env_id", FL_IDS)
def test_env_decodes_and_encodes_through_its_codec(env_id: str) -> None:
    env = gym.make(env_id)
    env.reset(seed=0)
    raw = env.unwrapped
    assert raw.action_space == raw.codec.action_space
    env.action_space.seed(1)
    for _ in range(5):
        action = env.action_space.sample()
        plan, info = raw.decode_action(action)
        expected, expected_info = raw.codec.decode(action, raw.selection_state())
        assert plan == expected and info == expected_info
        assert np.array_equal(np.asarray(raw.encode_plan(plan)), np.asarray(raw.codec.encode(plan)))
        env.step(action)
    # A new configuration on reset gives a new codec with the new power range.
    env.reset(seed=0, options={"config": {"power_min_dbm": -3.0}})
    assert raw.codec.power_range_dbm[0] == -3.0


def _baseline_cases() -> list[tuple[str, str]]:
    return [(env_id, name) for env_id in FL_IDS for name in baselines_for(gym.make(env_id))]


@pytest.mark.parametrize(("env_id", "name"), _baseline_cases())
def test_each_baselines_action_decodes_to_the_plan_it_decided(env_id: str, name: str) -> None:
    """``predict``'s action, decoded by the environment, is the plan a twin policy decides from
    the same observation: the defaults the baseline fills in (round-robin included) are the
    environment's, so codec and baselines cannot drift apart."""
    env = gym.make(env_id, config={"wireless.num_subchannels": 3})
    acting, planning = make_baseline(name, env), make_baseline(name, env)
    obs, _ = env.reset(seed=2)
    for _ in range(4):
        plan = planning.plan(obs)
        action, _ = acting.predict(obs)
        decoded, info = env.unwrapped.decode_action(action)
        assert info["dropped_unavailable"] == []
        np.testing.assert_array_equal(decoded.selected, plan.selected)
        np.testing.assert_array_equal(decoded.local_steps, plan.local_steps)
        np.testing.assert_array_equal(decoded.compression, plan.compression)
        np.testing.assert_allclose(decoded.power_w, plan.power_w, rtol=1e-5, atol=0.0)
        obs, _, terminated, _, step_info = env.step(action)
        np.testing.assert_array_equal(step_info["selected"], plan.selected)
        if terminated:
            break


# -- the vehicular codec -------------------------------------------------------------------------


def test_vehicular_round_trips_and_errors() -> None:
    codec = VehicularCodec(num_pairs=4, num_power_levels=6, num_resource_blocks=3)
    assert codec.action_space == gym.spaces.MultiDiscrete([6, 3] * 4)
    assert codec.agent_action_space == gym.spaces.MultiDiscrete([6, 3])
    assert codec.agent_names == ["pair_0", "pair_1", "pair_2", "pair_3"] and codec.max_level == 5
    codec.action_space.seed(0)
    for _ in range(20):
        action = codec.action_space.sample()
        levels, blocks = codec.decode(action)
        np.testing.assert_array_equal(levels, action[0::2])
        np.testing.assert_array_equal(blocks, action[1::2])
        np.testing.assert_array_equal(codec.encode(levels, blocks), action)
    levels, blocks = np.array([5, 0, 3, 1]), np.array([2, 1, 0, 2])
    np.testing.assert_array_equal(codec.encode(levels, blocks), [5, 2, 0, 1, 3, 0, 1, 2])
    agents = codec.encode_agents(levels, blocks, ["pair_2", "pair_0"])
    assert {k: v.tolist() for k, v in agents.items()} == {"pair_2": [3, 0], "pair_0": [5, 2]}
    got_levels, got_blocks = codec.decode_agents(agents)
    np.testing.assert_array_equal(got_levels, [5, 0, 3, 0])  # missing agents stay silent
    np.testing.assert_array_equal(got_blocks, [2, 0, 0, 0])
    with pytest.raises(ValueError, match=r"power levels in 0\.\.5 and resource blocks in 0\.\.2"):
        codec.decode(np.array([6, 0] * 4))
    with pytest.raises(ValueError, match=r"shape \(8,\)"):
        codec.decode(np.zeros(7, dtype=np.int64))
    with pytest.raises(ValueError, match="whole numbers"):
        codec.decode(np.full(8, 0.5))
    with pytest.raises(ValueError, match=r"pair_1.*0\.\.5"):
        codec.decode_agents({"pair_1": np.array([9, 0])})
    with pytest.raises(ValueError, match="car_9"):
        codec.decode_agents({"car_9": np.array([0, 0])})
    with pytest.raises(ValueError, match="car_9"):
        codec.agent_index("car_9")


def test_vehicular_envs_share_the_codec_layout() -> None:
    gym_env = gym.make("fl_gym/VehicularURLLC-v1")
    pz_env = vehicular_v1.parallel_env()
    for codec in (gym_env.unwrapped.codec, pz_env.codec):
        assert codec.action_space == gym_env.action_space
        assert codec.agent_action_space == pz_env.action_space("pair_0")
    assert pz_env.possible_agents == pz_env.codec.agent_names


@pytest.mark.parametrize("name", list(VEHICULAR_BASELINES))
def test_vehicular_baselines_actions_decode_to_their_decisions(name: str) -> None:
    env = gym.make("fl_gym/VehicularURLLC-v1")
    acting, deciding = make_vehicular_baseline(name, env), make_vehicular_baseline(name, env)
    memory = deciding.new_memory()
    obs, _ = env.reset(seed=4)
    for _ in range(5):
        levels, blocks = deciding.decide(obs["devices"], obs["server"], memory)
        action, _ = acting.predict(obs)
        got_levels, got_blocks = env.unwrapped.decode_action(action)
        np.testing.assert_array_equal(got_levels, levels)
        np.testing.assert_array_equal(got_blocks, blocks)
        obs, *_ = env.step(action)


# -- nothing else computes the dBm map or ranks devices ------------------------------------------

# The physics (fl_gym/sim) converts powers for its own formulas; the configuration defines the
# range; the codecs own the map between actions and powers.
_MAP_NAMES = {"power_min_dbm", "p_max_dbm", "dbm_to_w", "w_to_dbm"}
_ALLOWED = {
    "envs/wireless_fl/codec.py",
    "envs/wireless_fl/config.py",
}


def _names_used(path: Path) -> set[str]:
    """Identifiers a module uses in code (names, attributes, imports; docstrings excluded)."""
    used: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Name):
            used.add(node.id)
        elif isinstance(node, ast.Attribute):
            used.add(node.attr)
        elif isinstance(node, ast.ImportFrom):
            used.update(alias.name for alias in node.names)
    return used


def test_only_the_codecs_compute_the_power_map_and_rankings() -> None:
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("sim/"):
            continue
        used = _names_used(path)
        if relative not in _ALLOWED and used & _MAP_NAMES:
            offenders[relative] = sorted(used & _MAP_NAMES)
        if relative not in _ALLOWED and "lexsort" in used:
            offenders.setdefault(relative, []).append("lexsort")
    assert offenders == {}, (
        f"modules outside the codecs compute the dBm map or rank devices: {offenders}; "
        "use env.unwrapped.codec (fl_gym.envs.wireless_fl.codec)"
    )
    # And the check itself sees what it looks for.
    assert {"power_min_dbm", "dbm_to_w", "lexsort"} <= _names_used(
        PACKAGE / "envs" / "wireless_fl" / "codec.py"
    )
