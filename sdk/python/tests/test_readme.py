"""The README's quick starts (SDK, MCP, CLI), run as written against the test daemon. The MCP
and CLI blocks are marked ``<!-- readme-test: NAME -->`` in README.md."""

from __future__ import annotations

import json
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


def marked_block(marker: str) -> str:
    """The fenced block right after ``<!-- readme-test: MARKER -->`` in README.md."""
    text = (REPO / "README.md").read_text()
    match = re.search(r"<!-- readme-test: " + re.escape(marker) + r" -->\n```[a-z]*\n(.*?)```", text, re.S)
    assert match, f"README.md: no block marked readme-test: {marker}"
    return match.group(1)


def build_bin() -> str:
    from conftest import daemon_binary

    return str(daemon_binary().parent)


def test_readme_mcp_config_starts_a_working_server(daemon: Daemon, sock: str) -> None:
    """The mcpServers entry, run as a client would: its command (found on PATH), args and env
    (the socket pointed at the test daemon), through the mcp package's stdio client."""
    import anyio
    import pytest

    pytest.importorskip("mcp")
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    entry = json.loads(marked_block("mcp-config"))["mcpServers"]["safespace"]
    assert entry["command"] == "safespace" and entry["args"] == ["mcp"]
    env = dict(entry["env"], SAFESPACE_SOCKET=daemon.socket, PATH=build_bin() + os.pathsep + os.environ["PATH"])

    async def run() -> None:
        params = StdioServerParameters(command=entry["command"], args=entry["args"], env=env)
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            names = {t.name for t in (await session.list_tools()).tools}
            assert "create_sandbox" in names and "run_code" in names

    anyio.run(run)


def test_readme_mcp_python_example_runs(daemon: Daemon, sock: str) -> None:
    import pytest

    pytest.importorskip("mcp")
    code = marked_block("mcp-python")
    # A client's default environment has PATH (the build's safespace first) but not the
    # socket: point the server at the test daemon through the argument list.
    code = code.replace('args=["mcp"]', f'args=["mcp", "--socket", {daemon.socket!r}]')
    env = dict(os.environ, PATH=build_bin() + os.pathsep + os.environ["PATH"])
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    created, out = (json.loads(line) for line in run.stdout.splitlines())
    assert created["name"].startswith("sandbox-") and created["keep"] is False
    assert out["stdout"] == "42\n" and out["exitCode"] == 0
    assert Sandbox.list() == []  # the session ended: the server deleted it


def test_readme_cli_quick_start_runs(daemon: Daemon, sock: str) -> None:
    script = marked_block("cli")
    env = dict(
        os.environ,
        SAFESPACE_SOCKET=daemon.socket,
        AUDIT_LOG=str(daemon.dir / "audit.jsonl"),
        PATH=build_bin() + os.pathsep + os.environ["PATH"],
    )
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    name = lines[3]  # what rm printed
    assert name.startswith("sandbox-"), lines
    assert lines[:4] == ["42", "a,b", "1", name], lines
    header, *records = lines[4:]
    assert header.split()[:6] == ["TIME", "SEQ", "TYPE", "SANDBOX", "UID", "OUTCOME"], header
    assert len(records) == 3
    assert records[-1].split()[2:4] == ["sandbox.deleted", name], records
    assert Sandbox.list() == []
