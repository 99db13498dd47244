"""The ``medexplain`` command line: thin wrappers that parse, call the library and write outputs.

Each subcommand group lives in its own module of this package. Errors in the input end the program with
one line on stderr (``medexplain: error: <file or value>: <problem>``) and exit code 2.
"""

from __future__ import annotations

import sys
import warnings

import typer

from medexplain import __version__
from medexplain.allocator import keep_freed_memory
from medexplain.cli import audit, benchmark, concepts, demo, evaluate, explain, listing, report, simulate, synth, train
from medexplain.errors import MedexplainError

app = typer.Typer(
    name="medexplain",
    help="Interpretable deep learning for medical images (2D and 3D).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
for _module in (synth, train, explain, evaluate, audit, concepts, simulate, report, demo, benchmark, listing):
    _module.register(app)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"medexplain {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Interpretable deep learning for medical images (2D and 3D)."""


FLAGS = {"classifier_dir": "--classifier", "map_format": "--format", "methods": "--method"}
"""The flags whose names differ from the library parameter they set (the others: ``--`` + name with hyphens)."""


def flag_of(parameter: str) -> str:
    """The command-line flag that sets the library parameter ``parameter``."""
    return FLAGS.get(parameter, "--" + parameter.replace("_", "-"))


def in_flags(error: MedexplainError) -> str:
    """The error's message with the parameter it quotes (``"`batch_size`"``) written as its flag (``--batch-size``)."""
    message = str(error)
    if not error.parameter:
        return message
    return message.replace(f"`{error.parameter}`", flag_of(error.parameter))


_SHOW_WARNING = warnings.showwarning


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A user warning (what medexplain warns of) as one line; others (deprecations) as Python shows them."""
    if issubclass(category, UserWarning):
        typer.echo(f"medexplain: warning: {message}", err=True)
    else:
        _SHOW_WARNING(message, category, filename, lineno, file, line)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``medexplain`` script; returns the exit code."""
    keep_freed_memory()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            code = app(args=argv, prog_name="medexplain", standalone_mode=False)
    except MedexplainError as error:
        typer.echo(f"medexplain: error: {in_flags(error)}", err=True)
        return 2
    except OSError as error:  # a file the library does not guard (writes are): one line, not a traceback
        where = f"{error.filename}: " if error.filename else ""
        typer.echo(f"medexplain: error: {where}{error.strerror or error}", err=True)
        return 2
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("medexplain: interrupted", err=True)
        return 130
    except Exception as error:  # click usage errors carry their own exit code
        code = getattr(error, "exit_code", None)
        if code is None:
            raise
        show = getattr(error, "show", None)
        if show is not None:
            show()
        return int(code)
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
