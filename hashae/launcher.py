"""How this process was started: by torchrun (or a launcher that sets the same variables) or not.

Torch-free, so commands that never train (the numpy-only encoding path of `hashae index`) can ask.
"""

from __future__ import annotations

import os

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def under_torchrun() -> bool:
    """Whether torchrun (or another launcher that sets RANK, WORLD_SIZE, MASTER_*) started this process
    as one of two or more."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES) and int(os.environ["WORLD_SIZE"]) > 1


def main_process() -> bool:
    """False only in a torchrun rank other than 0 (which must neither print nor write)."""
    return not under_torchrun() or int(os.environ["RANK"]) == 0
