"""The installed distribution puts only `hashae` at the top level: index/ and cli/ of the repository
install as hashae.index and hashae.cli, so they cannot clash with other distributions' modules."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_installs_only_the_hashae_package(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("hashae-*.whl")
    top_level = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {name for name in top_level if not name.endswith((".dist-info", ".data"))} == {"hashae"}

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    installed = {path.name for path in target.iterdir() if not path.name.endswith(".dist-info") and path.name != "bin"}
    assert installed == {"hashae"}
    assert (target / "hashae" / "index" / "server" / "static" / "index.html").is_file()
    probe = (
        "import importlib.util, hashae.index.backends.local.store, hashae.cli.main; "
        "assert hashae.index.backends.local.store.__file__.startswith(%r), hashae.index.backends.local.store.__file__; "
        "assert importlib.util.find_spec('index') is None and importlib.util.find_spec('cli') is None"
    ) % str(target)
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env={"PYTHONPATH": str(target)}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
