"""Local decoding speed: the orchestrator's path against llama-cpp-python called directly, same model file.

Both sides load the same GGUF file with the same settings (n_ctx 4096, 2 threads, temperature 0) and
generate for the same chat prompt from an empty KV cache. Generation speed is tokens after the first, per
second of wall time after the first token; it includes each side's own per-token work (sampling, grammar,
Python). Two cases: free text, and JSON under a schema (a grammar). Rounds alternate the two sides.

Run: `.venv/bin/python bench/local.py [--json]`; `make bench` writes the table into docs/benchmarks.md.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from langchain_core.messages import HumanMessage, SystemMessage  # noqa: E402

from orchestrator.config import Settings  # noqa: E402
from orchestrator.modelfiles import LOCAL_MODELS, ensure_model_file  # noqa: E402
from orchestrator.providers.local import LocalChatModel, _instance  # noqa: E402

ROUNDS = 3
SYSTEM = "You are a careful assistant."
FREE = "Write a short story, about 120 words, about a lighthouse keeper who finds a message in a bottle."
SHAPED = (
    "Describe a made-up city in JSON: its name, country, population and three landmarks with a sentence each."
)
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "country": {"type": "string"},
        "population": {"type": "integer"},
        "landmarks": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "about": {"type": "string"}},
                "required": ["name", "about"],
            },
            "minItems": 3,
            "maxItems": 3,
        },
    },
    "required": ["name", "country", "population", "landmarks"],
}
MAX_TOKENS = 160


def direct(llama: Any, prompt: str, schema: dict[str, Any] | None) -> tuple[float, int]:
    """llama-cpp-python's own chat completion, streamed: (tokens per second after the first, tokens)."""
    llama.reset()
    kwargs: dict[str, Any] = {"max_tokens": MAX_TOKENS, "temperature": 0.0, "stream": True}
    if schema is not None:
        kwargs["response_format"] = {"type": "json_object", "schema": schema}
    times: list[float] = []
    messages: Any = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
    for chunk in llama.create_chat_completion(messages=messages, **kwargs):
        if chunk["choices"][0]["delta"].get("content"):
            times.append(time.perf_counter())
    return (len(times) - 1) / (times[-1] - times[0]), len(times)


def ours(model: LocalChatModel, prompt: str, schema: dict[str, Any] | None) -> tuple[float, int]:
    """The orchestrator's chat model (engine, lock, thread): (tokens per second after the first, tokens)."""
    engine = _instance(model.model_path, model.n_ctx, model.n_threads, None).engine
    engine.llama.reset()
    kwargs: dict[str, Any] = {"max_tokens": MAX_TOKENS, "temperature": 0.0}
    if schema is not None:
        kwargs["response_format"] = {"type": "json_object", "schema": schema}
    msg = model.invoke([SystemMessage(SYSTEM), HumanMessage(prompt)], **kwargs)
    meta = msg.response_metadata
    tokens = int((msg.usage_metadata or {}).get("output_tokens", 0))
    return (tokens - 1) / (meta["generation_ms"] / 1000), tokens


def run(name: str = "qwen2.5-1.5b") -> dict[str, Any]:
    path = ensure_model_file(LOCAL_MODELS[name], Settings().models_dir, lambda m: None)
    model = LocalChatModel(model_path=str(path), model_name=f"local:{name}")
    llama = _instance(model.model_path, model.n_ctx, model.n_threads, None).engine.llama  # one loaded copy
    results: dict[str, Any] = {"model": f"local:{name}", "max_tokens": MAX_TOKENS, "rounds": ROUNDS}
    for case, prompt, schema in (("free text", FREE, None), ("JSON schema", SHAPED, SCHEMA)):
        samples: dict[str, list[float]] = {"direct": [], "ours": []}
        counts: dict[str, int] = {}
        for _ in range(ROUNDS):
            rate, counts["direct"] = direct(llama, prompt, schema)
            samples["direct"].append(rate)
            rate, counts["ours"] = ours(model, prompt, schema)
            samples["ours"].append(rate)
        d, o = statistics.median(samples["direct"]), statistics.median(samples["ours"])
        results[case] = {"direct_tps": d, "ours_tps": o, "ratio": o / d, "tokens": counts}
    return results


def section(r: dict[str, Any]) -> list[str]:
    rows = [
        f"| {case} | {r[case]['direct_tps']:.1f} | {r[case]['ours_tps']:.1f} | {r[case]['ratio']:.2f} | "
        f"{'met' if r[case]['ratio'] >= 0.95 else 'missed'} |"
        for case in ("free text", "JSON schema")
    ]
    return [
        "## Local generation speed",
        "",
        f"`bench/local.py`: {r['model']}, up to {r['max_tokens']} tokens from an empty KV cache, temperature 0,",
        f"median of {r['rounds']} alternating rounds. Tokens per second after the first token, wall time.",
        "",
        "| case | llama-cpp-python directly | the orchestrator | ratio | goal >= 0.95 |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]


if __name__ == "__main__":
    result = run()
    print(json.dumps(result, indent=2) if "--json" in sys.argv else "\n".join(section(result)))
