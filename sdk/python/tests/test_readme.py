"""The README's SDK quick start, run as written against the test daemon."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import REPO, Daemon
from safespace import Sandbox


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("### Python SDK", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README.md: no ```python block after '### Python SDK'"
    return match.group(1)


def test_readme_quick_start_runs(daemon: Daemon, sock: str) -> None:
    code = readme_example()
    assert "Sandbox(" in code
    env = dict(os.environ, SAFESPACE_SOCKET=daemon.socket)
    # The source tree, as in the other tests.
    src = str(REPO / "sdk" / "python" / "src")
    env["PYTHONPATH"] = src + os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else src
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "hello from uid 1000",
        "",  # print() of the streamed chunk "...\n" adds a second newline
        "[['a', 'b'], ['1', '2']]",
        " 0",
        "b'a,b\\n1,2\\n'",
    ], run.stdout
    assert Sandbox.list() == []  # the with block deleted it
