"""Example SQL over the trace store (docs/tracing.md shows the same), also as Datasette canned queries.

`python -m orchestrator.tracing.queries [DATABASE] > queries.json` writes the canned queries for a store whose
file is `DATABASE.db` (default `traces`), as Datasette reads them: `datasette traces.db --metadata
queries.json` (Datasette 0.x; 1.0 reads the same file with `--config`) then offers each query on the
database's page, and as JSON at `/traces/<name>.json`.
"""

from __future__ import annotations

import json
import sys
from typing import Any

__all__ = ["QUERIES", "datasette_metadata"]

# name -> (title, SQL); each runs as it is in sqlite3, sqlite-utils and Datasette
QUERIES: dict[str, tuple[str, str]] = {
    "cost_by_model_last_day": (
        "Cost by model over the last day",
        """select model, provider, count(*) as calls, sum(input_tokens) as input_tokens,
  sum(output_tokens) as output_tokens, sum(cache_read_tokens) as cache_read_tokens,
  round(sum(cost_usd), 6) as cost_usd, sum(cost_usd is null) as unpriced_calls
from spans
where kind = 'chat' and start_ns >= (strftime('%s', 'now') - 86400) * 1000000000
group by model, provider
order by sum(cost_usd) desc""",
    ),
    "cost_by_node_and_slot": (
        "Where model spend goes: each node, by the slot it called",
        """select node, slot, model, count(*) as calls, sum(input_tokens + output_tokens) as tokens,
  round(sum(cost_usd), 6) as cost_usd,
  round(100.0 * sum(cost_usd) / (select sum(cost_usd) from spans where kind = 'chat'), 1) as share_pct
from spans
where kind = 'chat'
group by node, slot, model
order by sum(cost_usd) desc""",
    ),
    "slowest_tools": (
        "Slowest tools, with their error counts",
        """select tool, count(*) as calls, round(avg(duration_ms), 1) as avg_ms,
  round(max(duration_ms), 1) as max_ms, sum(status = 'error') as errors
from spans
where kind = 'tool'
group by tool
order by avg(duration_ms) desc
limit 20""",
    ),
    "costliest_runs": (
        "The most expensive runs",
        """select run_id, graph, status, datetime(started_at, 'unixepoch') as started,
  round(duration_ms / 1000.0, 2) as seconds, input_tokens, output_tokens, round(cost_usd, 6) as cost_usd
from runs
order by cost_usd desc
limit 20""",
    ),
    "model_speed": (
        "Speed per model: time to first token, tokens per second, how replies ended",
        """select model, count(*) as calls, round(avg(ttft_ms), 1) as avg_ttft_ms,
  round(avg(tokens_per_s), 1) as avg_tokens_per_s, round(sum(compute_ms), 1) as compute_ms,
  sum(json_extract(attributes, '$."gen_ai.response.finish_reasons"') like '%length%') as cut_off
from spans
where kind = 'chat'
group by model
order by avg(ttft_ms) desc""",
    ),
}


def datasette_metadata(database: str = "traces") -> dict[str, Any]:
    """Datasette metadata (0.x) or configuration (1.0) offering `QUERIES` as canned queries of `database`
    (the store file's name without `.db`).

    Example:
        >>> sorted(datasette_metadata()["databases"]["traces"]["queries"])[0]
        'cost_by_model_last_day'
    """
    queries = {name: {"title": title, "sql": sql} for name, (title, sql) in QUERIES.items()}
    return {"databases": {database: {"queries": queries}}}


if __name__ == "__main__":
    print(json.dumps(datasette_metadata(*sys.argv[1:2]), indent=2))
