"""The one progress bar of the toolkit: tqdm on stderr, fit for a terminal and for a log file.

On a terminal the bar redraws in place as tqdm does. When stderr is not a terminal (a log file,
a pipe, ``make demo > log 2>&1``) a redrawing bar would write one ``\\r``-separated update per
step (about 500 for a fine-tuning run), so there the bar is rate-limited to one update every
:data:`LOG_INTERVAL_S` seconds, each written as its own plain ASCII line: a log gets a few lines
per long loop, and the last one says where it ended.
"""

from __future__ import annotations

import sys
from typing import Any, Iterable, TextIO

__all__ = ["LOG_INTERVAL_S", "progress_bar"]

#: seconds between two updates of a bar written to something that is not a terminal
LOG_INTERVAL_S = 30.0


class _LineStream:
    """A text stream for tqdm that turns its in-place redraws into whole lines: every non-blank
    write becomes one line (carriage returns dropped); the blank clearing writes are dropped."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.last = ""

    def write(self, s: str) -> int:
        text = s.replace("\r", "").strip()
        if text and text != self.last:  # tqdm redraws its final state on close: once is enough
            self.stream.write(text + "\n")
            self.last = text
        return len(s)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress_bar(iterable: Iterable[Any] | None = None, *, enabled: bool = True, stream: TextIO | None = None,
                 **kwargs: Any) -> Any:
    """A tqdm bar on ``stream`` (stderr), off when ``enabled`` is False. ``kwargs`` go to tqdm
    (``total``, ``desc``, ``unit``, ``initial``, ``leave``...). Not on a terminal: one plain line
    at most every :data:`LOG_INTERVAL_S` seconds (tqdm's ``mininterval``) plus the final one."""
    stream = sys.stderr if stream is None else stream
    if _is_tty(stream):
        from tqdm.auto import tqdm

        kwargs.setdefault("dynamic_ncols", True)
        return tqdm(iterable, file=stream, disable=not enabled, **kwargs)
    from tqdm.std import tqdm  # a plain text bar (no notebook widget, no terminal width)

    kwargs.pop("dynamic_ncols", None)
    kwargs.setdefault("mininterval", LOG_INTERVAL_S)
    kwargs.setdefault("maxinterval", max(LOG_INTERVAL_S, kwargs["mininterval"]))
    kwargs["leave"] = True  # a log keeps where each loop ended
    return tqdm(iterable, file=_LineStream(stream), disable=not enabled, ascii=True, ncols=100, **kwargs)
