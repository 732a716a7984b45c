"""Decoding for in-process GGUF models: prompt prefixes kept (in memory and on disk), grammar checked lazily.

Two things make a small local model fast enough to lead an agent on two CPU cores:

- **Prompt prefixes are not evaluated twice.** Evaluating a prompt token costs about as much as generating
  one. The KV state after a prompt's first (system) message is saved to disk once per model file and prompt,
  and loaded by every later process; within a process, a prompt that extends the previous one evaluates only
  its new tokens.
- **The grammar is checked after the choice, not before.** llama.cpp's chain applies a grammar to all
  ~150,000 candidate tokens at every step (about 30 ms a token on this hardware). Here the model picks its
  token first (greedy, or sampled after top-k/min-p); only when the grammar rejects that token are the
  candidates filtered and the pick made again. At temperature 0 the result is the same token the
  grammar-first chain picks, since the best token the grammar allows is the best token when it is allowed.

The engine is not safe for concurrent use: the caller holds the model's lock around `complete`.
"""

from __future__ import annotations

import codecs
import ctypes
import hashlib
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Completion", "LlamaEngine", "PromptTooLong"]

_EVAL_CHUNK = 128  # prompt tokens evaluated between two checks for a stop
_KV_FILES_KEPT = 48  # prefix states kept on disk per directory (oldest removed first)
_RIVALS = 8  # the top candidates a token's margin is measured against
_CANDIDATE_DTYPE = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)


class PromptTooLong(ValueError):
    """The prompt plus the reply budget does not fit the context window."""


@dataclass(frozen=True)
class Completion:
    """One generated reply and how it was made."""

    text: str
    prompt_tokens: int
    cached_tokens: int  # prompt tokens whose KV state was reused (memory or disk), not evaluated
    completion_tokens: int
    finish_reason: str  # "stop" | "length"
    ttft_s: float | None  # from the call's start to the first generated token
    prompt_eval_s: float
    generation_s: float
    grammar_fallbacks: int  # tokens the model preferred that the grammar refused
    margin: float | None = None  # asked for: the least sure step's lead over its runner-up (see `complete`)


class LlamaEngine:
    """One `llama_cpp.Llama`: chat formatting, prefix reuse, lazy grammar, greedy or sampled decoding."""

    def __init__(self, llama: Any, *, model_id: str, kv_dir: Path | None = None) -> None:
        import llama_cpp
        from llama_cpp import llama_chat_format

        self.llama = llama
        self._lib = llama_cpp
        self.model_id = model_id
        self.kv_dir = kv_dir
        self.n_vocab = int(llama.n_vocab())
        self.n_ctx = int(llama.n_ctx())
        self._vocab = llama._model.vocab
        self._ctx = llama._ctx.ctx
        self._version = str(getattr(llama_cpp, "__version__", "?"))
        template = llama.metadata.get("tokenizer.chat_template") or _CHATML
        eos_id, bos_id = llama.token_eos(), llama.token_bos()
        self._formatter = llama_chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=llama._model.token_get_text(eos_id) if eos_id != -1 else "",
            bos_token=llama._model.token_get_text(bos_id) if bos_id != -1 else "",
        )
        self._candidates = np.zeros(self.n_vocab, dtype=_CANDIDATE_DTYPE)
        self._candidates["id"] = np.arange(self.n_vocab, dtype=np.int32)
        self._one = (llama_cpp.llama_token_data * 1)()
        self._grammars: OrderedDict[str, str] = OrderedDict()
        self._anchor_cache: dict[str, list[int]] = {}
        self._disk_lock = threading.Lock()

    # --- prompt ---------------------------------------------------------------------------------------
    def render(self, messages: Sequence[Mapping[str, str]], *, generation_prompt: bool = True) -> str:
        """The prompt text the model's own chat template makes of `messages`."""
        self._formatter.add_generation_prompt = generation_prompt
        try:
            return str(self._formatter(messages=list(messages)).prompt)  # type: ignore[arg-type]
        finally:
            self._formatter.add_generation_prompt = True

    def tokenize(self, text: str) -> list[int]:
        """Token ids of a rendered prompt (special tokens parsed, no extra BOS: the template has its own)."""
        return list(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def _anchor(self, messages: Sequence[Mapping[str, str]], prompt: str, tokens: list[int]) -> int:
        """How many leading tokens belong to the first (system) message: the part worth keeping on disk."""
        if len(messages) < 2 or messages[0].get("role") != "system":
            return 0
        head = self.render(messages[:1], generation_prompt=False)
        if not prompt.startswith(head):
            return 0
        head_tokens = self._anchor_cache.get(head)
        if head_tokens is None:
            head_tokens = self.tokenize(head)
            if len(self._anchor_cache) > 64:
                self._anchor_cache.clear()
            self._anchor_cache[head] = head_tokens
        n = len(head_tokens)
        return n if tokens[:n] == head_tokens else 0

    # --- KV state -------------------------------------------------------------------------------------
    def _kv_path(self, tokens: Sequence[int]) -> Path | None:
        if self.kv_dir is None:
            return None
        h = hashlib.sha256()
        h.update(f"{self.model_id}|{self.n_ctx}|{self._version}|v1|".encode())
        h.update(np.asarray(tokens, dtype=np.int32).tobytes())
        return self.kv_dir / f"{h.hexdigest()[:40]}.kv"

    def _load_prefix(self, tokens: Sequence[int]) -> bool:
        """Load the saved state for exactly `tokens` into the context, if there is one."""
        path = self._kv_path(tokens)
        if path is None or not path.is_file():
            return False
        capacity = len(tokens)
        out = (self._lib.llama_token * capacity)()
        count = ctypes.c_size_t(0)
        ok = self._lib.llama_state_load_file(
            self._ctx, str(path).encode(), out, capacity, ctypes.byref(count)
        )
        if not ok or count.value != capacity or list(out) != list(tokens):
            self.llama.reset()
            self._lib.llama_memory_clear(self._lib.llama_get_memory(self._ctx), True)
            path.unlink(missing_ok=True)  # unusable (another version, a torn write): make it anew
            return False
        self.llama.input_ids[:capacity] = tokens
        self.llama.n_tokens = capacity
        os.utime(path)  # recently used: kept longest
        return True

    def _save_prefix(self, tokens: Sequence[int]) -> None:
        path = self._kv_path(tokens)
        if path is None:
            return
        with self._disk_lock:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                array = (self._lib.llama_token * len(tokens))(*tokens)
                if self._lib.llama_state_save_file(self._ctx, str(tmp).encode(), array, len(tokens)):
                    os.replace(tmp, path)  # atomic: a reader never sees half a file
                else:
                    tmp.unlink(missing_ok=True)
                files = sorted(path.parent.glob("*.kv"), key=lambda p: p.stat().st_mtime)
                for old in files[:-_KV_FILES_KEPT]:
                    old.unlink(missing_ok=True)
            except OSError:
                pass  # a cache that cannot be written only costs time

    def _eval(self, tokens: Sequence[int], stop: Callable[[], bool] | None) -> bool:
        """Evaluate `tokens` after those in the context, in chunks with a check for `stop` between them;
        False when it stopped (the context then holds the chunks evaluated, as reusable as any prefix)."""
        if stop is None:
            self.llama.eval(tokens)
            return True
        for i in range(0, len(tokens), _EVAL_CHUNK):
            if stop():
                return False
            self.llama.eval(tokens[i : i + _EVAL_CHUNK])
        return True

    def _prepare(self, tokens: list[int], anchor: int, stop: Callable[[], bool] | None = None) -> int | None:
        """Bring the context to `tokens` (logits ready for the next token); return how many were reused
        (None when `stop` said to stop first)."""
        llama = self.llama
        current = llama.input_ids[: llama.n_tokens]
        common = 0
        limit = min(len(current), len(tokens))
        while common < limit and current[common] == tokens[common]:
            common += 1
        if anchor > common and self._load_prefix(tokens[:anchor]):
            common = anchor
        reused = common
        if common >= len(tokens):
            common = len(tokens) - 1  # the last prompt token is evaluated again for fresh logits
        if not llama._ctx.kv_cache_seq_rm(-1, common, -1):
            llama.reset()
            common = reused = 0
        llama.n_tokens = common
        if anchor > common:
            if not self._eval(tokens[common:anchor], stop):
                return None
            self._save_prefix(tokens[:anchor])
            common = anchor
        if not self._eval(tokens[common:], stop):
            return None
        return reused

    # --- grammar --------------------------------------------------------------------------------------
    def grammar_for(self, schema: Mapping[str, Any]) -> str:
        """GBNF for a JSON schema, cached."""
        key = json.dumps(schema)  # property order matters: the grammar keeps it
        gbnf = self._grammars.get(key)
        if gbnf is None:
            gbnf = schema_to_gbnf(schema)
            self._grammars[key] = gbnf
            if len(self._grammars) > 128:
                self._grammars.popitem(last=False)
        else:
            self._grammars.move_to_end(key)
        return gbnf

    def _allows(self, grammar: Any, token: int) -> bool:
        one = self._one
        one[0] = self._lib.llama_token_data(token, 0.0, 0.0)
        arr = self._lib.llama_token_data_array(one, 1, -1, False)
        self._lib.llama_sampler_apply(grammar, ctypes.byref(arr))
        return bool(np.isfinite(arr.data[0].logit))

    def _constrained(self, grammar: Any, logits: np.ndarray) -> np.ndarray:
        """The logits with every token the grammar refuses set to -inf."""
        cand = self._candidates
        cand["logit"] = logits
        cand["p"] = 0.0
        arr = self._lib.llama_token_data_array(
            cand.ctypes.data_as(self._lib.llama_token_data_p), self.n_vocab, -1, False
        )
        self._lib.llama_sampler_apply(grammar, ctypes.byref(arr))
        return np.asarray(cand["logit"])

    # --- decoding -------------------------------------------------------------------------------------
    def complete(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        grammar: str | None = None,
        top_k: int = 40,
        min_p: float = 0.05,
        seed: int | None = None,
        on_text: Callable[[str], None] | None = None,
        confidence: bool = False,
        stop: Callable[[], bool] | None = None,
    ) -> Completion:
        """Generate a reply to `messages`, constrained by a GBNF `grammar` when given; `on_text` gets the
        text as it is generated, piece by piece (whole UTF-8 characters).

        `stop` is asked between tokens (and between chunks of the prompt): once it says True, the reply
        ends there with `finish_reason` "deadline", holding what was generated (a run's deadline, or a
        call cancelled, stops a generation under way and frees the model).

        `confidence`: measure the model's `margin`, how sure it was of its least sure choice. At each step
        where the grammar leaves it a choice among its top candidates, the lead of the chosen token's
        log-probability over the best other token the grammar allows; the smallest lead over the reply
        (None when every step was forced). A label the model hesitated over has a small margin.
        """
        lib = self._lib
        start = time.perf_counter()
        prompt = self.render(messages)
        tokens = self.tokenize(prompt)
        if len(tokens) + max_tokens > self.n_ctx:
            raise PromptTooLong(
                f"the prompt is {len(tokens)} tokens and the reply may take {max_tokens}, more than the "
                f"context window of {self.n_ctx} tokens; shorten the input or raise the model's n_ctx"
            )
        anchor = self._anchor(messages, prompt, tokens)
        cached = self._prepare(tokens, anchor, stop)
        prompt_done = time.perf_counter()
        if cached is None:  # stopped before the prompt was read: nothing generated
            return Completion("", len(tokens), 0, 0, "deadline", None, prompt_done - start, 0.0, 0)
        sampler = (
            lib.llama_sampler_init_grammar(self._vocab, grammar.encode("utf-8"), b"root") if grammar else None
        )
        if grammar and not sampler:
            raise ValueError("llama.cpp could not parse the grammar")
        rng = np.random.default_rng(seed)
        out: list[int] = []
        fallbacks = 0
        margin: float | None = None
        first: float | None = None
        finish = "length"
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="ignore") if on_text is not None else None
        try:
            for _ in range(max_tokens):
                if stop is not None and stop():
                    finish = "deadline"
                    break
                logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(self._ctx, -1), shape=(self.n_vocab,))
                token = self._pick(logits, temperature, top_k, min_p, rng)
                if sampler is not None and not self._allows(sampler, token):
                    fallbacks += 1
                    token = self._pick(self._constrained(sampler, logits), temperature, top_k, min_p, rng)
                if confidence:
                    lead = self._lead(sampler, logits, token)
                    if lead is not None and (margin is None or lead < margin):
                        margin = lead
                if first is None:
                    first = time.perf_counter()
                if lib.llama_vocab_is_eog(self._vocab, token):
                    finish = "stop"
                    break
                if sampler is not None:
                    lib.llama_sampler_accept(sampler, token)
                out.append(token)
                if utf8 is not None and on_text is not None:
                    piece = utf8.decode(self.llama.detokenize([token]))
                    if piece:
                        on_text(piece)
                if len(tokens) + len(out) >= self.n_ctx:
                    break
                self.llama.eval([token])
        finally:
            if sampler is not None:
                lib.llama_sampler_free(sampler)
        end = time.perf_counter()
        text = self.llama.detokenize(out).decode("utf-8", errors="ignore")
        return Completion(
            text=text,
            prompt_tokens=len(tokens),
            cached_tokens=cached,
            completion_tokens=len(out),
            finish_reason=finish,
            ttft_s=(first - start) if first is not None else None,
            prompt_eval_s=prompt_done - start,
            generation_s=end - (first or prompt_done),
            grammar_fallbacks=fallbacks,
            margin=margin,
        )

    def _lead(self, grammar: Any, logits: np.ndarray, token: int) -> float | None:
        """How far the chosen token's log-probability leads the best other allowed one among the top
        candidates (logit differences are log-probability differences), or None when it had no rival."""
        top = np.argpartition(logits, -_RIVALS)[-_RIVALS:]
        rivals = [
            int(t) for t in top if int(t) != token and (grammar is None or self._allows(grammar, int(t)))
        ]
        if not rivals:
            return None
        return float(logits[token] - max(logits[t] for t in rivals))

    @staticmethod
    def _pick(
        logits: np.ndarray, temperature: float, top_k: int, min_p: float, rng: np.random.Generator
    ) -> int:
        if temperature <= 0:
            return int(np.argmax(logits))
        k = min(top_k, logits.shape[0])
        top = np.argpartition(logits, -k)[-k:]
        scaled = logits[top].astype(np.float64) / temperature
        finite = np.isfinite(scaled)
        if not finite.any():
            return int(np.argmax(logits))
        probs = np.where(finite, np.exp(scaled - scaled[finite].max()), 0.0)
        probs[probs < min_p * probs.max()] = 0.0
        probs /= probs.sum()
        return int(top[rng.choice(len(top), p=probs)])


def schema_to_gbnf(schema: Mapping[str, Any]) -> str:
    """GBNF for a JSON schema, through llama-cpp-python's port of llama.cpp's converter.

    Properties keep the schema's order (so a model names the tool before writing its arguments), and
    literals escape backslashes: the port (0.3.36) leaves them raw, so an enum value holding a double quote
    (`"` in JSON is `\\"`) makes a grammar llama.cpp cannot parse.

    An enum of more than `_TRIE_FROM` values becomes a tree of the values' shared beginnings, the same
    language: the port writes one alternative per value, and llama.cpp checks every token of the vocabulary
    against each alternative still open: a grounded record's spans of a long text (6,000 values for 2,000
    words) took 18 s to check against the whole vocabulary once, as the lazy grammar does when it refuses
    the model's choice (Qwen2.5's vocabulary, 2 shared cores), and 0.04 s as a tree. Its strings are
    written as UTF-8, not `\\u` escapes (a model writes "€", rarely "\\u20ac"; both are JSON).
    """
    from orchestrator.providers.llama_probe import before_llama_loads

    before_llama_loads()
    from llama_cpp.llama_grammar import RESERVED_NAMES, SchemaConverter

    class _Converter(SchemaConverter):
        def _format_literal(self, literal: str) -> str:
            escaped = (
                literal.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
            )
            return f'"{escaped}"'

        def visit(self, schema: Any, name: str) -> Any:
            values = schema.get("enum") if isinstance(schema, dict) else None
            if (
                isinstance(values, list)
                and len(values) > _TRIE_FROM
                and not {"$ref", "anyOf", "oneOf", "const"} & set(schema)
            ):
                rule = _trie([json.dumps(v, ensure_ascii=False) for v in values], self._format_literal)
                named = name + "-" if name in RESERVED_NAMES else name or "root"
                return self._add_rule(named, rule)  # type: ignore[no-untyped-call]
            return super().visit(schema, name)  # type: ignore[no-untyped-call]

    converter: Any = _Converter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)  # type: ignore[no-untyped-call]
    resolved = converter.resolve_refs(_without_notes(json.loads(json.dumps(schema))), "stdin")
    converter.visit(resolved, "")
    # JSON strings hold no raw control characters: the port's `char` rule let a newline in, and a reply with
    # one in a string is not JSON (llama.cpp's own converter excludes them)
    return str(converter.format_grammar()).replace('char ::= [^"\\\\]', 'char ::= [^"\\\\\\x7F\\x00-\\x1F]')


