"""The package's structure, checked statically: the import layers (import-linter's contract in
pyproject.toml), no import cycles between modules (grimp's import graph), no module importing
another module's private names.

The checkers read the package as the wheel lays it out (``tests.layout.stage_package``): the
editable install maps folders with package-dir, which they cannot follow.
"""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.layout import REPO, source_files, stage_package


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> Path:
    return stage_package(tmp_path_factory.mktemp("staged"))


def _env(site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    return env


def _lint_imports() -> str:
    here = Path(sys.executable).parent / "lint-imports"
    found = str(here) if here.exists() else shutil.which("lint-imports")
    assert found, "lint-imports missing: pip install -e '.[test]' (import-linter)"
    return found


def test_the_layers_contract_is_kept(staged):
    r = subprocess.run([_lint_imports(), "--no-cache", "--config", str(REPO / "pyproject.toml")],
                       capture_output=True, text=True, cwd=staged, env=_env(staged), timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "Contracts: 1 kept, 0 broken." in r.stdout, r.stdout[-2000:]
    # the graph covered the whole package, not an empty or partial copy of it
    m = re.search(r"Analyzed (\d+) files", r.stdout)
    assert m and int(m.group(1)) == len(source_files()), r.stdout[-2000:]


_GRAPH = """
import json, grimp
g = grimp.build_graph("audit_tune", exclude_type_checking_imports=True)
print(json.dumps({m: sorted(g.find_modules_directly_imported_by(m)) for m in g.modules}))
"""


def _cycles(edges: dict[str, list[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(edges.get(start, ())))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(edges.get(w, ()))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]
    assert _cycles({"a": ["b"], "b": []}) == []


def test_no_import_cycles_between_modules(staged):
    r = subprocess.run([sys.executable, "-c", _GRAPH], capture_output=True, text=True, cwd=staged,
                       env=_env(staged), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    edges = json.loads(r.stdout)
    assert set(edges) == set(source_files()), "grimp's graph and the source files disagree"
    assert _cycles(edges) == []


def _imported_names(tree: ast.AST, module: str, is_package: bool):
    """(line, module imported from, name) for every ``from X import name`` (relative ones resolved)."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base[: len(base) - node.level + 1]
                src = ".".join(parts + ([node.module] if node.module else []))
            else:
                src = node.module or ""
            for a in node.names:
                yield node.lineno, src, a.name


def test_no_module_imports_another_modules_private_names():
    bad = []
    for module, path in source_files().items():
        tree = ast.parse(path.read_text(), str(path))
        for line, src, name in _imported_names(tree, module, path.name == "__init__.py"):
            if src.startswith("audit_tune") and src != module and name.startswith("_") and not name.startswith("__"):
                bad.append(f"{path.relative_to(REPO)}:{line}: from {src} import {name}")
    assert bad == [], "\n".join(bad)
