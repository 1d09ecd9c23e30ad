"""RL controllers: Stable-Baselines3 training and evaluation, device-set policies, benchmarks.

* :func:`train` trains PPO, A2C, SAC, TD3 or DQN on an fl_gym environment and saves the model
  with its provenance (weights that load without unpickling, :func:`save_agent`);
  :func:`load_agent` reads it back.
* :func:`evaluate` plays trained agents and baselines alike on given seeds.
* :class:`DeviceSetExtractor` / :class:`DeviceSetPolicy`: one network for any number of devices,
  equivariant in their order.
* :class:`DeviceChoiceWrapper`, :class:`DeviceQPolicy`, :class:`DoubleDQN`,
  :class:`TopMQSelector`: FAVOR-style DQN device selection (one Q-value per device, top-M play).
* :func:`run_benchmark` and :func:`leaderboard_markdown`: the harness behind ``fl-gym bench``.
* :func:`run_suite` and :func:`suite_markdown`: a benchmark suite's episodes and its leaderboard
  (rliable's interval estimates; ``fl-gym bench --suite``).
"""

from fl_gym.agents.agent_files import UntrustedAgentError, save_agent
from fl_gym.agents.bench import (
    BenchmarkResult,
    bootstrap_ci,
    interquartile_mean,
    leaderboard_markdown,
    run_benchmark,
)
from fl_gym.agents.device_q import DeviceChoiceWrapper, DeviceQPolicy, DoubleDQN, TopMQSelector
from fl_gym.agents.device_set import DeviceSetExtractor, DeviceSetPolicy, action_layout
from fl_gym.agents.evaluation import (
    EpisodeMetrics,
    evaluate,
    evaluate_episodes,
    parse_seeds,
    resolve_policy,
)
from fl_gym.agents.suite_bench import find_agents, read_rows, run_suite, write_rows
from fl_gym.agents.suite_report import suite_markdown
from fl_gym.agents.training import (
    ALGORITHMS,
    POLICY_ARCHITECTURES,
    TrainedAgent,
    load_agent,
    make_training_env,
    train,
)
from fl_gym.agents.vec_adapter import NativeVecEnv, make_native_vec_env

__all__ = [
    "ALGORITHMS",
    "POLICY_ARCHITECTURES",
    "BenchmarkResult",
    "DeviceChoiceWrapper",
    "DeviceQPolicy",
    "DeviceSetExtractor",
    "DeviceSetPolicy",
    "DoubleDQN",
    "EpisodeMetrics",
    "NativeVecEnv",
    "TopMQSelector",
    "TrainedAgent",
    "UntrustedAgentError",
    "action_layout",
    "bootstrap_ci",
    "evaluate",
    "evaluate_episodes",
    "find_agents",
    "interquartile_mean",
    "leaderboard_markdown",
    "load_agent",
    "make_native_vec_env",
    "make_training_env",
    "parse_seeds",
    "read_rows",
    "resolve_policy",
    "run_benchmark",
    "run_suite",
    "save_agent",
    "suite_markdown",
    "train",
    "write_rows",
]
