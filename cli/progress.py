"""How the CLI shows progress events (hashae.events): a rich bar per task when stderr is a terminal,
plain periodic lines with a rate and an ETA when it is not (CI logs, nohup), nothing when quiet.

    with reporter(quiet) as report:
        index_folder(..., report=report)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TextIO

from hashae.events import Event, Reporter, silent

PLAIN_INTERVAL_S = 5.0  # seconds between two plain lines of one task


@contextmanager
def reporter(quiet: bool) -> Iterator[Reporter]:
    """A Reporter for a command's lifetime, drawing on stderr (chosen when called, so a test
    runner's captured stderr counts): a rich bar per task on a terminal, plain lines otherwise."""
    if quiet:
        yield silent
        return
    stream = sys.stderr
    if stream.isatty():
        with RichRenderer(stream) as render:
            yield render
    else:
        yield PlainRenderer(stream)


@dataclass
class _Running:
    """What a plain renderer remembers of a task between its events."""

    started: float
    last_line: float
    total: int | None


class PlainRenderer:
    """Events as plain text lines: one when a task starts, then at most one every `interval`
    seconds while it runs, and one when it ends, each with done/total, the rate and an ETA:

        training hashing model: 1200/3500 (34%), 240/s, ETA 10s (loss 812, balance 0.52)
        training hashing model: 3500/3500 (100%) in 14.6s, 240/s
    """

    def __init__(self, stream: TextIO, *, clock: Callable[[], float] = time.monotonic, interval: float = PLAIN_INTERVAL_S) -> None:
        self.stream, self.clock, self.interval = stream, clock, interval
        self.running: dict[str, _Running] = {}

    def __call__(self, event: Event) -> None:
        now = self.clock()
        if event.kind == "message":
            self._write(f"{event.task}: {event.info}" if event.task else event.info)
        elif event.kind == "start":
            self.running[event.task] = _Running(started=now, last_line=now, total=event.total)
            self._write(f"{event.task}: started" + (f", {event.total} to do" if event.total else ""))
        elif event.kind == "advance":
            state = self.running.get(event.task)
            finished = event.total is not None and event.done >= event.total  # the end line follows
            if state is not None and not finished and now - state.last_line >= self.interval:
                state.last_line = now
                self._write(self._progress_line(event, now - state.started))
        elif event.kind == "end":
            state = self.running.pop(event.task, None)
            elapsed = now - state.started if state is not None else 0.0
            self._write(f"{self._count(event)} in {_duration(elapsed)}" + _rate(event.done, elapsed))

    def _progress_line(self, event: Event, elapsed: float) -> str:
        line = self._count(event) + _rate(event.done, elapsed)
        if event.total and event.done and elapsed > 0:
            remaining = (event.total - event.done) * elapsed / event.done
            line += f", ETA {_duration(remaining)}"
        return line + (f" ({event.info})" if event.info else "")

    @staticmethod
    def _count(event: Event) -> str:
        if event.total:
            return f"{event.task}: {event.done}/{event.total} ({100 * event.done / event.total:.0f}%)"
        return f"{event.task}: {event.done}"

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()


class RichRenderer:
    """Events as rich progress bars on a terminal, one per task, loss terms or notes beside it."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=Console(file=stream),
        )
        self.tasks: dict[str, int] = {}

    def __enter__(self) -> RichRenderer:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, event: Event) -> None:
        if event.kind == "message":
            self.progress.console.print(f"{event.task}: {event.info}" if event.task else event.info)
        elif event.kind == "start":
            self.tasks[event.task] = self.progress.add_task(event.task, total=event.total, info="")
        elif event.task in self.tasks:
            info = {"info": event.info} if event.info else {}  # the last loss terms stay at the end
            self.progress.update(self.tasks[event.task], completed=event.done, **info)
            if event.kind == "end":
                del self.tasks[event.task]


def _rate(done: int, elapsed: float) -> str:
    if not (elapsed > 0 and done):
        return ""
    rate = done / elapsed
    return f", {rate:,.0f}/s" if rate >= 10 else f", {rate:.2g}/s"


def _duration(seconds: float) -> str:
    """12.3s, 4m05s, 1h02m."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
