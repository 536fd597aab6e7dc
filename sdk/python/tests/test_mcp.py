"""``safespace mcp`` driven by a real MCP client (the ``mcp`` package from PyPI) over stdio,
against the test daemon: initialize, tools and their schemas, every tool, errors as
``isError`` results, and the cleanup of the session's sandboxes when the client disconnects
(stdin EOF) or the server gets SIGTERM, except those created with ``keep: true``.

Raw JSON-RPC (newline-delimited, MCP's stdio transport) is used where the client library
cannot do what a test needs: close stdin while a create is still running, send a signal.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import anyio
import httpx
import pytest

from conftest import Daemon, daemon_binary

mcp = pytest.importorskip("mcp", reason="the MCP tests need the mcp package (scripts/setup installs it)")
from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402

TOOLS = {
    "create_sandbox",
    "run_code",
    "run_command",
    "write_file",
    "read_file",
    "list_sandboxes",
    "delete_sandbox",
}


def safespace_binary() -> Path:
    return daemon_binary().parent / "safespace"


def server(daemon: Daemon, *extra: str) -> StdioServerParameters:
    # --socket, not the environment: stdio_client passes only a few variables on.
    return StdioServerParameters(command=str(safespace_binary()), args=["mcp", "--socket", daemon.socket, *extra])


def field(obj: Any, snake: str, camel: str) -> Any:
    """A result field by its name in mcp 2.x (snake_case) or 1.x (camelCase)."""
    return getattr(obj, snake) if hasattr(obj, snake) else getattr(obj, camel)


def sandbox_names(daemon: Daemon) -> List[str]:
    with httpx.Client(transport=httpx.HTTPTransport(uds=daemon.socket), base_url="http://localhost") as client:
        items = client.get("/v1/sandboxes", timeout=60).json()["items"]
    return sorted(item["metadata"]["name"] for item in items)


def delete(daemon: Daemon, name: str) -> None:
    with httpx.Client(transport=httpx.HTTPTransport(uds=daemon.socket), base_url="http://localhost") as client:
        client.delete(f"/v1/sandboxes/{name}", timeout=120)


class Call:
    """One tool call's outcome: is_error, the structured JSON and the text content."""

    def __init__(self, result: Any) -> None:
        self.is_error = bool(field(result, "is_error", "isError"))
        self.structured: Dict[str, Any] = field(result, "structured_content", "structuredContent") or {}
        self.text = "".join(c.text for c in result.content if getattr(c, "type", "") == "text")
        # The text content is the same object as JSON (clients that read only text see it all).
        assert json.loads(self.text) == self.structured, self.text


async def call(session: ClientSession, tool: str, arguments: Dict[str, Any]) -> Call:
    return Call(await session.call_tool(tool, arguments))


