"""One progress bar for every long job (decoding, training, encoding), on stderr, silenced on request."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator


class _Bar:
    def __init__(self, progress, task) -> None:
        self._progress, self._task = progress, task

    def advance(self, info: str = "", n: int = 1) -> None:
        """Move forward n steps; info (e.g. current loss terms) is shown beside the bar."""
        if self._progress is not None:
            self._progress.update(self._task, advance=n, info=info)


@contextmanager
def progress_bar(description: str, *, total: int, enabled: bool = True) -> Iterator[_Bar]:
    """A rich progress bar with a total, written to stderr; a no-op when disabled."""
    if not enabled:
        yield _Bar(None, None)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=Console(file=sys.stderr),
        transient=False,
    )
    with progress:
        task = progress.add_task(description, total=total, info="")
        yield _Bar(progress, task)
