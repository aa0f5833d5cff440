"""``-o FILE`` (basics.output.write_atomic): regular files replaced atomically, devices, FIFOs and
``/dev/stdout`` written through, symlinks kept, folders refused with one line."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from audit_tune.basics.errors import InputError
from audit_tune.basics.output import write_atomic


def test_regular_file_is_replaced_and_keeps_its_mode(tmp_path):
    p = tmp_path / "out.json"
    p.write_text("old")
    os.chmod(p, 0o640)
    write_atomic(p, "new\n")
    assert p.read_text() == "new\n" and stat.S_IMODE(p.stat().st_mode) == 0o640
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out.json"]


def test_dev_null_stays_a_character_device():
    before = os.stat("/dev/null")
    write_atomic("/dev/null", "x" * 1000)
    write_atomic(Path("/dev/null"), b"bytes")
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev and after.st_ino == before.st_ino


def test_fifo_is_written_through(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    write_atomic(fifo, "through the pipe\n")
    reader.join(timeout=30)
    assert got == [b"through the pipe\n"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["pipe"]


def test_symlink_keeps_pointing_at_its_replaced_target(tmp_path):
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    target = real_dir / "report.json"
    target.write_text("old")
    link = tmp_path / "latest.json"
    link.symlink_to(target)
    write_atomic(link, "new")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == "new" and link.read_text() == "new"
    assert sorted(x.name for x in real_dir.iterdir()) == ["report.json"]
    dangling = tmp_path / "dangling"
    dangling.symlink_to(real_dir / "fresh.json")
    write_atomic(dangling, "made")
    assert dangling.is_symlink() and (real_dir / "fresh.json").read_text() == "made"


def test_folder_and_missing_folder_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="is a folder") as e:
        write_atomic(tmp_path, "x")
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="does not exist"):
        write_atomic(tmp_path / "no" / "f", "x")
    assert list(tmp_path.iterdir()) == []


def test_dev_stdout_and_dev_fd_1_write_to_the_real_stdout(tmp_path):
    """In a child process whose stdout is a regular file: -o /dev/stdout and /dev/fd/1 append to
    the stream (the file is neither replaced nor truncated)."""
    out = tmp_path / "captured"
    code = ("from audit_tune.basics.output import write_atomic\n"
            "print('first', flush=True)\n"
            "write_atomic('/dev/stdout', 'second\\n')\n"
            "write_atomic('/dev/fd/1', b'third\\n')\n")
    with open(out, "w") as f:
        r = subprocess.run([sys.executable, "-c", code], stdout=f, stderr=subprocess.PIPE, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert out.read_text() == "first\nsecond\nthird\n"
