"""Run the ecosystem's checkers on every fl_gym environment in a plain install (no extras).

Gymnasium's ``check_env`` (render check included: it re-creates each env with
``render_mode="rgb_array"`` and draws it) and Stable-Baselines3's ``check_env`` on every
registered Gymnasium id; PettingZoo's ``parallel_api_test`` on the multi-agent modules. Run by
``make check-plain`` in a virtualenv that has only ``pip install -c constraints.txt .``; exits
non-zero and names the environment when a checker fails, or when an optional extra is installed
(the check would then prove nothing about a plain install).
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
import warnings

OPTIONAL = ("hypothesis", "pytest", "ray", "flwr", "rl_zoo3", "tensorboard")


def main() -> int:
    present = [name for name in OPTIONAL if importlib.util.find_spec(name) is not None]
    if present:
        print(f"not a plain install: optional packages present: {present}", file=sys.stderr)
        return 2
    import gymnasium as gym
    from gymnasium.utils.env_checker import check_env
    from pettingzoo.test import parallel_api_test
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    import fl_gym
    from fl_gym.envs import uav_swarm_v0, vehicular_v1

    failures = []
    for env_id in fl_gym.ENV_IDS:
        for name, check in (
            ("gymnasium check_env", lambda e: check_env(e.unwrapped)),
            ("stable-baselines3 check_env", lambda e: sb3_check_env(e.unwrapped)),
        ):
            env = gym.make(env_id)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    check(env)
                print(f"ok    {name}: {env_id}")
            except Exception:
                failures.append(f"{name}: {env_id}")
                print(f"FAIL  {name}: {env_id}\n{traceback.format_exc()}")
            finally:
                env.close()
    for module, kwargs in ((vehicular_v1, {}), (uav_swarm_v0, {"config": {"num_uavs": 20}})):
        name = module.__name__.rsplit(".", 1)[-1]
        try:
            parallel_api_test(module.parallel_env(**kwargs), num_cycles=20)
            env = (
                module.parallel_env(render_mode="rgb_array", **kwargs)
                if name == "uav_swarm_v0"
                else None
            )
            if env is not None:
                env.reset(seed=0)
                frame = env.render()
                assert frame is not None and frame.ndim == 3, "render() gave no RGB frame"
            print(f"ok    pettingzoo parallel_api_test: {name}")
        except Exception:
            failures.append(f"pettingzoo parallel_api_test: {name}")
            print(f"FAIL  pettingzoo parallel_api_test: {name}\n{traceback.format_exc()}")
    if failures:
        print(f"{len(failures)} check(s) failed: {failures}", file=sys.stderr)
        return 1
    print(
        f"all checks passed on a plain install ({len(fl_gym.ENV_IDS)} Gymnasium ids, "
        "2 PettingZoo envs)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
