"""Where `orch` writes, and how text is made safe to show there.

`out` (stdout) and `err` (stderr) are read through this module (`console.out.print(...)`), never copied into
another module's names, so a test can swap them for a console of its own. Text from users, tools and models
never goes through rich's markup: it is put into `Text` objects by `as_line` and `as_text`, control
characters escaped (`visible`), which rich shows as they are.
"""

from __future__ import annotations

import contextlib
import errno
import sys
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.text import Text

__all__ = ["as_line", "as_text", "err", "out", "spinner", "visible"]


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """A closed pipe ends the command in `main`, as a plain `print` does (rich would exit 1 itself)."""
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, "the reader closed the pipe")


# Tables keep their columns when piped (rich would otherwise assume 80 columns).
# No highlighting or emoji codes.
out = _Console(highlight=False, emoji=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = _Console(stderr=True, highlight=False, emoji=False, soft_wrap=True)


# Control characters (C0 but newline and tab, DEL, C1) shown as \x.. escapes: an ESC from a model, a tool or
# a request must not clear the screen, move the cursor or retitle the window. Escaping each character alone
# is enough however a stream splits a sequence: without its ESC (or C1 CSI) a sequence is only text.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if chr(c) not in "\n\t"}
_CONTROLS[ord("\r")] = "\\r"


def visible(text: object) -> str:
    """`text` as a terminal shows it harmlessly: control characters escaped, newlines and tabs kept.

    Every text from users, tools and models passes through it on its way to a terminal (`as_line`,
    `as_text`, `orch ask`'s stream); JSON output needs nothing more (`json.dumps` escapes them already).
    """
    return str(text).translate(_CONTROLS)


def as_text(text: object, style: str = "") -> Text:
    """A `Text` of data: never read as markup, control characters escaped."""
    return Text(visible(text), style=style)


def as_line(*parts: str | tuple[str, str]) -> Text:
    """One line from plain text (never read as markup) and (text, style) pairs, control characters escaped."""
    return Text.assemble(*(visible(p) if isinstance(p, str) else (visible(p[0]), p[1]) for p in parts))


class _NoStatus:
    def update(self, *_: Any) -> None:
        """A status line only where there is a terminal to redraw it on."""


@contextlib.contextmanager
def spinner(text: str) -> Iterator[Any]:
    """A live spinner on a terminal; nothing when stderr is a pipe or a file.

    rich's live display, fed by prints and updates from a non-terminal console, dropped progress lines
    now and then (a run's "controller -> delegate" line, seen on a pipe): there is nothing to redraw
    there anyway, so plain lines are all it gets.
    """
    if err.is_terminal:
        with err.status(text, spinner="dots") as status:
            yield status
    else:
        yield _NoStatus()
