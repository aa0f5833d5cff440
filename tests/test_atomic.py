"""The shared last step of atomic writes (audit_tune/basics/atomic.py)."""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from audit_tune.basics.atomic import replace_with
from audit_tune.loadgen.keyfiles import write_private


def test_replaces_the_target_with_data_and_mode(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    fd, tmp = tempfile.mkstemp(dir=tmp_path)
    replace_with(fd, tmp, target, "new", 0o640)
    assert target.read_text() == "new" and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # the temporary file was renamed


def test_a_failed_rename_removes_the_temporary_file_and_keeps_the_target(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()  # rename(2) of a file over a folder fails
    (target / "x").write_text("keep")
    fd, tmp = tempfile.mkstemp(dir=tmp_path)
    with pytest.raises(OSError):
        replace_with(fd, tmp, target, b"data", 0o600)
    assert not os.path.exists(tmp) and (target / "x").read_text() == "keep"


def test_private_files_are_written_through_it(tmp_path: Path) -> None:
    p = write_private(tmp_path / "key.pem", "secret", 0o600)
    assert p.read_text() == "secret" and stat.S_IMODE(p.stat().st_mode) == 0o600
    assert [x.name for x in tmp_path.iterdir()] == ["key.pem"]
