"""Agent files that load without running code: weights plus a JSON spec.

fl_gym saves a trained agent as two files:

* ``NAME.pt``: the policy's ``state_dict``, written by ``torch.save`` and read back with
  ``torch.load(weights_only=True)``, which accepts tensors and plain containers only and
  refuses any other pickled object;
* ``NAME.json``: the run's provenance (environment id, preset, config, algorithm, seed,
  timesteps, library versions) and the spec the policy is rebuilt from (algorithm, policy
  architecture and kwargs, algorithm kwargs, the observation and action spaces written as plain
  JSON, the SHA-256 of the weights file).

Loading rebuilds the SB3 model from the spec (``ALGO(policy, env_with_those_spaces, ...)``) and
copies the weights into its policy, so the loaded agent acts exactly as the one that was saved.

A Stable-Baselines3 ``.zip`` is different: SB3 stores objects in it with ``cloudpickle`` and
unpickles them on load, and unpickling runs whatever code the file's author put there. Such a file
is loaded only when the caller says the file is trusted (``trust_pickle=True``, or
``--trust-pickle`` on the command line).
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = [
    "FORMAT",
    "AgentFiles",
    "UntrustedAgentError",
    "save_agent",
    "space_from_json",
    "space_to_json",
]

FORMAT = "fl_gym-agent/1"
"""The ``format`` entry of an agent's JSON file written by :func:`save_agent`."""


class UntrustedAgentError(ValueError):
    """An agent file would be unpickled (an SB3 ``.zip``) and the caller did not trust it."""


# -- spaces as plain JSON --------------------------------------------------------------------------


def _array_to_json(array: np.ndarray) -> Any:
    """One value when all entries are equal, else a flat list; non-finite floats as strings."""
    flat = np.asarray(array).reshape(-1)

    def plain(v: Any) -> Any:
        if isinstance(v, float) and not np.isfinite(v):
            return str(v)  # "inf", "-inf", "nan": JSON has no literal for them
        return v

    values = flat.astype(np.float64).tolist() if flat.dtype.kind == "f" else flat.tolist()
    if flat.size and np.all(flat == flat[0]):
        return plain(values[0])
    return [plain(v) for v in values]


def _array_from_json(value: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    if isinstance(value, list):
        return (
            np.array([float(v) if isinstance(v, str) else v for v in value])
            .astype(dtype)
            .reshape(shape)
        )
    return np.full(shape, float(value) if isinstance(value, str) else value, dtype=dtype)


def space_to_json(space: gym.Space) -> dict[str, Any]:
    """A Gymnasium space as plain JSON (Box, Discrete, MultiDiscrete, MultiBinary, Dict, Tuple).

    Args:
        space: The space.

    Returns:
        A dict that :func:`space_from_json` turns back into an equal space.

    Raises:
        ValueError: For another kind of space.
    """
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": _array_to_json(space.low),
            "high": _array_to_json(space.high),
        }
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {
            "type": "MultiDiscrete",
            "nvec": np.asarray(space.nvec).tolist(),
            "start": np.asarray(space.start).tolist(),
            "dtype": str(space.dtype),
        }
    if isinstance(space, spaces.MultiBinary):
        return {"type": "MultiBinary", "n": np.asarray(space.n).tolist()}
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {k: space_to_json(s) for k, s in space.spaces.items()}}
    if isinstance(space, spaces.Tuple):
        return {"type": "Tuple", "spaces": [space_to_json(s) for s in space.spaces]}
    raise ValueError(
        f"cannot write {type(space).__name__} spaces to an agent's JSON; supported: Box, "
        "Discrete, MultiDiscrete, MultiBinary, Dict, Tuple"
    )


def space_from_json(data: dict[str, Any]) -> gym.Space:
    """The space :func:`space_to_json` wrote."""
    kind = data.get("type") if isinstance(data, dict) else None
    if kind == "Box":
        shape, dtype = tuple(data["shape"]), np.dtype(data["dtype"])
        low = _array_from_json(data["low"], shape, dtype)
        high = _array_from_json(data["high"], shape, dtype)
        return spaces.Box(low, high, shape=shape, dtype=dtype)
    if kind == "Discrete":
        return spaces.Discrete(int(data["n"]), start=int(data.get("start", 0)))
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(
            np.array(data["nvec"]), dtype=data["dtype"], start=np.array(data["start"])
        )
    if kind == "MultiBinary":
        return spaces.MultiBinary(data["n"])
    if kind == "Dict":
        return spaces.Dict({k: space_from_json(v) for k, v in data["spaces"].items()})
    if kind == "Tuple":
        return spaces.Tuple([space_from_json(v) for v in data["spaces"]])
    raise ValueError(
        f"an agent's space must be one of Box, Discrete, MultiDiscrete, MultiBinary, Dict, "
        f"Tuple; got {kind!r}"
    )


