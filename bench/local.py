"""Local decoding speed: the orchestrator's path against llama-cpp-python called directly, same model file.

Both sides use the same loaded GGUF model with the same settings (n_ctx 4096, 2 threads, temperature 0)
and generate for the same chat prompt from an empty KV cache. Generation speed is the generated tokens
(llama.cpp's own decode count) per second of wall time outside prompt evaluation (llama.cpp's own prompt
time), so it includes each side's per-token work (sampling, grammar, Python). Two cases: free text, and
JSON under a schema (a grammar). Rounds alternate the two sides.

Run: `.venv/bin/python bench/local.py` (writes its table into docs/benchmarks.md) or `--json` (prints only).
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
DOC = ROOT / "docs" / "benchmarks.md"

from langchain_core.messages import HumanMessage, SystemMessage  # noqa: E402

from bench.markers import splice as splice_doc  # noqa: E402
from orchestrator.config import Settings  # noqa: E402
from orchestrator.providers.local import LocalChatModel, _instance  # noqa: E402
from orchestrator.providers.modelfiles import LOCAL_MODELS, ensure_model_file  # noqa: E402

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


def _timed(llama: Any, call: Any) -> tuple[float, int]:
    """(generated tokens per second outside prompt evaluation, generated tokens) for one call."""
    import llama_cpp

    ctx = llama._ctx.ctx
    llama_cpp.llama_perf_context_reset(ctx)
    t0 = time.perf_counter()
    call()
    wall = time.perf_counter() - t0
    perf = llama_cpp.llama_perf_context(ctx)
    return perf.n_eval / (wall - perf.t_p_eval_ms / 1000), int(perf.n_eval)


def direct(llama: Any, prompt: str, schema: dict[str, Any] | None) -> tuple[float, int]:
    """llama-cpp-python's own chat completion."""
    llama.reset()
    kwargs: dict[str, Any] = {"max_tokens": MAX_TOKENS, "temperature": 0.0}
    if schema is not None:
        kwargs["response_format"] = {"type": "json_object", "schema": schema}
    messages: Any = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
    return _timed(llama, lambda: llama.create_chat_completion(messages=messages, **kwargs))


def ours(model: LocalChatModel, prompt: str, schema: dict[str, Any] | None) -> tuple[float, int]:
    """The orchestrator's chat model (engine, lock, worker thread)."""
    engine = _instance(model).engine
    engine.llama.reset()
    kwargs: dict[str, Any] = {"max_tokens": MAX_TOKENS, "temperature": 0.0}
    if schema is not None:
        kwargs["response_format"] = {"type": "json_object", "schema": schema}
    return _timed(engine.llama, lambda: model.invoke([SystemMessage(SYSTEM), HumanMessage(prompt)], **kwargs))


def run(name: str = "qwen2.5-1.5b") -> dict[str, Any]:
    path = ensure_model_file(LOCAL_MODELS[name], Settings().models_dir, lambda m: None)
    model = LocalChatModel(model_path=str(path), model_name=f"local:{name}")
    llama = _instance(model).engine.llama  # one loaded copy
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
        f"median of {r['rounds']} alternating rounds. Generated tokens per second of wall time outside prompt",
        "evaluation (llama.cpp's own counters), so each side's sampling, grammar and Python work is included.",
        "",
        "| case | llama-cpp-python directly | the orchestrator | ratio | goal >= 0.95 |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]


def splice(lines: list[str]) -> None:
    """Write the section between its markers in docs/benchmarks.md (new: before the task eval)."""
    import datetime as dt

    start, end = "<!-- local:start -->", "<!-- local:end -->"
    block = "\n".join([start, *lines, f"Last run: {dt.date.today().isoformat()}.", end])
    before = "<!-- eval:start -->" if "<!-- eval:start -->" in DOC.read_text() else "## Notes"
    splice_doc(DOC, block, start, end, "Benchmarks", before=before)


if __name__ == "__main__":
    result = run()
    if "--json" in sys.argv:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(section(result)))
        splice(section(result))
