"""CleanRL-style PPO (continuous actions, Gaussian policy) on an fl_gym environment, one file.

Written the way CleanRL's ``ppo_continuous_action.py`` is: a dataclass of arguments, a rollout
buffer of ``num_steps`` x ``num_envs``, GAE, the clipped surrogate objective with a clipped
value loss, minibatch epochs, everything in one function. The environments are fl_gym's
native vector env (``gym.make_vec(..., vectorization_mode="vector_entry_point",
obs_mode="flat")``: E federations trained in one batched computation, flat observations)::

    python examples/cleanrl_ppo.py                                  # fl_gym/ClientSelection-v0
    python examples/cleanrl_ppo.py --env-id fl_gym/PowerControl-v0 --total-timesteps 20000
    python examples/cleanrl_ppo.py --config '{"energy_weight_per_j": 100.0}' --max-episode-steps 20

It prints ``global_step=..., episodic_return=...`` for every finished episode. Any fl_gym id
with a ``Box`` action space works (ClientSelection, PowerControl, WirelessFL, OverTheAirFL).

Gymnasium 1.x vector envs reset an environment one step *after* its episode ended (next-step
autoreset): that step ignores the action and returns reward 0. Its transitions are kept out of
the loss (``valid`` below), and ``dones[t]`` marks that ``obs[t]`` is an episode's last
observation, which is exactly what GAE's ``nextnonterminal`` needs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions.normal import Normal

import fl_gym  # noqa: F401  (registers the environments)
from fl_gym.sim.threads import torch_threads


@dataclass
class Args:
    """Command-line arguments (``--name-with-dashes``); CleanRL's names and defaults."""

    env_id: str = "fl_gym/ClientSelection-v0"
    """the fl_gym environment id (a Box action space)"""
    config: dict[str, Any] = field(default_factory=dict)
    """config overrides of the environments, as JSON"""
    max_episode_steps: int | None = None
    """truncate episodes after this many steps (None: the registration's 100)"""
    seed: int = 1
    """seed of the environments, of torch and of numpy"""
    torch_deterministic: bool = True
    """torch.backends.cudnn.deterministic"""
    total_timesteps: int = 50_000
    """total environment steps"""
    learning_rate: float = 3e-4
    """Adam's learning rate"""
    num_envs: int = 8
    """parallel environments (one native vector env)"""
    num_steps: int = 64
    """steps per environment per rollout"""
    anneal_lr: bool = True
    """anneal the learning rate linearly to 0"""
    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 0.95
    """lambda of the generalised advantage estimate"""
    num_minibatches: int = 8
    """minibatches per epoch"""
    update_epochs: int = 10
    """epochs over the rollout per update"""
    norm_adv: bool = True
    """normalise advantages per minibatch"""
    clip_coef: float = 0.2
    """surrogate clipping coefficient"""
    clip_vloss: bool = True
    """clip the value loss too"""
    ent_coef: float = 0.0
    """entropy coefficient"""
    vf_coef: float = 0.5
    """value loss coefficient"""
    max_grad_norm: float = 0.5
    """gradient clipping norm"""
    target_kl: float | None = None
    """stop the epochs early above this approximate KL"""
    num_threads: int = 1
    """torch intra-op threads (one is fastest for these small networks)"""


