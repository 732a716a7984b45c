"""The bundled project's `classify_request` data: labelled Banking77 messages for its six labels, from the
train split to tune its confidence threshold (shipped: workers/data/requests-tune.jsonl) and from the test
split to check it (bench/data/requests-test.jsonl).

Each of the five labels the worker names takes its own Banking77 intent's messages; "other" takes
messages of the other intents, except those whose meaning the five labels' descriptions cover (a card's
delivery estimate is "when a card will be delivered", a pending refund is a refund not showing up, ...):
labelled "other" they would be wrong labels, not hard items. The sample is fixed by seeds.

Data: ../shared/data/intents/banking77 (PolyAI, CC-BY-4.0). Run: `.venv/bin/python bench/request_data.py`.
Then `orch trial local:qwen2.5-0.5b --worker classify_request --data workers/data/requests-tune.jsonl
--tune` writes the threshold into worker-settings.json, which the manifest names.
"""

from __future__ import annotations

import csv
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workers.builtin import REQUEST_LABELS, REQUEST_SHOTS  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "intents" / "banking77"
INTENT = {  # each named label's Banking77 intent
    "card_arrival": "card_arrival",
    "lost_or_stolen_card": "lost_or_stolen_card",
    "refund_not_showing_up": "Refund_not_showing_up",
    "transfer_not_received": "transfer_not_received_by_recipient",
    "exchange_rate": "exchange_rate",
}
assert sorted(INTENT) == sorted(label for label in REQUEST_LABELS if label != "other")
COVERED = {  # intents a named label's description covers: never "other"
    "card_delivery_estimate",
    "pending_refund",
    "pending_transfer",
    "balance_not_updated_after_bank_transfer",
    "card_payment_wrong_exchange_rate",
    "wrong_exchange_rate_for_cash_withdrawal",
    "exchange_charge",
    "exchange_via_app",
    "compromised_card",
    "transfer_timing",
    "declined_transfer",
    "failed_transfer",
}
PER_LABEL, OTHER = 16, 40


def sample(split: str, seed: int) -> list[dict[str, str]]:
    by_label: dict[str, list[str]] = defaultdict(list)
    with (DATA / split).open(encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            by_label[r["category"]].append(r["text"])
    shots = {text for text, _ in REQUEST_SHOTS}
    rng = random.Random(seed)
    items = [
        {"input": t, "expected": label}
        for label, intent in INTENT.items()
        for t in rng.sample([t for t in by_label[intent] if t not in shots], PER_LABEL)
    ]
    others = sorted(k for k in by_label if k not in INTENT.values() and k not in COVERED)
    pool = [(t, k) for k in others for t in by_label[k] if t not in shots]
    items += [{"input": t, "expected": "other", "intent": k} for t, k in rng.sample(pool, OTHER)]
    rng.shuffle(items)
    return items


def write(path: Path, items: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items), encoding="utf-8")
    print(f"{path}: {len(items)} items", file=sys.stderr)


if __name__ == "__main__":
    write(ROOT / "workers" / "data" / "requests-tune.jsonl", sample("train.csv", 5))
    write(ROOT / "bench" / "data" / "requests-test.jsonl", sample("test.csv", 6))
