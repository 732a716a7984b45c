"""The manifest's `module:attr` loader: graphs, workers, tool packs and hooks are named this way."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from orchestrator.errors import ManifestError, did_you_mean

__all__ = ["import_file", "import_ref"]


def import_ref(ref: str, what: str) -> Any:
    """The object a manifest names as `module:attr` or `path/to/file.py:attr` (a `ManifestError` if none)."""
    module_name, sep, attr = ref.rpartition(":")
    if not sep or not module_name or not attr:
        raise ManifestError(
            f"{what} reference {ref!r} must be 'module:attribute' (e.g. 'tools.catalog:TOOLS') "
            "or 'path/to/file.py:attribute'"
        )
    try:
        module = (
            import_file(module_name) if module_name.endswith(".py") else importlib.import_module(module_name)
        )
    except ImportError as exc:
        raise ManifestError(
            f"{what} reference {ref!r}: cannot import module {module_name!r}: {exc}"
        ) from None
    except SyntaxError as exc:
        raise ManifestError(
            f"{what} reference {ref!r}: {exc.filename}, line {exc.lineno}: syntax error: {exc.msg}; "
            "fix the module"
        ) from None
    except Exception as exc:  # the module raised while it was imported
        raise ManifestError(
            f"{what} reference {ref!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}"
        ) from None
    try:
        return getattr(module, attr)
    except AttributeError:
        names = [n for n in dir(module) if not n.startswith("_")]
        raise ManifestError(
            f"{what} reference {ref!r}: module {module_name!r} has no {attr!r}" + did_you_mean(attr, names)
        ) from None


def import_file(path: str) -> Any:
    """Import a module from its file (a LangGraph project names graphs by file), once per file."""
    file = Path(path)
    if not file.is_file():
        raise ImportError(f"no file {path!r}")
    name = "orch_graph_" + hashlib.sha256(str(file.resolve()).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path!r} as a module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
