"""The client package stays small and torch-free, and client_examples uses it instead of copying it."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path


import wm_client

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "clients" / "python"
DECLARED = {"numpy", "httpx", "msgpack", "pillow"}
IMPORT_NAMES = {"numpy": "numpy", "httpx": "httpx", "msgpack": "msgpack", "PIL": "pillow"}
# Imported inside a function that only runs in the simulator's own Python.
SIMULATOR_ONLY = {"isaacsim"}


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(top-level module, imported at module level?) for every absolute import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    in_function: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function.update(id(child) for child in ast.walk(node) if child is not node)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(name.split(".")[0], id(node) not in in_function) for name in names]
    return found


def test_the_declared_dependencies_are_numpy_httpx_msgpack_pillow() -> None:
    # The installed metadata, as pip sees it (`make setup` reinstalls when the pyproject changes).
    requires = importlib.metadata.requires("wm-planning-client") or []
    assert {re.match(r"[A-Za-z0-9_.-]+", req).group(0).lower() for req in requires} == DECLARED
    assert not any("extra ==" in req for req in requires)  # no optional extras that could pull torch


def test_the_package_imports_only_the_standard_library_and_its_declared_dependencies() -> None:
    modules = sorted((PACKAGE / "src" / "wm_client").glob("*.py"))
    assert {m.name for m in modules} >= {"__init__.py", "client.py", "control_loop.py", "isaac.py"}
    used: set[str] = set()
    for module in modules:
        for name, top_level in _imports(module):
            if name in sys.stdlib_module_names or name in {"__future__", "wm_client"}:
                continue
            if not top_level and name in SIMULATOR_ONLY:
                continue
            assert name in IMPORT_NAMES, f"{module.name} imports {name}: not a declared dependency"
            used.add(IMPORT_NAMES[name])
    assert used == DECLARED  # and every declared one is really used


def test_the_installed_distribution_is_this_directory() -> None:
    # Editable (scripts/setup.sh) or copied by a plain `pip install ./clients/python` (the
    # Docker image): either way the imported modules must be this directory's, byte for byte.
    assert importlib.metadata.version("wm-planning-client") == wm_client.__version__
    source = PACKAGE / "src" / "wm_client"
    imported = Path(wm_client.__file__).resolve().parent
    expected = sorted(p.relative_to(source) for p in source.rglob("*.py"))
    assert sorted(p.relative_to(imported) for p in imported.rglob("*.py")) == expected, imported
    for rel in expected:
        assert (imported / rel).read_bytes() == (source / rel).read_bytes(), f"{imported / rel} is stale"


def _top_level_definitions(path: Path) -> set[str]:
    return {n.name for n in ast.parse(path.read_text()).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}


def test_the_example_scripts_use_the_package_instead_of_copying_it() -> None:
    package = set().union(*(_top_level_definitions(m) for m in (PACKAGE / "src" / "wm_client").glob("*.py")))
    package = {name for name in package if not name.startswith("_")}
    assert {"PlanningClient", "ControlLoop", "IsaacCamera"} <= package
    for script in sorted((ROOT / "client_examples").glob("*.py")):
        assert not _top_level_definitions(script) & package, f"{script.name} defines its own copy"
