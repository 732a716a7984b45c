"""How orchestrator writes a sum of money and a length of time (one way for the CLI, the HTML report and
`orch trial`, so the same run reads the same everywhere), and how it reads a model's JSON reply. Imports
nothing from orchestrator (a base module)."""

from __future__ import annotations

import json
from typing import Any


def format_usd(value: float | None, unpriced: int = 0) -> str:
    """`$0.0123`, six decimals under a cent (`$0.000042`), `?` when unknown; `(+? xN)` for N calls
    with no known price."""
    if value is None:
        return "?"
    text = f"${value:.6f}" if value < 0.01 else f"${value:.4f}"
    return text + (f" (+? x{unpriced})" if unpriced else "")


def format_ms(value: float | None) -> str:
    """`42 ms` below a second, `1.25 s` from one up, `-` when unknown."""
    if value is None:
        return "-"
    return f"{value:.0f} ms" if value < 1000 else f"{value / 1000:.2f} s"


def json_object(text: str) -> dict[str, Any]:
    """The JSON object in a model's reply, also when the model wrapped it in a code fence against its
    instructions ("```json ... ```"); ValueError naming what is wrong, where, and how the text starts."""
    raw = text.strip()
    if raw.startswith("```"):
        raw = raw.strip("`").removeprefix("json").strip()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at position {exc.pos}): {raw[:200]!r}") from None
    if not isinstance(data, dict):
        raise ValueError(f"not a JSON object but a JSON {type(data).__name__}")
    return data
