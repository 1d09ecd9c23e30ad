"""Write ``docs/envs/<name>.md`` for every fl_gym environment, and ``docs/envs/README.md``.

One page per Gymnasium id (``fl_gym/ClientSelection-v0`` -> ``ClientSelection-v0.md``) and per
PettingZoo module (``fl_gym.envs.uav_swarm_v0`` -> ``uav_swarm_v0.md``), made from two sources
that the code keeps up to date:

* the environment class docstring (Markdown with the sections Description, Action Space,
  Observation Space, Rewards, Episode End, Arguments, Version History), with Sphinx roles
  (``:class:`~fl_gym.x.Y``` ...) turned into code spans, linked to the page of the class where
  there is one;
* :func:`fl_gym.catalogue`: how to build the environment, its controls, its spaces in readable
  form, its presets with their overrides, the heuristic policies that play it and every
  configuration key with its default, unit and meaning.

Usage::

    .venv/bin/python docs/make_env_docs.py          # (re)write docs/envs/
    .venv/bin/python docs/make_env_docs.py --check  # exit 1 if docs/envs/ is not up to date

``tests/test_env_docs.py`` runs the check, so the committed pages cannot go stale. This script
imports fl_gym; nothing in fl_gym imports it.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import load_env_creator

import fl_gym
import fl_gym.envs
from fl_gym._catalogue import EnvEntry, preset_summary

DOCS_DIR = Path(__file__).resolve().parent / "envs"
"""Where the pages are written."""

REGENERATE = ".venv/bin/python docs/make_env_docs.py"
"""The command that rewrites the pages (quoted in their header and in the freshness test)."""

_VERSIONED_MODULE = re.compile(r"^\w+_v\d+$")
_ROLE = re.compile(r":(?:class|mod|func|data|meth|attr|obj|exc):`(~?)([\w.]+)`")
_DOUBLE_BACKTICKS = re.compile(r"``(.+?)``", flags=re.DOTALL)
_SECTION = re.compile(r"^## (.+)$", flags=re.MULTILINE)


def versioned_modules() -> list[str]:
    """The versioned PettingZoo modules of ``fl_gym.envs`` (``fl_gym.envs.uav_swarm_v0``, ...).

    Found by scanning the package for modules named ``<name>_v<N>``, so a new one cannot be
    left out of the pages (or of the tests that use this list).
    """
    return sorted(
        f"fl_gym.envs.{info.name}"
        for info in pkgutil.iter_modules(fl_gym.envs.__path__)
        if not info.ispkg and _VERSIONED_MODULE.match(info.name)
    )


def page_name(entry_name: str) -> str:
    """The file name of an environment's page: the id without ``fl_gym/``, or the module's
    last component, plus ``.md``."""
    if entry_name.startswith("fl_gym/"):
        return entry_name.removeprefix("fl_gym/") + ".md"
    return entry_name.rsplit(".", 1)[-1] + ".md"


def env_class(entry: EnvEntry) -> type:
    """The class an entry of the catalogue builds (its docstring is the page's body)."""
    if entry.api == "gymnasium":
        creator = load_env_creator(gym.spec(entry.name).entry_point)
        assert inspect.isclass(creator), f"{entry.name}: entry point is not a class"
        return creator
    return importlib.import_module(entry.name).raw_env


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _class_pages(entries: Iterable[EnvEntry]) -> dict[str, str]:
    """``{qualified class name: page}``, the first catalogue entry built from each class."""
    pages: dict[str, str] = {}
    for entry in entries:
        pages.setdefault(_qualname(env_class(entry)), page_name(entry.name))
    return pages


def to_markdown(text: str, class_pages: dict[str, str], own_page: str) -> str:
    """Turn reStructuredText inline markup of a docstring into Markdown.

    ``:class:`~a.b.C``` becomes `` `C` `` (`` `a.b.C` `` without the tilde), linked to the
    page of ``a.b.C`` when it has one other than ``own_page``; ````x```` becomes `` `x` ``.
    """

    def role(match: re.Match[str]) -> str:
        short, target = match.group(1) == "~", match.group(2)
        code = f"`{target.rsplit('.', 1)[-1] if short else target}`"
        page = class_pages.get(target)
        return f"[{code}]({page})" if page is not None and page != own_page else code

    text = _ROLE.sub(role, text)
    return _DOUBLE_BACKTICKS.sub(lambda m: f"`{m.group(1)}`", text)


def _sections(doc: str) -> tuple[str, list[tuple[str, str]]]:
    """Split a docstring into its summary (before the first ``## ``) and ``(title, body)``s."""
    parts = _SECTION.split(doc)
    summary, rest = parts[0].strip(), parts[1:]
    return summary, [(rest[i].strip(), rest[i + 1].strip()) for i in range(0, len(rest), 2)]


def _cell(value: Any) -> str:
    """A value as the content of a Markdown table cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _default(value: Any) -> str:
    return f"`{value!r}`" if isinstance(value, str) else f"`{value}`"


def _facts(entry: EnvEntry, cls: type) -> list[str]:
    rows = [("build", f"`{entry.make}`")]
    if entry.api == "pettingzoo":
        rows.append(("import", f"`from fl_gym.envs import {entry.name.rsplit('.', 1)[-1]}`"))
    rows.append(("API", "Gymnasium" if entry.api == "gymnasium" else "PettingZoo (parallel)"))
    rows.append(("family", entry.family))
    rows.append(("class", f"`{_qualname(cls)}`"))
    rows.append(("controls", ", ".join(entry.controls)))
    if entry.agents is not None:
        rows.append(("agents (default)", entry.agents))
    label = "action space" if entry.api == "gymnasium" else "action space (one agent)"
    rows.append((label, f"`{entry.action_space}`"))
    label = "observation space" if entry.api == "gymnasium" else "observation space (one agent)"
    rows.append((label, f"`{entry.observation_space}`"))
    if entry.api == "gymnasium":
        rows.append(("max episode steps", str(gym.spec(entry.name).max_episode_steps)))
    lines = ["| | |", "| --- | --- |"]
    lines += [f"| {key} | {_cell(value)} |" for key, value in rows]
    return lines


def _catalogue_sections(entry: EnvEntry) -> list[str]:
    lines = ["## Presets", ""]
    if entry.presets:
        lines += ["`preset=` takes:", "", "| preset | overrides |", "| --- | --- |"]
        lines += [
            f"| `{name}` | {_cell(preset_summary(overrides))} |"
            for name, overrides in entry.presets.items()
        ]
    else:
        lines.append("None.")
    lines += ["", "## Heuristic policies", ""]
    if entry.policies:
        lines.append(", ".join(f"`{name}`" for name in entry.policies))
    else:
        lines.append("None.")
    lines += [
        "",
        "## Configuration",
        "",
        "Every key `config=` takes (dotted keys for nested fields), with its default:",
        "",
        "| key | default | unit | meaning |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| `{key.name}` | {_cell(_default(key.default))} | {key.unit or ''} | {_cell(key.doc)} |"
        for key in entry.config_keys
    ]
    return lines


def render_page(entry: EnvEntry, class_pages: dict[str, str]) -> str:
    """The Markdown page of one environment."""
    cls = env_class(entry)
    own = page_name(entry.name)
    summary, sections = _sections(inspect.getdoc(cls) or "")
    catalogue_lines = [to_markdown(line, class_pages, own) for line in _catalogue_sections(entry)]
    lines = [
        f"# `{entry.name}`",
        "",
        f"<!-- Generated by docs/make_env_docs.py from the docstring of {cls.__qualname__} and",
        f"fl_gym.catalogue(); do not edit. Regenerate: {REGENERATE} -->",
        "",
        to_markdown(summary, class_pages, own),
        "",
        *_facts(entry, cls),
        "",
    ]
    history = [(t, b) for t, b in sections if t == "Version History"]
    for title, body in [s for s in sections if s[0] != "Version History"]:
        lines += [f"## {title}", "", to_markdown(body, class_pages, own), ""]
    lines += [*catalogue_lines, ""]
    for title, body in history:
        lines += [f"## {title}", "", to_markdown(body, class_pages, own), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def render_index(entries: list[EnvEntry]) -> str:
    """The index page ``docs/envs/README.md``."""
    lines = [
        "# Environments",
        "",
        f"<!-- Generated by docs/make_env_docs.py; do not edit. Regenerate: {REGENERATE} -->",
        "",
        "One page per environment, made from its class docstring and `fl_gym.catalogue()`",
        "(`fl-gym list NAME` prints the same catalogue in a terminal).",
        "",
        "| environment | API | controls | action space | observation space |",
        "| --- | --- | --- | --- | --- |",
    ]
    for entry in entries:
        api = "Gymnasium" if entry.api == "gymnasium" else "PettingZoo"
        lines.append(
            f"| [`{entry.name}`]({page_name(entry.name)}) | {api} | "
            f"{_cell(', '.join(entry.controls))} | `{_cell(entry.action_space)}` | "
            f"`{_cell(entry.observation_space)}` |"
        )
    lines += [
        "",
        "The spaces are those of the default configuration (K = 10 devices for the FL",
        "environments); PettingZoo spaces are one agent's.",
    ]
    return "\n".join(lines) + "\n"


def render_all() -> dict[str, str]:
    """``{file name: content}`` of every page of ``docs/envs/``, the index included."""
    entries = list(fl_gym.catalogue())
    names = {entry.name for entry in entries}
    missing = [name for name in [*fl_gym.ENV_IDS, *versioned_modules()] if name not in names]
    if missing:
        raise RuntimeError(f"fl_gym.catalogue() has no entry for {missing}")
    class_pages = _class_pages(entries)
    pages = {page_name(entry.name): render_page(entry, class_pages) for entry in entries}
    pages["README.md"] = render_index(entries)
    return pages


def stale_files(pages: dict[str, str], directory: Path = DOCS_DIR) -> list[str]:
    """The files of ``directory`` that differ from ``pages``: changed, missing or extra."""
    on_disk = {path.name for path in directory.glob("*.md")} if directory.is_dir() else set()
    stale = [
        name
        for name, text in pages.items()
        if name not in on_disk or (directory / name).read_text(encoding="utf-8") != text
    ]
    return sorted(stale + sorted(on_disk - set(pages)))


def main(argv: list[str] | None = None) -> int:
    """Write the pages (or, with ``--check``, report the stale ones and return 1)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="only check that docs/envs/ is up to date"
    )
    args = parser.parse_args(argv)
    pages = render_all()
    stale = stale_files(pages)
    if args.check:
        if stale:
            print(f"stale in docs/envs/: {', '.join(stale)}; regenerate: {REGENERATE}")
            return 1
        print(f"docs/envs/ is up to date ({len(pages)} files)")
        return 0
    DOCS_DIR.mkdir(parents=True, exist_ok=True)
    for name in sorted(set(stale) - set(pages)):
        (DOCS_DIR / name).unlink()
    for name, text in pages.items():
        (DOCS_DIR / name).write_text(text, encoding="utf-8")
    print(f"wrote {len(pages)} files to {DOCS_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
