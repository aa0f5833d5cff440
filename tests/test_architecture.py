"""The package's structure: the import layers (import-linter's contract in pyproject.toml), no
import cycles between modules (grimp's import graph), no module importing another module's private
names, library modules importing at the top, and the CLI loading a command's module only when that
command runs (with the same ``tune --help`` as when every command is loaded).

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


# Imports a library module may defer to the function that needs them: the optional extras
# (pyproject's [dask] and [parquet]) and uvloop, which is not installed on Windows.
DEFERRABLE = {"dask", "distributed", "pyarrow", "uvloop"}
# Modules whose function-local imports are still to be moved, with how many they have (a ratchet:
# the count may only go down; remove the entry when it reaches 0).
NOT_YET_MOVED = {
    "audit_tune.analysis.prom": 10,
    "audit_tune.analysis.recommend": 7,
    "audit_tune.loadgen.sink": 6,
    "audit_tune.loadgen.sink_tls": 4,
    "audit_tune.loadgen.verify": 12,
}


def _function_local_imports(tree: ast.AST) -> list[tuple[int, str]]:
    out = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if not any(m.split(".")[0] in DEFERRABLE for m in mods):
                    out.append((node.lineno, ast.unparse(node)))
    return sorted(set(out))


def test_library_modules_import_at_the_top():
    """Only the CLI defers imports (it loads a command's module when the command runs)."""
    bad, over = [], []
    for module, path in source_files().items():
        if module.startswith("audit_tune.cli"):
            continue
        local = _function_local_imports(ast.parse(path.read_text(), str(path)))
        allowed = NOT_YET_MOVED.get(module, 0)
        if len(local) > allowed:
            (over if allowed else bad).extend(f"{path.relative_to(REPO)}:{line}: {text}" for line, text in local)
    assert bad == [], "move to the top of the module:\n" + "\n".join(bad)
    assert over == [], "more function-local imports than NOT_YET_MOVED allows:\n" + "\n".join(over)


def test_the_local_import_check_sees_nested_and_deferrable_imports():
    tree = ast.parse("import os\ndef f():\n    def g():\n        import json\n    import pyarrow\n")
    assert _function_local_imports(tree) == [(4, "import json")]


def _py(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "100", "TERM": "dumb", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/tmp", env=env,
                          timeout=300)


_HELP_LAZY = "from audit_tune.cli.app import main; main(['--help'])"
_HELP_LOADED = """
import typer.main
from audit_tune.cli.app import app
group = typer.main.get_command(app)
group.load_all()
group.main(['--help'], prog_name='tune')
"""


def test_the_cli_lists_unloaded_commands_as_the_loaded_ones_do():
    lazy, loaded = _py(_HELP_LAZY), _py(_HELP_LOADED)
    assert lazy.returncode == 0 and loaded.returncode == 0, lazy.stderr + loaded.stderr
    assert "simulate" in lazy.stdout and "policy" in lazy.stdout
    assert lazy.stdout == loaded.stdout


_MODULES_AFTER = """
import json, sys
from audit_tune.cli.app import main
try:
    main({argv!r})
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


@pytest.mark.parametrize("argv,commands", [(["--help"], set()), (["simulate", "--help"], {"simulate"}),
                                           (["sink", "--help"], {"sink"})])
def test_the_cli_loads_only_the_command_it_runs(argv, commands):
    r = _py(_MODULES_AFTER.format(argv=argv))
    assert r.returncode == 0, r.stderr[-3000:]
    mods = set(json.loads(r.stderr.strip().splitlines()[-1]))
    loaded = {m.rsplit(".", 1)[1] for m in mods if m.startswith("audit_tune.cli.commands.")}
    assert loaded == commands
    # nothing heavy for help: the simulator, numpy and the Prometheus client stay unloaded
    assert not {m for m in mods if m.split(".")[0] in ("numpy", "numba", "simpy", "prometheus_api_client")
                or m.startswith(("audit_tune.sim.", "audit_tune.analysis."))}


def test_ruff_finds_nothing():
    """The style rules in pyproject.toml ([tool.ruff]) hold over the whole repository."""
    here = Path(sys.executable).parent / "ruff"
    ruff = str(here) if here.exists() else shutil.which("ruff")
    assert ruff, "ruff missing: pip install -e '.[test]'"
    r = subprocess.run([ruff, "check", "--no-cache", "--output-format", "concise", "."], capture_output=True,
                       text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_mypy_finds_nothing(staged, tmp_path):
    """mypy as configured in pyproject.toml: strict on audit_tune.sim, its defaults elsewhere, over the
    package as the wheel lays it out."""
    r = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"),
                        "--cache-dir", str(tmp_path / "mypy-cache"), "-p", "audit_tune"],
                       capture_output=True, text=True, cwd=staged, env=_env(staged), timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "Success: no issues found" in r.stdout, r.stdout[-2000:]


# Size limits of the library: the share of signatures that use ``Any``, parameters per function
# (CLI entry points, the public functions of ``audit_tune.cli.commands``, are exempt: Typer makes each
# option a parameter), and lines per file.
ANY_SHARE_LIMIT = 0.05
ANY_SIGNATURES_AT_MOST = 52  # a ratchet under the limit: lowered as signatures get precise types
MAX_PARAMETERS = 10
MAX_LINES = 500


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def _parameters(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.arg]:
    a = fn.args
    extra = [x for x in (a.vararg, a.kwarg) if x is not None]
    return [p for p in [*a.posonlyargs, *a.args, *a.kwonlyargs, *extra] if p.arg not in ("self", "cls")]


def _any_aliases(tree: ast.Module) -> set[str]:
    """Module-level type aliases whose value uses ``Any`` (``Doc = dict[str, Any]``): using one is using Any."""
    out = set()
    for node in tree.body:
        target, value = None, None
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target, value = node.targets[0].id, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None \
                and "TypeAlias" in ast.unparse(node.annotation):
            target, value = node.target.id, node.value
        if target and value is not None and re.search(r"\bAny\b", ast.unparse(value)) \
                and isinstance(value, (ast.Subscript, ast.Name, ast.BinOp)):
            out.add(target)
    return out


def _uses_any(fn: ast.FunctionDef | ast.AsyncFunctionDef, aliases: frozenset[str] = frozenset()) -> bool:
    notes = [p.annotation for p in _parameters(fn) if p.annotation is not None]
    notes += [fn.returns] if fn.returns is not None else []
    names = "|".join(["Any", *sorted(aliases)])
    return any(re.search(rf"\b({names})\b", ast.unparse(n)) for n in notes)


def signature_figures() -> tuple[int, int, dict[str, int]]:
    """(signatures, signatures using Any, functions over MAX_PARAMETERS by dotted name)."""
    total = with_any = 0
    over: dict[str, int] = {}
    trees = {m: ast.parse(p.read_text(), str(p)) for m, p in source_files().items()}
    aliases = frozenset().union(*(_any_aliases(t) for t in trees.values()))
    for module, tree in trees.items():
        for fn in _functions(tree):
            total += 1
            with_any += _uses_any(fn, aliases)
            n = len(_parameters(fn))
            cli_entry = module.startswith("audit_tune.cli.commands.") and not fn.name.startswith("_")
            if n > MAX_PARAMETERS and not cli_entry:
                over[f"{module}.{fn.name}"] = n
    return total, with_any, over


def test_the_signature_figures_see_any_and_parameters():
    tree = ast.parse("def f(a: Any, *b: int, c=1, **d) -> None: ...\ndef g(self) -> dict[str, Any]: ...\n")
    fns = list(_functions(tree))
    assert [_uses_any(f) for f in fns] == [True, True]
    assert [len(_parameters(f)) for f in fns] == [4, 0]
    aliased = ast.parse("Doc = dict[str, Any]\nN: TypeAlias = int\ndef h(d: Doc) -> int: ...\n")
    assert _any_aliases(aliased) == {"Doc"}
    assert _uses_any(list(_functions(aliased))[0], frozenset({"Doc"}))


def test_any_is_rare_in_signatures():
    total, with_any, _ = signature_figures()
    assert with_any <= ANY_SIGNATURES_AT_MOST, f"{with_any} of {total} signatures use Any"
    assert with_any / total < ANY_SHARE_LIMIT, f"{with_any} of {total} signatures use Any"


def test_functions_take_at_most_ten_parameters():
    _, _, over = signature_figures()
    assert over == {}, f"more than {MAX_PARAMETERS} parameters: {over}"


def test_library_files_stay_under_five_hundred_lines():
    over = {m: n for m, p in source_files().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert over == {}, f"files over {MAX_LINES} lines: {over}"
