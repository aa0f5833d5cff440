"""Error types shared by every audit-tune package, each tied to a documented exit code.

The CLI (``tune.cli``) turns any :class:`TuneError` into one line on stderr and the
exit code below, with no traceback unless ``--debug`` is given:

====  ==========================================================
code  meaning
====  ==========================================================
0     ok
1     error: bad input (flag, YAML, trace, Prometheus answer) or an unreachable service
2     timeout
3     objective violated (predicted or observed drops above target)
4     not enough data to decide
====  ==========================================================
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_TIMEOUT = 2
EXIT_OBJECTIVE = 3
EXIT_NO_DATA = 4


class TuneError(Exception):
    """Base class: a one-line, user-facing message that names what to fix."""

    exit_code = EXIT_ERROR


class InputError(TuneError):
    """Bad user input: a flag, a file, a field. The message names it and what would be valid."""


class ServiceError(TuneError):
    """A service the user named (Prometheus, a cluster, a sink) could not be used."""


class BuildMissingError(TuneError):
    """A binary the command needs (oracle, kube-apiserver, etcd) is not built; says how to build it."""


class TimeoutExceeded(TuneError):
    exit_code = EXIT_TIMEOUT


class ObjectiveViolated(TuneError):
    exit_code = EXIT_OBJECTIVE


class NotEnoughData(TuneError):
    exit_code = EXIT_NO_DATA