def parse_args(argv: list[str] | None = None) -> Args:
    """:class:`Args` from the command line (one ``--flag`` per field)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(Args):
        flag = "--" + f.name.replace("_", "-")
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if f.type == "bool":
            parser.add_argument(
                flag, type=lambda s: s.lower() in ("1", "true", "yes"), default=default
            )
        elif f.name == "config":
            parser.add_argument(flag, type=json.loads, default=default)
        elif f.type in ("int | None", "float | None"):
            cast = int if f.type.startswith("int") else float
            parser.add_argument(
                flag, type=lambda s, c=cast: None if s == "None" else c(s), default=default
            )
        else:
            parser.add_argument(
                flag, type={"int": int, "float": float, "str": str}[f.type], default=default
            )
    return Args(**vars(parser.parse_args(argv)))


def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    """Separate 64-64 tanh actor and critic; a state-independent log standard deviation."""

    def __init__(self, obs_size: int, action_size: int) -> None:
        super().__init__()
        self.critic = nn.Sequential(
            layer_init(nn.Linear(obs_size, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 1), std=1.0),
        )
        self.actor_mean = nn.Sequential(
            layer_init(nn.Linear(obs_size, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, action_size), std=0.01),
        )
        self.actor_logstd = nn.Parameter(torch.zeros(1, action_size))

    def get_value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(x)

    def get_action_and_value(
        self, x: torch.Tensor, action: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        action_mean = self.actor_mean(x)
        action_std = torch.exp(self.actor_logstd.expand_as(action_mean))
        probs = Normal(action_mean, action_std)
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action).sum(1), probs.entropy().sum(1), self.critic(x)


def train(args: Args) -> list[tuple[int, float]]:
    """Run PPO; return ``(global_step, episodic_return)`` of every finished episode.

    Torch runs on ``num_threads`` threads and its global generator is seeded inside
    ``fork_rng``, so the caller's thread count and random state are as they were afterwards.
    """
    with torch_threads(args.num_threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        return _train(args)


def _train(args: Args) -> list[tuple[int, float]]:
    batch_size = args.num_envs * args.num_steps
    minibatch_size = batch_size // args.num_minibatches
    num_iterations = max(1, args.total_timesteps // batch_size)
    np_rng = np.random.default_rng(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    device = torch.device("cpu")

    make_kwargs: dict[str, Any] = {"obs_mode": "flat", "config": args.config}
    if args.max_episode_steps is not None:
        make_kwargs["max_episode_steps"] = args.max_episode_steps
    envs = gym.make_vec(
        args.env_id,
        num_envs=args.num_envs,
        vectorization_mode="vector_entry_point",
        **make_kwargs,
    )
    action_space = envs.single_action_space
    if not isinstance(action_space, gym.spaces.Box):
        raise ValueError(
            f"this example's Gaussian policy needs a Box action space; {args.env_id} has "
            f"{action_space}: use ClientSelection-v0, PowerControl-v0, WirelessFL-v0 or "
            "OverTheAirFL-v0"
        )
    obs_size = int(np.prod(envs.single_observation_space.shape))
    action_size = int(np.prod(action_space.shape))
    low = torch.as_tensor(action_space.low, dtype=torch.float32)
    high = torch.as_tensor(action_space.high, dtype=torch.float32)

    agent = Agent(obs_size, action_size).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)

    # Rollout buffer.
    obs = torch.zeros((args.num_steps, args.num_envs, obs_size), device=device)
    actions = torch.zeros((args.num_steps, args.num_envs, action_size), device=device)
    logprobs = torch.zeros((args.num_steps, args.num_envs), device=device)
    rewards = torch.zeros((args.num_steps, args.num_envs), device=device)
    dones = torch.zeros((args.num_steps, args.num_envs), device=device)
    values = torch.zeros((args.num_steps, args.num_envs), device=device)

    global_step = 0
    start_time = time.time()
    episodes: list[tuple[int, float]] = []
    episode_return = np.zeros(args.num_envs)
    next_obs_np, _ = envs.reset(seed=args.seed)
    next_obs = torch.as_tensor(next_obs_np, device=device)
    next_done = torch.zeros(args.num_envs, device=device)

    for iteration in range(1, num_iterations + 1):
        if args.anneal_lr:
            frac = 1.0 - (iteration - 1.0) / num_iterations
            optimizer.param_groups[0]["lr"] = frac * args.learning_rate

        for step in range(args.num_steps):
            global_step += args.num_envs
            obs[step] = next_obs
            dones[step] = next_done  # obs[step] ended an episode: this step is an autoreset
            with torch.no_grad():
                action, logprob, _, value = agent.get_action_and_value(next_obs)
                values[step] = value.flatten()
            actions[step] = action
            logprobs[step] = logprob

            clipped = torch.clamp(action, low, high).cpu().numpy()
            next_obs_np, reward, terminations, truncations, _ = envs.step(clipped)
            rewards[step] = torch.as_tensor(reward, dtype=torch.float32, device=device)
            next_obs = torch.as_tensor(next_obs_np, device=device)
            ended = np.logical_or(terminations, truncations)
            next_done = torch.as_tensor(ended, dtype=torch.float32, device=device)
            stepped = dones[step].cpu().numpy() == 0.0
            episode_return += np.where(stepped, reward, 0.0)
            for i in np.flatnonzero(ended):
                print(f"global_step={global_step}, episodic_return={episode_return[i]:.3f}")
                episodes.append((global_step, float(episode_return[i])))
                episode_return[i] = 0.0

        # Generalised advantage estimation.
        with torch.no_grad():
            next_value = agent.get_value(next_obs).reshape(1, -1)
            advantages = torch.zeros_like(rewards, device=device)
            lastgaelam = torch.zeros(args.num_envs, device=device)
            for t in reversed(range(args.num_steps)):
                if t == args.num_steps - 1:
                    nextnonterminal = 1.0 - next_done
                    nextvalues = next_value
                else:
                    nextnonterminal = 1.0 - dones[t + 1]
                    nextvalues = values[t + 1]
                delta = rewards[t] + args.gamma * nextvalues * nextnonterminal - values[t]
                lastgaelam = delta + args.gamma * args.gae_lambda * nextnonterminal * lastgaelam
                advantages[t] = lastgaelam
            returns = advantages + values

        # Flatten the batch; autoreset transitions (action ignored by the env) are left out.
        valid = (dones.reshape(-1) == 0.0).cpu().numpy()
        b_obs = obs.reshape((-1, obs_size))
        b_logprobs = logprobs.reshape(-1)
        b_actions = actions.reshape((-1, action_size))
        b_advantages = advantages.reshape(-1)
        b_returns = returns.reshape(-1)
        b_values = values.reshape(-1)

        # Optimise the policy and value networks.
        valid_inds = np.flatnonzero(valid)
        clipfracs = []
        approx_kl = torch.zeros(())
        for _epoch in range(args.update_epochs):
            b_inds = np_rng.permutation(valid_inds)
            for start in range(0, len(b_inds), minibatch_size):
                mb_inds = torch.as_tensor(b_inds[start : start + minibatch_size])
                _, newlogprob, entropy, newvalue = agent.get_action_and_value(
                    b_obs[mb_inds], b_actions[mb_inds]
                )
                logratio = newlogprob - b_logprobs[mb_inds]
                ratio = logratio.exp()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - logratio).mean()
                    clipfracs.append(((ratio - 1.0).abs() > args.clip_coef).float().mean().item())

                mb_advantages = b_advantages[mb_inds]
                if args.norm_adv and len(mb_inds) > 1:
                    mb_advantages = (mb_advantages - mb_advantages.mean()) / (
                        mb_advantages.std() + 1e-8
                    )
                pg_loss1 = -mb_advantages * ratio
                pg_loss2 = -mb_advantages * torch.clamp(
                    ratio, 1 - args.clip_coef, 1 + args.clip_coef
                )
                pg_loss = torch.max(pg_loss1, pg_loss2).mean()

                newvalue = newvalue.view(-1)
                if args.clip_vloss:
                    v_loss_unclipped = (newvalue - b_returns[mb_inds]) ** 2
                    v_clipped = b_values[mb_inds] + torch.clamp(
                        newvalue - b_values[mb_inds], -args.clip_coef, args.clip_coef
                    )
                    v_loss_clipped = (v_clipped - b_returns[mb_inds]) ** 2
                    v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
                else:
                    v_loss = 0.5 * ((newvalue - b_returns[mb_inds]) ** 2).mean()

                entropy_loss = entropy.mean()
                loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()
            if args.target_kl is not None and approx_kl > args.target_kl:
                break

        sps = int(global_step / max(time.time() - start_time, 1e-9))
        print(
            f"iteration={iteration}/{num_iterations} global_step={global_step} "
            f"approx_kl={float(approx_kl):.4f} clipfrac={np.mean(clipfracs or [0.0]):.3f} "
            f"SPS={sps}"
        )

    envs.close()
    return episodes


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    episodes = train(args)
    if not episodes:
        print("no episode finished; raise --total-timesteps or lower --max-episode-steps")
        return
    tail = [r for _, r in episodes[-max(1, len(episodes) // 5) :]]
    print(f"episodes={len(episodes)} mean_return_last={np.mean(tail):.3f}")
    if not all(np.isfinite(r) for _, r in episodes):
        raise SystemExit("a return is not finite")


if __name__ == "__main__":
    main()
