"""The native vector env (fl_gym.envs.wireless_fl.vector) against SyncVectorEnv, and its SB3
adapter."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import data_equivalence
from gymnasium.vector import AutoresetMode

import fl_gym
from fl_gym.envs.registration import _WIRELESS_FL_VARIANTS, MAX_EPISODE_STEPS
from fl_gym.envs.wireless_fl.env import WirelessFLEnv
from fl_gym.envs.wireless_fl.vector import OverTheAirFLVectorEnv, WirelessFLVectorEnv
from fl_gym.sim.learning.training import (
    ClientTensors,
    TrainingGroup,
    draw_round_indices,
    local_sgd,
    local_sgd_groups,
)

VARIANTS = tuple(_WIRELESS_FL_VARIANTS)
# A low target ends episodes early (terminated) and a short limit truncates the others, so that
# a few dozen steps cross several autoresets of both kinds.
QUICK = {"config": {"target_accuracy": 0.85}, "max_episode_steps": 8}


def _pair(env_id: str, num_envs: int, **kwargs):
    sync = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync", **kwargs)
    native = gym.make_vec(
        env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs
    )
    return sync, native


def _run_against_sync(env_id: str, num_envs: int, steps: int, seed: int) -> tuple[int, int]:
    sync, native = _pair(env_id, num_envs, **QUICK)
    assert data_equivalence(sync.reset(seed=seed), native.reset(seed=seed), exact=True)
    space = sync.action_space
    space.seed(seed)
    ends = [0, 0]
    for t in range(steps):
        action = space.sample()
        expected, got = sync.step(action), native.step(action)
        names = ("obs", "reward", "terminated", "truncated", "info")
        for name, a, b in zip(names, expected, got, strict=True):
            assert data_equivalence(a, b, exact=True), f"{env_id} step {t}: {name} differs"
        ends[0] += int(expected[2].sum())
        ends[1] += int(expected[3].sum())
    sync.close()
    native.close()
    return ends[0], ends[1]


@pytest.mark.parametrize("env_id", VARIANTS)
def test_matches_sync_vector_env_step_for_step(env_id: str) -> None:
    terminations, truncations = _run_against_sync(env_id, num_envs=3, steps=40, seed=11)
    # The comparison crossed autoresets of both kinds.
    assert terminations > 0
    assert truncations > 0


@pytest.mark.parametrize("env_id", ["fl_gym/WirelessFL-v0", "fl_gym/ClientSelection-v0"])
def test_matches_sync_vector_env_with_many_envs(env_id: str) -> None:
    """E = 16 as benchmarked: every batched path (training, compression of all levels, uplink,
    aggregation, observations, infos) sees many envs at once and stays exact."""
    _run_against_sync(env_id, num_envs=16, steps=12, seed=3)


def test_over_the_air_matches_sync_vector_env() -> None:
    terminations, truncations = _run_against_sync(
        "fl_gym/OverTheAirFL-v0", num_envs=2, steps=16, seed=5
    )
    assert terminations + truncations > 0


@pytest.mark.parametrize(
    "env_id",
    [
        "fl_gym/ByzantineSelection-v0",
        "fl_gym/ByzantineSelection-v1",
        "fl_gym/FederatedLocalization-v0",
    ],
)
def test_subclass_envs_match_sync_vector_env(env_id: str) -> None:
    """Environments that add transforms (adversary, monitor), a per-action aggregation rule,
    observation columns or a regression task: each env's own transforms and rule act on its
    own federation inside the batched round."""
    _, truncations = _run_against_sync(env_id, num_envs=3, steps=20, seed=7)
    assert truncations > 0


@pytest.mark.parametrize("preset", [None, "sample-level", "over-the-air"])
def test_private_envs_match_sync_vector_env(preset: str | None) -> None:
    """Each environment's DP setting (client-level clipping and noise, or DP-SGD in its own
    federation's local training) and accountant, inside the batched round."""
    kwargs = {} if preset is None else {"preset": preset}
    sync, native = _pair("fl_gym/PrivateFL-v0", 3, max_episode_steps=5, **kwargs)
    assert data_equivalence(sync.reset(seed=2), native.reset(seed=2), exact=True)
    space = sync.action_space
    space.seed(2)
    for t in range(7):
        action = space.sample()
        for name, a, b in zip("otrui", sync.step(action), native.step(action), strict=True):
            assert data_equivalence(a, b, exact=True), f"step {t}: {name} differs"
    assert native.envs[0]._epsilon > 0.0


