"""`orch ask`: one measured call to a model; the text as it arrives, then usage and cost."""

from __future__ import annotations

import argparse
import json
import sys

from orchestrator.cli import console
from orchestrator.cli.args import non_empty_str, non_negative_float, positive_int
from orchestrator.cli.common import EXIT_FAILED, EXIT_OK, Subparsers
from orchestrator.cli.console import as_line, as_text, visible
from orchestrator.config import Settings
from orchestrator.errors import ConfigError, OrchestratorError
from orchestrator.formats import format_ms, format_usd


def register(subparsers: Subparsers) -> None:
    """Add the command's parser; its handler is `args.func`."""
    ask = subparsers.add_parser(
        "ask", help="one measured call to a model: text as it arrives, then usage and cost"
    )
    ask.add_argument(
        "model",
        type=non_empty_str,
        help="provider:model, e.g. openai:gpt-4o-mini, anthropic:claude-haiku-4-5",
    )
    ask.add_argument("prompt")
    ask.add_argument("--json", action="store_true", help="print one JSON object at the end")
    ask.add_argument(
        "--base-url",
        type=non_empty_str,
        help="API root (OpenAI-compatible: with /v1; Anthropic: without /v1)",
    )
    ask.add_argument(
        "--schema",
        type=non_empty_str,
        metavar="FILE",
        help="a JSON Schema file: ask for JSON output of that shape",
    )
    ask.add_argument("--no-stream", action="store_true", help="one plain request (TTFT is then null)")
    ask.add_argument("--system", help="a system prompt")
    ask.add_argument(
        "--max-tokens", type=positive_int, default=1024, help="output tokens at most (default 1024)"
    )
    ask.add_argument("--temperature", type=non_negative_float, help="sampling temperature, 0 or more")
    ask.add_argument("--price-as", type=non_empty_str, help="price the model as this price-table key")
    ask.add_argument(
        "--prices", type=non_empty_str, help="your own price file (LiteLLM layout); default $ORCH_PRICES"
    )
    ask.set_defaults(func=cmd_ask)


def cmd_ask(args: argparse.Namespace) -> int:
    from orchestrator.models.ask import aask, ask_profile, failed_attempts
    from orchestrator.sync import run_blocking

    settings = Settings.resolve(None, prices_path=args.prices)
    schema = None
    if args.schema:
        try:
            with open(args.schema, encoding="utf-8") as fh:
                schema = json.load(fh)
        except OSError as exc:
            raise ConfigError(f"--schema {args.schema!r}: cannot read it: {exc.strerror}") from None
        except ValueError as exc:
            raise ConfigError(f"--schema {args.schema!r}: not valid JSON: {exc}") from None
        if not isinstance(schema, dict):
            raise ConfigError(f"--schema {args.schema!r}: a JSON Schema must be an object")
    profile = ask_profile(args.model, settings=settings, base_url=args.base_url, price_as=args.price_as)
    printed: list[str] = []

    def show(delta: str) -> None:
        printed.append(delta)
        sys.stdout.write(visible(delta))
        sys.stdout.flush()

    def restart(reason: str) -> None:
        if printed:
            sys.stdout.write("\n")
            printed.clear()
        console.err.print(as_line(("retrying:", "yellow"), f" {reason}"))

    try:
        result = run_blocking(
            lambda: aask(
                profile,
                args.prompt,
                settings=settings,
                system=args.system,
                schema=schema,
                stream=not args.no_stream,
                max_tokens=args.max_tokens,
                temperature=args.temperature,
                on_text=None if args.json else show,
                on_restart=None if args.json else restart,
            )
        )
    except OrchestratorError as exc:
        if args.json and not isinstance(exc, ConfigError):
            print(
                json.dumps(
                    {"error": str(exc), "model": profile.name, "attempts": failed_attempts(exc)}, indent=2
                )
            )
            return EXIT_FAILED
        raise
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return EXIT_OK
    if not printed and result.text:  # structured output through a tool call arrives whole
        sys.stdout.write(visible(result.text))
    if result.tool_calls:
        sys.stdout.write(json.dumps(result.tool_calls))
    sys.stdout.write("\n")
    u = result.usage
    console.err.print(
        as_text(
            f"{result.model}: {u.input_tokens} in ({u.cache_read_tokens} cache read, "
            f"{u.cache_write_tokens} cache write) / {u.output_tokens} out"
            f"{' (estimated)' if u.estimated else ''}"
            f" · {format_usd(result.cost_usd)} · TTFT {format_ms(result.ttft_ms)}"
            f" · {format_ms(result.duration_ms)}"
            f" · {len(result.attempts) or 1} attempt(s)",
            style="dim",
        )
    )
    return EXIT_OK
