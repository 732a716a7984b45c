"""Server-sent events out of a byte stream, parsed over whole buffers.

`Events.feed(chunk)` takes the body's bytes as they come (cut anywhere) and calls `on_event(event, data)` once
per complete event: `event` is the `event:` field (None when absent), `data` the `data:` lines joined by LF
(an event without data is skipped). Lines may end in CR LF, LF or a lone CR, as SSE allows; comments (`:`) and
other fields are ignored; an event not ended by a blank line when the body ends is dropped.

An event is found with one `bytes.find` per event over the buffer (not a generator per line): one token per
chunk is the common case, and per-chunk Python is most of a streamed call's client CPU.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Events"]

OnEvent = Callable[[str | None, bytes], None]


class Events:
    """The SSE parser of one response body."""

    __slots__ = ("_after_cr", "_on_event", "_rest")

    def __init__(self, on_event: OnEvent) -> None:
        self._on_event = on_event
        self._rest = b""  # the start of an event not yet ended by a blank line
        self._after_cr = False  # the last chunk ended with CR: a LF starting the next ends the same line

    def feed(self, chunk: bytes) -> None:
        """Take the next bytes of the body; call `on_event` for each event they complete."""
        if (  # the common chunk: one whole event of one data line
            not self._rest
            and not self._after_cr
            and chunk[:5] == b"data:"
            and chunk.find(b"\n") == len(chunk) - 2
            and chunk[-1:] == b"\n"
            and b"\r" not in chunk
        ):
            self._on_event(None, chunk[5:-2].lstrip(b" "))
            return
        if self._after_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
        if b"\r" in chunk:
            self._after_cr = chunk[-1:] == b"\r"
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        else:
            self._after_cr = False
        buf = self._rest + chunk if self._rest else chunk
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            block = buf[start:end]
            start = end + 2
            if block[:5] == b"data:" and b"\n" not in block:  # the common event: one data line
                self._on_event(None, block[5:].lstrip(b" "))
                continue
            if block[:6] == b"event:":  # Anthropic's: one event line, one data line
                nl = block.find(b"\n")
                if nl > 0 and block[nl + 1 : nl + 6] == b"data:" and block.find(b"\n", nl + 1) < 0:
                    name = block[6:nl].strip().decode("utf-8", "replace")
                    self._on_event(name, block[nl + 6 :].lstrip(b" "))
                    continue
            if block:
                self._block(block)
        self._rest = buf[start:] if start else buf

    def _block(self, block: bytes) -> None:
        """An event of several lines (leading blank lines end empty events, which are skipped)."""
        event: str | None = None
        data: list[bytes] = []
        for line in block.split(b"\n"):
            if not line:
                if data:
                    self._on_event(event, b"\n".join(data))
                event, data = None, []
            elif line.startswith(b"data:"):
                data.append(line[5:].lstrip(b" "))
            elif line.startswith(b"event:"):
                event = line[6:].strip().decode("utf-8", "replace")
        if data:
            self._on_event(event, b"\n".join(data))
