#!/usr/bin/env python3
"""An agent's loop on safespaced through each client, in one run, and the SDK's cost per call.

    scripts/bench-agent.py [--runs 10] [--calls 100] [--socket PATH | --start-daemon]

1. SDK overhead per call over the raw API: ``get_info``, ``files.read`` (16 B),
   ``files.write`` (16 B) and ``commands.run("true")``, each timed as a raw request on a
   keep-alive ``http.client`` connection over the unix socket and as the SDK's call,
   interleaved so that both see the same load; p50 and p99 of each, and p50(SDK) - p50(raw).
2. The agent loop: create a python:3.11 sandbox, 10 x run_code (``python3 -c``), 2 file round
   trips (write 1 KiB, read it back and compare), delete; through the raw API (the floor),
   the Python SDK, the CLI (one ``safespace`` process per step: create, exec, cp, cp, rm)
   and MCP (``safespace mcp`` driven by the ``mcp`` package's client; the session is started
   once, its start-up is reported apart). The four loops take turns (raw, SDK, CLI, MCP,
   raw, ...) so that all see the same load. Prints the loop's p50/p99 per client, its ratio
   to the SDK's, and the p50/p99 of one run_code per client.

The sandboxes are cold creates: warm pools are another branch's work (``Sandbox.from_pool``
is refused by a daemon without pools). ``--start-daemon`` starts a daemon of the build
(``$SAFESPACE_BUILD_DIR`` or .build/debug) on a temporary socket, as the SDK's tests do
(root). Needs httpx and mcp (scripts/setup installs them).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket as socketlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "sdk" / "python" / "src"))
sys.path.insert(0, str(REPO / "sdk" / "python" / "tests"))

import anyio  # noqa: E402
from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402

from safespace import Sandbox  # noqa: E402

RUNTIME = "python:3.11"
LIFETIME = 600  # seconds: nothing outlives a crashed bench for long
CODE_RUNS = 10
FILE_TRIPS = 2
PAYLOAD = bytes(range(32, 127)) * 10 + b"\n" * 74  # 1024 bytes of text


def build_dir() -> Path:
    build = os.environ.get("SAFESPACE_BUILD_DIR")
    return Path(build) if build else REPO / ".build" / "debug"


class Raw:
    """The raw API: one keep-alive HTTP/1.1 connection on the socket, stdlib only."""

    class Connection(http.client.HTTPConnection):
        def __init__(self, path: str) -> None:
            super().__init__("localhost", timeout=300)
            self.path = path

        def connect(self) -> None:
            sock = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
            sock.settimeout(self.timeout)
            sock.connect(self.path)
            self.sock = sock

    def __init__(self, path: str) -> None:
        self.conn = Raw.Connection(path)

    def call(self, method: str, url: str, body: Any = None, raw: Optional[bytes] = None) -> bytes:
        headers = {}
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self.conn.request(method, url, body=data, headers=headers)
        response = self.conn.getresponse()
        out = response.read()
        if response.status >= 300:
            raise RuntimeError(f"{method} {url}: {response.status} {out!r}")
        return out


def quantile(samples: List[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


def p50(samples: List[float]) -> float:
    return statistics.median(samples) * 1000


def sdk_overhead(sock: str, calls: int) -> None:
    sbx = Sandbox(runtime=RUNTIME, timeout=LIFETIME, socket=sock)
    raw = Raw(sock)
    try:
        sbx.files.write("/workspace/small", b"0123456789abcdef")
        base = f"/v1/sandboxes/{sbx.name}"
        cases: Dict[str, Dict[str, Callable[[], object]]] = {
            "get_info": {"raw": lambda: raw.call("GET", base), "sdk": sbx.get_info},
            "files.read 16 B": {
                "raw": lambda: raw.call("GET", base + "/files/workspace/small"),
                "sdk": lambda: sbx.files.read("/workspace/small"),
            },
            "files.write 16 B": {
                "raw": lambda: raw.call("PUT", base + "/files/workspace/w", raw=b"0123456789abcdef"),
                "sdk": lambda: sbx.files.write("/workspace/w", b"0123456789abcdef"),
            },
            'commands.run("true")': {
                "raw": lambda: raw.call("POST", base + "/exec", {"command": ["sh", "-c", "true"]}),
                "sdk": lambda: sbx.commands.run("true"),
            },
        }
        print(f"SDK overhead per call over the raw API (interleaved; execs n={max(20, calls // 5)}, others n={calls})")
        print(f"  {'call':<22} {'raw p50':>9} {'sdk p50':>9} {'overhead':>9} {'raw p99':>9} {'sdk p99':>9}  (ms)")
        for label, pair in cases.items():
            count = calls if "commands" not in label else max(20, calls // 5)
            for _ in range(3):
                for call in pair.values():
                    call()
            times: Dict[str, List[float]] = {"raw": [], "sdk": []}
            for _ in range(count):
                for which in ("raw", "sdk"):
                    start = time.perf_counter()
                    pair[which]()
                    times[which].append(time.perf_counter() - start)
            r, s = times["raw"], times["sdk"]
            print(f"  {label:<22} {p50(r):>9.2f} {p50(s):>9.2f} {p50(s) - p50(r):>9.2f} {quantile(r, .99):>9.2f} {quantile(s, .99):>9.2f}")
    finally:
        raw.conn.close()
        sbx.kill()


def code(i: int) -> str:
    return f"print({i} * {i})"


class Loops:
    """The agent loop through each client; each returns its run_code times."""

    def __init__(self, sock: str, work: Path) -> None:
        self.sock = sock
        self.work = work
        self.safespace = str(build_dir() / "safespace")
        self.env = dict(os.environ, SAFESPACE_SOCKET=sock)
        self.local = work / "payload"
        self.local.write_bytes(PAYLOAD)

    def raw(self) -> List[float]:
        api = Raw(self.sock)
        runs: List[float] = []
        view = json.loads(api.call("POST", "/v1/sandboxes", {"spec": {"runtime": RUNTIME, "timeoutSeconds": LIFETIME}}))
        base = "/v1/sandboxes/" + view["metadata"]["name"]
        try:
            for i in range(CODE_RUNS):
                start = time.perf_counter()
                result = json.loads(api.call("POST", base + "/exec", {"command": ["python3", "-c", code(i)]}))
                runs.append(time.perf_counter() - start)
                assert result["stdout"] == f"{i * i}\n", result
            for i in range(FILE_TRIPS):
                api.call("PUT", f"{base}/files/workspace/f{i}", raw=PAYLOAD)
                assert api.call("GET", f"{base}/files/workspace/f{i}") == PAYLOAD
        finally:
            api.call("DELETE", base)
            api.conn.close()
        return runs

    def sdk(self) -> List[float]:
        runs: List[float] = []
        with Sandbox(runtime=RUNTIME, timeout=LIFETIME, socket=self.sock) as sbx:
            for i in range(CODE_RUNS):
                start = time.perf_counter()
                out = sbx.run_code(code(i))
                runs.append(time.perf_counter() - start)
                assert out.stdout == f"{i * i}\n", out
            for i in range(FILE_TRIPS):
                sbx.files.write(f"/workspace/f{i}", PAYLOAD)
                assert sbx.files.read(f"/workspace/f{i}") == PAYLOAD
        return runs

    def cli(self) -> List[float]:
        def safespace(*argv: str) -> str:
            done = subprocess.run([self.safespace, *argv], env=self.env, capture_output=True, check=True)
            return done.stdout.decode()

        runs: List[float] = []
        name = safespace("create", "--runtime", RUNTIME, "--lifetime", str(LIFETIME)).strip()
        try:
            for i in range(CODE_RUNS):
                start = time.perf_counter()
                out = safespace("exec", name, "--", "python3", "-c", code(i))
                runs.append(time.perf_counter() - start)
                assert out == f"{i * i}\n", out
            for i in range(FILE_TRIPS):
                back = self.work / f"back{i}"
                safespace("cp", str(self.local), f"{name}:/workspace/f{i}")
                safespace("cp", f"{name}:/workspace/f{i}", str(back))
                assert back.read_bytes() == PAYLOAD
        finally:
            safespace("rm", name)
        return runs

    async def mcp(self, session: ClientSession) -> List[float]:
        async def call(tool: str, arguments: Dict[str, Any]) -> Dict[str, Any]:
            result = await session.call_tool(tool, arguments)
            structured = getattr(result, "structured_content", None) or getattr(result, "structuredContent", None)
            is_error = getattr(result, "is_error", None) or getattr(result, "isError", None)
            assert not is_error and structured is not None, result
            return structured

        runs: List[float] = []
        name = (await call("create_sandbox", {"runtime": RUNTIME}))["name"]
        try:
            for i in range(CODE_RUNS):
                start = time.perf_counter()
                out = await call("run_code", {"sandbox": name, "code": code(i)})
                runs.append(time.perf_counter() - start)
                assert out["stdout"] == f"{i * i}\n", out
            for i in range(FILE_TRIPS):
                await call("write_file", {"sandbox": name, "path": f"/workspace/f{i}", "content": PAYLOAD.decode()})
                back = await call("read_file", {"sandbox": name, "path": f"/workspace/f{i}"})
                assert back["content"].encode() == PAYLOAD
        finally:
            await call("delete_sandbox", {"sandbox": name})
        return runs


async def agent_loops(sock: str, runs: int) -> None:
    with tempfile.TemporaryDirectory() as work:
        loops = Loops(sock, Path(work))
        params = StdioServerParameters(command=loops.safespace, args=["mcp", "--socket", sock])
        start = time.perf_counter()
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                mcp_start = time.perf_counter() - start
                clients = ("raw API", "SDK", "CLI", "MCP")
                loop_times: Dict[str, List[float]] = {c: [] for c in clients}
                code_times: Dict[str, List[float]] = {c: [] for c in clients}
                for round_ in range(runs + 1):  # round 0 warms up and is not counted
                    for client in clients:
                        begin = time.perf_counter()
                        if client == "raw API":
                            per_code = loops.raw()
                        elif client == "SDK":
                            per_code = loops.sdk()
                        elif client == "CLI":
                            per_code = loops.cli()
                        else:
                            per_code = await loops.mcp(session)
                        if round_ > 0:
                            loop_times[client].append(time.perf_counter() - begin)
                            code_times[client].extend(per_code)
        sdk50 = p50(loop_times["SDK"])
        print()
        print(f"Agent loop: create {RUNTIME}, {CODE_RUNS} x run_code, {FILE_TRIPS} file round trips (1 KiB), delete; {runs} runs each, interleaved")
        print(f"  {'client':<8} {'loop p50':>9} {'loop p99':>9} {'÷ SDK':>6} {'run_code p50':>13} {'run_code p99':>13}  (ms)")
        for client in clients:
            lt, ct = loop_times[client], code_times[client]
            print(
                f"  {client:<8} {p50(lt):>9.0f} {quantile(lt, .99):>9.0f} {p50(lt) / sdk50:>6.2f} {p50(ct):>13.1f} {quantile(ct, .99):>13.1f}"
            )
        print(f"  MCP session start (spawn safespace mcp + initialize): {mcp_start * 1000:.0f} ms, once")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="agent loops per client (after one warm-up round)")
    parser.add_argument("--calls", type=int, default=100, help="calls per case of the SDK overhead (execs: calls/5, at least 20)")
    parser.add_argument("--socket", default=None, help="the daemon's socket (default $SAFESPACE_SOCKET, else the default socket)")
    parser.add_argument("--start-daemon", action="store_true", help="start a daemon of the build on a temporary socket (root)")
    args = parser.parse_args()
    daemon = None
    if args.start_daemon:
        from conftest import Daemon

        daemon = Daemon()
        daemon.start()
        sock = daemon.socket
    else:
        from safespace._core import socket_path

        sock = socket_path(args.socket)
    try:
        sdk_overhead(sock, args.calls)
        anyio.run(agent_loops, sock, args.runs)
    finally:
        if daemon is not None:
            daemon.tear_down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
