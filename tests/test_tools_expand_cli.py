"""`orch tools expand` in real subprocesses: the project's racehorse is a loopback OpenAI-compatible server
that writes requests for the tool its prompt names; the requests land in a real index file that
`orch tools search` then reads."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

from loopback import Loopback, Reply, Request
from test_tools_cli import CATALOG, orch, write_jsonl
from wire import openai_json, openai_stream, openai_usage

# Requests in words none of the catalog's own texts use.
WRITTEN = {
    "getCurrentWeather": ["do I need an umbrella in Bergen today", "is it pouring in Oslo right now?"],
    "math.factorial": ["multiply every number up to 12", "7 times 6 times 5 down to 1"],
    "send_email": ["drop Anna a line about Friday's meeting", "mail the invoice to Bob"],
}


class Writer:
    """The racehorse on the wire: the requests of `replies` (else WRITTEN) for the tool its prompt names."""

    def __init__(self, replies: dict[str, str] | None = None) -> None:
        self.asked: list[str] = []
        self.replies = replies or {}

    def reply(self, request: Request) -> Reply:
        body = request.json()
        prompt = str(body["messages"][1]["content"])
        name = re.match(r"Tool name: (\S+)", prompt).group(1)  # type: ignore[union-attr]
        self.asked.append(name)
        text = self.replies.get(name) or json.dumps(WRITTEN[name])
        if body.get("stream"):
            return openai_stream([text], openai_usage(120, 30))
        return openai_json(text, openai_usage(120, 30))


PRICES = "{ input = 1e-6, output = 4e-6 }"


def project(tmp_path: Path, url: str, model: str = "openai-compat:writer") -> Path:
    root = tmp_path / "proj"
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(
        f"""