def test_byzantine_vector_env_keeps_each_envs_rule_and_attackers() -> None:
    vec = gym.make_vec("fl_gym/ByzantineSelection-v1", num_envs=2)
    vec.reset(seed=0)
    rules = vec.envs[0].codec.aggregator_choices
    actions = vec.action_space.sample()
    actions[:, -1] = [-1.0, 1.0]  # the first rule in env 0, the last in env 1
    _, _, _, _, info = vec.step(actions)
    assert list(info["aggregator"]) == [rules[0], rules[-1]]
    assert vec.envs[0].federation.aggregator is not vec.envs[1].federation.aggregator
    for e, env in enumerate(vec.envs):
        # Env e's attackers are exactly its own Byzantine devices among those it selected.
        byzantine = env.adversary.byzantine_devices(env.federation)
        assert np.array_equal(info["byzantine"][e], byzantine & info["selected"][e])
    assert info["byzantine"].any()
    vec.close()


def test_registration_offers_the_vector_entry_point() -> None:
    for env_id in (*VARIANTS, "fl_gym/OverTheAirFL-v0"):
        spec = gym.spec(env_id)
        assert spec.vector_entry_point is not None
        assert spec.max_episode_steps == MAX_EPISODE_STEPS
        vec = gym.make_vec(env_id, num_envs=2)  # the native env is the default
        assert isinstance(vec, WirelessFLVectorEnv)
        assert vec.max_episode_steps == MAX_EPISODE_STEPS
        assert vec.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
        assert vec.single_observation_space == gym.make(env_id).observation_space
        assert vec.single_action_space == gym.make(env_id).action_space
        vec.close()
    # gym.make is unchanged.
    assert isinstance(gym.make("fl_gym/WirelessFL-v0").unwrapped, WirelessFLEnv)
    assert isinstance(gym.make_vec("fl_gym/OverTheAirFL-v0", 1), OverTheAirFLVectorEnv)


def test_local_sgd_groups_equal_separate_local_sgd() -> None:
    """Groups with different starts, step counts (uniform and masked) and an empty one."""
    rng = np.random.default_rng(0)
    model = fl_gym.sim.learning.models.make_model("mlp", 8, 3, hidden_units=(6,))
    groups, expected = [], []
    for g, steps in enumerate(([2, 2], [1, 4, 3], [], [3])):
        x = rng.normal(size=(40, 8))
        y = rng.integers(0, 3, 40)
        data = ClientTensors.from_arrays(x, y, np.array_split(rng.permutation(40), 4))
        start = model.init_params(torch.Generator().manual_seed(g))
        ids = torch.arange(len(steps), dtype=torch.int64)
        local = torch.as_tensor(steps, dtype=torch.int64)
        kwargs = {"batch_size": 5, "learning_rate": 0.3, "weight_decay": 0.01}
        expected.append(
            local_sgd(
                model, start, data, ids, local, generator=torch.Generator().manual_seed(g), **kwargs
            )
        )
        indices = (
            draw_round_indices(data, ids, max(steps), 5, torch.Generator().manual_seed(g))
            if steps
            else None
        )
        groups.append(TrainingGroup(start, data, ids, local, indices))
    got = local_sgd_groups(model, groups, learning_rate=0.3, weight_decay=0.01)
    for a, b in zip(expected, got, strict=True):
        assert torch.equal(a.params, b.params)
        assert torch.equal(a.train_loss, b.train_loss)


def test_seeding_reproduces_and_seeds_differ() -> None:
    env_id = "fl_gym/WirelessFL-v0"

    def rollout(seed):
        vec = gym.make_vec(env_id, num_envs=2, **QUICK)
        obs, _ = vec.reset(seed=seed)
        space = vec.action_space
        space.seed(3)
        trace = [obs]
        for _ in range(5):
            trace.append(vec.step(space.sample())[:4])
        return trace

    assert data_equivalence(rollout(4), rollout(4), exact=True)
    assert data_equivalence(rollout([4, 5]), rollout(4), exact=True)
    assert not data_equivalence(rollout(4), rollout([4, 9]))
    vec = gym.make_vec(env_id, num_envs=2)
    vec.reset(seed=[1, None])
    assert vec.np_random_seed[0] == 1
    with pytest.raises(ValueError, match="num_envs"):
        vec.reset(seed=[1, 2, 3])


