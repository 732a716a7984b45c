"""Settings and the project manifest.

Precedence, highest first:

| source                      | example                                   |
|-----------------------------|-------------------------------------------|
| keyword arguments           | `Settings(traces_path="t.db")`            |
| environment                 | `ORCH_TRACES=t.db`, `ORCH_MODELS_DIR=...` |
| project manifest            | `[tool.orchestrator] traces = "t.db"`     |
| defaults                    | the per-user data / cache directories     |

`checkpoints` is a SQLite file (a path or `sqlite:///PATH`) or a `postgresql://` URL: see run/checkpoints.py.
`traces` is the same: a SQLite file, or a `postgresql://` URL for one trace store shared by many machines
(tracing/pg.py).
The manifest schema is documented in `docs/manifest.md`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import platformdirs
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from orchestrator.errors import ConfigError, ManifestError, did_you_mean, unreadable
from orchestrator.profiles import CAPABILITY_NAMES, capability_error

__all__ = ["Limits", "Manifest", "McpServerConfig", "ModelConfig", "Settings", "SlotConfig", "load_manifest"]

Role = Literal["racehorse", "workhorse"]

_ENV = {
    "traces_path": "ORCH_TRACES",
    "checkpoints_path": "ORCH_CHECKPOINTS",
    "models_dir": "ORCH_MODELS_DIR",
    "prices_path": "ORCH_PRICES",
    "capture_content": "ORCH_CAPTURE_CONTENT",
    "otlp_endpoint": "ORCH_OTLP_ENDPOINT",
}


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token


def http_url(
    value: str, field: str = "base_url", example: str = "'http://127.0.0.1:8080/v1' (llama.cpp, vLLM, Ollama)"
) -> str:
    """`value` if it is an http:// or https:// URL with a host; else a `ValueError` that says what a base URL
    looks like (a slot's requests would fail at the first call, after their retries)."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or any(c.isspace() for c in value)
    ):
        raise ValueError(
            f"{field} must be an http:// or https:// URL with a host: the endpoint's URL, e.g. {example}"
        )
    return value


