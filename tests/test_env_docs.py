"""The generated environment pages docs/envs/ (written by docs/make_env_docs.py)."""

from __future__ import annotations

import importlib.util
import inspect
import re
from pathlib import Path
from types import ModuleType

import pytest

import fl_gym

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docs" / "make_env_docs.py"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_env_docs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_env_docs = _load_script()


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    return make_env_docs.render_all()


def test_committed_pages_are_what_the_script_writes(pages: dict[str, str]) -> None:
    stale = make_env_docs.stale_files(pages)
    assert stale == [], (
        f"docs/envs/ is out of date ({', '.join(stale)}): the env docstrings or the catalogue "
        f"changed; regenerate with `{make_env_docs.REGENERATE}` and commit docs/envs/"
    )


def test_every_environment_has_a_page(pages: dict[str, str]) -> None:
    modules = make_env_docs.versioned_modules()
    assert modules == ["fl_gym.envs.uav_swarm_v0", "fl_gym.envs.vehicular_v1"]
    expected = {f"{env_id.removeprefix('fl_gym/')}.md" for env_id in fl_gym.ENV_IDS}
    expected |= {f"{name.rsplit('.', 1)[-1]}.md" for name in modules}
    assert set(pages) == expected | {"README.md"}
    for name in expected:
        assert f"]({name})" in pages["README.md"], f"the index does not link {name}"


def test_pages_hold_the_docstring_and_the_catalogue(pages: dict[str, str]) -> None:
    for entry in fl_gym.catalogue():
        page = pages[make_env_docs.page_name(entry.name)]
        doc = inspect.getdoc(make_env_docs.env_class(entry)) or ""
        titles = re.findall(r"^## (.+)$", doc, flags=re.MULTILINE)
        assert "Description" in titles and titles[-1] == "Version History", entry.name
        for title in [*titles, "Presets", "Heuristic policies", "Configuration"]:
            assert f"\n## {title}\n" in page, f"{entry.name}: no section {title!r}"
        assert page.index("## Configuration") < page.index("## Version History")
        assert f"`{entry.action_space}`" in page and f"`{entry.observation_space}`" in page
        for preset in entry.presets:
            assert f"| `{preset}` |" in page
        for policy in entry.policies:
            assert f"`{policy}`" in page
        for key in entry.config_keys:
            assert f"| `{key.name}` |" in page
        # No reStructuredText left: roles and double backticks became Markdown code spans.
        assert ":class:" not in page and "``" not in page, entry.name


def test_roles_become_code_spans_linked_to_their_page() -> None:
    pages = {"fl_gym.envs.x.Env": "X-v0.md"}
    text = ":class:`~fl_gym.envs.x.Env` and :mod:`fl_gym.sim.threads`, ``a | b``"
    assert make_env_docs.to_markdown(text, pages, own_page="Y-v0.md") == (
        "[`Env`](X-v0.md) and `fl_gym.sim.threads`, `a | b`"
    )
    # No link from a page to itself.
    assert make_env_docs.to_markdown(":class:`~fl_gym.envs.x.Env`", pages, "X-v0.md") == "`Env`"


def test_readme_links_the_environment_pages() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/envs/README.md)" in readme


def test_fl_gym_does_not_import_the_generator() -> None:
    for path in (ROOT / "fl_gym").rglob("*.py"):
        assert "make_env_docs" not in path.read_text(encoding="utf-8"), path
