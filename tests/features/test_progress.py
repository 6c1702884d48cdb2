"""Progress off a terminal: whole lines at intervals, never carriage returns."""

from __future__ import annotations

import io

from features.progress import LineProgress, progress


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_log_gets_one_whole_line_per_interval_and_a_last_one():
    clock, stream = _Clock(), io.StringIO()
    bar = LineProgress(100, "extract", every=30.0, stream=stream, clock=clock)
    clock.now = 10.0
    bar.update(20)
    assert stream.getvalue() == "", "nothing before the interval"
    clock.now = 40.0
    bar.update(20)
    clock.now = 50.0
    bar.update(60)
    bar.close()
    bar.close()
    lines = stream.getvalue().splitlines(keepends=True)
    assert lines == [
        "extract: 40/100 img (40%), 1.0 img/s, about 60 s left\n",
        "extract: 100/100 img (100%), 2.0 img/s\n",
    ]
    assert "\r" not in stream.getvalue()


def test_unknown_totals_and_disabled_progress(capsys):
    stream = io.StringIO()
    with LineProgress(None, "scan", unit="files", stream=stream, clock=_Clock()) as bar:
        bar.update(3)
    assert stream.getvalue().startswith("scan: 3 files, ")
    quiet = progress(10, "extract", enabled=False)
    quiet.update(10)
    quiet.close()
    assert capsys.readouterr().err == ""


def test_stderr_that_is_not_a_terminal_gets_lines(capsys):
    bar = progress(4, "extract")
    assert isinstance(bar, LineProgress)
    bar.update(4)
    bar.close()
    err = capsys.readouterr().err
    assert err.startswith("extract: 4/4 img (100%), ") and err.endswith(" img/s\n")
