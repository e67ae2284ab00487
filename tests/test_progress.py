"""The one progress bar (device.progress): in place on a terminal, a few whole lines in a log."""

import io
import time

from device import progress
from device.progress import progress_bar


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_whole_rate_limited_lines_not_one_redraw_per_step(monkeypatch):
    log = io.StringIO()
    for _ in progress_bar(range(500), desc="finetune sst2", stream=log):
        pass
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    # 500 fast steps inside one LOG_INTERVAL_S: the first and the final line only
    assert 1 <= len(lines) <= 2, lines
    assert "500/500" in lines[-1] and lines[-1].isascii()
    assert len(set(lines)) == len(lines)  # the final state once


def test_a_slow_loop_in_a_log_writes_one_line_per_interval(monkeypatch):
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.05)
    log = io.StringIO()
    with progress_bar(total=6, desc="rows", stream=log) as bar:
        for _ in range(6):
            time.sleep(0.06)
            bar.update(1)
    lines = log.getvalue().splitlines()
    assert 2 <= len(lines) <= 8 and "6/6" in lines[-1]


def test_a_terminal_redraws_in_place_and_disabled_writes_nothing():
    tty = _Tty()
    for _ in progress_bar(range(50), desc="x", stream=tty, mininterval=0):
        pass
    assert tty.getvalue().count("\r") >= 10
    quiet = io.StringIO()
    for _ in progress_bar(range(50), stream=quiet, enabled=False):
        pass
    assert quiet.getvalue() == ""
