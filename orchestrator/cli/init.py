"""`orch init`: a new project folder, and the next steps to take in it."""

from __future__ import annotations

import argparse

from orchestrator.cli import console
from orchestrator.cli.args import non_empty_str
from orchestrator.cli.common import EXIT_OK, Subparsers
from orchestrator.cli.console import as_line, as_text
from orchestrator.config import Settings, load_manifest


def register(subparsers: Subparsers) -> None:
    """Add the command's parser; its handler is `args.func`."""
    init = subparsers.add_parser(
        "init", help="start a project folder: manifest, a graph, a worker and a tool pack"
    )
    init.add_argument(
        "directory", nargs="?", type=non_empty_str, help="the folder, created if missing (default: --project)"
    )
    init.add_argument(
        "--name", type=non_empty_str, help="the project's name in pyproject.toml (default: from the folder's)"
    )
    init.set_defaults(func=cmd_init)


def cmd_init(args: argparse.Namespace) -> int:
    import shlex
    from pathlib import Path

    from orchestrator.providers.modelfiles import LOCAL_MODELS, is_verified
    from orchestrator.scaffold import FILES, scaffold

    made = scaffold(args.directory or args.project, name=args.name)
    console.out.print(as_line("Wrote project ", (made.name, "bold"), f" in {made.root}:"))
    for rel in made.files:
        if FILES.get(rel):
            console.out.print(as_line(f"  {rel:<20} ", (FILES[rel], "dim")))
    steps = [] if made.root.resolve() == Path.cwd().resolve() else [f"cd {shlex.quote(str(made.root))}"]
    models_dir = Settings.resolve(load_manifest(made.root)).models_dir
    if not all(is_verified(spec, models_dir) for spec in LOCAL_MODELS.values()):
        steps.append("orch models build    # once: the local model files")
    steps += [
        'orch run "Summarize: the train was late, so I missed the first half of the meeting."',
        'orch run agent "How many days are there between 2026-03-02 and 2026-03-20?"',
    ]
    console.out.print(as_line(("Next:", "bold")))
    for step in steps:
        console.out.print(as_text(f"  {step}"))
    return EXIT_OK
