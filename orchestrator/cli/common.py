"""What every `orch` command shares beside rendering: the exit codes, the parser type, the settings."""

from __future__ import annotations

import argparse
from typing import Protocol, TypeAlias

from orchestrator.cli.args import positive_int
from orchestrator.config import Settings, load_manifest
from orchestrator.errors import ConfigError

__all__ = [
    "EXIT_CANCELLED",
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_PIPE",
    "EXIT_WAITING",
    "Command",
    "Subparsers",
    "add_workers",
    "settings_of",
]

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_WAITING, EXIT_CANCELLED, EXIT_PIPE = 0, 1, 2, 3, 130, 141

# What each command module's `register` is given: `orch`'s subparsers, to add its own to.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class Command(Protocol):
    """A command's module: its `register` adds its parser and sets the handler (`args.func`)."""

    def register(self, subparsers: Subparsers) -> None: ...


def settings_of(args: argparse.Namespace) -> Settings:
    """The settings for a command that can do without a project: its manifest if there is one."""
    manifest = None
    try:
        manifest = load_manifest(args.project)
    except ConfigError:
        manifest = None
    return Settings.resolve(manifest, traces_path=getattr(args, "traces", None))


def add_workers(parser: argparse.ArgumentParser, items: str) -> None:
    """The `--workers N` option of the commands that fan their items out to worker processes."""
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help=f"run the {items} in N worker processes (default 1: one after another). Each process builds its "
        "own models: a local GGUF model loads in every one (about 1 GB of memory each), so raise N for API "
        "models, or as far as memory allows. Results and their order are those of a serial run",
    )
