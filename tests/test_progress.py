"""Progress bars: a worker's bars reach the driver's console through the run directory, and
without a terminal they are log lines with rate and time left."""

import logging
from pathlib import Path

from alflow import progress
from alflow.progress import Bar, Board, ConsoleSink, DirSink, track


class Recorder:
    def __init__(self):
        self.updates: list[tuple[str, float, float | None]] = []
        self.closed: list[str] = []

    def update(self, bar: Bar) -> None:
        self.updates.append((bar.name, bar.done, bar.total))

    def close(self, bar: Bar) -> None:
        self.closed.append(bar.name)


def test_worker_bars_reach_the_driver_board_and_end_with_their_loop(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(progress, "WRITE_EVERY_S", 0.0)
    shown = Recorder()
    board = Board(tmp_path / "progress", shown)
    progress.set_sink(DirSink(tmp_path / "progress"))  # what a campaign worker does
    try:
        with track("MCMC pbp", total=10, unit="it") as bar:
            for _ in range(4):
                bar.advance()
            board.poll()
            assert shown.updates[-1] == ("MCMC pbp", 4, 10)
            assert not shown.closed
        board.poll()  # the loop ended: its file is gone, the board closes the bar
        assert shown.closed == ["MCMC pbp"]
        assert not list((tmp_path / "progress").glob("*.json"))
    finally:
        progress.set_sink(None)


def test_without_a_terminal_bars_are_log_lines_with_rate_and_time_left(caplog, monkeypatch):
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    progress.set_sink(ConsoleSink(rich=False))
    try:
        with caplog.at_level(logging.INFO, logger="alflow.progress"):
            with track("flow training", total=4, unit="step") as bar:
                bar.advance(2)
    finally:
        progress.set_sink(None)
    lines = [r.getMessage() for r in caplog.records]
    assert any("flow training: 2/4 step" in s and "step/s" in s and "s left" in s
               for s in lines), lines
    assert lines[-1].startswith("flow training: 2/4 step")


def test_a_disabled_bar_reports_nothing(tmp_path: Path):
    shown = Recorder()
    progress.set_sink(shown)
    try:
        with track("rank 1", total=3, enabled=False) as bar:
            bar.advance()
        with track("rank 0", total=3) as bar:
            bar.advance()
    finally:
        progress.set_sink(None)
    assert {u[0] for u in shown.updates} == {"rank 0"} and shown.closed == ["rank 0"]
