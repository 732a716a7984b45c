"""Per-worker settings kept beside a project: what `orch trial --tune` measured, read when the project loads.

The manifest names the file (`worker_settings = "worker-settings.json"` under `[tool.orchestrator]`). It is
JSON, one entry per worker name:

    {"classify_request": {"min_margin": 1.42, "tuned": {"data": "data/requests.jsonl", "items": 120, ...}}}

`min_margin` (a number, or null for no routing by confidence) replaces the worker's own; `tuned` records how
the value was chosen (data, items, target, the threshold curve) and is not read back. A worker's definition
in Python stays the default; the file, when it names the worker, wins. Names the project does not define
are errors, so a renamed worker can't silently lose its threshold.
"""

from __future__ import annotations

import dataclasses
import json
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

KNOWN_KEYS = ("min_margin", "tuned")
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
    return data


def apply_settings(workers: Iterable[Worker], settings: Mapping[str, Mapping[str, Any]]) -> list[Worker]:
    """The workers with their entries in `settings` applied (a worker without one is returned as it is)."""
    out = []
    for worker in workers:
        entry = settings.get(worker.name)
        if entry is not None and "min_margin" in entry:
            margin = entry["min_margin"]
            worker = dataclasses.replace(worker, min_margin=None if margin is None else float(margin))
        out.append(worker)
    return out


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
