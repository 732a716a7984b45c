"""`orch init`: a new project folder that runs at once on the local models.

It writes a `pyproject.toml` with the `[tool.orchestrator]` manifest, a graph of its own (one workhorse
node), the bundled agent over a small tool pack and a worker. The Python files are fixed text written
against the public API; only the project's name and folder go into the TOML, escaped, and the result
is parsed back before anything is written. Existing files are never overwritten.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from orchestrator._version import DIST_NAME, __version__
from orchestrator.errors import ConfigError

__all__ = ["FILES", "Scaffold", "scaffold"]

_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")  # a valid distribution name (PEP 508)

PYPROJECT = """\
[project]
name = {name}
version = "0.1.0"
description = {description}
requires-python = ">=3.11"
dependencies = [{requirement}]

# The project manifest: which graphs, workers, tools and models this folder defines.
# Its keys are documented in {dist}'s docs/manifest.md.
[tool.orchestrator]
default_graph = "summary"                 # `orch run TEXT` runs this graph
tool_packs = ["tools.basics:TOOLS"]       # each: a list of langchain-core tools
workers = ["workers.tone:WORKERS"]        # each: a list of orchestrator.Worker
worker_settings = "worker-settings.json"  # tuned thresholds: `orch trial --tune` writes them here

[tool.orchestrator.graphs]
summary = "graphs.summary:build"          # your own graph: one workhorse node
agent = "graphs.agent:build"              # the bundled agent: plans, finds tools, delegates to workers

# Slot -> model; the role belongs to the binding. Any slot can point at an API model instead, e.g.
# summarize = {{ model = "openai:gpt-4o-mini", role = "workhorse" }} (see docs/providers.md).
[tool.orchestrator.slots]
controller = {{ model = "local:qwen2.5-1.5b", role = "racehorse" }}
summarize = {{ model = "local:qwen2.5-0.5b", role = "workhorse" }}
classify = {{ model = "local:qwen2.5-0.5b", role = "workhorse" }}

[tool.orchestrator.limits]
max_steps = 8
max_tokens = 256
"""

SUMMARY_GRAPH = '''\
"""Your own graph: one node asks the `summarize` slot's model (a cheap workhorse) for a summary.

A node asks for a model by slot name; every call through `runtime.context.model(slot)` is checked
against the run's budget, traced under the node's span and priced in the run's ledger.

    START -> summarize -> END
"""

from __future__ import annotations

from typing import Any, TypedDict

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from orchestrator import RunContext


class Summary(TypedDict, total=False):
    input: str  # `orch run TEXT` puts TEXT here
    answer: str  # the run's answer


async def summarize(state: Summary, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """One short sentence that says what the text is about."""
    reply = await runtime.context.model("summarize").ainvoke(
        [
            SystemMessage("Summarize the user's text in one short sentence. Reply with that sentence only."),
            HumanMessage(state["input"]),
        ],
        max_tokens=80,
    )
    return {"answer": str(reply.content).strip()}


def build() -> StateGraph[Summary, RunContext, Summary, Summary]:
    """The uncompiled graph; the runner compiles it with its checkpointer."""
    g: StateGraph[Summary, RunContext, Summary, Summary] = StateGraph(Summary, context_schema=RunContext)
    g.add_node("summarize", summarize)
    g.add_edge(START, "summarize")
    g.add_edge("summarize", END)
    return g
'''

AGENT_GRAPH = '''\
"""The bundled agent over this project's tools and workers.

The racehorse (`controller` slot) plans the request, finds tools in the tool packs and calls them,
hands quoted text to workers on the workhorse slots, then answers from the results alone.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import StateGraph
from orchestrator import build_agent_graph

from tools.basics import COVERS, PLAN_EXAMPLES


def build() -> StateGraph[Any, Any, Any, Any]:
    """The uncompiled agent graph: the manifest's tool packs and workers, with worked plans for the tools."""
    return build_agent_graph(covers=COVERS, examples=PLAN_EXAMPLES)