def test_full_session(daemon: Daemon, sock: str, tmp_path: Path) -> None:
    errlog = open(tmp_path / "mcp.log", "w")

    async def session_run() -> None:
        async with stdio_client(server(daemon), errlog=errlog) as (read, write):
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                info = field(init, "server_info", "serverInfo")
                assert info.name == "safespace"
                assert field(init, "capabilities", "capabilities").tools is not None

                tools = {t.name: t for t in (await session.list_tools()).tools}
                assert set(tools) == TOOLS
                for tool in tools.values():
                    schema = field(tool, "input_schema", "inputSchema")
                    assert schema["type"] == "object", tool.name
                    assert tool.description
                assert field(tools["run_code"], "input_schema", "inputSchema")["required"] == ["sandbox", "code"]
                assert field(tools["write_file"], "input_schema", "inputSchema")["required"] == [
                    "sandbox",
                    "path",
                    "content",
                ]
                create_schema = field(tools["create_sandbox"], "input_schema", "inputSchema")["properties"]
                assert {"runtime", "security_level", "egress", "keep"} <= set(create_schema)

                created = await call(session, "create_sandbox", {"runtime": "python:3.11"})
                assert not created.is_error, created.text
                name = created.structured["name"]
                assert f'"name": "{name}"' in created.text
                assert created.structured["phase"] == "Running"
                assert sandbox_names(daemon) == [name]

                code = await call(session, "run_code", {"sandbox": name, "code": "import sys; print(6*7); sys.exit(0)"})
                assert not code.is_error, code.text
                assert code.structured["stdout"] == "42\n" and code.structured["exitCode"] == 0

                shell = await call(session, "run_code", {"sandbox": name, "code": "echo $0", "language": "sh"})
                assert shell.structured["stdout"] == "sh\n", shell.text

                command = await call(session, "run_command", {"sandbox": name, "command": "echo $((1+2)); echo err >&2; exit 3"})
                assert not command.is_error, command.text  # the command's failure is its exit code
                assert command.structured["stdout"] == "3\n"
                assert command.structured["stderr"] == "err\n"
                assert command.structured["exitCode"] == 3

                slow = await call(session, "run_command", {"sandbox": name, "command": "sleep 30", "timeout": 1})
                assert slow.structured["timedOut"] is True, slow.text

                text = "héllo\nwörld\n"
                written = await call(session, "write_file", {"sandbox": name, "path": "/workspace/dir/a.txt", "content": text})
                assert not written.is_error, written.text
                assert written.structured["bytes"] == len(text.encode())
                back = await call(session, "read_file", {"sandbox": name, "path": "/workspace/dir/a.txt"})
                assert back.structured == {"path": "/workspace/dir/a.txt", "bytes": len(text.encode()), "content": text, "encoding": "utf8"}
                cat = await call(session, "run_command", {"sandbox": name, "command": "cat /workspace/dir/a.txt"})
                assert cat.structured["stdout"] == text

                binary = await call(session, "write_file", {"sandbox": name, "path": "/workspace/b.bin", "content": "/wA=", "encoding": "base64"})
                assert binary.structured["bytes"] == 2, binary.text
                raw = await call(session, "read_file", {"sandbox": name, "path": "/workspace/b.bin"})
                assert raw.structured["encoding"] == "base64" and raw.structured["content"] == "/wA="

                listed = await call(session, "list_sandboxes", {})
                assert [(s["name"], s["createdHere"]) for s in listed.structured["sandboxes"]] == [(name, True)]

                # Errors: isError results with the daemon's code and field, or the argument's.
                missing = await call(session, "run_command", {"sandbox": "no-such-sandbox", "command": "true"})
                assert missing.is_error
                assert missing.structured["error"]["code"] == "not_found"
                assert missing.structured["error"]["field"] == "name"
                assert missing.structured["status"] == 404
                escape = await call(session, "read_file", {"sandbox": name, "path": "/workspace/../etc/passwd"})
                assert escape.is_error and escape.structured["status"] == 400, escape.text
                assert escape.structured["error"]["field"] == "path"
                no_file = await call(session, "read_file", {"sandbox": name, "path": "/workspace/none"})
                assert no_file.is_error and no_file.structured["error"]["code"] == "file_not_found"
                relative = await call(session, "write_file", {"sandbox": name, "path": "workspace/x", "content": ""})
                assert relative.is_error and relative.structured["error"] == {
                    "code": "invalid_argument",
                    "field": "path",
                    "message": relative.structured["error"]["message"],
                }
                no_code = await call(session, "run_code", {"sandbox": name})
                assert no_code.is_error and no_code.structured["error"]["field"] == "code"
                language = await call(session, "run_code", {"sandbox": name, "code": "1", "language": "cobol"})
                assert language.is_error and language.structured["error"]["field"] == "language"
                bad_runtime = await call(session, "create_sandbox", {"runtime": "cobol:1"})
                assert bad_runtime.is_error and bad_runtime.structured["status"] == 400, bad_runtime.text
                assert "runtime" in bad_runtime.structured["error"]["field"]

                # Egress and security_level go to the daemon as written and the daemon serves
                # both (gVisor; the egress filter); the server never decides.
                for arguments in (
                    {"runtime": "python:3.11", "security_level": "high"},
                    {"runtime": "python:3.11", "egress": ["pypi.org"]},
                ):
                    other = await call(session, "create_sandbox", arguments)
                    assert not other.is_error, other.text
                    gone = await call(session, "delete_sandbox", {"sandbox": other.structured["name"]})
                    assert not gone.is_error, gone.text

                deleted = await call(session, "delete_sandbox", {"sandbox": name})
                assert deleted.structured == {"name": name, "deleted": True}
                assert sandbox_names(daemon) == []
                again = await call(session, "delete_sandbox", {"sandbox": name})
                assert again.is_error and again.structured["error"]["code"] == "not_found"

    try:
        anyio.run(session_run)
    finally:
        errlog.close()
    assert sandbox_names(daemon) == []