def test_options_reach_every_environment_and_reset_mask() -> None:
    vec = gym.make_vec("fl_gym/ClientSelection-v0", num_envs=3)
    vec.reset(seed=0, options={"config": {"target_accuracy": 0.5}})
    assert all(c.target_accuracy == 0.5 for c in vec.get_attr("config"))
    with pytest.raises(ValueError, match="unknown reset option"):
        vec.reset(options={"bogus": 1})
    obs, _ = vec.reset(seed=0)
    before = vec.observations()
    mask = np.array([False, True, False])
    obs, infos = vec.reset(seed=[None, 42, None], options={"reset_mask": mask})
    assert np.array_equal(infos["_round"], mask)
    assert np.array_equal(obs["devices"][0], before["devices"][0])
    assert vec.np_random_seed[1] == 42


def test_bad_actions_raise_and_leave_the_vector_env_usable() -> None:
    env_id = "fl_gym/WirelessFL-v0"
    vec = gym.make_vec(env_id, num_envs=3, **QUICK)
    twin = gym.make_vec(env_id, num_envs=3, **QUICK)
    with pytest.raises(RuntimeError, match="reset"):
        vec.step(vec.action_space.sample())
    vec.reset(seed=2)
    twin.reset(seed=2)
    space = vec.action_space
    space.seed(0)
    good = space.sample()
    bad = good.copy()
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match="environment 1"):
        vec.step(bad)
    with pytest.raises(ValueError, match="num_envs"):
        vec.step(good[:2])
    with pytest.raises(TypeError, match="environment 0"):
        vec.step(np.array([["x"] * good.shape[1]] * 3))
    # Nothing moved: the env goes on exactly as one that never saw the bad actions.
    for _ in range(4):
        action = space.sample()
        assert data_equivalence(vec.step(action), twin.step(action), exact=True)
    discrete = gym.make_vec("fl_gym/AggregationFrequency-v0", num_envs=2)
    discrete.reset(seed=0)
    with pytest.raises(ValueError, match="environment 1"):
        discrete.step(np.array([0, 99]))
    discrete.step(np.array([0, 1]))


def test_sb3_adapter_matches_dummy_vec_env_and_ppo_trains() -> None:
    pytest.importorskip("stable_baselines3")
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    from fl_gym.agents.vec_adapter import NativeVecEnv, make_native_vec_env

    env_id, n = "fl_gym/ClientSelection-v0", 3
    kwargs = {"config": {"target_accuracy": 0.8}, "max_episode_steps": 10}
    dummy = DummyVecEnv([lambda: gym.make(env_id, **kwargs) for _ in range(n)])
    native = NativeVecEnv(gym.make_vec(env_id, num_envs=n, **kwargs))
    dummy.seed(7)
    native.seed(7)
    assert data_equivalence(dict(dummy.reset()), native.reset(), exact=True)
    space = native.action_space
    space.seed(1)
    dones = 0
    for t in range(25):
        action = np.stack([space.sample() for _ in range(n)])
        obs_a, rew_a, done_a, info_a = dummy.step(action)
        obs_b, rew_b, done_b, info_b = native.step(action)
        assert data_equivalence(dict(obs_a), obs_b, exact=True), t
        assert np.array_equal(rew_a, rew_b) and rew_a.dtype == rew_b.dtype
        assert np.array_equal(done_a, done_b)
        for a, b in zip(info_a, info_b, strict=True):
            assert data_equivalence(a, b, exact=True), t
        dones += int(done_a.sum())
    assert dones > 0
    assert native.get_attr("num_devices") == [10] * n
    assert native.env_method("default_config", indices=[0])[0].num_devices == 10

    venv = make_native_vec_env(env_id, 2, seed=0, config={"target_accuracy": 0.8})
    model = PPO("MultiInputPolicy", venv, n_steps=128, batch_size=64, n_epochs=1, seed=0)
    model.learn(256)
    assert model.num_timesteps >= 256
    assert len(model.ep_info_buffer) > 0
    venv.close()