class _Strict(BaseModel):
    # no nan or inf in any number (TOML has both): nan passes no comparison and was sent to APIs as `NaN`,
    # an infinite timeout or price is no limit spelled wrong
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class PriceOverride(_Strict):
    """USD per token, for a model the price table does not know."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_read: float | None = Field(default=None, ge=0)
    cache_write: float | None = Field(default=None, ge=0)
    cache_write_1h: float | None = Field(default=None, ge=0)


class ToolLimitsConfig(_Strict):
    """A slot's limits on the tools bound to one request, over its provider's (`profiles.ToolLimits`)."""

    max_tools: int = Field(default=128, ge=8, le=10_000)  # the controller's own tools take 3
    max_name: int = Field(default=64, ge=16, le=1024)
    max_schema_chars: int | None = Field(default=None, ge=200)


class ModelConfig(_Strict):
    """A model and how to reach it: the `provider:model` name, endpoint, key variable, limits, prices."""

    model: str
    base_url: str | None = None
    api_key_env: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    price_as: str | None = None
    prices: PriceOverride | None = None
    stream: bool = True
    cache: Literal["5m", "1h"] | None = None
    max_concurrency: int = Field(default=16, ge=1, le=1024)
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)
    context_window: int | None = Field(default=None, ge=512, le=1_048_576)  # local: the KV cache size
    capabilities: dict[str, StrictBool] = Field(default_factory=dict)  # over the profile's (profiles.py)
    tool_limits: ToolLimitsConfig | None = None  # over the provider's (profiles.ToolLimits)

    @field_validator("base_url")
    @classmethod
    def _a_url(cls, value: str | None) -> str | None:
        if value is not None:
            http_url(value)
        return value

    @field_validator("api_key_env")
    @classmethod
    def _a_variable(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.fullmatch(value):
            # not shown: a key pasted here instead of its variable's name is a secret
            raise ValueError(
                "api_key_env names the environment variable that holds the key (letters, digits and _, "
                "e.g. OPENAI_API_KEY), not the key itself: export the key in a variable and name it here"
            )
        return value

    @field_validator("headers")
    @classmethod
    def _header_lines(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"header name {name[:60]!r} is not a valid HTTP header name")
            if any(c in text for c in "\r\n\0"):
                raise ValueError(f"header {name!r}: its value holds a line break or NUL; give one line")
        return value

    @field_validator("capabilities")
    @classmethod
    def _known_capabilities(cls, value: dict[str, bool]) -> dict[str, bool]:
        for name in value:
            if name not in CAPABILITY_NAMES:
                raise ValueError(capability_error(name))
        return value


class SlotConfig(ModelConfig):
    """A slot bound to a model; the role belongs to the binding, not to the model.

    `fallback` lists the models tried, in order, when the slot's model fails (names or full tables).
    """

    role: Role = "workhorse"
    temperature: float = Field(default=0.0, ge=0)
    fallback: list[str | ModelConfig] = Field(default_factory=list)
    cooldown_after: int = Field(default=2, ge=1)
    cooldown_s: float = Field(default=30.0, ge=0)


DEFAULT_DEADLINE_S = 120.0  # a run's deadline when it is not set and a slot calls a model over the network


class Limits(_Strict):
    """Run limits that keep a weak model from looping.

    `deadline_s` unset (None): `DEFAULT_DEADLINE_S` when any slot calls a model over the network, none when
    every slot runs in process. A local model costs nothing, can't stall on a network, and its run is
    bounded by `max_steps` and `max_tokens`; a deadline would only measure how busy the machine is.
    """

    max_steps: int = Field(default=8, ge=1, le=1000)
    deadline_s: float | None = Field(default=None, gt=0)
    max_tokens: int = Field(default=256, ge=1)
    tool_timeout_s: float = Field(default=20.0, gt=0)
    isolate_tools: bool = True  # synchronous tools run in killable child processes
    top_k: int = Field(default=3, ge=1, le=50)

    def for_models(self, all_local: bool) -> Limits:
        """These limits with the deadline an unset `deadline_s` means for a run on these models."""
        if self.deadline_s is not None or all_local:
            return self
        return self.model_copy(update={"deadline_s": DEFAULT_DEADLINE_S})


class McpServerConfig(_Strict):
    """An MCP server whose tools join the catalog: a command run over stdio, or a streamable HTTP URL.

    `side_effects = true` treats every tool of the server as side-effecting (each then needs an
    `allow_side_effects` entry), whatever its annotations say; else a tool is side-effecting when the server
    annotates it `destructiveHint: true`.
    """

    command: str | None = None  # stdio: the program; relative paths are relative to the project folder
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)  # over a minimal environment (PATH, HOME, ...)
    cwd: str | None = None  # default: the project folder
    url: str | None = None  # streamable HTTP, e.g. http://127.0.0.1:8000/mcp
    headers: dict[str, str] = Field(default_factory=dict)
    headers_env: dict[str, str] = Field(default_factory=dict)  # header -> environment variable holding it
    prefix: str = ""  # put before each tool's name in the catalog (two servers with the same tool names)
    side_effects: bool = False
    startup_timeout_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError('give either command = "..." (stdio) or url = "http://..." (streamable HTTP)')
        if self.url is not None:
            http_url(self.url, "url", "'http://127.0.0.1:8000/mcp'")
        return self


class Manifest(_Strict):
    """The `[tool.orchestrator]` section of a project's pyproject.toml."""

    default_graph: str | None = None
    graphs: dict[str, str] = Field(default_factory=dict)
    tool_packs: list[str] = Field(default_factory=list)
    mcp_servers: dict[str, McpServerConfig] = Field(default_factory=dict)
    allow_side_effects: list[str] = Field(default_factory=list)  # side-effecting tools the agent may call
    confirm_tools: list[str] = Field(default_factory=list)  # each call waits for a person's yes ("*": all)
    # how find_tools searches: "auto" (in memory below 200 tools, else a persisted index: hybrid with the
    # embed extra, else bm25), "memory", or an index method: "bm25", "dense", "hybrid" (docs/tools.md)
    tool_search: Literal["auto", "memory", "bm25", "dense", "hybrid"] = "auto"
    workers: list[str] = Field(default_factory=list)
    # a JSON file of per-worker settings (`orch trial --tune` writes a worker's tuned min_margin there)
    worker_settings: str | None = None
    slots: dict[str, SlotConfig] = Field(default_factory=dict)
    limits: Limits = Field(default_factory=Limits)
    traces: str | None = None
    prices: str | None = None
    checkpoints: str | None = None
    models_dir: str | None = None
    capture_content: bool = False
    # an OTLP/HTTP collector's base URL: spans and GenAI metrics are exported there too (docs/tracing.md)
    otlp_endpoint: str | None = None
    redact: str | None = None  # "module:function" every span passes through before it is stored or exported
    outputs: dict[str, str] = Field(default_factory=dict)  # graph name -> the state key holding its answer
    _root: Path | None = PrivateAttr(default=None)

    @property
    def root(self) -> Path | None:
        """The project folder the manifest was read from: its relative paths are relative to it."""
        return self._root

    def config_hash(self) -> str:
        """A short stable hash of the manifest, recorded on every run span."""
        # what the project sets, not the defaults: a field added to the manifest leaves old hashes alone
        blob = json.dumps(self.model_dump(mode="json", exclude_defaults=True), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def load_manifest(project_dir: str | Path) -> Manifest:
    """Read `[tool.orchestrator]` from `project_dir/pyproject.toml`; errors name the bad field.

    A LangGraph project without that section runs as it is: its `langgraph.json` gives the graphs (its
    `graphs` map, each `./path/file.py:name` or `module:name`) and an `env` file of variables to set.
    """
    root = Path(project_dir)
    path = root / "pyproject.toml"
    graph_file = root / "langgraph.json"
    section = None
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8-sig"))  # -sig: an editor's BOM is no error
        except tomllib.TOMLDecodeError as exc:
            raise ManifestError(f"{path}: not valid TOML: {exc}") from None
        except (ValueError, RecursionError) as exc:  # not UTF-8, a number too long to convert, too deep
            raise ManifestError(f"{path}: not valid TOML: {unreadable(exc)}") from None
        tool = data.get("tool")
        section = tool.get("orchestrator") if isinstance(tool, dict) else None
    if section is None and graph_file.is_file():
        return _langgraph_manifest(graph_file)
    if not path.is_file():
        raise ManifestError(
            f"no pyproject.toml (or langgraph.json) in {str(project_dir)!r}; run from a project folder or "
            "pass --project DIR"
        )
    if section is None:
        raise ManifestError(f"{path} has no [tool.orchestrator] section; see docs/manifest.md for its schema")
    try:
        manifest = Manifest.model_validate(section)
    except ValidationError as exc:
        problems = "; ".join(
            f"[tool.orchestrator]{''.join(f'.{p}' for p in err['loc'])}: "
            + err["msg"].removeprefix("Value error, ")
            + (f" (got {err['input']!r})" if err["type"] != "missing" and not _secret(err["loc"]) else "")
            for err in exc.errors()
        )
        raise ManifestError(f"{path}: {problems}") from None
    _check_graph_names(manifest, path)
    manifest._root = path.parent.resolve()
    return manifest


def _secret(loc: tuple[int | str, ...]) -> bool:
    """A field whose value may be a secret (a key pasted for its variable's name, a header's token)."""
    return any(part in ("api_key_env", "headers", "headers_env") for part in loc)


def _check_graph_names(manifest: Manifest, path: Path) -> None:
    """The graph names the manifest uses (default_graph, outputs) are graphs it defines."""
    named = [("default_graph", manifest.default_graph)] if manifest.default_graph else []
    named += [(f"outputs.{graph}", graph) for graph in manifest.outputs]
    for key, graph in named:
        if graph not in manifest.graphs:
            raise ManifestError(
                f"{path}: [tool.orchestrator].{key}: no graph {graph!r} under [tool.orchestrator.graphs]"
                + (did_you_mean(graph, manifest.graphs) if manifest.graphs else "; define it there first")
            )


def _langgraph_manifest(path: Path) -> Manifest:
    """A manifest from a LangGraph project's `langgraph.json`: its graphs, the first one the default."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError, RecursionError) as exc:
        raise ManifestError(f"{path}: not valid JSON: {unreadable(exc)}") from None
    graphs = data.get("graphs") if isinstance(data, dict) else None
    if not isinstance(graphs, dict) or not graphs:
        raise ManifestError(f'{path} has no "graphs" map (graph name -> "./file.py:variable")')
    refs: dict[str, str] = {}
    for name, ref in graphs.items():
        if isinstance(ref, dict):  # {"path": "./file.py:graph", "description": ...}
            ref = ref.get("path")
        if not isinstance(ref, str) or ":" not in ref or "\x00" in ref:  # a NUL: no path can hold it
            raise ManifestError(f'{path}: graph {name!r} must be "./file.py:variable" or "module:variable"')
        target, _, attr = ref.rpartition(":")
        if target.endswith(".py") or "/" in target:
            target = str((path.parent / target).resolve())
        refs[str(name)] = f"{target}:{attr}"
    env = data.get("env")
    if isinstance(env, str):
        _load_env_file(path.parent / env)
    elif isinstance(env, dict):
        for key, value in env.items():
            _setenv(str(key), str(value), path)
    manifest = Manifest(default_graph=next(iter(refs)), graphs=refs)
    manifest._root = path.parent.resolve()
    return manifest


def _load_env_file(path: Path) -> None:
    """Set the `KEY=value` lines of a .env file that the environment does not already set."""
    try:
        text = path.read_text(encoding="utf-8-sig") if path.is_file() else None
    except (OSError, ValueError) as exc:  # a name too long or holding NUL, not UTF-8
        raise ManifestError(
            f"langgraph.json names the env file {str(path)[:300]!r}, which can't be read: {unreadable(exc)}"
        ) from None
    if text is None:
        raise ManifestError(f"langgraph.json names the env file {str(path)!r}, which does not exist")
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        _setenv(key.strip(), value, path)


def _setenv(key: str, value: str, source: Path) -> None:
    """Set a variable the environment does not already set; one the OS refuses is an error of `source`."""
    try:
        os.environ.setdefault(key, value)
    except (OSError, ValueError) as exc:  # an empty name, '=' in the name, a NUL
        raise ManifestError(f"{source}: can't set the environment variable {key[:60]!r}: {exc}") from None


def _env_bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """Where things live on disk, and what is recorded.

    Example:
        >>> Settings(traces_path="/tmp/traces.db").traces_path
        PosixPath('/tmp/traces.db')
    """

    traces_path: Path | str = field(  # a SQLite file, or a PostgreSQL URL (a str)
        default_factory=lambda: Path(platformdirs.user_data_dir("orchestrator")) / "traces.db"
    )
    checkpoints_path: Path | str = field(  # a SQLite file, or a PostgreSQL URL (a str)
        default_factory=lambda: Path(platformdirs.user_data_dir("orchestrator")) / "checkpoints.db"
    )
    models_dir: Path = field(
        default_factory=lambda: Path(platformdirs.user_cache_dir("orchestrator")) / "models"
    )
    capture_content: bool = False
    prices_path: Path | None = None  # the user's own price file (LiteLLM layout), over the shipped one
    otlp_endpoint: str | None = None  # an OTLP/HTTP collector's base URL, e.g. http://127.0.0.1:4318

    def __post_init__(self) -> None:
        from orchestrator.locations import checkpoints_location, traces_location

        object.__setattr__(self, "checkpoints_path", checkpoints_location(self.checkpoints_path))
        object.__setattr__(self, "traces_path", traces_location(self.traces_path))
        for name in ("models_dir", "prices_path"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value).expanduser())

    @classmethod
    def resolve(cls, manifest: Manifest | None = None, **overrides: Any) -> Settings:
        """Apply the precedence table: keyword arguments > ORCH_* environment > manifest > defaults."""
        values: dict[str, Any] = {}
        if manifest is not None:
            for name, field_name in (
                ("traces_path", "traces"),
                ("checkpoints_path", "checkpoints"),
                ("models_dir", "models_dir"),
                ("prices_path", "prices"),
            ):
                key = getattr(manifest, field_name)
                if key:
                    value = _parse(name, key, f"[tool.orchestrator].{field_name}")
                    values[name] = (
                        manifest.root / value
                        if manifest.root and isinstance(value, Path) and not value.is_absolute()
                        else value
                    )
            if manifest.capture_content:
                values["capture_content"] = True
            if manifest.otlp_endpoint:
                values["otlp_endpoint"] = _parse(
                    "otlp_endpoint", manifest.otlp_endpoint, "[tool.orchestrator].otlp_endpoint"
                )
        for name, env in _ENV.items():
            raw = os.environ.get(env)
            if raw:
                values[name] = _parse(name, raw, env)
        for name, value in overrides.items():
            if value is not None:
                source = "checkpoints" if name == "checkpoints_path" else name
                values[name] = value if name == "capture_content" else _parse(name, value, source)
        return cls(**values)


def _parse(name: str, value: Any, source: str) -> Any:
    """A manifest, environment or keyword value as its setting's type (`source` names it in errors)."""
    if name == "capture_content":
        return _env_bool(value)
    if name == "otlp_endpoint":
        text = str(value).strip()
        if not text.startswith(("http://", "https://")) or len(text.split("://", 1)[1]) == 0:
            raise ConfigError(
                f"{source} {text!r}: an OTLP endpoint is the collector's http:// or https:// base URL "
                "(e.g. http://127.0.0.1:4318; spans go to /v1/traces, metrics to /v1/metrics)"
            )
        return text.rstrip("/")
    try:
        if name == "checkpoints_path":
            from orchestrator.locations import checkpoints_location

            return checkpoints_location(value, source)
        if name == "traces_path":
            from orchestrator.locations import traces_location

            return traces_location(value, source)
        return Path(value).expanduser()
    except RuntimeError:  # pathlib's answer to '~name/...' for a user this machine does not know
        user = str(value).split("/", 1)[0]
        raise ConfigError(f"{source} {str(value)!r}: {user!r} names no user of this machine") from None
