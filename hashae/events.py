"""Progress as events. The trainer and the pipeline report what they do; whoever called them decides
how to show it (the CLI draws a rich bar on a terminal and plain periodic lines otherwise; workers,
DDP ranks and tests pass nothing and see nothing). No module below the CLI writes to a terminal.

    report = some_callable            # Reporter: takes one Event
    with task(report, "encoding", total=n) as t:
        t.advance(len(batch), info="loss 0.12")
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    """One progress event.

    kind: "start" (a task begins; total may be None when unknown), "advance" (done is the running
    count), "end" (the task finished or was left), or "message" (a line of text in `info`).
    """

    kind: str
    task: str
    done: int = 0
    total: int | None = None
    info: str = ""


Reporter = Callable[[Event], None]


def silent(event: Event) -> None:
    """The Reporter that shows nothing."""


class Task:
    """A running task's handle: advance it; its events go to the reporter."""

    def __init__(self, report: Reporter, name: str, total: int | None) -> None:
        self.report, self.name, self.total, self.done = report, name, total, 0

    def advance(self, n: int = 1, *, info: str = "") -> None:
        """n more units done; info (e.g. current loss terms) is shown beside the count."""
        self.done += n
        self.report(Event("advance", self.name, self.done, self.total, info))


@contextmanager
def task(report: Reporter | None, name: str, *, total: int | None) -> Iterator[Task]:
    """Report a task's start, its advances and its end (also when it raises)."""
    report = report or silent
    handle = Task(report, name, total)
    report(Event("start", name, 0, total))
    try:
        yield handle
    finally:
        report(Event("end", name, handle.done, total))


def message(report: Reporter | None, text: str, *, task_name: str = "") -> None:
    """Report one line of text."""
    (report or silent)(Event("message", task_name, info=text))
