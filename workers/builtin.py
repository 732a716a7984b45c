"""The example project's workhorse workers: a request classifier and a transaction extractor."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator import Worker, classify_worker, extract_worker

REQUEST_LABELS = {
    "card_arrival": "a new or replacement card has not arrived, or when and how it will be delivered",
    "lost_or_stolen_card": "the card was lost or stolen, or someone else has it",
    "refund_not_showing_up": "a merchant's refund has not appeared in the account",
    "transfer_not_received": "money the customer sent by transfer has not reached the recipient",
    "exchange_rate": "the exchange rate or currency conversion",
    "other": "anything else",
}

# Written for this project (not taken from an evaluation set): two per label, three for "other".
REQUEST_SHOTS = [
    ("My new card still hasn't come in the mail.", "card_arrival"),
    ("Someone stole my purse with my card in it.", "lost_or_stolen_card"),
    ("How do I change my PIN?", "other"),
    ("The store says it refunded me but I don't see the money yet.", "refund_not_showing_up"),
    ("What rate do you use to change euros into dollars?", "exchange_rate"),
    ("My friend says the money I sent her never arrived.", "transfer_not_received"),
    ("When will the replacement card you posted reach me?", "card_arrival"),
    ("Can I get a second card for my partner?", "other"),
    ("I can't find my card anywhere, I think I dropped it in town.", "lost_or_stolen_card"),
    ("Where is the refund for the shoes I sent back?", "refund_not_showing_up"),
    ("Why was my conversion rate worse than the official one?", "exchange_rate"),
    ("I paid my landlord by bank transfer and he hasn't received it.", "transfer_not_received"),
    ("What are your opening hours?", "other"),
]


class Transaction(BaseModel):
    """A payment mentioned in a customer's message."""

    model_config = ConfigDict(extra="forbid")

    amount: float | None = Field(description="the amount as a number")
    currency: Literal["EUR", "USD", "GBP"] | None = Field(description="EUR, USD or GBP")
    date: dt.date | None = Field(description="the date as YYYY-MM-DD")
    merchant: str | None = Field(description="who was paid")


TRANSACTION_SHOTS: list[tuple[str, dict[str, Any]]] = [
    (
        "On 2025-05-02 I paid 12.40 EUR at Lidl and was charged twice.",
        {"amount": 12.4, "currency": "EUR", "date": "2025-05-02", "merchant": "Lidl"},
    ),
    (
        "Spotify took $9.99 from me on 14 June 2025.",
        {"amount": 9.99, "currency": "USD", "date": "2025-06-14", "merchant": "Spotify"},
    ),
    (
        "I was charged twice for something last week.",
        {"amount": None, "currency": None, "date": None, "merchant": None},
    ),
]

WORKERS: list[Worker] = [
    classify_worker(
        "classify_request",
        REQUEST_LABELS,
        "Classify a banking customer's message into one request type",
        shots=REQUEST_SHOTS,
        example_requests=[
            "Which type of request is this customer message: 'Can I change the PIN of my card online?'"
        ],
    ),
    extract_worker(
        "extract_transaction",
        Transaction,
        "Extract the payment (amount, currency, date, merchant) a customer's message mentions",
        shots=TRANSACTION_SHOTS,
        example_requests=[
            "Get the payment details out of this message: 'On 2025-05-02 I paid 12.40 EUR at Lidl twice.'"
        ],
    ),
]
