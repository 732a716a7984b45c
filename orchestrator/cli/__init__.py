"""`orch`: a thin CLI. Parsing and rendering only; library errors become exit codes in one place.

One module per command, each with a `register(subparsers)` that adds its parser and sets its handler
(`args.func`); `console` holds where they write and how data is escaped there; `common` the exit codes and
the settings; `args` the option value types. Commands import what they run inside their handler, so
`orch --help` does not load LangGraph or a model engine.

Exit codes: 0 ok (a budget stop included), 1 failed run, 2 configuration error (a bad option value
included), 3 a run waiting for an answer, 130 cancelled (Ctrl-C), 141 output pipe closed by its reader
(`orch traces list --json | head`: the code a Unix tool killed by SIGPIPE gives, without a traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from orchestrator.cli import ask, console, fleet, init, models, run, tools, traces, trial
from orchestrator.cli import eval as eval_  # the command's name, and a builtin's
from orchestrator.cli.args import non_empty_str
from orchestrator.cli.common import EXIT_CANCELLED, EXIT_CONFIG, EXIT_FAILED, EXIT_PIPE, Command
from orchestrator.cli.console import as_line, as_text
from orchestrator.errors import ConfigError, OrchestratorError

__all__ = ["main"]

# The commands, in the order `orch --help` lists them.
COMMANDS: tuple[Command, ...] = (run, eval_, models, trial, ask, traces, init, tools, fleet)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orch", description="Run racehorse-led agent graphs; inspect their cost."
    )
    parser.add_argument(
        "--project",
        type=non_empty_str,
        default=".",
        help="project folder holding pyproject.toml (default: .)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


class _ErrHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        style = "red" if record.levelno >= logging.ERROR else "dim"
        console.err.print(
            as_text(f"[{record.name.removeprefix('orchestrator.')}] {record.getMessage()}", style=style)
        )


def _show_library_logs() -> None:
    """The library logs (model-file builds, ledger problems); the CLI shows those records on stderr."""
    logger = logging.getLogger("orchestrator")
    if not any(isinstance(h, _ErrHandler) for h in logger.handlers):
        logger.addHandler(_ErrHandler())
        logger.setLevel(logging.INFO)
    # The MCP SDK logs a malformed server message with its traceback; with no handler, Python's last-resort
    # handler prints all of it in the middle of a run. One line instead (the call then fails as a timeout).
    sdk = logging.getLogger("mcp")
    if not any(isinstance(h, _ErrHandler) for h in sdk.handlers):
        sdk.addHandler(_ErrHandler())
        sdk.setLevel(logging.WARNING)


def _show_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, *_: Any, **__: Any
) -> None:
    """Warnings as one plain line (no source path, no code line)."""
    console.err.print(as_line(("warning:", "yellow"), f" {message}"))


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code."""
    try:
        return _main(argv)
    except BrokenPipeError:
        return _pipe_closed()


def _pipe_closed() -> int:
    """The reader of our output went away (`| head`): stop quietly, as Unix tools do.

    Python flushes stdout once more at exit; pointed at /dev/null, that flush can't fail again
    ("Exception ignored ... BrokenPipeError"). Nothing is left to print, on either console.
    """
    console.out.quiet = console.err.quiet = True
    with contextlib.suppress(OSError, ValueError):  # a stdout without a file descriptor has nothing to flush
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return EXIT_PIPE


def _main(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse's usage errors (a bad option value: exit 2) and --help (0)
        return exc.code if isinstance(exc.code, int) else EXIT_CONFIG
    warnings.showwarning = _show_warning
    _show_library_logs()
    try:
        code: int = args.func(args)
        sys.stdout.flush()  # here, not at exit: a closed pipe is then caught like any other write's
        return code
    except ConfigError as exc:
        console.err.print(as_line(("error:", "red"), f" {exc}"))
        return EXIT_CONFIG
    except OrchestratorError as exc:
        console.err.print(as_line(("run error:", "red"), f" {exc}"))
        return EXIT_FAILED
    except KeyboardInterrupt:
        console.err.print("[yellow]cancelled[/yellow]")
        return EXIT_CANCELLED
