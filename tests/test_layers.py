"""The architecture's import rules (DESIGN.md), read from every module's import statements."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "fl_gym"
RL_LIBRARIES = ("gymnasium", "pettingzoo", "stable_baselines3", "ray", "flwr", "rl_zoo3")
LAYERS = ("sim", "envs", "baselines", "agents", "integrations", "cli")
"""Bottom to top: a layer imports only from layers below it (and from the top-level helpers)."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module an import statement in ``path`` names (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = (
        _module_name(path) if path.name == "__init__.py" else _module_name(path).rsplit(".", 1)[0]
    )
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            out.add(name)
            out.update(f"{name}.{alias.name}" for alias in node.names)
    return out


MODULES = sorted(ROOT.rglob("*.py"))


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_the_rules_see_every_module() -> None:
    names = {_module_name(p) for p in MODULES}
    assert {"fl_gym.sim.rounds", "fl_gym.sim.learning.federation", "fl_gym.sim.radio.cell"} <= names
    # The parser sees absolute, nested and relative-free imports (so the rules cannot pass
    # vacuously): the env imports the pipeline, the CLI imports the agents inside a function.
    assert "fl_gym.sim.rounds" in _imports(ROOT / "envs" / "wireless_fl" / "env.py")
    assert any(i.startswith("fl_gym.agents") for i in _imports(ROOT / "cli" / "agents.py"))
    assert _layer("fl_gym.baselines.uav") == "baselines" and _layer("fl_gym._console") is None


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_imports_point_downwards(path: Path) -> None:
    module = _module_name(path)
    layer = _layer(module)
    imports = _imports(path)
    if layer == "sim":
        rl = sorted(i for i in imports if i.split(".")[0] in RL_LIBRARIES)
        assert not rl, f"{module} imports an RL library: {rl}"
    if module.startswith("fl_gym.sim.learning"):
        assert not [i for i in imports if i.startswith("fl_gym.sim.radio")], module
    if module.startswith("fl_gym.sim.radio"):
        assert not [i for i in imports if i.startswith("fl_gym.sim.learning")], module
    if layer is None:
        return
    rank = LAYERS.index(layer)
    upward = sorted(
        i for i in imports if (other := _layer(i)) is not None and LAYERS.index(other) > rank
    )
    assert not upward, f"{module} ({layer}) imports from a layer above it: {upward}"