def test_disconnect_deletes_the_sessions_sandboxes_but_kept_ones(daemon: Daemon, sock: str, tmp_path: Path) -> None:
    """The client goes away (stdin EOF): the sandboxes the session created are deleted, the one
    created with keep: true and one created elsewhere stay."""
    with httpx.Client(transport=httpx.HTTPTransport(uds=daemon.socket), base_url="http://localhost") as client:
        other = client.post("/v1/sandboxes", json={"metadata": {"name": daemon.name("other")}, "spec": {"runtime": "python:3.11"}}, timeout=120)
        assert other.status_code == 201, other.text
    errlog = open(tmp_path / "mcp.log", "w")
    names: Dict[str, str] = {}

    async def session_run() -> None:
        async with stdio_client(server(daemon), errlog=errlog) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                for key, arguments in (("a", {}), ("b", {"runtime": "node:18"}), ("kept", {"keep": True})):
                    created = await call(session, "create_sandbox", arguments)
                    assert not created.is_error, created.text
                    assert created.structured["keep"] is (key == "kept")
                    names[key] = created.structured["name"]
                assert sandbox_names(daemon) == sorted(list(names.values()) + [daemon.name("other")])
                listed = await call(session, "list_sandboxes", {})
                here = {s["name"]: s["createdHere"] for s in listed.structured["sandboxes"]}
                assert here[daemon.name("other")] is False and here[names["a"]] is True

    try:
        anyio.run(session_run)
    finally:
        errlog.close()
    log = (tmp_path / "mcp.log").read_text()
    try:
        # Deleted by the server on EOF, not killed by the client's SIGTERM.
        assert "the client disconnected" in log, log
        assert f"deleted {', '.join(sorted([names['a'], names['b']]))}" in log, log
        assert sandbox_names(daemon) == sorted([names["kept"], daemon.name("other")])
    finally:
        for name in (names.get("kept"), daemon.name("other")):
            if name:
                delete(daemon, name)


class RawSession:
    """``safespace mcp`` spoken to as bytes: one JSON-RPC message per line."""

    def __init__(self, daemon: Daemon, log: Path) -> None:
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(
            [str(safespace_binary()), "mcp", "--socket", daemon.socket],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        self.next_id = 1
        self.buffer = b""

    def send(self, method: str, params: Optional[Dict[str, Any]] = None, notify: bool = False) -> int:
        message: Dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        ident = self.next_id
        if not notify:
            message["id"] = ident
            self.next_id += 1
        assert self.proc.stdin
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()
        return ident

    def answer(self, ident: int, seconds: float = 120) -> Dict[str, Any]:
        assert self.proc.stdout
        deadline = time.monotonic() + seconds
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                message = json.loads(line)
                if message.get("id") == ident:
                    return message
            left = deadline - time.monotonic()
            assert left > 0, f"no answer to request {ident}"
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                assert chunk, "safespace mcp closed stdout"
                self.buffer += chunk

    def initialize(self) -> None:
        ident = self.send(
            "initialize",
            {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
        )
        assert "result" in self.answer(ident)
        self.send("notifications/initialized", notify=True)

    def create(self, arguments: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
        answer = self.answer(self.send("tools/call", {"name": "create_sandbox", "arguments": arguments}))
        result = answer["result"]
        assert not result.get("isError"), result
        return result["structuredContent"]["name"], result

    def wait(self, seconds: float = 60) -> int:
        try:
            return self.proc.wait(seconds)
        finally:
            self.log.close()


def test_sigterm_deletes_the_sessions_sandboxes(daemon: Daemon, sock: str, tmp_path: Path) -> None:
    raw = RawSession(daemon, tmp_path / "mcp.log")
    try:
        raw.initialize()
        name, result = raw.create({"runtime": "python:3.11"})
        kept, _ = raw.create({"runtime": "python:3.11", "keep": True})
        assert result["content"][0]["type"] == "text" and f'"name": "{name}"' in result["content"][0]["text"]
        assert sandbox_names(daemon) == sorted([name, kept])
        raw.proc.send_signal(signal.SIGTERM)
        assert raw.wait() == 128 + signal.SIGTERM
        assert sandbox_names(daemon) == [kept]
    finally:
        if raw.proc.poll() is None:
            raw.proc.kill()
            raw.proc.wait()
        delete(daemon, kept) if "kept" in locals() else None


def test_create_in_flight_at_disconnect_is_deleted(daemon: Daemon, sock: str, tmp_path: Path) -> None:
    """stdin closes while a create is still running: the server waits for it and deletes the
    sandbox it made, so nothing outlives the session."""
    raw = RawSession(daemon, tmp_path / "mcp.log")
    try:
        raw.initialize()
        raw.send("tools/call", {"name": "create_sandbox", "arguments": {"runtime": "python:3.11", "name": daemon.name("late")}})
        assert raw.proc.stdin
        raw.proc.stdin.close()
        assert raw.wait(180) == 0
        assert sandbox_names(daemon) == []
        log = (tmp_path / "mcp.log").read_text()
        assert "the client disconnected" in log, log
    finally:
        if raw.proc.poll() is None:
            raw.proc.kill()
            raw.proc.wait()
