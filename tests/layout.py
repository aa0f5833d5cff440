"""The repository's source folders as the import package ``audit_tune`` sees them (pyproject's
``[tool.setuptools] package-dir``), for the packaging and architecture tests."""
from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETUPTOOLS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
PACKAGE_DIR: dict[str, str] = SETUPTOOLS["package-dir"]
SOURCE_ROOTS = tuple(sorted(set(PACKAGE_DIR.values())))


def package_of(folder: Path) -> str:
    """The import name setuptools gives a folder: the longest package-dir entry that holds it."""
    rel = folder.resolve().relative_to(REPO).as_posix()
    pkg, src = max(((p, s) for p, s in PACKAGE_DIR.items() if rel == s or rel.startswith(s + "/")),
                   key=lambda ps: len(ps[1]))
    rest = rel[len(src):].strip("/")
    return ".".join([pkg, *rest.split("/")]) if rest else pkg


def source_files() -> dict[str, Path]:
    """Every module of the package (dotted name -> source file), ``__init__`` as the package's name."""
    out: dict[str, Path] = {}
    for root in SOURCE_ROOTS:
        for f in sorted((REPO / root).rglob("*.py")):
            if "__pycache__" in f.parts:
                continue
            pkg = package_of(f.parent)
            out[pkg if f.stem == "__init__" else f"{pkg}.{f.stem}"] = f
    return out


def stage_package(dest: Path) -> Path:
    """Copy the sources into ``dest/audit_tune/...`` as the wheel lays them out (static checkers cannot
    follow package-dir through an editable install); returns the folder to put on ``sys.path``."""
    for pkg, src in sorted(PACKAGE_DIR.items(), key=lambda ps: ps[0].count(".")):
        shutil.copytree(REPO / src, dest.joinpath(*pkg.split(".")), dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest
