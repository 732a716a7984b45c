"""Routing before generation: predict from the input alone whether the workhorse will be right, and send
the items it would get wrong straight to the racehorse, without paying for the workhorse's answer.

A `Router` is a k-nearest-neighbour estimate over labelled inputs: each input's MiniLM embedding (the
`embed` extra: ONNX, no torch) and whether the workhorse answered it right. For a new input, the
probability that the workhorse is right is the similarity-weighted share of its k nearest neighbours it
got right. Below `min_p` the worker skips its own slot and goes up its escalation chain at once; at or above
it, the workhorse answers and routing by margin (`Worker.min_margin`) still applies after generation.

`orch trial --tune` fits one when the extra is installed (`fit`: leave-one-out estimates on the labelled
items, so no item predicts itself) and keeps it only when it measures cheaper than routing by margin alone
at the same target; it is saved beside the worker settings file (`save`, a NumPy `.npz` of the vectors and
the scores, loaded without pickle). The embeddings are computed by the callers (the agent and evals layers),
as this layer does not reach the tool-search code where MiniLM lives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import ConfigError

if TYPE_CHECKING:
    pass

__all__ = ["DEFAULT_K", "Router", "loo_estimates"]

DEFAULT_K = 10


@dataclass(frozen=True, eq=False)
class Router:
    """A k-nearest-neighbour estimate of whether the workhorse will be right (see the module docstring)."""

    vectors: Any  # NDArray[np.float32], (n, 384), unit length
    right: Any  # NDArray[np.float32], (n,), the workhorse's score on each labelled input, 0 to 1
    min_p: float
    k: int = DEFAULT_K
    source: str = field(default="", compare=False)  # the file it was loaded from, for messages

    def p_right(self, vector: Any) -> float:
        """The estimated probability that the workhorse answers an input right, from its embedding (a unit
        vector of `orchestrator.toolsets.retrieval.dense.MiniLM`)."""
        return float(_estimate(self.vectors, self.right, vector, self.k))

    def save(self, path: Path) -> None:
        import numpy as np

        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            np.savez(f, vectors=self.vectors.astype(np.float16), right=self.right.astype(np.float32))

    @classmethod
    def load(cls, path: Path, min_p: float, k: int = DEFAULT_K) -> Router:
        """The router saved at `path`; ConfigError naming the file when it is missing or damaged."""
        import numpy as np

        try:
            with np.load(path, allow_pickle=False) as data:
                vectors = data["vectors"].astype(np.float32)
                right = data["right"].astype(np.float32)
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(
                f"can't read the router {str(path)!r} ({exc}); run `orch trial ... --tune` again to write it"
            ) from None
        if vectors.ndim != 2 or len(vectors) != len(right) or not len(right):
            raise ConfigError(f"the router {str(path)!r} is damaged; run `orch trial ... --tune` again")
        return cls(vectors, right, min_p, k, str(path))


def _estimate(vectors: Any, right: Any, query: Any, k: int, skip: int | None = None) -> float:
    import numpy as np

    sims = vectors @ query
    if skip is not None:
        sims = sims.copy()
        sims[skip] = -np.inf
    k = min(k, len(sims) - (skip is not None))
    if k <= 0:
        return 1.0
    near = np.argpartition(-sims, k - 1)[:k]
    weights = np.clip(sims[near], 1e-3, None)
    return float((weights * right[near]).sum() / weights.sum())


def loo_estimates(vectors: Any, right: Sequence[float], k: int = DEFAULT_K) -> list[float]:
    """Each labelled input's estimate from the others (leave one out), from their embeddings."""
    import numpy as np

    scores = np.asarray(right, dtype=np.float32)
    return [_estimate(vectors, scores, vectors[i], k, skip=i) for i in range(len(vectors))]
