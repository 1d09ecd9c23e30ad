"""Train RLlib PPO on an fl_gym environment (needs ``pip install -e ".[ray]"``).

Single-agent: any registered id; the ``Dict(devices, server)`` observation is flattened with
Gymnasium's ``FlattenObservation`` (RLlib's default networks take flat vectors)::

    python examples/rllib_ppo.py fl_gym/ClientSelection-v0 --iterations 5

Multi-agent: ``vehicular_v0`` or ``uav_swarm_v0``, every agent mapped to one shared policy
(parameter sharing) through RLlib's PettingZoo wrapper::

    python examples/rllib_ppo.py uav_swarm_v0 --config num_uavs=20 --iterations 5

The script prints the mean episode return after every iteration and exits non-zero when a
return is not finite. ``--address`` joins a running Ray cluster instead of starting one.
"""

from __future__ import annotations

import argparse
import ast
import math
from typing import Any

MULTI_AGENT = ("vehicular_v0", "uav_swarm_v0")


def _overrides(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, _, text = item.partition("=")
        try:
            out[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[key] = text
    return out


def _single_agent_creator(env_id: str):
    def create(env_config: dict[str, Any]) -> Any:
        import gymnasium as gym
        from gymnasium.wrappers import FlattenObservation

        import fl_gym  # noqa: F401  (registers the environments in this worker)

        kwargs = {"config": dict(env_config)} if env_config else {}
        return FlattenObservation(gym.make(env_id, **kwargs))

    return create


def _multi_agent_creator(name: str):
    def create(env_config: dict[str, Any]) -> Any:
        from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv

        from fl_gym.agents.multiagent import make_parallel_env

        return ParallelPettingZooEnv(make_parallel_env(name, config=dict(env_config) or None))

    return create


def build_config(env: str, env_config: dict[str, Any], batch_size: int) -> Any:
    """RLlib's PPO configuration for an fl_gym environment (one shared policy for agents)."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.tune.registry import register_env

    name = env.replace("/", "_")
    multi_agent = env in MULTI_AGENT
    register_env(name, _multi_agent_creator(env) if multi_agent else _single_agent_creator(env))
    config = (
        PPOConfig()
        .environment(name, env_config=env_config)
        .env_runners(num_env_runners=0)
        .training(
            train_batch_size_per_learner=batch_size,
            minibatch_size=min(batch_size, 128),
            num_epochs=2,
            lr=3e-4,
        )
        .debugging(seed=0)
    )
    if multi_agent:
        config = config.multi_agent(
            policies={"shared"}, policy_mapping_fn=lambda agent_id, *args, **kwargs: "shared"
        )
    return config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("env", help="registered id or vehicular_v0 / uav_swarm_v0")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--address", default=None, help="Ray cluster address")
    args = parser.parse_args()

    import ray

    ray.init(address=args.address, include_dashboard=False, log_to_driver=False)
    try:
        algo = build_config(args.env, _overrides(args.config), args.batch_size).build_algo()
        for i in range(args.iterations):
            result = algo.train()
            runners = result.get("env_runners", {})
            mean_return = runners.get("episode_return_mean", float("nan"))
            steps = result.get(
                "num_env_steps_sampled_lifetime", runners.get("num_env_steps_sampled_lifetime")
            )
            print(f"iteration {i + 1}: env steps {steps}, mean episode return {mean_return:.3f}")
        algo.stop()
    finally:
        ray.shutdown()
    return 0 if math.isfinite(mean_return) else 1


if __name__ == "__main__":
    raise SystemExit(main())
