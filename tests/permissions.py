"""A folder that cannot be listed, for real, even when the tests run as root.

Root lists any folder whatever its mode (capabilities CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH), so
as root the process under test is started without those two: the context manager yields the
subprocess options that do that. Not as root, the folder's mode alone does it.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


@contextmanager
def unlistable(folder: Path) -> Iterator[dict]:
    """Make folder impossible to list for subprocesses started with the yielded options."""
    options = {"preexec_fn": _without_file_permission_override} if os.geteuid() == 0 else {}
    folder.chmod(0)
    try:
        probe = subprocess.run([sys.executable, "-c", f"import os; os.listdir({str(folder)!r})"], capture_output=True, **options)
        if probe.returncode == 0:
            pytest.skip("this process cannot make a folder unlistable (capabilities cannot be dropped)")
        yield options
    finally:
        folder.chmod(0o755)


def _without_file_permission_override() -> None:
    """In the child before exec: drop root's permission override from the bounding set, so the
    program it becomes runs without it."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
