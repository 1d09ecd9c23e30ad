"""Train RLlib PPO on an fl_gym environment (needs ``pip install -e ".[ray]"``).

Single-agent: any registered id; the ``Dict(devices, server)`` observation is flattened with
Gymnasium's ``FlattenObservation`` (RLlib's default networks take flat vectors)::

    python examples/rllib_ppo.py fl_gym/ClientSelection-v0 --iterations 5

Multi-agent: ``vehicular_v1`` or ``uav_swarm_v0``, every agent mapped to one shared policy
(parameter sharing) through RLlib's PettingZoo wrapper::

    python examples/rllib_ppo.py uav_swarm_v0 --config num_uavs=20 --iterations 5

Sampling is spread over ``--env-runners`` Ray actors (one CPU each); the learner updates the
network in this process (one more CPU). The default uses every CPU of the cluster but the
learner's, and samples in this process when that leaves fewer than two runners.
``--address`` joins a running cluster (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``) instead of
starting a local Ray instance, whose size ``--num-cpus`` sets.

The script prints, after every iteration, the env steps sampled, the time it took and the mean
episode return, and exits non-zero when a return is not finite.
"""

from __future__ import annotations

import argparse
import ast
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

MULTI_AGENT = ("vehicular_v1", "uav_swarm_v0")


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


def default_env_runners(resources: Mapping[str, float]) -> int:
    """Env runners for a cluster with ``resources`` (``ray.cluster_resources()``).

    Every CPU but one samples; the one left is the learner's (this process). PPO samples and
    learns in turn, so a single runner would only add the transfers to sampling in this
    process: below two runners the default is 0.

    Args:
        resources: The cluster's resources; ``"CPU"`` is its number of CPUs.

    Returns:
        ``CPUs - 1`` when that is at least 2, else 0 (sampling in this process).
    """
    runners = int(resources.get("CPU", 0)) - 1
    return runners if runners >= 2 else 0


def build_config(
    env: str, env_config: dict[str, Any], batch_size: int, env_runners: int = 0
) -> Any:
    """RLlib's PPO configuration for an fl_gym environment (one shared policy for agents).

    Args:
        env: A registered id, ``vehicular_v1`` or ``uav_swarm_v0``.
        env_config: Config overrides of the environment.
        batch_size: Env steps per training iteration.
        env_runners: Ray actors that sample (one CPU each); 0 samples in this process.

    Returns:
        The PPO configuration.
    """
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.tune.registry import register_env

    if isinstance(env_runners, bool) or not isinstance(env_runners, int) or env_runners < 0:
        raise ValueError(f"env_runners must be an integer >= 0, got {env_runners!r}")
    name = env.replace("/", "_")
    multi_agent = env in MULTI_AGENT
    register_env(name, _multi_agent_creator(env) if multi_agent else _single_agent_creator(env))
    config = (
        PPOConfig()
        .environment(name, env_config=env_config)
        .env_runners(num_env_runners=env_runners, num_cpus_per_env_runner=1)
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


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Train and report; 0 when every mean return is finite, 1 when not, 2 on a usage error."""
    parser = argparse.ArgumentParser(
        prog="rllib_ppo.py", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("env", help="registered id or vehicular_v1 / uav_swarm_v0")
    parser.add_argument("--iterations", type=_positive_int, default=5)
    parser.add_argument("--batch-size", type=_positive_int, default=512)
    parser.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: start one)")
    parser.add_argument(
        "--env-runners",
        type=_non_negative_int,
        default=None,
        help="sampling actors, one CPU each (default: the cluster's CPUs minus one, 0 below 2)",
    )
    parser.add_argument(
        "--num-cpus",
        type=_positive_int,
        default=None,
        help="CPUs of the local Ray instance (default: this machine's); not with --address",
    )
    args = parser.parse_args(argv)
    if args.address is not None and args.num_cpus is not None:
        parser.error("--num-cpus sizes a local Ray instance; a cluster (--address) has its own")

    import ray

    from fl_gym.agents.bench import RayConnectionError, connect_ray
    from fl_gym.sim.threads import torch_threads

    init: dict[str, Any] = {} if args.num_cpus is None else {"num_cpus": args.num_cpus}
    try:
        started = connect_ray(args.address, **init)
    except RayConnectionError as exc:
        parser.exit(
            2, f"{parser.prog}: error: {exc}; start one with ray start --head or omit --address\n"
        )
    try:
        cpus = int(ray.cluster_resources().get("CPU", 0))
        runners = (
            default_env_runners({"CPU": cpus}) if args.env_runners is None else args.env_runners
        )
        if runners > max(cpus - 1, 0):
            parser.exit(
                2,
                f"{parser.prog}: error: --env-runners {runners} needs {runners + 1} CPUs (one per "
                f"runner, one for the learner) but the cluster has {cpus}; use at most "
                f"{max(cpus - 1, 0)} (or --num-cpus for a local instance)\n",
            )
        print(f"{runners} env runner(s) on a cluster of {cpus} CPU(s)")
        config = build_config(args.env, _overrides(args.config), args.batch_size, runners)
        # The learner runs in this process: one torch thread, as fl_gym's own work does
        # (each env runner is a Ray actor with one CPU, where Ray sets one OpenMP thread).
        with torch_threads(1):
            algo = config.build_algo()
            mean_return = float("nan")
            for i in range(args.iterations):
                start = time.perf_counter()
                result = algo.train()
                seconds = time.perf_counter() - start
                stats = result.get("env_runners", {})
                mean_return = stats.get("episode_return_mean", float("nan"))
                steps = stats.get("num_env_steps_sampled", 0)
                print(
                    f"iteration {i + 1}: {steps} env steps in {seconds:.2f} s "
                    f"({steps / seconds:.0f} steps/s), mean episode return {mean_return:.3f}"
                )
            algo.stop()
    finally:
        if started:
            ray.shutdown()
    return 0 if math.isfinite(mean_return) else 1


if __name__ == "__main__":
    raise SystemExit(main())