_TRIE_FROM = 16  # an enum of more values is written as a tree of their shared beginnings


def _trie(literals: Sequence[str], literal: Callable[[str], str]) -> str:
    """A GBNF expression matching exactly `literals`, as a tree of their shared beginnings (`literal` writes
    a GBNF literal): ["ab", "abc", "ad"] -> `"a" ("b" ("c")? | "d")`."""
    root: dict[str, Any] = {}
    for text in literals:
        node = root
        for ch in text:
            node = node.setdefault(ch, {})
        node[""] = {}  # a literal ends here

    def expression(node: dict[str, Any]) -> str:
        branches = []
        for ch, child in node.items():
            if ch == "":
                continue
            run, nxt = ch, child
            while len(nxt) == 1 and "" not in nxt:  # one way on: one literal, not a branch each character
                ((c, nxt),) = nxt.items()
                run += c
            rest = expression(nxt)
            branches.append(literal(run) + (f" {rest}" if rest else ""))
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(" + " | ".join(branches) + ")"
        return f"({body})?" if "" in node else body

    return expression(root)


# What a schema says for readers, not for the grammar. The port fails on a schema holding only these (a
# parameter with a description and no type, as 421 of BFCL's tools have once their non-JSON-Schema type
# names are dropped): "Unrecognized schema", and the whole call failed. Without them it is `{}`, any value.
_NOTES = frozenset({"description", "title", "examples", "default", "$comment", "deprecated", "readOnly"})
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions")  # name -> schema
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")  # [schema, ...]
_SCHEMA_ONE = ("items", "additionalProperties", "not")  # schema (or a boolean)


def _without_notes(schema: Any) -> Any:
    """`schema` with the reader's notes dropped at every level where a schema stands (a property named
    "description" stays: it is a name, not a note)."""
    if not isinstance(schema, dict):
        return schema
    out = {k: v for k, v in schema.items() if k not in _NOTES}
    for key in _SCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {name: _without_notes(sub) for name, sub in out[key].items()}
    for key in _SCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [_without_notes(sub) for sub in out[key]]
    for key in _SCHEMA_ONE:
        if key in out:
            out[key] = _without_notes(out[key])
    return out


# Used when a GGUF file carries no chat template of its own.
_CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
