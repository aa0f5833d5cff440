"""Bounded reads of user-named files (audit_tune/basics/files.py), and the commands that read them:
a missing file, a folder, a file far larger than any real input (a sparse file: real size, no disk),
an endless device, bytes that are not UTF-8 or hold a NUL: one line naming the flag, exit 1, fast."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from audit_tune.basics import files
from audit_tune.basics.errors import InputError


def _sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def test_reads_a_small_file_whole(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_bytes(b"\xef\xbb\xbft,rate\n0,1\n")
    assert files.read_text(p, "--x", "CSV") == "t,rate\n0,1\n"  # the byte-order mark is dropped
    assert files.read_bytes(p, "--x") == p.read_bytes()


@pytest.mark.parametrize("case, needle", [
    ("missing", "no such file"), ("folder", "is a folder"), ("huge", "larger than 64 MiB; refused"),
    ("limit", "larger than 64 KiB; refused"), ("latin1", "not UTF-8 text (line 2, byte 12)"),
    ("nul", "contains a NUL byte"), ("device", "larger than 64 KiB; refused"),
])
def test_refusals_are_one_line_naming_the_flag(tmp_path: Path, case: str, needle: str) -> None:
    p = tmp_path / "f"
    limit = files.MAX_BYTES
    if case == "folder":
        p.mkdir()
    elif case == "huge":
        _sparse(p, 10 << 30)  # 10 GiB, read at most 64 MiB + 1
    elif case == "limit":
        p.write_bytes(b"x" * (files.SECRET_BYTES + 1))
        limit = files.SECRET_BYTES
    elif case == "latin1":
        p.write_bytes(b"t,rate\n0,caf\xe9\n")
    elif case == "nul":
        p.write_bytes(b"t,rate\n\x00\n")
    elif case == "device":
        p, limit = Path("/dev/zero"), files.SECRET_BYTES  # endless: bounded all the same
    with pytest.raises(InputError) as e:
        files.read_text(p, "--the-flag", "CSV 't,rate'", limit)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("--the-flag ") and needle in msg


def test_a_read_at_the_limit_is_accepted(tmp_path: Path) -> None:
    p = tmp_path / "exact"
    p.write_bytes(b"y" * files.SECRET_BYTES)
    assert len(files.read_text(p, "--x", "text", files.SECRET_BYTES)) == files.SECRET_BYTES


def _tune(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "audit_tune.cli", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("flag", ["--trace", "--rate-series"])
def test_simulate_refuses_a_huge_workload_file(tmp_path: Path, flag: str) -> None:
    big = _sparse(tmp_path / "big.csv", 8 << 30)
    r = _tune("simulate", flag, str(big), "--duration", "10s")
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("tune: error: ") and "larger than 64 MiB; refused" in lines[-1]
    assert flag in lines[-1] and "Traceback" not in r.stderr


def test_simulate_skips_blank_and_comment_rows_of_a_trace(tmp_path: Path) -> None:
    tr = tmp_path / "t.csv"
    tr.write_text("time\n# a comment\n0.1\n \n,\n0.2\n0.3\n")
    r = _tune("simulate", "--trace", str(tr), "--duration", "1s", "-f", "json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["requests_total"] == 3  # the header, the comment and both blank rows left out


def test_prometheus_token_file_is_bounded_and_never_printed(tmp_path: Path) -> None:
    tok = tmp_path / "token"
    tok.write_bytes(b"s3cr3t" * 20000)  # 120 kB: no token is that long
    r = _tune("snapshot", "-p", "http://127.0.0.1:9", "--prometheus-bearer-token-file", str(tok),
              "-o", str(tmp_path / "snap.json"))
    assert r.returncode == 1, r.stderr
    assert "--prometheus-bearer-token-file" in r.stderr and "larger than 64 KiB; refused" in r.stderr
    assert "s3cr3t" not in r.stderr + r.stdout


def test_policy_file_too_large_is_refused(tmp_path: Path) -> None:
    pol = _sparse(tmp_path / "policy.yaml", 1 << 30)
    r = _tune("policy", "explain", str(pol))
    assert r.returncode == 1, r.stderr
    assert "policy file" in r.stderr and "larger than 64 MiB; refused" in r.stderr and "Traceback" not in r.stderr