@pytest.mark.parametrize(
    "config", [{"learning.batch_size": 15}, {"dataset": "synthetic", "learning.model": "logreg"}]
)
def test_matches_sync_with_unaligned_shapes(config: dict) -> None:
    """Odd batch sizes and 449-sample test sets: shapes whose batched rows would misalign."""
    kwargs = {"config": {"target_accuracy": 0.85, **config}, "max_episode_steps": 6}
    sync, native = _pair("fl_gym/WirelessFL-v0", 3, **kwargs)
    assert data_equivalence(sync.reset(seed=1), native.reset(seed=1), exact=True)
    space = sync.action_space
    space.seed(1)
    for t in range(10):
        action = space.sample()
        assert data_equivalence(sync.step(action), native.step(action), exact=True), t


def _twin_federations(levels: tuple[str, ...], n: int) -> tuple[list, list]:
    """Two identical sets of ``n`` federations (same seeds), with the given compression levels."""
    from fl_gym.sim.learning.data import make_federated_dataset
    from fl_gym.sim.learning.federation import Federation, FederationConfig

    config = FederationConfig(compression_levels=levels, hidden_units=(8,))
    out = []
    for _ in range(2):
        feds = []
        for e in range(n):
            rng = np.random.default_rng(e)
            data = make_federated_dataset("digits", num_clients=6, rng=rng)
            feds.append(Federation(data, config, rng=rng))
        out.append(feds)
    return out[0], out[1]


@pytest.mark.parametrize("num_feds", [2, 5])
def test_compression_stage_rows_do_not_depend_on_the_batch(num_feds: int) -> None:
    """The compression stage on E federations gives each one what it gets as a batch of one
    (identity, top-k, QSGD and sign batched across federations; the others per federation):
    pending updates, bits, losses, residual and momentum state, and the generators' states."""
    from fl_gym.sim.rounds import DigitalUplink, compress_rounds, train_rounds

    levels = ("none", "topk:0.1", "qsgd:16", "sign", "terngrad", "dgc:0.05", "randk:0.2")
    batched, alone = _twin_federations(levels, num_feds)
    transport = DigitalUplink()
    for round_index in range(3):
        starts_b, starts_a, trained = [], [], []
        for e, (fb, fa) in enumerate(zip(batched, alone, strict=True)):
            plan_rng = np.random.default_rng(100 * round_index + e)
            selected = plan_rng.random(6) < 0.7
            compression = plan_rng.integers(0, len(levels), 6)
            plan = fb.plan(selected=selected, local_steps=2, compression=compression)
            sb = transport.start(fb, plan, np.random.default_rng(e), True)
            sa = transport.start(fa, plan, np.random.default_rng(e), True)
            (result,) = train_rounds([fa], [sa])
            train_rounds([fb], [sb])  # keep the generators in step
            if e == 0 and result.params.shape[0] > 1:
                result.params[1, 3] = float("nan")  # a diverged client
            starts_b.append(sb)
            starts_a.append(sa)
            trained.append(result)
        got = compress_rounds(batched, starts_b, trained)
        want = [
            compress_rounds([fa], [s], [t])[0]
            for fa, s, t in zip(alone, starts_a, trained, strict=True)
        ]
        for g, w, fb, fa, sb, sa in zip(got, want, batched, alone, starts_b, starts_a, strict=True):
            assert torch.equal(g.updates, w.updates)
            assert not torch.isnan(g.updates).any()  # the diverged row is zero, never NaN
            for name in ("client_ids", "finite", "bits", "train_loss"):
                x, y = getattr(g, name), getattr(w, name)
                assert x.dtype == y.dtype and np.array_equal(x, y), name
            assert torch.equal(fb.residual, fa.residual)
            assert torch.equal(fb.momentum, fa.momentum)
            assert torch.equal(sb.generator.get_state(), sa.generator.get_state())
            # Move both on identically so that the next round starts from fresh state rows.
            fb.params = fa.params = fa.params + 0.01 * w.updates.sum(dim=0)
        # Closed forms: an uncompressed row is the update itself at 32 bits a parameter.
        for g, start, fed in zip(got, starts_b, batched, strict=True):
            plain = (start.plan.compression[g.client_ids] == 0) & g.finite
            if plain.any():
                rows = np.flatnonzero(plain)
                assert (g.bits[rows] == 32 * fed.num_params).all()