'''

TOOL_PACK = '''\
"""A tool pack: a list of langchain-core tools. The agent finds them by name and description."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from langchain_core.tools import BaseTool, tool
from orchestrator import PlanExample


@tool
def days_between(
    start_date: Annotated[str, "Earlier date, ISO format YYYY-MM-DD"],
    end_date: Annotated[str, "Later date, ISO format YYYY-MM-DD"],
) -> int:
    """Date arithmetic: count the days between two dates (end minus start, negative if end is earlier)."""
    try:
        return (dt.date.fromisoformat(end_date) - dt.date.fromisoformat(start_date)).days
    except ValueError:
        raise ValueError(f"give both dates as YYYY-MM-DD (got {start_date!r} and {end_date!r})") from None


@tool
def word_count(text: Annotated[str, "The text to count the words of"]) -> int:
    """Count the words in a text (runs of characters between spaces)."""
    return len(text.split())


TOOLS: list[BaseTool] = [days_between, word_count]

# What the tools cover, in the words of the agent's system prompt ("... for <COVERS>.").
COVERS = "counting the days between two dates, or the words of a text"

# Worked plans for requests these tools answer: the agent shows the closest ones to the model that plans.
PLAN_EXAMPLES: tuple[PlanExample, ...] = (
    PlanExample(
        "How long is it from 2025-04-03 to 2025-06-30?",
        ({"tool": "difference in days between 2025-04-03 and 2025-06-30"},),
    ),
    PlanExample(
        "How many words are in 'the cat sat on the warm mat'?", ({"tool": "count the words of the text"},)
    ),
)
'''

WORKER = '''\
"""A workhorse worker: the agent hands it text the request quotes; its output is validated (a label)."""

from __future__ import annotations

from orchestrator import Worker, classify_worker

TONES = {
    "positive": "pleased, thankful or happy",
    "negative": "unhappy, angry or complaining",
    "neutral": "neither: a plain question or statement",
}

WORKERS: list[Worker] = [
    classify_worker(
        "classify_tone",
        TONES,
        "Classify the tone of a message as positive, negative or neutral",
        slot="classify",
        shots=[
            ("Thank you so much, the new app is great!", "positive"),
            ("This is the third time my order is late. I am fed up.", "negative"),
            ("What time do you open on Saturdays?", "neutral"),
        ],
        example_requests=["What is the tone of this message: 'The delivery was quick, thanks!'"],
    ),
]
'''

PACKAGE = '"""{what}, loaded by `module:attr` reference from [tool.orchestrator] in pyproject.toml."""\n'

FILES: dict[str, str] = {
    "pyproject.toml": "the manifest: graphs, tool packs, workers, model slots",
    "graphs/__init__.py": "",
    "graphs/summary.py": "your graph: a node that calls the `summarize` workhorse slot",
    "graphs/agent.py": "the bundled agent over the tools and workers below",
    "tools/__init__.py": "",
    "tools/basics.py": "a tool pack: days_between, word_count",
    "workers/__init__.py": "",
    "workers/tone.py": "a worker: classify_tone",
}


@dataclass(frozen=True)
class Scaffold:
    """What `scaffold` wrote: the folder, its files (relative paths) and the project's name."""

    root: Path
    files: tuple[str, ...]
    name: str


def scaffold(directory: str | Path, name: str | None = None) -> Scaffold:
    """Write a new project folder (created if missing); refuse if any file it would write exists.

    Example:
        >>> scaffold("my-agents").files[0]  # doctest: +SKIP
        'pyproject.toml'
    """
    root = Path(directory).expanduser()
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{str(root)!r} exists and is not a folder")
    folder = root.resolve().name
    project = _project_name(name, folder)
    contents = {
        "pyproject.toml": _pyproject(project, folder),
        "graphs/__init__.py": PACKAGE.format(what="Graph builders"),
        "graphs/summary.py": SUMMARY_GRAPH,
        "graphs/agent.py": AGENT_GRAPH,
        "tools/__init__.py": PACKAGE.format(what="Tool packs"),
        "tools/basics.py": TOOL_PACK,
        "workers/__init__.py": PACKAGE.format(what="Workers"),
        "workers/tone.py": WORKER,
    }
    existing = [rel for rel in contents if (root / rel).exists() or (root / rel).is_symlink()]
    if existing:
        more = f" (and {len(existing) - 1} more of the files it writes)" if existing[1:] else ""
        raise ConfigError(
            f"{str(root / existing[0])!r} already exists{more}; orch init never overwrites a file. "
            "Choose a new or empty folder: orch init DIR"
        )
    for rel, text in contents.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("x", encoding="utf-8") as fh:  # "x": a file that appeared meanwhile is not clobbered
            fh.write(text)
    return Scaffold(root, tuple(contents), project)


def _project_name(name: str | None, folder: str) -> str:
    """The given name if it is a valid distribution name (else an error), or one made from the folder's."""
    if name is not None:
        if not _NAME.match(name):
            raise ConfigError(
                f"project name {name!r} is not a valid package name: use letters, digits, '-', '_' and '.', "
                f"starting and ending with a letter or digit (e.g. {_slug(name)!r})"
            )
        return name
    return _slug(folder)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "my-agents"


def _pyproject(project: str, folder: str) -> str:
    description = f"Agent graphs of the {folder} project, run by orchestrator"
    text = PYPROJECT.format(
        name=_toml_string(project),
        description=_toml_string(description),
        requirement=_toml_string(f"{DIST_NAME}[local]>={__version__}"),
        dist=DIST_NAME,
    )
    parsed = tomllib.loads(text)  # what we interpolated must read back as itself
    if parsed["project"]["name"] != project or parsed["project"]["description"] != description:
        raise ConfigError(f"cannot write the name {project!r} into pyproject.toml")  # pragma: no cover
    return text


def _toml_string(value: str) -> str:
    """`value` as a TOML basic string: quotes, backslashes and control characters escaped."""
    out = ['"']
    for ch in value:
        code = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        elif 0xD800 <= code <= 0xDFFF:  # an undecodable byte of a file name: not valid in UTF-8
            out.append("\\uFFFD")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
