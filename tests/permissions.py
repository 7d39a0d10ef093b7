"""Limits a test puts on a process it starts: a folder that cannot be listed even by root, a file
size limit.

Each limit is applied by a small launcher (a fresh interpreter that sets it and then execs the
command), never by `preexec_fn`: that forks the test process itself, and once an earlier test has
loaded gRPC (pymilvus, Ray) its fork handlers can abort the child before it execs.

Root lists any folder whatever its mode (capabilities CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH), so
as root the process under test is started without those two. Not as root, the folder's mode alone
does it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2

# Runs as `python -c LAUNCHER SETTINGS COMMAND...`: applies SETTINGS (JSON) to itself, then becomes
# COMMAND. A capability dropped from the bounding set and a resource limit both survive exec.
LAUNCHER = """
import ctypes, json, os, resource, signal, sys
settings = json.loads(sys.argv[1])
if settings.get("drop_capabilities"):
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in settings["drop_capabilities"]:
        if libc.prctl(%d, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
if settings.get("file_size_limit") is not None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (settings["file_size_limit"],) * 2)
os.execv(sys.argv[2], sys.argv[2:])
""" % PR_CAPBSET_DROP


def limited(command: Sequence[str], *, drop_capabilities: Sequence[int] = (), file_size_limit: int | None = None) -> list[str]:
    """command (its first word an executable's path) started under the given limits."""
    settings = {"drop_capabilities": list(drop_capabilities), "file_size_limit": file_size_limit}
    return [sys.executable, "-c", LAUNCHER, json.dumps(settings), *map(str, command)]


@contextmanager
def unlistable(folder: Path) -> Iterator[Callable[[Sequence[str]], list[str]]]:
    """Make folder impossible to list for commands wrapped by the yielded function."""
    dropped = (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) if os.geteuid() == 0 else ()

    def run_as(command: Sequence[str]) -> list[str]:
        return limited(command, drop_capabilities=dropped)

    folder.chmod(0)
    try:
        probe = subprocess.run(run_as([sys.executable, "-c", f"import os; os.listdir({str(folder)!r})"]), capture_output=True)
        if probe.returncode == 0:
            pytest.skip("this process cannot make a folder unlistable (capabilities cannot be dropped)")
        yield run_as
    finally:
        folder.chmod(0o755)
