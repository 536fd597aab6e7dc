#!/usr/bin/env python3
"""The SDK's cost per call over the raw API (p50), on one sandbox of a running safespaced.

    python3 sdk/python/bench/overhead.py [-n 300] [--socket PATH | --start-daemon]

For each call the SDK makes — ``get_info`` (GET /v1/sandboxes/{name}), ``files.read`` of
16 bytes (GET .../files/...), ``files.write`` (PUT), ``commands.run("true")`` (POST .../exec)
and the same exec streamed (NDJSON) — it times the raw request on a keep-alive
``http.client`` connection over AF_UNIX (the least a client can do), the same request with a
bare ``httpx.Client`` (the SDK's transport) and the SDK's call, interleaved (raw, httpx, SDK,
raw, ...) so that all see the same load, and prints the p50 of each and the SDK's overhead
over raw. ``--start-daemon`` starts a daemon of the build as the tests do
(root; SAFESPACE_BUILD_DIR or .build/debug).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket as socketlib
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE.parent / "tests"))

import httpx  # noqa: E402

from safespace import Sandbox  # noqa: E402


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost")
        self.path = path

    def connect(self) -> None:
        sock = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
        sock.connect(self.path)
        self.sock = sock


def raw_call(conn: UnixHTTPConnection, method: str, path: str, body: Optional[bytes] = None, headers: Optional[Dict[str, str]] = None) -> bytes:
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    if response.status >= 300:
        raise RuntimeError(f"{method} {path}: {response.status} {data!r}")
    return data


def p50(samples: List[float]) -> float:
    return statistics.median(samples) * 1000


def p99(samples: List[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


def bench(n: int, sock: str) -> None:
    sbx = Sandbox(name=f"bench-{os.getpid()}", resources={"cpu": "500m", "memory": "256Mi", "ephemeralStorage": "64Mi"}, socket=sock)
    try:
        sbx.files.write("/workspace/small", b"0123456789abcdef")
        conn = UnixHTTPConnection(sock)
        hx = httpx.Client(transport=httpx.HTTPTransport(uds=sock), base_url="http://localhost")
        base = f"/v1/sandboxes/{sbx.name}"
        exec_body = json.dumps({"command": ["sh", "-c", "true"]}).encode()
        json_headers = {"Content-Type": "application/json"}
        cases: Dict[str, Dict[str, Callable[[], object]]] = {
            "get_info": {
                "raw": lambda: raw_call(conn, "GET", base),
                "httpx": lambda: hx.get(base).content,
                "sdk": sbx.get_info,
            },
            "files.read 16 B": {
                "raw": lambda: raw_call(conn, "GET", base + "/files/workspace/small"),
                "httpx": lambda: hx.get(base + "/files/workspace/small").content,
                "sdk": lambda: sbx.files.read("/workspace/small"),
            },
            "files.write 16 B": {
                "raw": lambda: raw_call(conn, "PUT", base + "/files/workspace/w", b"0123456789abcdef"),
                "httpx": lambda: hx.put(base + "/files/workspace/w", content=b"0123456789abcdef").content,
                "sdk": lambda: sbx.files.write("/workspace/w", b"0123456789abcdef"),
            },
            "commands.run true": {
                "raw": lambda: raw_call(conn, "POST", base + "/exec", exec_body, json_headers),
                "httpx": lambda: hx.post(base + "/exec", content=exec_body, headers=json_headers).content,
                "sdk": lambda: sbx.commands.run("true"),
            },
            "commands.run true, streamed": {
                "raw": lambda: raw_call(conn, "POST", base + "/exec", exec_body, dict(json_headers, Accept="application/x-ndjson")),
                "httpx": lambda: hx.post(base + "/exec", content=exec_body, headers=dict(json_headers, Accept="application/x-ndjson")).content,
                "sdk": lambda: sbx.commands.run("true", on_stdout=lambda _: None),
            },
        }
        print(f"{'call':<30} {'raw p50 ms':>10} {'httpx p50':>10} {'sdk p50 ms':>10} {'overhead ms':>11} {'raw p99':>8} {'sdk p99':>8}  (n={n})")
        for label, pair in cases.items():
            count = n if "commands" not in label else max(20, n // 5)
            for _ in range(5):  # warm-up: connections open, code paths loaded
                for call in pair.values():
                    call()
            times: Dict[str, List[float]] = {"raw": [], "httpx": [], "sdk": []}
            for _ in range(count):
                for which in ("raw", "httpx", "sdk"):
                    start = time.perf_counter()
                    pair[which]()
                    times[which].append(time.perf_counter() - start)
            raw, hxs, sdk = times["raw"], times["httpx"], times["sdk"]
            print(f"{label:<30} {p50(raw):>10.3f} {p50(hxs):>10.3f} {p50(sdk):>10.3f} {p50(sdk) - p50(raw):>11.3f} {p99(raw):>8.3f} {p99(sdk):>8.3f}")
        conn.close()
        hx.close()
    finally:
        sbx.kill()
        sbx.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=300, help="pairs of calls per case (execs: n/5, at least 20)")
    parser.add_argument("--socket", default=None, help="the daemon's socket (default: $SAFESPACE_SOCKET or the default socket)")
    parser.add_argument("--start-daemon", action="store_true", help="start a daemon of the build on a temporary socket (root)")
    args = parser.parse_args()
    if args.start_daemon:
        from conftest import Daemon

        daemon = Daemon()
        try:
            daemon.start()
            bench(args.n, daemon.socket)
        finally:
            daemon.tear_down()
    else:
        from safespace._core import socket_path

        bench(args.n, socket_path(args.socket))
    return 0


if __name__ == "__main__":
    sys.exit(main())
