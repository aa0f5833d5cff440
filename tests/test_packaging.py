"""The installed wheel: one top-level import package, every source folder shipped, and the ``tune``
command working from a virtual environment outside the checkout.

The wheel is built from a copy of the source (so a stale ``build/`` in the checkout cannot leak into
it) and installed into a fresh venv. The venv sees the system site-packages for the third-party
dependencies only: ``audit_tune`` must resolve to the venv's own copy, which the test checks.
"""
from __future__ import annotations

import ast
import csv
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.layout import REPO, SETUPTOOLS, SOURCE_ROOTS, package_of, source_files

_COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                      ".pytest_cache", ".hypothesis", "reports", "test-artifacts")


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=_COPY_IGNORE)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
                        "-q", "-w", str(tmp / "dist"), str(src)], capture_output=True, text=True, cwd=tmp,
                       env=_clean_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    wheels = list((tmp / "dist").glob("audit_tune-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv (system site-packages for the dependencies) with the wheel installed."""
    root = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(root)], check=True,
                   cwd="/tmp", env=_clean_env(), timeout=300)
    r = subprocess.run([str(root / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--force-reinstall",
                        "--disable-pip-version-check", "-q", str(wheel)], capture_output=True, text=True,
                       cwd="/tmp", env=_clean_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return root


def _record(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/RECORD"))
        return [row[0] for row in csv.reader(z.read(name).decode().splitlines()) if row]


def test_the_wheel_installs_exactly_one_top_level_import_package(wheel):
    tops = {p.split("/")[0] for p in _record(wheel)}
    imports = {t.removesuffix(".py") for t in tops if not t.endswith((".dist-info", ".data"))}
    assert imports == {"audit_tune"}, sorted(tops)
    with zipfile.ZipFile(wheel) as z:
        ep = next(n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt"))
        scripts = z.read(ep).decode()
    assert "tune = audit_tune.cli.app:main" in scripts, scripts


def test_every_source_package_folder_is_listed_in_pyproject():
    listed = set(SETUPTOOLS["packages"])
    folders = {package_of(init.parent) for root in SOURCE_ROOTS for init in (REPO / root).rglob("__init__.py")
               if "__pycache__" not in init.parts}
    assert folders - listed == set(), f"add to [tool.setuptools] packages: {sorted(folders - listed)}"
    assert listed - folders == set(), f"listed without a folder: {sorted(listed - folders)}"


def test_the_wheel_holds_every_python_file_of_the_source_folders(wheel):
    """A module in a folder without ``__init__.py``, or in an unlisted package, would be silently
    missing from the wheel while the editable install still finds it."""
    shipped = {p for p in _record(wheel) if p.endswith(".py")}
    expected = {package_of(f.parent).replace(".", "/") + "/" + f.name for f in source_files().values()}
    assert expected - shipped == set(), sorted(expected - shipped)
    data = [p for p in _record(wheel) if p.startswith("audit_tune/analysis/data/")]
    assert any(p.endswith("sample-snapshot.json") for p in data), data


def test_tune_recommend_runs_from_the_installed_wheel_outside_the_checkout(venv):
    py = venv / "bin" / "python"
    where = subprocess.run([str(py), "-c", "import audit_tune; print(audit_tune.__file__)"], capture_output=True,
                           text=True, cwd="/tmp", env=_clean_env(), timeout=120)
    assert where.returncode == 0, where.stderr
    path = Path(where.stdout.strip()).resolve()
    assert path.is_relative_to(venv.resolve()), f"audit_tune imported from {path}, not from the venv"
    assert not path.is_relative_to(REPO)
    r = subprocess.run([str(venv / "bin" / "tune"), "recommend", "-f", "json", "--seeds", "1", "--jobs", "1",
                        "--no-progress"], capture_output=True, text=True, cwd="/tmp", env=_clean_env(), timeout=600)
    # The bundled sample was recorded with flags that lose events: exit 3, as README documents.
    assert r.returncode == 3, r.stderr[-3000:]
    assert "bundled sample" in r.stderr
    report = json.loads(r.stdout)
    assert report["config"]["source"]["kind"] == "bundled sample"


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """Top-level names a module imports: (at module level, anywhere else), relative imports left out."""
    tree = ast.parse(path.read_text(), str(path))
    top: set[str] = set()
    every: set[str] = set()
    module_level = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names = {node.module.split(".")[0]}
        else:
            continue
        every |= names
        if id(node) in module_level:
            top |= names
    return top, every


def _requirement_name(req: str) -> str:
    return re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0].lower().replace("_", "-")


def test_every_third_party_module_the_package_imports_is_a_declared_dependency():
    """A module imported at module level needs a runtime dependency; one imported inside a function
    (the optional Dask and Parquet paths) a dependency or an extra. The test extras install many
    packages, so an import that only works because one of them pulled it in (click via dask, while
    typer >= 0.29 vendors its own) would pass every other test and fail on a machine that installed
    the README's first command only."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = {_requirement_name(r) for r in project["dependencies"]}
    extras = {_requirement_name(r) for reqs in project["optional-dependencies"].values() for r in reqs}
    dists = importlib.metadata.packages_distributions()
    local = {"audit_tune", *(f.stem for f in source_files().values())}
    missing: list[str] = []
    for name, path in source_files().items():
        top, every = _imports(path)
        for mod in sorted(every - local - set(sys.stdlib_module_names)):
            owners = {d.lower().replace("_", "-") for d in dists.get(mod, [mod])}
            need = core if mod in top else core | extras
            if not owners & need:
                missing.append(f"{name} imports {mod} ({', '.join(sorted(owners))}): not in "
                               + ("[project] dependencies" if mod in top else "dependencies or extras"))
    assert not missing, "\n".join(missing)
    # the check itself sees a module-level third-party import
    assert "numpy" in _imports(source_files()["audit_tune.sim.stats"])[0]