[tool.orchestrator.slots]
controller = {{ model = "{model}", base_url = "{url}/v1", role = "racehorse", prices = {PRICES} }}
""",
        encoding="utf-8",
    )
    return root


def test_expand_writes_requests_into_the_index_that_search_then_reads(
    tmp_path: Path, loopback: Loopback
) -> None:
    writer = Writer()
    loopback.handle("/v1/chat/completions", writer.reply)
    root = project(tmp_path, loopback.url)
    catalog = write_jsonl(tmp_path / "catalog.jsonl", CATALOG)
    index = str(tmp_path / "index.db")
    where = ["--project", str(root)]
    common = ["--catalog", str(catalog), "--no-packs", "--index", index]

    done = orch(*where, "tools", "search", "do I need an umbrella", "--method", "bm25", *common)
    assert done.returncode == 0, done.stderr
    assert "getCurrentWeather" not in done.stdout  # no word of the request is in any tool's text

    done = orch(*where, "tools", "expand", *common)
    assert done.returncode == 0, done.stderr
    assert sorted(writer.asked) == sorted(WRITTEN)
    progress = [line for line in done.stderr.splitlines() if line.startswith("expand:")]
    assert progress[0] == "expand: 3 tools to write for"
    assert [line.split(" · ")[0] for line in progress[1:]] == [
        "expand: 1/3 getCurrentWeather",
        "expand: 2/3 math.factorial",
        "expand: 3/3 send_email",
    ]
    assert all("tools/min · ETA" in line for line in progress[1:])
    assert done.stdout.startswith("3 tools written now, 0 already written, 0 left (3 tools) · 6 requests · ")
    assert "360 in / 90 out tokens" in done.stdout and "openai-compat:writer (slot controller)" in done.stdout

    done = orch(*where, "tools", "search", "do I need an umbrella", "--method", "bm25", "--json", *common)
    assert done.returncode == 0, done.stderr
    assert [h["name"] for h in json.loads(done.stdout)["hits"]][:1] == ["getCurrentWeather"]

    # run again: every tool already has its requests, the model is not asked
    done = orch(*where, "tools", "expand", "--json", *common)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["written"], out["had"], out["left"], out["failed"]) == (0, 3, 0, [])
    assert len(writer.asked) == 3
    rows = sqlite3.connect(index).execute("select name, writer from expansions order by name").fetchall()
    assert rows == [(n, "openai-compat:writer") for n in sorted(WRITTEN)]


def test_a_tool_whose_replies_hold_no_requests_is_listed_and_the_exit_is_1(
    tmp_path: Path, loopback: Loopback
) -> None:
    writer = Writer({"math.factorial": "[]"})
    loopback.handle("/v1/chat/completions", writer.reply)
    root = project(tmp_path, loopback.url)
    catalog = write_jsonl(tmp_path / "catalog.jsonl", CATALOG)
    common = ["--catalog", str(catalog), "--no-packs", "--index", str(tmp_path / "index.db")]
    done = orch("--project", str(root), "tools", "expand", "--limit", "2", *common)
    assert done.returncode == 1, done.stderr
    assert writer.asked == ["getCurrentWeather", "math.factorial", "math.factorial"]  # asked again once
    assert done.stdout.startswith("1 tools written now, 0 already written, 1 left (3 tools)")
    assert "1 tools' replies held no requests: math.factorial (not searched" in done.stdout


def test_bad_values_are_named_with_exit_2_before_the_model_is_called(
    tmp_path: Path, loopback: Loopback
) -> None:
    writer = Writer()
    loopback.handle("/v1/chat/completions", writer.reply)
    root = project(tmp_path, loopback.url)
    catalog = write_jsonl(tmp_path / "catalog.jsonl", CATALOG)
    index = ["--index", str(tmp_path / "index.db")]

    def expand(*args: str, project_dir: Path = root) -> tuple[int, str]:
        done = orch("--project", str(project_dir), "tools", "expand", *args)
        return done.returncode, done.stderr.strip()

    missing = tmp_path / "nope.jsonl"
    code, err = expand("--catalog", str(missing), "--no-packs", *index)
    assert code == 2 and str(missing) in err, err

    code, err = expand("--catalog", str(catalog), "--no-packs", "--slot", "controler", *index)
    assert code == 2 and "no slot 'controler' to write with; did you mean 'controller'?" in err, err

    code, err = expand("--no-packs", *index)
    assert code == 2 and "no tools to write for" in err and "--catalog FILE" in err, err

    code, err = expand("--catalog", str(catalog), "--no-packs", "--index", ":memory:")
    assert code == 2 and "':memory:'" in err and "--index FILE" in err, err

    code, err = expand("--catalog", str(catalog), "--no-packs", "--limit", "0", *index)
    assert code == 2 and "'0'" in err, err

    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "pyproject.toml").write_text("[tool.orchestrator]\n", encoding="utf-8")
    code, err = expand("--catalog", str(catalog), "--no-packs", *index, project_dir=bare)
    assert code == 2 and "no slot 'controller' to write with" in err and "[tool.orchestrator.slots]" in err, (
        err
    )

    unknown = project(tmp_path / "other", loopback.url, model="nosuchprovider:writer")
    code, err = expand("--catalog", str(catalog), "--no-packs", *index, project_dir=unknown)
    assert code == 2 and "nosuchprovider" in err, err
    assert writer.asked == [] and loopback.requests == []


def test_a_bad_catalog_file_is_named_before_the_model_is_made(tmp_path: Path, loopback: Loopback) -> None:
    # a model that can't be made: were it made first (a local model loads for seconds), its error would show
    root = project(tmp_path, loopback.url, model="python:no_such_module_here:build")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"description": "a tool without a name"}\n', encoding="utf-8")
    done = orch(
        "--project", str(root), "tools", "expand", "--catalog", str(bad), "--index", str(tmp_path / "i.db")
    )
    assert done.returncode == 2, done.stderr
    assert (
        f"{bad}:1: a tool needs a 'name' string" in done.stderr and "no_such_module_here" not in done.stderr
    )
    good = write_jsonl(tmp_path / "catalog.jsonl", CATALOG)
    done = orch(
        "--project", str(root), "tools", "expand", "--catalog", str(good), "--index", str(tmp_path / "i.db")
    )
    assert done.returncode == 2 and "cannot load chat model 'no_such_module_here:build'" in done.stderr, (
        done.stderr
    )
