"""A small MCP server for the tests, on the official SDK's FastMCP.

    python toolbox.py stdio            # over stdin/stdout
    python toolbox.py http PORT        # streamable HTTP on 127.0.0.1:PORT/mcp

Each call appends the tool's name to the file $TOOLBOX_LOG (when set), so a test can tell what ran.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time

from mcp.server.fastmcp import FastMCP
from mcp.types import ToolAnnotations

port = int(sys.argv[2]) if len(sys.argv) > 2 else 8000
server = FastMCP("toolbox", host="127.0.0.1", port=port, log_level="WARNING")


def _log(name: str) -> None:
    path = os.environ.get("TOOLBOX_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()} {name}\n")


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def days_between(start: str, end: str) -> int:
    """Number of days between two ISO dates (end minus start)."""
    _log("days_between")
    return (dt.date.fromisoformat(end) - dt.date.fromisoformat(start)).days


@server.tool()
def count_words(text: str) -> int:
    """Count the words in a text."""
    _log("count_words")
    return len(text.split())


@server.tool()
def repeat_text(text: str, times: int) -> str:
    """Repeat a text a number of times."""
    _log("repeat_text")
    return text * times


@server.tool()
def spin_cpu(seconds: int) -> str:
    """Keep the processor busy for some seconds (a CPU-bound tool that holds the server's loop)."""
    _log("spin_cpu")
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return f"spun {n} times"


@server.tool()
def stop_server(reason: str) -> str:
    """Stop the toolbox server process at once."""
    _log("stop_server")
    os._exit(3)


@server.tool()
def fail_loudly(reason: str) -> str:
    """A tool that always raises."""
    _log("fail_loudly")
    raise ValueError(f"refused: {reason}")


@server.tool(annotations=ToolAnnotations(destructiveHint=True, readOnlyHint=False))
def delete_record(record_id: str) -> str:
    """Delete a customer record for good."""
    _log("delete_record")
    return f"deleted {record_id}"


if __name__ == "__main__":
    server.run("streamable-http" if sys.argv[1:2] == ["http"] else "stdio")
