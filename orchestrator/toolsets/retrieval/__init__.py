"""Tool retrieval at catalog scale: BM25 with identifier splitting and field weights, dense embeddings
(all-MiniLM-L6-v2 on onnxruntime, no torch), hybrid fusion, a persisted SQLite index kept in step with
the catalog incrementally, and the evaluation behind `orch tools eval`. See docs/tools.md.
"""

from orchestrator.toolsets.retrieval.docs import LabelledQuery, ToolDoc, read_catalog, read_queries
from orchestrator.toolsets.retrieval.evaluate import RetrievalReport, evaluate
from orchestrator.toolsets.retrieval.index import METHODS, Hit, SyncReport, ToolIndex

__all__ = [
    "METHODS",
    "Hit",
    "LabelledQuery",
    "RetrievalReport",
    "SyncReport",
    "ToolDoc",
    "ToolIndex",
    "evaluate",
    "read_catalog",
    "read_queries",
]
