"""The example project's workhorse workers: a request classifier and a transaction extractor."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator import Worker, classify_worker, extract_worker

REQUEST_LABELS = [
    "card_arrival",
    "lost_or_stolen_card",
    "refund_not_showing_up",
    "transfer_not_received",
    "exchange_rate",
    "other",
]


class Transaction(BaseModel):
    """A payment mentioned in a customer's message."""

    model_config = ConfigDict(extra="forbid")

    amount: float | None = Field(description="the amount as a number")
    currency: Literal["EUR", "USD", "GBP"] | None = Field(description="EUR, USD or GBP")
    date: dt.date | None = Field(description="the date as YYYY-MM-DD")
    merchant: str | None = Field(description="who was paid")


WORKERS: list[Worker] = [
    classify_worker(
        "classify_request",
        REQUEST_LABELS,
        "Classify a banking customer's message into one request type",
    ),
    extract_worker(
        "extract_transaction",
        Transaction,
        "Extract the payment (amount, currency, date, merchant) a customer's message mentions",
    ),
]
