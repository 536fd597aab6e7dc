"""``pip install ./sdk/python`` works: the tree builds a wheel holding the module, its
``py.typed`` marker and httpx as its one dependency, and the installed copy imports."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import REPO


def test_wheel_builds_and_installs(tmp_path: Path) -> None:
    # Built from a copy: setuptools writes build/ and *.egg-info beside the sources.
    sdk = tmp_path / "src-copy"
    shutil.copytree(REPO / "sdk" / "python", sdk, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info", "tests", "bench"))
    # No build isolation: the setuptools already installed builds it, nothing is fetched.
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(sdk)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    wheels = list((tmp_path / "dist").glob("safespace-*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as wheel:
        names = set(wheel.namelist())
        metadata = next(wheel.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    for module in ("__init__", "_async", "_core", "_errors", "_models", "_sync"):
        assert f"safespace/{module}.py" in names
    assert "safespace/py.typed" in names
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert requires == ["Requires-Dist: httpx<1,>=0.25"], requires
    # Installed into a directory of its own (nothing of the machine's changes), it imports.
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target), str(wheels[0])],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    env = dict(os.environ, PYTHONPATH=str(target))
    probe = subprocess.run(
        [sys.executable, "-c", "import safespace, os; print(os.path.dirname(safespace.__file__), safespace.Sandbox.__name__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(tmp_path),
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == [str(target / "safespace"), "Sandbox"]
