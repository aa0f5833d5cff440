"""The ``tune`` command: one Typer app, each subcommand a thin module in ``tune.commands``.

``main`` owns the error contract: any :class:`sim.errors.TuneError` becomes one line on stderr
and its exit code (see ``sim.errors``); usage errors exit 1, not click's 2 (2 means timeout here).
Tracebacks only with ``--debug``.
"""
from __future__ import annotations

import importlib
import os
import sys

import click
import typer

try:  # typer >= 0.29 vendors its own copy of click; catch both families
    from typer._click.exceptions import ClickException as _TClickException
except ImportError:  # pragma: no cover
    _TClickException = click.ClickException

_EXIT = (click.exceptions.Exit, typer.Exit)
_ABORT = (click.exceptions.Abort, typer.Abort)
_CLICK_ERR = (click.ClickException, _TClickException)

from audit_tune.basics.errors import EXIT_ERROR, TuneError

# Subcommand modules; each exposes ``register(app)``.
COMMANDS = ["simulate", "sink", "policy", "cluster", "loadtest", "fidelity", "sweep", "snapshot", "recommend", "report"]

app = typer.Typer(
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


for _name in COMMANDS:
    importlib.import_module(f"audit_tune.cli.commands.{_name}").register(app)


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