# -- policy kwargs: classes by name, from a fixed list ---------------------------------------------


def _known_classes() -> dict[str, dict[str, type]]:
    """The classes a policy kwarg may name, per key (a name in the JSON is looked up here)."""
    import torch
    from stable_baselines3.common import torch_layers

    from fl_gym.agents.device_set import DeviceSetExtractor

    def subclasses(module: Any, base: type) -> dict[str, type]:
        return {
            name: obj
            for name, obj in vars(module).items()
            if isinstance(obj, type) and issubclass(obj, base) and obj is not base
        }

    extractors = subclasses(torch_layers, torch_layers.BaseFeaturesExtractor)
    extractors[DeviceSetExtractor.__name__] = DeviceSetExtractor
    return {
        "features_extractor_class": extractors,
        "activation_fn": subclasses(torch.nn, torch.nn.Module),
        "optimizer_class": subclasses(torch.optim, torch.optim.Optimizer),
    }


def policy_kwargs_to_json(policy_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``policy_kwargs`` as JSON; a class is written by name and must be one loading can find.

    Raises:
        ValueError: If a value cannot be written so that :func:`policy_kwargs_from_json` gives it
            back (a class outside the known ones, a function, another object).
    """
    known = _known_classes()
    out: dict[str, Any] = {}
    for key, value in policy_kwargs.items():
        if key in known and isinstance(value, type):
            if known[key].get(value.__name__) is not value:
                raise ValueError(
                    f"policy_kwargs[{key!r}] = {value.__name__} cannot be recorded in an agent's "
                    f"JSON; allowed: {', '.join(sorted(known[key]))}"
                )
            out[key] = value.__name__
        elif _is_plain(value):
            out[key] = value
        else:
            raise ValueError(
                f"policy_kwargs[{key!r}] = {value!r} cannot be recorded in an agent's JSON "
                "(plain numbers, strings, lists and dicts only, or a class by its name for "
                f"{', '.join(sorted(known))})"
            )
    return out


def policy_kwargs_from_json(data: dict[str, Any]) -> dict[str, Any]:
    """The ``policy_kwargs`` :func:`policy_kwargs_to_json` wrote, classes looked up by name."""
    known = _known_classes()
    out = dict(data)
    for key, table in known.items():
        if isinstance(out.get(key), str):
            if out[key] not in table:
                raise ValueError(
                    f"the agent's policy_kwargs name {key} {out[key]!r}, which is not one of "
                    f"{', '.join(sorted(table))}"
                )
            out[key] = table[out[key]]
    return out


def _is_plain(value: Any) -> bool:
    """JSON's own values (lists, not tuples, so that they read back equal)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_is_plain(v) for v in value)
    if isinstance(value, float):
        return bool(np.isfinite(value))
    return value is None or isinstance(value, (str, int, bool))


def rebuild_algo_kwargs(algo_kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The algorithm kwargs the model is rebuilt with, and those left to SB3's defaults.

    A value that is not plain JSON (a learning-rate schedule, a class) is not recorded: it shapes
    training, not the network, so the rebuilt agent acts the same without it. Tuples (e.g.
    ``train_freq``) are kept as lists, which :func:`_algo_kwargs_for_rebuild` turns back.
    """
    kept, dropped = {}, []
    for key, value in algo_kwargs.items():
        candidate = list(value) if isinstance(value, tuple) else value
        if _is_plain(candidate):
            kept[key] = candidate
        else:
            dropped.append(key)
    return kept, dropped


def _algo_kwargs_for_rebuild(recorded: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items()}


# -- saving ----------------------------------------------------------------------------------------


def agent_spec(model: Any, num_envs: int) -> dict[str, Any]:
    """The JSON entries a model is rebuilt from, beside the provenance :func:`train` records."""
    return {
        "format": FORMAT,
        "observation_space": space_to_json(model.observation_space),
        "action_space": space_to_json(model.action_space),
        "num_envs": int(num_envs),
    }


ACTING_PREFIXES = {"sac": ("actor.",), "td3": ("actor.",)}
"""The parts of a policy's ``state_dict`` that choose its actions, per algorithm whose policy
also holds what only training needs (the critics and their targets)."""


def _weights_bytes(model: Any, acting_only: bool = False) -> bytes:
    import torch

    state = model.policy.state_dict()
    if acting_only:
        prefixes = ACTING_PREFIXES[_algo_name(model)]
        state = type(state)((k, v) for k, v in state.items() if k.startswith(prefixes))
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _algo_name(model: Any) -> str:
    return type(model).__name__.lower()


def save_agent(agent: Any, path: str | Path, *, acting_only: bool = False) -> Path:
    """Write ``agent`` as ``PATH.pt`` (weights) and ``PATH.json`` (provenance and spec).

    Args:
        agent: A :class:`~fl_gym.agents.TrainedAgent` whose metadata holds what :func:`train`
            records (env id, algo, policy, policy_kwargs, algo_kwargs, ...).
        path: Where to write, with or without a suffix.
        acting_only: Keep only the weights that choose actions (SAC's and TD3's actor, see
            :data:`ACTING_PREFIXES`), not the critics and their targets: a file a fraction of
            the size that plays exactly as the whole agent but cannot go on training (its
            critics load freshly initialised). The JSON records ``"weights": "acting"``.

    Returns:
        The path without suffix.

    Raises:
        ValueError: If the policy kwargs cannot be written as JSON (see
            :func:`policy_kwargs_to_json`).
    """
    from fl_gym.agents.training import _stem

    stem = _stem(path)
    model, metadata = agent.model, dict(agent.metadata)
    if "policy_kwargs_spec" not in metadata:  # an agent from an SB3 zip: kwargs by name
        metadata["policy_kwargs_spec"] = policy_kwargs_to_json(metadata.get("policy_kwargs", {}))
    if metadata["policy_kwargs_spec"] is None:
        raise ValueError(
            f"this agent's policy_kwargs {metadata.get('policy_kwargs')} hold objects an agent's "
            "JSON cannot record (train() says which when given save_path)"
        )
    if "algo_kwargs_spec" not in metadata:
        metadata["algo_kwargs_spec"] = rebuild_algo_kwargs(metadata.get("algo_kwargs", {}))[0]
    num_envs = metadata.get("num_envs", getattr(model, "n_envs", 1))
    metadata.update(agent_spec(model, num_envs))
    if acting_only and _algo_name(model) not in ACTING_PREFIXES:
        raise ValueError(
            f"acting_only applies to {sorted(ACTING_PREFIXES)} (their critics are only for "
            f"training), not to {_algo_name(model)!r}, whose whole policy acts"
        )
    metadata["weights"] = "acting" if acting_only else "all"
    weights = _weights_bytes(model, acting_only)
    metadata["weights_sha256"] = hashlib.sha256(weights).hexdigest()
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".pt").write_bytes(weights)
    stem.with_suffix(".json").write_text(json.dumps(metadata, indent=2) + "\n")
    agent.metadata = metadata
    return stem


# -- loading ---------------------------------------------------------------------------------------


def _load_acting(model: Any, state: Any, algo: str) -> None:
    """Load a file saved with ``acting_only``: exactly the acting weights, nothing else."""
    prefixes = ACTING_PREFIXES.get(algo)
    if prefixes is None:
        raise RuntimeError(f"an acting-only weights file for {algo!r}, which has none")
    result = model.policy.load_state_dict(state, strict=False)
    missing_acting = [k for k in result.missing_keys if k.startswith(prefixes)]
    if missing_acting or result.unexpected_keys:
        raise RuntimeError(
            f"acting weights missing {missing_acting} or unexpected {result.unexpected_keys}"
        )


class _SpacesOnly(gym.Env):
    """An environment that only has spaces: what SB3 needs to build a model that acts."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        self.observation_space = observation_space
        self.action_space = action_space

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> Any:
        raise RuntimeError(
            "this agent was loaded to act, not to learn: give it an environment with "
            "model.set_env(env) before model.learn()"
        )

    def step(self, action: Any) -> Any:
        return self.reset()


def _unpickling_refused(archive: Path) -> UntrustedAgentError:
    return UntrustedAgentError(
        f"{archive} is a Stable-Baselines3 zip: loading it unpickles objects stored in it, which "
        "runs any code its author put there. Load it only if you trust where it came from, "
        "with load_agent(..., trust_pickle=True) or fl-gym eval/bench --trust-pickle; then save "
        "it once with fl_gym.agents.save_agent(agent, PATH) to get weights (.pt) that load "
        "without unpickling"
    )


@dataclass(frozen=True)
class AgentFiles:
    """A saved agent's files, read into memory (the benchmark ships them to Ray workers).

    Attributes:
        metadata: The ``.json`` file's content.
        stem: The path it was read from (without suffix), kept as the agent's ``path``.
        weights: The ``.pt`` file (fl_gym's format), or ``None``.
        archive: The SB3 ``.zip`` file when there is no ``.pt`` and the caller trusted it.
    """

    metadata: dict[str, Any]
    stem: str
    weights: bytes | None = None
    archive: bytes | None = None

    @classmethod
    def read(cls, path: str | Path, *, trust_pickle: bool = False) -> AgentFiles:
        """Read the agent saved at ``path`` (with or without suffix).

        ``PATH.pt`` and ``PATH.json`` are read when the ``.pt`` file is there. Otherwise an SB3
        ``PATH.zip`` (with its ``PATH.json``) is read only with ``trust_pickle=True``.

        Raises:
            FileNotFoundError: If the files are missing.
            UntrustedAgentError: If only a ``.zip`` is there and ``trust_pickle`` is false.
            ValueError: If the weights do not match the SHA-256 their JSON records.
        """
        from fl_gym.agents.training import _stem

        stem = _stem(path)
        weights, archive, meta_file = (stem.with_suffix(s) for s in (".pt", ".zip", ".json"))
        if not weights.is_file() and archive.is_file():
            if not trust_pickle:
                raise _unpickling_refused(archive)
            found = archive
        else:
            found = weights
        for file in (found, meta_file):
            if not file.is_file():
                raise FileNotFoundError(f"no trained agent at {file} (train one with fl-gym train)")
        metadata = json.loads(meta_file.read_text())
        if found is archive:
            return cls(metadata, str(stem), archive=archive.read_bytes())
        data = weights.read_bytes()
        expected = metadata.get("weights_sha256")
        if expected is not None and hashlib.sha256(data).hexdigest() != expected:
            raise ValueError(
                f"{weights} is not the file {meta_file} describes (its SHA-256 differs): save "
                "the agent again so that both files come from the same run"
            )
        return cls(metadata, str(stem), weights=data)

    def load(self, env: gym.Env | None = None) -> Any:
        """The agent (a :class:`~fl_gym.agents.TrainedAgent`).

        Args:
            env: The environment it will play, for a device-set policy on another number of
                devices: such a policy has no weight that depends on it, so it is built on the
                environment's spaces. Other policies are built on the recorded spaces.
        """
        from fl_gym.agents.training import TrainedAgent, _algorithm_class

        on_env = env is not None and self.metadata.get("policy") == "device-set"
        if self.archive is not None:
            custom = None
            if on_env:
                custom = {
                    "observation_space": env.observation_space,
                    "action_space": env.action_space,
                }
            model = _algorithm_class(self.metadata["algo"]).load(
                io.BytesIO(self.archive), device="cpu", custom_objects=custom
            )
        else:
            model = self._rebuild(env if on_env else None)
        return TrainedAgent(model=model, metadata=self.metadata, path=Path(self.stem))

    def _rebuild(self, env: gym.Env | None) -> Any:
        import torch
        from stable_baselines3.common.vec_env import DummyVecEnv

        from fl_gym.agents.training import _algorithm_class, _policy_for

        meta = self.metadata
        if meta.get("format") != FORMAT:
            raise ValueError(
                f"{self.stem}.json is not an fl_gym agent spec (format {meta.get('format')!r}, "
                f"expected {FORMAT!r})"
            )
        if env is not None:
            observation_space, action_space = env.observation_space, env.action_space
        else:
            observation_space = space_from_json(meta["observation_space"])
            action_space = space_from_json(meta["action_space"])
        algo = str(meta["algo"]).lower()
        policy_class, policy_kwargs, _ = _policy_for(
            algo,
            meta["policy"],
            policy_kwargs_from_json(meta.get("policy_kwargs_spec", {})),
            observation_space,
        )
        stub: Callable[[], gym.Env] = lambda: _SpacesOnly(observation_space, action_space)  # noqa: E731
        vec_env = DummyVecEnv([stub] * int(meta.get("num_envs", 1)))
        # Building a policy initialises its weights from torch's global generator: fork it, so
        # loading an agent leaves the caller's random state as it was.
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # e.g. PPO's mini-batch size note
            model = _algorithm_class(algo)(
                policy_class,
                vec_env,
                policy_kwargs=policy_kwargs or None,
                device="cpu",
                **_algo_kwargs_for_rebuild(meta.get("algo_kwargs_spec", {})),
            )
        state = torch.load(io.BytesIO(self.weights or b""), map_location="cpu", weights_only=True)
        try:
            if meta.get("weights", "all") == "acting":
                _load_acting(model, state, algo)
            else:
                model.policy.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ValueError(
                f"the weights in {self.stem}.pt do not fit the {meta['policy']} policy rebuilt "
                f"from {self.stem}.json on {observation_space}: {exc}"
            ) from exc
        model.policy.set_training_mode(False)
        model.num_timesteps = int(meta.get("total_timesteps", 0))
        return model