def test_fedavg_trusted_equals_fedavg() -> None:
    """The federation's unvalidated FedAvg is fedavg bit for bit, including its fallbacks."""
    from fl_gym.sim.learning.aggregation import fedavg, fedavg_trusted

    gen = torch.Generator().manual_seed(0)
    for rows in (1, 3, 7, 16):
        x = torch.randn(rows, 4874, generator=gen)
        w = torch.randint(1, 300, (rows,), generator=gen).to(torch.float32)
        cases = [(x, w), (x.double(), w), (x, torch.zeros(rows))]
        if rows > 1:
            bad = x.clone()
            bad[1, 5] = float("inf")
            cases.append((bad, w))
        for upd, weights in cases:
            try:
                want = fedavg(upd, weights)
            except ValueError:
                with pytest.raises(ValueError):
                    fedavg_trusted(upd, weights)
                continue
            got = fedavg_trusted(upd, weights)
            assert torch.equal(got.aggregate, want.aggregate)
            assert got.aggregate.dtype == want.aggregate.dtype
            assert torch.equal(got.accepted, want.accepted)
            assert got.num_rejected == want.num_rejected


def test_uplink_many_equals_per_cell_uplink() -> None:
    """The stacked uplink of E cells is each cell's own uplink bit for bit (stragglers, lost
    packets, depleted batteries and silent devices included), and draws the same numbers."""
    from fl_gym.sim.radio.cell import WirelessCell, WirelessConfig, uplink_many

    config = WirelessConfig(battery_min_j=0.02, battery_max_j=0.05, deadline_s=0.5)
    k, m = 10, config.num_subchannels
    batched, alone = [], []
    for e in range(6):
        for group in (batched, alone):
            cell = WirelessCell(config, num_devices=k)
            cell.reset(np.random.default_rng(e))
            group.append(cell)
    for round_index in range(6):
        args, rngs_b, rngs_a = [], [], []
        for e, cell in enumerate(alone):
            rng = np.random.default_rng(1000 * round_index + e)
            sel = np.zeros(k, dtype=bool)
            sel[rng.permutation(np.flatnonzero(cell.available))[: rng.integers(0, m + 1)]] = True
            power = np.where(sel, rng.uniform(0.0, config.p_max_w, k), 0.0)
            power[rng.random(k) < 0.1] = 0.0  # below the floor: silent
            bits = np.where(sel, rng.choice([0.0, 1e3, 1e5, 1e7], k), 0.0)
            steps = np.where(sel, rng.integers(1, 30, k), 0).astype(np.float64)
            args.append((sel, power, bits, steps))
            rngs_b.append(np.random.default_rng(round_index + 10 * e))
            rngs_a.append(np.random.default_rng(round_index + 10 * e))
        want = [cell.uplink(*a, 16, rng) for cell, a, rng in zip(alone, args, rngs_a, strict=True)]
        got = uplink_many(batched, *[list(c) for c in zip(*args, strict=True)], 16, rngs_b)
        for g, w, cb, ca, rb, ra in zip(got, want, batched, alone, rngs_b, rngs_a, strict=True):
            assert data_equivalence(vars(g), vars(w), exact=True)
            assert np.array_equal(cb.battery_j, ca.battery_j)
            assert rb.random() == ra.random()
        for cb, ca, e in zip(batched, alone, range(6), strict=True):
            cb.advance(np.random.default_rng(e + round_index))
            ca.advance(np.random.default_rng(e + round_index))


def test_observations_do_not_depend_on_the_batch() -> None:
    """Stacked observations of envs with different configs equal each env's own (a batch of
    one), bit for bit, and making them changes nothing."""
    from fl_gym.envs.wireless_fl.env import observe_many

    configs = [{}, {"wireless": {"cell_radius_m": 300.0}}, {"max_rounds": 7}]
    envs = [WirelessFLEnv(config=c) for c in configs]
    for e, env in enumerate(envs):
        env.reset(seed=e)
    assert all(
        data_equivalence(a, b, exact=True)
        for a, b in zip(observe_many(envs), [env.observe() for env in envs], strict=True)
    )
    for t in range(4):
        for env in envs:
            env.action_space.seed(t)
            env.step(env.action_space.sample())
        want = [env.observe() for env in envs]
        got = observe_many(envs)
        again = observe_many(envs)  # no side effects: the same observations twice
        for a, b, c in zip(got, want, again, strict=True):
            assert data_equivalence(a, b, exact=True)
            assert data_equivalence(a, c, exact=True)
            assert a["devices"].dtype == b["devices"].dtype == np.float32
