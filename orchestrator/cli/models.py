"""`orch models`: the model profiles and prices; build and verify the local model files."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.table import Table

from orchestrator.cli import console
from orchestrator.cli.args import non_empty_str
from orchestrator.cli.common import EXIT_CONFIG, EXIT_OK, Subparsers, settings_of
from orchestrator.cli.console import as_line, as_text
from orchestrator.config import Settings, load_manifest
from orchestrator.errors import ConfigError


def register(subparsers: Subparsers) -> None:
    """Add the command's parser; its handler is `args.func`."""
    models = subparsers.add_parser(
        "models", help="list model profiles and prices; build or verify local model files"
    )
    models.add_argument("action", nargs="?", choices=["list", "build", "verify"], default="list")
    models.add_argument("names", nargs="*", help="local model names for build / verify (default: all)")
    models.add_argument("--force", action="store_true", help="rebuild even if verified")
    models.add_argument("--all", action="store_true", help="also every chat model of the price table")
    models.add_argument(
        "--provider", type=non_empty_str, help="only this provider's models (implies the price table's)"
    )
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=cmd_models)


def _probe_engine(name: str, settings: Settings, *, force: bool) -> None:
    """Which llama.cpp settings the model loads with on this CPU: probed in a child process (once per machine,
    again with `force`), so a fast path that crashes here is found now, not at the first run."""
    import importlib.util

    from orchestrator.providers import llama_probe
    from orchestrator.providers.modelfiles import LOCAL_MODELS

    if importlib.util.find_spec("llama_cpp") is None:
        return  # the 'local' extra is not installed: nothing can load the model here yet
    forced = llama_probe.override()
    if forced is not None:
        console.out.print(
            as_text(f"local:{name}: extra buffer types {'on' if forced else 'off'} ({llama_probe.ENV})")
        )
        return
    path = LOCAL_MODELS[name].path(settings.models_dir)
    record = llama_probe.engine_settings(
        str(path), f"local:{name}", settings.models_dir / "probe.json", force=force
    )
    setting = "extra buffer types " + ("on" if record["extra_buffers"] else "off (the fast path crashed)")
    speed = ""
    if record.get("prompt_tps") and record.get("generation_tps"):
        speed = f": prompt {record['prompt_tps']:.0f} tok/s, generation {record['generation_tps']:.1f} tok/s"
    console.out.print(as_text(f"local:{name}: llama.cpp runs on this CPU with {setting}{speed}"))


def cmd_models(args: argparse.Namespace) -> int:
    from orchestrator.models.binding import resolve_profile
    from orchestrator.providers.modelfiles import LOCAL_MODELS, build_model_file, verify_model_file

    settings = settings_of(args)
    if args.action in ("build", "verify"):
        names = args.names or list(LOCAL_MODELS)
        for name in names:
            if name not in LOCAL_MODELS:
                resolve_profile(f"local:{name}")  # raises with "did you mean"
    if args.action == "verify":
        failures = 0
        for name in names:
            try:
                digest = verify_model_file(LOCAL_MODELS[name], settings.models_dir)
                console.out.print(f"[green]ok[/green]  local:{name}  sha256 {digest}")
                _probe_engine(name, settings, force=True)
            except ConfigError as exc:
                failures += 1
                console.err.print(as_line(("bad", "red"), f" local:{name}: {exc}"))
        return EXIT_CONFIG if failures else EXIT_OK
    if args.action == "build":
        from orchestrator.providers.modelfiles import is_verified

        for name in names:
            spec = LOCAL_MODELS[name]
            if is_verified(spec, settings.models_dir) and not args.force:
                console.out.print(
                    as_text(f"local:{name} already built and verified at {spec.path(settings.models_dir)}")
                )
            else:
                build_model_file(
                    spec,
                    settings.models_dir,
                    lambda m: console.err.print(as_text(m, style="dim")),
                    rebuild=args.force,
                )
            _probe_engine(name, settings, force=args.force)
        return EXIT_OK
    rows = _profile_rows(args, settings)
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    table = Table(title="Model profiles (USD per million tokens)", title_justify="left")
    for col in (
        "name",
        "slot",
        "context",
        "in",
        "out",
        "cache r/w(5m)/w(1h)",
        "tiers",
        "can",
        "price source",
    ):
        table.add_column(col)
    for r in rows:
        p = r["prices"]
        table.add_row(
            as_line(r["name"], ("" if r.get("built", True) else " (not built)", "dim")),
            as_text(", ".join(f"{s} ({role})" for s, role in r["slots"]) or "-"),
            str(r["context_window"] or "?"),
            _mtok(p and p["input"]),
            _mtok(p and p["output"]),
            "/".join(_mtok(p and p[k]) for k in ("cache_read", "cache_write", "cache_write_1h")),
            ", ".join(f">{t['above_tokens'] // 1000}k" for t in (p["tiers"] if p else [])) or "-",
            ",".join(_CAN.get(k, k) for k, v in r["capabilities"].items() if v),
            as_text(r["price_source"]),
        )
    console.out.print(table)
    return EXIT_OK


_CAN = {
    "tool_calling": "tools",
    "json_schema": "schema",
    "grammar": "grammar",
    "prefill": "prefill",
    "streaming_usage": "stream-usage",
    "prompt_caching": "cache",
    "parallel_tool_calls": "parallel",
}


def _mtok(value: float | None) -> str:
    return "?" if value is None else f"{value * 1e6:g}"


def _profile_rows(args: argparse.Namespace, settings: Settings) -> list[dict[str, Any]]:
    import dataclasses
    import warnings

    from orchestrator.cost.pricing import price_table
    from orchestrator.models.binding import bind_slot, catalog_names, resolve_profile
    from orchestrator.profiles import ModelProfile
    from orchestrator.providers.modelfiles import LOCAL_MODELS, is_verified

    table = price_table(settings.prices_path)
    profiles: dict[str, ModelProfile] = {}
    slots: dict[str, list[tuple[str, str]]] = {}
    try:
        manifest = load_manifest(args.project)
    except ConfigError:
        manifest = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for slot, config in manifest.slots.items() if manifest else []:
            binding = bind_slot(slot, config, table)
            for i, p in enumerate(binding.chain):
                profiles.setdefault(p.name, p)
                slots.setdefault(p.name, []).append((slot, binding.role if i == 0 else "fallback"))
        for name in LOCAL_MODELS:
            profiles.setdefault(f"local:{name}", resolve_profile(f"local:{name}"))
        for name in catalog_names(table, args.provider) if (args.all or args.provider) else []:
            profiles.setdefault(name, resolve_profile(name, table=table))
    rows = []
    for name, p in profiles.items():
        if args.provider and p.provider != args.provider:
            continue
        row: dict[str, Any] = {
            "name": name,
            "provider": p.provider,
            "slots": slots.get(name, []),
            "context_window": p.context_window,
            "capabilities": dataclasses.asdict(p.capabilities),
            "prices": dataclasses.asdict(p.prices) if p.prices else None,
            "price_source": p.price_source,
            "base_url": p.base_url,
            "api_key_env": p.api_key_env,
            "rate_limits": dataclasses.asdict(p.rate_limits),
        }
        if row["prices"]:
            row["prices"].pop("source", None)
        if p.provider == "local" and p.model in LOCAL_MODELS:
            spec = LOCAL_MODELS[p.model]
            row.update(built=is_verified(spec, settings.models_dir), file=str(spec.path(settings.models_dir)))
        rows.append(row)
    return rows
