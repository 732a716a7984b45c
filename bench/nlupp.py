"""NLU++ slot extraction (banking): the `extract` worker on real customer messages, scored by field-level F1.

Data: NLU++ (PolyAI, CC-BY-4.0), read from ../shared/data/extraction/nlupp (or $NLUPP_DATA); nothing is
downloaded. Each banking example has a text and its slots, each with a canonical value (relative dates and
times resolved against 2022-03-15 09:00).

The worker fills five of the banking domain's 13 slots (the ones with a checkable canonical value that
appear most often): `amount_of_money` ({amount, currency}), `date` ({year, month, day}), `time`
({hour, minute}), `person_name` and `company_name`. Left out: `date_period` and `time_period` (the data
gives no canonical value, only the span), `date_from` / `date_to` / `time_from` / `time_to` (the same
values as `date` / `time`, told apart only by their role in a period; out of scope for one flat record),
`shopping_category` (free wording), `number` (18 examples).

The sample is fixed by a seed, never by results: from folds 0-18, 125 items whose slots are all among the
five (397 such items; items carrying any other slot are left out, so no date or time in a sampled text is
unlabelled) and 25 items with no slot at all (the worker must answer all nulls). Fold 19 gives the
worker's three examples (the first items there with money, a time and a name, by a fixed rule).

Expected values are the data's canonical values, normalised for exact matching: the currency
"ambiguous" (no currency in the text) becomes null; amounts are numbers; names and companies as written
(the trial compares strings case-folded, with whitespace collapsed). A field the text lacks is absent.

Three configurations, through the trial code (`orchestrator.evals.trial.run_items`, scored by
`orchestrator.evals.trial.score`): the 0.5B workhorse alone (its repair, no escalation), the 1.5B racehorse alone,
and the 0.5B with escalation to the 1.5B. Costs are at price-table prices as if the pair were gpt-4o-mini
escalating to gpt-4o, from the local models' own token counts (the slots carry those prices as `prices=`:
`price_as` is ignored for local models).

Run: `.venv/bin/python bench/nlupp.py` (writes bench/results/nlupp-banking.json and prints the tables of its
section of docs/benchmarks.md, which it does not rewrite); `--n 30` for a smaller sample; `--out FILE` to save
the result elsewhere; `--items FILE` to only write the converted items.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import os
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pydantic import BaseModel, ConfigDict, Field  # noqa: E402

from bench.markers import machine  # noqa: E402
from orchestrator.workers.definitions import Worker, extract_worker  # noqa: E402

DATA = Path(os.environ.get("NLUPP_DATA", ROOT.parent / "shared" / "data" / "extraction" / "nlupp"))
SLOTS = ("amount_of_money", "date", "time", "person_name", "company_name")
SEED = 20220315
WITH_SLOTS, WITHOUT = 125, 25
SHOT_FOLD = 19
REFERENCE = "Today is Tuesday 15 March 2022 and it is 09:00"
NOW = datetime.datetime(2022, 3, 15, 9, 0)  # the same moment, for the grounded worker's date reader
PRICE_AS = {"workhorse": "gpt-4o-mini", "racehorse": "gpt-4o"}
WORKHORSE, RACEHORSE = "local:qwen2.5-0.5b", "local:qwen2.5-1.5b"
GROUNDED = ("grounded_workhorse", "grounded_racehorse", "grounded_escalating")


class Money(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: float
    currency: str | None = Field(None, description="ISO code such as GBP, EUR or USD; null when not stated")


class Day(BaseModel):
    model_config = ConfigDict(extra="forbid")
    year: int
    month: int = Field(ge=1, le=12)
    day: int = Field(ge=1, le=31)


class Clock(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hour: int = Field(ge=0, le=23)
    minute: int = Field(ge=0, le=59)


class BankingSlots(BaseModel):
    """The five NLU++ banking slots the worker fills (descriptions from the data's ontology)."""

    model_config = ConfigDict(extra="forbid")
    amount_of_money: Money | None = Field(
        None, description="the specific amount of money mentioned, as {amount, currency}"
    )
    date: Day | None = Field(
        None, description="the specific date mentioned, as {year, month, day}; a weekday is the next one"
    )
    time: Clock | None = Field(
        None,
        description="the specific time of day mentioned, as {hour, minute}, 0-23 hours: add 12 only when "
        "the text says p.m., afternoon, evening or night",
    )
    person_name: str | None = Field(None, description="the name of a person mentioned, as written")
    company_name: str | None = Field(None, description="the name of a company or shop mentioned, as written")


class GroundedMoney(BaseModel):
    """`Money` for the grounded worker: the currency one of the codes the data uses, named by the text."""

    model_config = ConfigDict(extra="forbid")
    amount: float
    currency: Literal["GBP", "EUR", "USD"] | None = Field(None, description="GBP, EUR or USD; null when not stated")


class GroundedSlots(BaseModel):
    """`BankingSlots` for the grounded worker (the same record; the currency a Literal of codes)."""

    model_config = ConfigDict(extra="forbid")
    amount_of_money: GroundedMoney | None = Field(None, description="the specific amount of money mentioned")
    date: Day | None = Field(None, description="the specific date mentioned, as the words that say it")
    time: Clock | None = Field(None, description="the specific time of day mentioned, as the words that say it")
    person_name: str | None = Field(None, description="the name of a person mentioned, as written")
    company_name: str | None = Field(None, description="the name of a company or shop mentioned, as written")


def load_banking(data: Path = DATA) -> dict[int, list[dict[str, Any]]]:
    """The banking examples, by fold."""
    folds = {}
    for path in sorted((data / "data" / "banking").glob("fold*.json")):
        folds[int(path.stem.removeprefix("fold"))] = json.loads(path.read_text(encoding="utf-8"))
    if not folds:
        raise FileNotFoundError(f"no NLU++ banking folds under {data}")
    return folds


def _value(slot: str, value: Any) -> Any:
    if slot == "amount_of_money":
        currency = value.get("currency")
        return {"amount": float(value["amount"]), "currency": None if currency == "ambiguous" else currency}
    if slot == "date":
        return {"year": value["year"], "month": value["month"], "day": value["day"]}
    if slot == "time":
        return {"hour": value["hour"], "minute": value["minute"]}
    return " ".join(str(value).split())


def usable(example: Mapping[str, Any]) -> bool:
    """Every slot of the example is one of ours, with a canonical value we can compare."""
    slots = example.get("slots") or {}
    if set(slots) - set(SLOTS):
        return False
    return not any(k in ("date", "time", "amount_of_money") and not isinstance(v["value"], dict)
                   for k, v in slots.items())  # fmt: skip


def convert(example: Mapping[str, Any]) -> dict[str, Any]:
    """One example as a trial item: `{"input": text, "expected": {slot: value}}` (absent slots left out)."""
    slots = example.get("slots") or {}
    return {
        "input": example["text"],
        "expected": {k: _value(k, slots[k]["value"]) for k in SLOTS if k in slots},
    }


def sample(
    with_slots: int = WITH_SLOTS, without: int = WITHOUT, seed: int = SEED, data: Path = DATA
) -> list[dict[str, Any]]:
    """The fixed sample: seeded draws from folds 0-18 (fold 19 gives the examples), in a seeded order."""
    folds = load_banking(data)
    pool = [e for n, f in sorted(folds.items()) if n != SHOT_FOLD for e in f if usable(e)]
    filled = [e for e in pool if e.get("slots")]
    empty = [e for e in pool if not e.get("slots")]
    rng = random.Random(seed)
    chosen = rng.sample(filled, with_slots) + rng.sample(empty, without)
    rng.shuffle(chosen)
    return [convert(e) for e in chosen]


def shots(data: Path = DATA) -> list[tuple[str, dict[str, Any]]]:
    """The first fold-19 items (in file order) with money, with a time, and with a person's name."""
    fold = load_banking(data)[SHOT_FOLD]
    picked: list[tuple[str, dict[str, Any]]] = []
    for wanted in ("amount_of_money", "time", "person_name"):
        for e in fold:
            if usable(e) and wanted in (e.get("slots") or {}) and e["text"] not in [t for t, _ in picked]:
                item = convert(e)
                full = {k: item["expected"].get(k) for k in SLOTS}
                picked.append((item["input"], BankingSlots.model_validate(full).model_dump(mode="json")))
                break
    return picked


def grounded(source: str, output: str) -> str | None:
    """A validator: a name, company or amount in the record must be in the text (a copied example or an
    invented amount is rejected, so the worker repairs, then escalates). Dates and times are resolved
    from relative words, so they are not checked."""
    try:
        record = json.loads(output)
    except json.JSONDecodeError:
        return None  # the schema check reports it
    text = " ".join(source.casefold().split())
    digits = re.sub(r"(?<=\d)[,\s](?=\d{3}\b)", "", text)
    reasons = []
    for key in ("person_name", "company_name"):
        value = record.get(key)
        if isinstance(value, str) and value.strip() and " ".join(value.casefold().split()) not in text:
            reasons.append(f"{key} {value!r} is not in the text")
    money = record.get("amount_of_money")
    if isinstance(money, dict) and isinstance(money.get("amount"), int | float):
        amount = float(money["amount"])
        forms = {f"{amount:g}", f"{amount:.2f}", f"{amount / 1000:g} thousand"}
        forms |= {"a thousand", "one thousand"} if amount == 1000 else set()
        if not any(re.search(rf"(?<![\d.]){re.escape(f)}(?![\d])", digits) for f in forms):
            reasons.append(f"the amount {amount:g} is not in the text")
    return "; ".join(reasons) or None


def worker(
    *, escalate: bool = True, checked: bool = False, spans: bool = False, data: Path = DATA
) -> Worker:
    """The extract worker for the five banking slots; `escalate=False`: never escalate; `checked`: with
    the `grounded` validator; `spans`: the grounded extraction (values copied as spans of the text, dates
    and times read by code against the data's reference moment, numeric dates day first as the data writes
    them)."""
    if spans:
        w = extract_worker(
            "nlupp_banking",
            GroundedSlots,
            "Extract banking details from a customer's message",
            slot="extract",
            shots=shots(data),
            grounded=True,
            now=NOW,
            day_first=True,
        )
        return w if escalate else dataclasses.replace(w, escalate_to=())
    w = extract_worker(
        "nlupp_banking",
        BankingSlots,
        f"Extract banking details from a customer's message. {REFERENCE}: resolve relative dates and "
        "times (tomorrow, last Friday, in 2 hours) against it",
        slot="extract",
        shots=shots(data),
    )
    if checked:
        w = dataclasses.replace(w, validators=(grounded,))
    return w if escalate else dataclasses.replace(w, escalate_to=())  # () means never


# --- running the trial ---------------------------------------------------------------------------------


def _binding(slot: str, model: str, role: str) -> Any:
    from orchestrator.config import PriceOverride, SlotConfig
    from orchestrator.cost.pricing import price_table
    from orchestrator.models.binding import bind_slot

    table = price_table(None)
    priced = table.lookup(PRICE_AS[role])
    assert priced is not None, PRICE_AS[role]
    prices = PriceOverride(input=priced.input, output=priced.output)
    return bind_slot(slot, SlotConfig(model=model, role=role, prices=prices), table)  # type: ignore[arg-type]


async def run_config(name: str, items: Sequence[Mapping[str, Any]], settings: Any) -> Any:
    """One configuration's TrialReport."""
    from orchestrator.evals.trial import TrialReport, run_items
    from orchestrator.providers import create_chat_model

    checked = name == "escalating_checked"
    spans = name.startswith("grounded_")
    name = name.removeprefix("grounded_")
    chain: dict[str, tuple[Any, Any]] = {}
    if name == "workhorse":
        trial, escalate = _binding("extract", WORKHORSE, "workhorse"), False
    elif name == "racehorse":
        trial, escalate = _binding("extract", RACEHORSE, "racehorse"), False
    else:
        trial, escalate = _binding("extract", WORKHORSE, "workhorse"), True
        big = _binding("controller", RACEHORSE, "racehorse")
        chain = {"controller": (big, create_chat_model(big, settings))}
    w = worker(escalate=escalate, checked=checked, spans=spans)
    report = TrialReport(trial.profile.name, w.name, w.slot)
    done = 0

    def tick(_: Any) -> None:
        nonlocal done
        done += 1
        if done % 10 == 0:
            print(f"  {name}: {done}/{len(items)}", file=sys.stderr, flush=True)

    report.items = await run_items(trial, create_chat_model(trial, settings), w, items, chain, tick)
    return report


def per_slot(report: Any) -> dict[str, dict[str, int]]:
    """Per slot, over the final answers: expected, predicted, right (normalised exact match)."""
    from orchestrator.evals.trial import _empty, _norm, _same

    counts: dict[str, Counter[str]] = {s: Counter() for s in SLOTS}
    for item in report.items:
        got = item.value or {}
        for s in SLOTS:
            w, g = _norm(item.expected.get(s)), _norm(got.get(s))
            counts[s]["expected"] += not _empty(w)
            counts[s]["predicted"] += not _empty(g)
            counts[s]["right"] += not _empty(w) and not _empty(g) and _same(w, g)
    return {s: dict(c) for s, c in counts.items()}


def invented(report: Any) -> dict[str, int]:
    """Items whose text gives no amount of money, and how many of them got one anyway."""
    bare = [i for i in report.items if not i.expected.get("amount_of_money")]
    return {
        "items_without_amount": len(bare),
        "invented_amounts": sum(1 for i in bare if (i.value or {}).get("amount_of_money")),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from orchestrator.config import Settings

    items = sample()
    if args.n < len(items):
        items = items[: args.n]  # the sample is already in a seeded order: a prefix is a smaller sample
    settings = Settings.resolve()
    out: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "items": len(items),
        "seed": SEED,
        "configs": {},
    }
    for name in args.configs:
        start = time.perf_counter()
        report = await run_config(name, items, settings)
        wall = time.perf_counter() - start
        figures = report.figures()
        print(f"{name}: {json.dumps(figures)} wall {wall:.0f} s", file=sys.stderr, flush=True)
        out["configs"][name] = {
            "date": out["date"],
            "model": report.model,
            "wall_s": wall,
            **figures,
            "per_slot": per_slot(report),
            **invented(report),
            "items": [
                {
                    "input": i.input,
                    "expected": i.expected,
                    "value": i.value,
                    "score": i.score,
                    "score_alone": i.score_alone,
                    "valid_first": i.valid_first,
                    "valid": i.valid,
                    "escalated": i.escalated,
                    "error": i.error,
                }
                for i in report.items
            ],
        }
        save(out, Path(args.out))  # each configuration as it finishes: a long run cut short keeps the rest
    return out


def save(result: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """Write `result` to `path`, beside the configurations already there (`merged`); returns what it wrote."""
    if path.exists():
        result = merged(json.loads(path.read_text(encoding="utf-8")), result)
    path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return dict(result)


def table(result: Mapping[str, Any]) -> str:
    """The docs section."""
    order = ("workhorse", "racehorse", "escalating", "escalating_checked", *GROUNDED)
    c = {
        k: result["configs"][k]
        for k in sorted(
            result["configs"], key=lambda k: (k not in order, order.index(k) if k in order else 0)
        )
    }
    names = {
        "workhorse": "0.5B workhorse alone (as gpt-4o-mini)",
        "racehorse": "1.5B racehorse alone (as gpt-4o)",
        "escalating": "0.5B escalating to 1.5B (as gpt-4o-mini -> gpt-4o)",
        "escalating_checked": "0.5B escalating to 1.5B, with the `grounded` check",
        "grounded_workhorse": "grounded: 0.5B workhorse alone",
        "grounded_racehorse": "grounded: 1.5B racehorse alone",
        "grounded_escalating": "grounded: 0.5B escalating to 1.5B",
    }
    rows = [
        "| configuration | date | F1 alone | F1 final | valid first | valid final | escalated | invented amounts "
        "| compute s / 1k | p50 TTFT | cost / 1k items |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, r in c.items():
        ttft = "?" if r["p50_ttft_ms"] is None else f"{r['p50_ttft_ms']:.0f} ms"
        cost = "?" if r["cost_per_1k_usd"] is None else f"${r['cost_per_1k_usd']:.4f}"
        rows.append(
            f"| {names.get(key, key)} | {r.get('date', '?')} | {r['accuracy']:.1%} | "
            f"{r['accuracy_escalated']:.1%} | {r['validity_before_repair']:.1%} | {r['validity']:.1%} | "
            f"{r['escalation_rate']:.1%} | {_invented(r)} | "
            f"{r['compute_s_per_1k']:.0f} | {ttft} | {cost} |"
        )
    slot_rows = ["| slot | expected | " + " | ".join(f"{k}: predicted / right" for k in c) + " |"]
    slot_rows.append("|---|---|" + "---|" * len(c))
    for s in SLOTS:
        first = next(iter(c.values()))["per_slot"][s]
        cells = [f"{r['per_slot'][s]['predicted']} / {r['per_slot'][s]['right']}" for r in c.values()]
        slot_rows.append(f"| {s} | {first['expected']} | " + " | ".join(cells) + " |")
    return (
        "\n".join(rows)
        + "\n\nPer slot (final answers, exact match after normalisation):\n\n"
        + "\n".join(slot_rows)
    )


def _invented(r: Mapping[str, Any]) -> str:
    if "invented_amounts" in r:
        return f"{r['invented_amounts']} of {r['items_without_amount']}"
    items = r.get("items") or []
    bare = [i for i in items if not i["expected"].get("amount_of_money")]
    return f"{sum(1 for i in bare if (i['value'] or {}).get('amount_of_money'))} of {len(bare)}"


def merged(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """`new`'s configurations over `old`'s (same sample size only), each dated: earlier runs are kept."""
    if old.get("items") != new["items"]:
        raise SystemExit(
            f"the results file holds a run of {old.get('items')} items, this one has {new['items']}; "
            "write it elsewhere with --out FILE"
        )
    configs = {k: {"date": old.get("date"), **v} for k, v in old.get("configs", {}).items()}
    return {**new, "configs": {**configs, **new["configs"]}}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=WITH_SLOTS + WITHOUT, help="items (a prefix of the sample)")
    parser.add_argument(
        "--configs", nargs="+", default=["workhorse", "racehorse", "escalating"],
        choices=["workhorse", "racehorse", "escalating", "escalating_checked", *GROUNDED],
    )  # fmt: skip
    parser.add_argument("--grounded", action="store_true", help="run the grounded configurations (" +
                        ", ".join(GROUNDED) + "), kept beside the free ones already in --out")  # fmt: skip
    parser.add_argument("--items", help="only write the converted items to this JSON Lines file")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "nlupp-banking.json"))
    args = parser.parse_args(argv)
    if args.items:
        items = sample()[: args.n]
        Path(args.items).write_text("".join(json.dumps(i) + "\n" for i in items), encoding="utf-8")
        return 0
    if args.grounded:
        args.configs = list(GROUNDED)
    result = save(asyncio.run(main_async(args)), Path(args.out))
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
