"""Child processes of the real stack: free ports, spawning in a process group, readiness, teardown.

Every server runs in its own process group (``start_new_session=True``) so that teardown can
signal the whole group (SIGTERM, then SIGKILL after a grace period), like envtest's
``pkg/internal/testing/process/process.go`` (``Start`` / ``Stop`` with a StopTimeout).

Processes are identified by ``(pid, start_time)`` (field 22 of ``/proc/<pid>/stat``) so that a
state file read by another ``tune`` process never signals a recycled pid.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

from audit_tune.basics.errors import BuildMissingError, ServiceError, TimeoutExceeded
from audit_tune.basics.jsondata import JsonObject, JsonValue, as_int, as_list, as_object, as_str


def cache_dir() -> Path:
    """``${AUDIT_TUNE_CACHE:-~/.cache/audit-tune}``: built binaries live in ``bin/`` below it."""
    return Path(os.environ.get("AUDIT_TUNE_CACHE") or Path.home() / ".cache" / "audit-tune")


def binary(name: str, build_hint: str = "scripts/build-stack.sh") -> Path:
    """Path of a binary built into the cache; :class:`BuildMissingError` if it is not there."""
    p = cache_dir() / "bin" / name
    if not (p.is_file() and os.access(p, os.X_OK)):
        raise BuildMissingError(f"{name} is not built ({p} missing): run {build_hint}")
    return p


def http_session() -> requests.Session:
    """A ``requests.Session`` that ignores proxy/CA environment variables (loopback traffic only)."""
    s = requests.Session()
    s.trust_env = False
    return s


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host`` (the caller retries on a bind race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start_time(pid: int) -> int | None:
    """Kernel start time of ``pid`` in clock ticks, or None if the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may contain spaces; fields after the closing paren are space separated.
    rest = stat.rsplit(")", 1)[1].split()
    if rest and rest[0] == "Z":  # zombie: as good as gone
        return None
    return int(rest[19])


@dataclass
class Proc:
    """One spawned server: enough to find and stop it from another process."""

    name: str
    pid: int
    start_time: int
    log: str
    cmd: list[str]

    def alive(self) -> bool:
        return start_time(self.pid) == self.start_time

    def to_dict(self) -> JsonObject:
        return {"name": self.name, "pid": self.pid, "start_time": self.start_time, "log": self.log,
                "cmd": list[JsonValue](self.cmd)}

    @classmethod
    def from_dict(cls, value: JsonValue, where: str = "process") -> Proc:
        """A process as :meth:`to_dict` wrote it; an ``InputError`` naming the field otherwise."""
        d = as_object(value, where)
        return cls(name=as_str(d.get("name"), f"{where}.name"), pid=as_int(d.get("pid"), f"{where}.pid"),
                   start_time=as_int(d.get("start_time"), f"{where}.start_time"),
                   log=as_str(d.get("log"), f"{where}.log"),
                   cmd=[as_str(c, f"{where}.cmd") for c in as_list(d.get("cmd"), f"{where}.cmd")])


def spawn(name: str, cmd: Sequence[str], log_path: str | os.PathLike, *, detach: bool = False,
          env: dict[str, str] | None = None) -> tuple[Proc, subprocess.Popen]:
    """Start ``cmd`` in a new session (its own process group), stdout+stderr to ``log_path``.

    ``detach`` only records intent (the child outlives its parent either way; owners stop their
    children via ``stop``). ``PR_SET_PDEATHSIG`` is deliberately not used: it fires when the
    *thread* that forked exits (so ``up()`` from a worker thread would kill the stack), and it did
    not stop a ready kube-apiserver in our tests. A SIGKILLed owner leaves the processes running;
    its state file remains, so ``tune cluster down --name NAME`` still stops them.
    """
    log_f = open(log_path, "ab")
    try:
        p = subprocess.Popen(list(cmd), stdout=log_f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, env=env, close_fds=True)
    finally:
        log_f.close()
    st = None
    for _ in range(50):
        st = start_time(p.pid)
        if st is not None:
            break
        if p.poll() is not None:
            break
        time.sleep(0.01)
    return Proc(name=name, pid=p.pid, start_time=st or 0, log=str(log_path), cmd=list(cmd)), p


def stop(proc: Proc, timeout: float = 20.0) -> None:
    """SIGTERM the process group of ``proc``, wait up to ``timeout``, then SIGKILL it."""
    if not proc.alive():
        _reap(proc.pid)
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(proc.pid)
        if not proc.alive() and not _group_alive(proc.pid):
            return
        time.sleep(0.05)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for _ in range(100):
        _reap(proc.pid)
        if not proc.alive():
            return
        time.sleep(0.05)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg(0) succeeds on zombies too; check for a live member.
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            rest = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(rest[2]) == pgid and rest[0] != "Z":
            return True
    return False


def tail(path: str | os.PathLike, lines: int = 5) -> str:
    """Last ``lines`` lines of a log, joined with `` | `` (for one-line error messages)."""
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip()[:300] for line in text[-lines:])


def wait_until(check: Callable[[], bool], timeout: float, what: str, proc: Proc | None = None,
               interval: float = 0.2) -> None:
    """Poll ``check`` until it returns True; fail early if ``proc`` died, or time out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - any failure just means "not yet"
            pass
        if proc is not None and not proc.alive():
            _reap(proc.pid)
            raise ServiceError(f"{proc.name} exited while waiting for {what}; log {proc.log}: {tail(proc.log)}")
        if time.monotonic() > deadline:
            log = f"; log {proc.log}: {tail(proc.log)}" if proc else ""
            raise TimeoutExceeded(f"{what} not ready after {timeout:.0f}s{log}")
        time.sleep(interval)
