"""The ``tune`` command: one Typer app, each subcommand a thin module in ``tune.commands``.

A command's module is imported only when that command runs (or shows its own ``--help``): the app
lists every command from :data:`COMMANDS` (name, help panel, one-line help) as a stub that loads the
module on use, so ``tune --help`` and ``tune simulate --help`` start without the simulator, numpy or
the Prometheus client. tests/test_architecture.py checks that the stubs render the same ``tune --help``
as the loaded commands.

``main`` owns the error contract: any :class:`audit_tune.basics.errors.TuneError` becomes one line on
stderr and its exit code (see ``basics.errors``); usage errors exit 1, not click's 2 (2 means timeout
here). Tracebacks only with ``--debug``.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING

import click
import typer
import typer.core
import typer.main

if TYPE_CHECKING:  # typer >= 0.29 vendors its own copy of click; catch both families
    from typer._click.exceptions import ClickException as _TClickException
else:
    try:
        from typer._click.exceptions import ClickException as _TClickException
    except ImportError:  # pragma: no cover
        _TClickException = click.ClickException

_EXIT = (click.exceptions.Exit, typer.Exit)
_ABORT = (click.exceptions.Abort, typer.Abort)
_CLICK_ERR = (click.ClickException, _TClickException)

from audit_tune.basics.errors import EXIT_ERROR, TuneError

if TYPE_CHECKING:  # the click that typer's groups hold (typer >= 0.29 vendors its own)
    from typer._click.core import Command as ClickCommand

# Subcommands in the order ``tune --help`` lists them: name -> (help panel, the first paragraph of
# the command's help). Each is the module audit_tune.cli.commands.<name>, exposing ``register(app)``.
COMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("Simulate", "Simulate the audit pipeline for given kube-apiserver audit flags and load."),
    "loadtest": ("Load testing", "Offer an open-loop load (configmaps/secrets create/get/list/update/patch/delete/watch) "
                 "to a kube-apiserver\nand write a run record: requested vs achieved rate, send lag, latency, status "
                 "codes, the apiserver's audit\ncounter deltas, the sink's counts, and the request trace."),
    "fidelity": ("Simulate", "Compare the simulator with the REAL k8s.io/apiserver audit backends (the Go oracle), "
                 "side by side."),
    "sweep": ("Simulate", "Simulate many scenarios (flags x workloads x seeds) in parallel and tabulate the results."),
    "snapshot": ("Recommend", "Read kube-apiserver audit metrics from Prometheus into a snapshot file for "
                 "'tune recommend'."),
    "recommend": ("Recommend", "Recommend audit webhook flags from a snapshot or Prometheus."),
    "report": ("Recommend", "HTML + Markdown capacity report from a snapshot or Prometheus."),
    "sink": ("Load testing", "Run the audit webhook sink, or verify its store."),
    "policy": ("Audit policy", "Explain an audit.k8s.io/v1 Policy: which rule each common request hits, and how many "
               "events it makes."),
    "cluster": ("Load testing", "Start, inspect and stop a real kube-apiserver running the audit flags you want to "
                "prove."),
}


def load_command(name: str) -> ClickCommand:
    """Import ``audit_tune.cli.commands.<name>`` and build its click command (or group)."""
    holder = typer.Typer(rich_markup_mode="rich", add_completion=False, pretty_exceptions_enable=False)
    importlib.import_module(f"audit_tune.cli.commands.{name}").register(holder)
    return typer.main.get_group(holder).commands[name]


class _Stub(typer.core.TyperCommand):
    """A listed command whose module is not loaded yet: enough for ``tune --help``; parsing its
    arguments loads the real command and hands over to it."""

    def __init__(self, group: _LazyGroup, name: str, panel: str, short_help: str) -> None:
        super().__init__(name, short_help=short_help, rich_help_panel=panel, rich_markup_mode="rich")
        self._group = group

    def make_context(self, info_name, args, parent=None, **extra):  # type: ignore[no-untyped-def]
        return self._group.load(self.name).make_context(info_name, args, parent=parent, **extra)


class _LazyGroup(typer.core.TyperGroup):
    """The root group: every command of :data:`COMMANDS`, as a stub until it is used."""

    def __init__(self, *args, **kw) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kw)
        for name, (panel, short) in COMMANDS.items():
            self.commands.setdefault(name, _Stub(self, name, panel, short))

    def load(self, name: str) -> ClickCommand:
        cmd = self.commands[name]
        if isinstance(cmd, _Stub):
            cmd = self.commands[name] = load_command(name)
        return cmd

    def load_all(self) -> None:
        for name in COMMANDS:
            self.load(name)

    def get_help_option(self, ctx: click.Context) -> typer.core.TyperOption | None:  # type: ignore[override]
        """The root's ``--help``, defaulting to False rather than None: typer (>= 0.29) coerces an
        option's None through a pydantic adapter, which would import pydantic on every subcommand
        run (``tune simulate --help`` included) just to confirm the root's help was not asked for."""
        opt = super().get_help_option(ctx)  # type: ignore[arg-type]
        if opt is not None:
            opt.default = False
        return opt  # type: ignore[return-value]


app = typer.Typer(
    cls=_LazyGroup,
    name="tune",
    help="audit-tune: set kube-apiserver audit buffering flags so no audit event is lost, and prove it.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state = {"debug": False}


def _version_callback(value: bool) -> None:
    if value:
        from audit_tune import __version__

        typer.echo(f"audit-tune {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    _state["debug"] = debug


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv) or ["--help"]
    debug = "--debug" in args or os.environ.get("TUNE_DEBUG") == "1"
    try:
        rv = app(args=args, prog_name="tune", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except TuneError as e:
        if debug:
            import traceback

            traceback.print_exc()
        print(f"tune: error: {one_line(str(e))}", file=sys.stderr)
        code = e.exit_code
    except _EXIT as e:
        code = e.exit_code
    except _ABORT:
        print("tune: aborted", file=sys.stderr)
        code = 130
    except _CLICK_ERR as e:
        # Usage errors: one line that names the option, exit 1.
        msg = one_line(e.format_message().replace("\n", " "))
        ctx = getattr(e, "ctx", None)
        where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        print(f"tune: error: {msg}{where}", file=sys.stderr)
        code = EXIT_ERROR
    except KeyboardInterrupt:
        print("tune: interrupted", file=sys.stderr)
        code = 130
    except Exception as e:  # noqa: BLE001 - the last resort: one line, a traceback only with --debug
        code = _unexpected(e, args, debug)
    sys.stdout.flush()
    if argv is None:
        sys.exit(code)
    return code


def one_line(text: str) -> str:
    """``text`` with control and line-separator characters escaped, so an error stays one line
    whatever the user typed."""
    return "".join(repr(c)[1:-1] if (ord(c) < 32 or c in "\x7f\x85\u2028\u2029") else c for c in text)


def _unexpected(e: BaseException, args: list[str], debug: bool) -> int:
    """An error no command turned into a TuneError: one line naming the command (and, for an
    OSError, the file), never its message (it may hold input or secrets), and how to report it."""
    if debug:
        import traceback

        traceback.print_exc()
    words: list[str] = []
    for a in args:
        if a.startswith("-") or len(words) == 2:
            break
        words.append(a)
    what = f"tune {' '.join(words)}".strip()
    name = getattr(e, "filename", None)
    where = f" on {name}" if isinstance(e, OSError) and name else ""
    print(f"tune: error: {what}: unexpected {type(e).__name__}{where}; this is a bug: please report it with "
          f"the output of the same command with --debug", file=sys.stderr)
    return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    main()
