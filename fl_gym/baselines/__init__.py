"""Heuristic controllers from the FL-over-wireless literature, with SB3's calling convention.

Every baseline is a :class:`BaselinePolicy`: ``plan(obs)`` gives the
:class:`~fl_gym.sim.plan.RoundPlan` of one observation and ``predict(obs, state, episode_start,
deterministic)`` the action of the environment's space, for one observation or a vector env's
batch, so heuristics and trained agents are evaluated by the same code::

    import gymnasium as gym
    import fl_gym
    from fl_gym.baselines import baselines_for, make_baseline

    env = gym.make("fl_gym/ClientSelection-v0")
    print(baselines_for(env))            # the baselines that apply to this environment
    policy = make_baseline("proportional-fair", env, window_rounds=20)
    obs, info = env.reset(seed=0)
    action, _ = policy.predict(obs, episode_start=True)

| name | decides | rule |
| --- | --- | --- |
| `random` | selection | M uniform among the available (option `seed`) |
| `round-robin` | selection | cyclic over indices, skipping exhausted devices |
| `full` | selection | every available device, the M lowest indices if more |
| `best-channel` | selection | the M highest SNRs |
| `proportional-fair` | selection | largest rate / average served rate (option `window_rounds`) |
| `age-based` | selection | stalest aggregated update first, SNR on ties |
| `energy-aware` | selection | largest battery fraction x spectral efficiency |
| `max-power` | power | ``p_max`` |
| `min-power` | power | ``power_min_dbm`` |
| `channel-inversion` | power | received SNR = target, clipped (option `target_snr_db`) |
| `fixed-compression` | compression | one level for all (option `level`) |
| `fixed-steps` | frequency | one local-step count (option `steps`) |
| `adaptive-frequency` | frequency | bound-optimal period within a budget (Wang et al. 2019) |

The vehicular policies (``vehicular-lyapunov``, ...) and the UAV controllers (``straight-line``,
``mfgfl-hf``, ...) are in the same registry, :data:`POLICIES`: ``make_policy(name, env)`` builds
any of them for an environment of its family and ``baselines_for(env)`` lists those that play it.

Knobs a baseline does not decide take the environment's defaults (round-robin selection,
``p_max``, ``default_compression``, ``default_local_steps``).
"""

from fl_gym.baselines.adaptive_frequency import AdaptiveFrequency
from fl_gym.baselines.base import BaselinePolicy, EpisodeMemory
from fl_gym.baselines.features import ObservationFeatures, read_observation
from fl_gym.baselines.fixed import FixedCompression, FixedLocalSteps
from fl_gym.baselines.power import ChannelInversionPower, MaxPower, MinPower
from fl_gym.baselines.registry import (
    BASELINES,
    POLICIES,
    POLICY_ALIASES,
    PolicyEntry,
    baseline_options,
    baselines_for,
    make_baseline,
    make_policy,
)
from fl_gym.baselines.selection import (
    AgeBasedSelection,
    BestChannelSelection,
    EnergyAwareSelection,
    FullParticipation,
    ProportionalFairSelection,
    RandomSelection,
    RoundRobinSelection,
)

__all__ = [
    "BASELINES",
    "POLICIES",
    "POLICY_ALIASES",
    "AdaptiveFrequency",
    "AgeBasedSelection",
    "BaselinePolicy",
    "BestChannelSelection",
    "ChannelInversionPower",
    "EnergyAwareSelection",
    "EpisodeMemory",
    "FixedCompression",
    "FixedLocalSteps",
    "FullParticipation",
    "MaxPower",
    "MinPower",
    "ObservationFeatures",
    "PolicyEntry",
    "ProportionalFairSelection",
    "RandomSelection",
    "RoundRobinSelection",
    "baseline_options",
    "baselines_for",
    "make_baseline",
    "make_policy",
    "read_observation",
]
