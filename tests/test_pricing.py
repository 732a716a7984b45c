"""Exact cost: every token once at its own rate, tiers, 1-hour cache writes, the user's price file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.config import Settings
from orchestrator.cost.pricing import Prices, PriceTable, Tier, Usage, cost_usd, price_table, shipped_table
from orchestrator.errors import ConfigError
from orchestrator.providers.anthropic import anthropic_usage
from orchestrator.providers.openai import openai_usage


def test_openai_usage_keeps_cached_tokens_inside_the_input_count() -> None:
    u = openai_usage(
        {
            "prompt_tokens": 1000,
            "completion_tokens": 300,
            "prompt_tokens_details": {"cached_tokens": 800},
            "completion_tokens_details": {"reasoning_tokens": 200},
        }
    )
    assert u == Usage(input_tokens=1000, output_tokens=300, cache_read_tokens=800, reasoning_tokens=200)
    p = shipped_table().lookup("gpt-4o-mini")
    assert p is not None
    # 200 uncached at input, 800 at the cache-read rate, 300 output (reasoning included, not added again)
    assert cost_usd(u, p) == pytest.approx(200 * 1.5e-7 + 800 * 7.5e-8 + 300 * 6e-7)


def test_anthropic_usage_adds_cache_reads_and_writes_to_the_input_count() -> None:
    u = anthropic_usage(
        {
            "input_tokens": 50,
            "cache_creation_input_tokens": 3000,
            "cache_read_input_tokens": 10000,
            "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
            "output_tokens": 40,
        }
    )
    assert u == Usage(
        input_tokens=13050,
        output_tokens=40,
        cache_read_tokens=10000,
        cache_write_tokens=3000,
        cache_write_1h_tokens=2000,
    )
    p = shipped_table().lookup("claude-sonnet-4-5")
    assert p is not None and p.cache_write_1h == 6e-6
    expected = 50 * 3e-6 + 10000 * 3e-7 + 1000 * 3.75e-6 + 2000 * 6e-6 + 40 * 15e-6
    assert cost_usd(u, p) == pytest.approx(expected)


def test_anthropic_message_delta_updates_output_and_keeps_the_start_counts() -> None:
    start = anthropic_usage({"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 1})
    end = anthropic_usage({"output_tokens": 25}, start)
    assert end == Usage(input_tokens=15, output_tokens=25, cache_read_tokens=5)


def test_a_tier_prices_the_whole_request_above_its_threshold() -> None:
    p = shipped_table().lookup("gemini-2.5-pro")
    assert p is not None and p.tiers and p.tiers[0].above_tokens == 200_000
    small = Usage(input_tokens=100_000, output_tokens=1000)
    large = Usage(input_tokens=250_000, output_tokens=1000, cache_read_tokens=50_000)
    assert cost_usd(small, p) == pytest.approx(100_000 * 1.25e-6 + 1000 * 1e-5)
    assert cost_usd(large, p) == pytest.approx(200_000 * 2.5e-6 + 50_000 * 2.5e-7 + 1000 * 1.5e-5)


def test_the_highest_passed_tier_wins() -> None:
    p = Prices(1.0, 2.0, tiers=(Tier(100, 10.0, 20.0), Tier(1000, 100.0, 200.0)))
    assert p.at(50).input == 1.0
    assert p.at(500).input == 10.0
    assert p.at(5000).output == 200.0


def test_unknown_price_is_none_and_missing_cache_rates_fall_back_to_input() -> None:
    assert cost_usd(Usage(10, 10), None) is None
    p = Prices(input=1.0, output=2.0)
    assert (
        cost_usd(Usage(input_tokens=10, output_tokens=1, cache_read_tokens=4, cache_write_tokens=3), p)
        == 12.0
    )


def test_user_price_file_overrides_the_snapshot_key_by_key(tmp_path: Path) -> None:
    f = tmp_path / "prices.json"
    f.write_text(json.dumps({"gpt-4o-mini": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}}))
    table = price_table(f)
    mine = table.lookup("gpt-4o-mini")
    assert mine is not None and mine.input == 1e-6 and mine.source == f"{f}#gpt-4o-mini"
    theirs = table.lookup("claude-haiku-4-5")
    assert theirs is not None and theirs.source.startswith("shipped snapshot")


@pytest.mark.parametrize("content", ["not json", "[1, 2]"])
def test_a_bad_price_file_is_a_config_error_naming_it(tmp_path: Path, content: str) -> None:
    f = tmp_path / "bad.json"
    f.write_text(content)
    with pytest.raises(ConfigError, match=r"bad\.json"):
        PriceTable.from_file(f)
    with pytest.raises(ConfigError, match="does not exist"):
        PriceTable.from_file(tmp_path / "missing.json")


def test_one_bill_for_a_reply_and_the_broken_attempts_before_it() -> None:
    from langchain_core.messages import AIMessage, HumanMessage

    from orchestrator.cost.billing import bill, estimate_prompt, total
    from orchestrator.providers.http import Attempt

    prices = Prices(input=1e-6, output=2e-6)
    broken = Attempt("m", 200, "stream cut", 50.0, usage=Usage(100, 10))
    waited = Attempt("m", 429, "rate limited", 5.0)  # generated nothing: not billed
    reply = AIMessage(
        "hi",
        usage_metadata={"input_tokens": 100, "output_tokens": 3, "total_tokens": 103},
        response_metadata={"ttft_ms": 12.5},
    )
    dicts = [broken.as_dict(), waited.as_dict()]  # as attempts travel in response metadata
    assert [Attempt.from_dict(d) for d in dicts] == [broken, waited]
    charges = bill(reply, dicts, model="m", price_of=lambda _m: prices, wall_ms=80.0)
    assert [(c.usage.input_tokens, c.usage.output_tokens, c.usage.estimated) for c in charges] == [
        (100, 10, True),
        (100, 3, False),
    ]
    assert charges[-1].ttft_ms == 12.5 and charges[-1].wall_ms == 80.0
    used, cost = total(charges)
    assert (used.input_tokens, used.output_tokens, used.estimated) == (200, 13, True)
    assert cost == pytest.approx(200e-6 + 13 * 2e-6)
    assert total([*charges, bill(reply, [], model="x", price_of=lambda _m: None, wall_ms=1)[0]])[1] is None
    failed = bill(None, [broken], model="m", price_of=lambda _m: prices, wall_ms=70.0)
    assert [(c.model, c.wall_ms) for c in failed] == [("m", 70.0)]
    est = estimate_prompt([HumanMessage("x" * 600)])
    assert est.low < est.likely < est.high
    assert estimate_prompt([HumanMessage("x" * 600)], [{"name": "t" * 300}]).likely > est.likely


def test_a_local_model_can_be_priced_as_an_api_model_and_a_typo_is_named(settings: Settings) -> None:
    """`price_as` on a local slot shows what an API model would charge for the same tokens (a trial of a
    local pair priced as gpt-4o-mini and gpt-4o); a name the table lacks is an error with the fix."""
    import pytest as _pytest

    from orchestrator import Orchestrator, SlotConfig
    from orchestrator.errors import UnknownModelError

    orch = Orchestrator(
        settings=settings,
        slots={"w": SlotConfig(model="local:qwen2.5-0.5b", role="workhorse", price_as="gpt-4o-mini")},
    )
    prices = orch.slots["w"].profile.prices
    assert prices is not None and prices.input > 0 and "gpt-4o-mini" in prices.source
    bare = Orchestrator(settings=settings, slots={"w": SlotConfig(model="local:qwen2.5-0.5b")})
    assert bare.slots["w"].profile.prices is not None and bare.slots["w"].profile.prices.input == 0
    with _pytest.raises(UnknownModelError, match="did you mean 'gpt-4o-mini'"):
        Orchestrator(
            settings=settings,
            slots={"w": SlotConfig(model="local:qwen2.5-0.5b", role="workhorse", price_as="gpt-4o-mimi")},
        )
