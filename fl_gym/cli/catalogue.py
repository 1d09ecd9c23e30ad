"""``fl-gym list``: the catalogue of every environment of every family."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["run_list"]


def run_list(args: argparse.Namespace) -> int:
    import json

    from rich.table import Table

    from fl_gym import catalogue
    from fl_gym._catalogue import preset_summary
    from fl_gym._console import make_console

    entries = catalogue()
    if args.name is not None:
        wanted = args.name.removeprefix("fl_gym.envs.")
        chosen = [e for e in entries if wanted in (e.name, e.name.removeprefix("fl_gym.envs."))]
        if not chosen:
            names = [e.name for e in entries]
            raise ValueError(f"unknown environment {args.name!r}; allowed: {names}")
        entries = tuple(chosen)
    if args.json:
        print(json.dumps([_entry_json(e) for e in entries], indent=2, default=repr))
        return 0
    console = make_console()
    overview = Table(title="Environments (after import fl_gym; fl-gym list NAME: config keys)")
    for column in ("environment", "api", "controls", "action space", "observation space"):
        overview.add_column(column, overflow="fold")
    for e in entries:
        agents = f" ({e.agents}, per agent)" if e.agents else ""
        overview.add_row(
            e.name, e.api + agents, ", ".join(e.controls), e.action_space, e.observation_space
        )
    console.print(overview)
    # One group per family and set of presets (an env of a family may name its own scenarios).
    families: dict[tuple[str, str], list[Any]] = {}
    for e in entries:
        families.setdefault((e.family, repr(e.presets)), []).append(e)
    presets = Table(title="Scenario presets (preset=NAME, --preset NAME)")
    for column in ("preset", "environments", "overrides of the defaults"):
        presets.add_column(column, overflow="fold")
    for (family, _), members in families.items():
        where = (
            f"{family} ({len(members)})" if len(members) > 2 else ", ".join(e.name for e in members)
        )
        for name, overrides in members[0].presets.items():
            presets.add_row(name, where, preset_summary(overrides))
    console.print(presets)
    policies = Table(title="Heuristic policies (--policy NAME, --controller NAME for the UAVs)")
    policies.add_column("environment")
    policies.add_column("policies", overflow="fold")
    for e in entries:
        policies.add_row(e.name, ", ".join(e.policies))
    console.print(policies)
    if args.name is not None:
        for e in entries:
            keys = Table(title=f"{e.name}: config keys (config={{KEY: VALUE}}, --config KEY=VALUE)")
            for column in ("key", "default", "unit", "meaning"):
                keys.add_column(column, overflow="fold")
            for key in e.config_keys:
                keys.add_row(key.name, repr(key.default), key.unit or "", key.doc)
            console.print(keys)
            console.print(f"build it with: {e.make}")
    return 0


def _entry_json(entry: Any) -> dict[str, Any]:
    import dataclasses

    out = dataclasses.asdict(entry)
    out["config_keys"] = [dataclasses.asdict(k) for k in entry.config_keys]
    return out
