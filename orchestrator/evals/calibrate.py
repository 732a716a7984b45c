"""A judge measured before it is trusted: its separation of known-good outputs from known-bad ones.

The calibration set ships with the package (`orchestrator/data/judge-calibration.jsonl`): for each text a
known-good 2-sentence summary and a known-good formal rewrite, written by hand. From each good output code
makes the known-bad ones (`evals.variants`: a number changed, a number added, a copy of the source, the
wrong length). The judge scores them all, the summaries as the output of `summarize_worker(sentences=(2,
2))` and the rewrites as that of `style_worker(style="formal")`, and the report gives its AUC: the
probability that a good output scores above a bad one (ties count half), overall and per kind of flaw.

`orch trial --judge` calibrates first and refuses a judge whose AUC is below `MIN_AUC`. A calibration is
kept in the user cache, one file per (judge model, judge prompt, calibration data), so it runs once per judge
model.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import platformdirs

from orchestrator.errors import ConfigError
from orchestrator.evals.judge import judge_digest, judge_output
from orchestrator.evals.variants import BAD_KINDS, bad_variants
from orchestrator.profiles import SlotBinding
from orchestrator.toolsets.retrieval.evaluate import auc
from orchestrator.workers.definitions import Worker, style_worker, summarize_worker

__all__ = [
    "MIN_AUC",
    "Calibration",
    "CalibrationItem",
    "cache_path",
    "calibrate",
    "calibrated",
    "calibration_workers",
    "load_calibration",
    "refusal",
]

MIN_AUC = 0.9  # below this a judge's scores say too little about the outputs to be reported
UNJUDGED_SCORE = 3.0  # an output the judge did not score ranks in the middle: neither good nor bad
_DATA = "data/judge-calibration.jsonl"


@dataclass(frozen=True)
class CalibrationItem:
    """A source text and a known-good output of a worker ("summarize" or "style") for it."""

    id: str
    worker: str
    source: str
    good: str


def calibration_workers() -> dict[str, Worker]:
    """The workers whose outputs the calibration items are (the good ones follow their instructions)."""
    return {"summarize": summarize_worker(sentences=(2, 2)), "style": style_worker(style="formal")}


def _data_text(path: str | Path | None) -> tuple[str, str]:
    if path is None:
        return resources.files("orchestrator").joinpath(_DATA).read_text(encoding="utf-8"), _DATA
    try:
        return Path(path).read_text(encoding="utf-8"), str(path)
    except OSError as exc:
        raise ConfigError(f"can't read the calibration data {str(path)!r}: {exc.strerror or exc}") from None


def load_calibration(path: str | Path | None = None) -> tuple[list[CalibrationItem], str]:
    """The calibration items (the shipped set when `path` is None) and the digest of their file."""
    text, name = _data_text(path)
    items = []
    workers = calibration_workers()
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            item = CalibrationItem(str(row["id"]), str(row["worker"]), str(row["source"]), str(row["good"]))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(
                f'{name}, line {n}: a calibration item is {{"id", "worker", "source", "good"}} ({exc})'
            ) from None
        if item.worker not in workers:
            raise ConfigError(f"{name}, line {n}: worker {item.worker!r}; it is one of {', '.join(workers)}")
        items.append(item)
    if not items:
        raise ConfigError(f"{name} has no calibration items")
    return items, hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Calibration:
    """How well a judge separates known-good outputs from known-bad ones."""

    judge: str  # the judge's model (profile name)
    auc: float  # good above bad, over every bad output (ties count half)
    auc_by_kind: dict[str, float]
    mean_good: float
    mean_bad: float
    mean_by_kind: dict[str, float]
    goods: int
    bads: int
    unjudged: int  # outputs the judge did not score (ranked in the middle)
    cost_usd: float | None  # the judge's calls (None when unpriced)
    compute_s: float  # local compute
    wall_s: float
    judge_prompt: str  # `judge_digest()`
    data: str  # the calibration file
    data_digest: str
    created: str  # ISO 8601, UTC
    scores: list[dict[str, Any]] = field(default_factory=list)  # {"id", "worker", "kind", "score", "reason"}
    auc_by_worker: dict[str, float] = field(default_factory=dict)  # the summaries' AUC, the rewrites'

    cached: bool = False  # read from the cache, not measured by this process

    @property
    def usable(self) -> bool:
        return self.auc >= MIN_AUC

    def worst(self) -> tuple[str, float]:
        kind = min(self.auc_by_kind, key=lambda k: self.auc_by_kind[k])
        return kind, self.auc_by_kind[kind]

    def summary(self) -> dict[str, Any]:
        """The figures, without the per-output scores."""
        out = {k: v for k, v in asdict(self).items() if k != "scores"}
        out["usable"] = self.usable
        out["min_auc"] = MIN_AUC
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


async def calibrate(
    binding: SlotBinding,
    model: Any,
    items: Sequence[CalibrationItem],
    *,
    data: str = _DATA,
    data_digest: str = "",
    on_output: Callable[[int, int], None] | None = None,
) -> Calibration:
    """Score every good output of `items` and its known-bad variants with the judge; its AUC, overall and
    per kind of flaw. `on_output(done, total)` follows the progress."""
    workers = calibration_workers()
    start = time.perf_counter()
    total = len(items) * (1 + len(BAD_KINDS))
    rows: list[dict[str, Any]] = []
    costs: list[float | None] = []
    compute_ms = 0.0
    for index, item in enumerate(items):
        # the good output and its variants one after another: a local judge reuses the evaluated source
        outputs = {"good": item.good, **bad_variants(item.worker, item.source, item.good, index)}
        for kind, output in outputs.items():
            got = await judge_output(binding, model, workers[item.worker], item.source, output)
            costs.append(got.cost_usd)
            compute_ms += got.compute_ms
            rows.append(
                {"id": item.id, "worker": item.worker, "kind": kind, "score": got.score, "reason": got.reason}
            )
            if on_output is not None:
                on_output(len(rows), total)

    def scores(kind: str | None, worker: str | None = None) -> list[float]:
        return [
            UNJUDGED_SCORE if r["score"] is None else float(r["score"])
            for r in rows
            if (r["kind"] != "good" if kind is None else r["kind"] == kind)
            and (worker is None or r["worker"] == worker)
        ]

    goods, bads = scores("good"), scores(None)
    return Calibration(
        judge=binding.profile.name,
        auc=auc(goods, bads),
        auc_by_kind={k: auc(goods, scores(k)) for k in BAD_KINDS},
        mean_good=statistics.fmean(goods),
        mean_bad=statistics.fmean(bads),
        mean_by_kind={k: statistics.fmean(scores(k)) for k in BAD_KINDS},
        goods=len(goods),
        bads=len(bads),
        unjudged=sum(r["score"] is None for r in rows),
        cost_usd=None if None in costs else sum(c or 0.0 for c in costs),
        compute_s=compute_ms / 1000,
        wall_s=time.perf_counter() - start,
        judge_prompt=judge_digest(),
        data=data,
        data_digest=data_digest,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        scores=rows,
        auc_by_worker={
            w: auc(scores("good", w), scores(None, w)) for w in workers if any(i.worker == w for i in items)
        },
    )


def cache_path(judge: str, prompt_digest: str, data_digest: str) -> Path:
    """The calibration file of a judge model, judge prompt and calibration data, in the user cache."""
    key = hashlib.sha256("\x00".join([judge, prompt_digest, data_digest]).encode()).hexdigest()[:20]
    return Path(platformdirs.user_cache_dir("orchestrator")) / "judge-calibration" / f"{key}.json"


def _read(path: Path, judge: str, prompt_digest: str, data_digest: str) -> Calibration | None:
    try:
        found = Calibration.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None  # none yet, or unreadable: measure again
    if (found.judge, found.judge_prompt, found.data_digest) != (judge, prompt_digest, data_digest):
        return None
    found.cached = True
    return found


def _write(path: Path, calibration: Calibration) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(calibration.to_dict(), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)  # a reader never sees half a file
    except OSError:
        pass  # a cache that cannot be written only costs a calibration next time


async def calibrated(
    binding: SlotBinding,
    model: Any,
    *,
    refresh: bool = False,
    data: str | Path | None = None,
    on_output: Callable[[int, int], None] | None = None,
) -> Calibration:
    """The judge's calibration: from the cache when this judge model, prompt and data were calibrated
    before (and `refresh` is False), else measured now and kept."""
    items, digest = load_calibration(data)
    judge, prompt = binding.profile.name, judge_digest()
    path = cache_path(judge, prompt, digest)
    if not refresh and (found := _read(path, judge, prompt, digest)) is not None:
        return found
    name = _DATA if data is None else str(data)
    done = await calibrate(binding, model, items, data=name, data_digest=digest, on_output=on_output)
    _write(path, done)
    return done


def refusal(calibration: Calibration, slot: str) -> str:
    """Why a judge is refused, in one line: its AUC, its model, its weakest kind of flaw, and what to do."""
    kind, worst = calibration.worst()
    return (
        f"judge {calibration.judge} (slot {slot!r}) can't tell good outputs from bad: AUC "
        f"{calibration.auc:.2f} on {calibration.goods} known-good and {calibration.bads} known-bad outputs "
        f"(weakest: {kind.replace('_', ' ')} {worst:.2f}), below the {MIN_AUC:.2f} a judged figure needs; "
        f"bind a stronger model to slot {slot!r} (or judge with another slot: --judge SLOT)"
    )
