"""The `swe-srl` command line. Each subcommand lives in ``swe_srl/commands/<name>.py``,
parses its options, and calls ONE library function; errors become one line and an exit code."""

from __future__ import annotations

import importlib
import os
import sys

import typer

from . import __version__
from .errors import SweSrlError

app = typer.Typer(
    name="swe-srl",
    help="Train small code models as software-engineering agents with Supervised RL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Modules under swe_srl/commands/ that each define ``register(app)``. A module that is not
# there yet (or whose optional dependencies are missing) must not break the other commands.
COMMAND_MODULES = ("dataset", "model", "train", "export", "plan", "report", "sandbox", "evaluate", "experts")


def _register_all() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"swe_srl.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"swe_srl.commands.{name}":
                continue
            raise
        module.register(app)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    # Eager: ``swe-srl --version`` needs no command (it used to stop at "Missing command").
    return None


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one red line on stderr and return the Exit to raise."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: no tracebacks for errors a user can act on."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    _register_all()
    try:
        app(args=argv, standalone_mode=True)
    except SweSrlError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted", fg=typer.colors.YELLOW, err=True)
        sys.exit(130)
    except MemoryError:
        typer.secho("error: out of memory", fg=typer.colors.RED, err=True)
        sys.exit(3)


def entry() -> None:
    """The ``swe-srl`` command (and ``python -m swe_srl.cli``): :func:`main`, then, in a
    process that started a process group (torchrun, fsdp), the exit without interpreter
    finalization that :func:`swe_srl.rl.distributed.exit_process` explains. Kept out of
    :func:`main`, which tests call in their own process."""
    try:
        main()
    except SystemExit as exc:
        group = sys.modules.get("swe_srl.rl.distributed")  # loaded only if a run started
        if group is not None and group.group_started():
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if not isinstance(exc.code, (int, type(None))):
                print(exc.code, file=sys.stderr)
            group.exit_process(code)
        raise


if __name__ == "__main__":  # pragma: no cover
    entry()
