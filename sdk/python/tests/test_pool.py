"""Sandbox.from_pool: against the real daemon with a warm pool, and against a small
stand-in server for the answer of a daemon that ignores ``pool`` (an old one)."""

from __future__ import annotations

import asyncio
import json
import os
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any, Dict, Iterator, List, Tuple

import httpx
import pytest

from conftest import SMALL, Daemon
from safespace import AsyncSandbox, NotFound, SafeSpaceError, Sandbox, Unavailable


def _pools(daemon: Daemon) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=daemon.socket), base_url="http://localhost", timeout=120)


def _wait_ready(client: httpx.Client, pool: str, count: int) -> Dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = client.get(f"/v1/warmpools/{pool}").json()["status"]
        if status["ready"] >= count:
            return status
        time.sleep(0.05)
    raise AssertionError(f"pool {pool} did not fill to {count}: {status}")


def test_from_pool_claims_a_warm_sandbox_of_the_daemon(daemon: Daemon, sock: str) -> None:
    """A pool of the real daemon: from_pool hands over a ready sandbox (info.warm, the
    caller's), which runs code; an empty pool that refuses raises Unavailable (pool_empty);
    an unknown pool raises NotFound (pool_not_found). The pool is removed at the end (its
    ready sandboxes with it), so nothing is left."""
    pool = daemon.name("pool")
    with _pools(daemon) as client:
        made = client.post(
            "/v1/warmpools",
            json={
                "apiVersion": "llmsafespace.dev/v1",
                "kind": "WarmPool",
                "metadata": {"name": pool},
                "spec": {"minSize": 1, "maxSize": 2, "whenEmpty": "refuse", "template": {"resources": SMALL}},
            },
        )
        assert made.status_code == 201, made.text
        try:
            _wait_ready(client, pool, 1)
            with Sandbox.from_pool(pool) as sbx:
                assert sbx.info.warm is True and sbx.info.pool == pool
                assert sbx.info.raw["status"]["claim"] == {"pool": pool, "outcome": "warm"}
                assert sbx.info.creator_uid == os.geteuid()
                assert sbx.commands.run("echo warm").stdout == "warm\n"
                assert [s.name for s in Sandbox.list()] == [sbx.name]
                # maxSize 2: one claimed, one refilled at most; the next claim may find it
                # empty or take the refill. Take what is there until it refuses.
                taken = []
                try:
                    for _ in range(3):
                        taken.append(Sandbox.from_pool(pool))
                    raise AssertionError("a pool of maxSize 2 handed out more than 2 sandboxes")
                except Unavailable as empty:
                    assert empty.code == "pool_empty"
                finally:
                    for other in taken:
                        other.kill()
                        other.close()
            _wait_ready(client, pool, 1)

            async def claim_async() -> bool:
                async with await AsyncSandbox.from_pool(pool) as warm:
                    return warm.info.warm and (await warm.commands.run("echo a")).stdout == "a\n"

            assert asyncio.run(claim_async())
            with pytest.raises(NotFound) as missing:
                Sandbox.from_pool(daemon.name("nopool"))
            assert missing.value.code == "pool_not_found"
            status = client.get(f"/v1/warmpools/{pool}").json()["status"]
            assert status["hits"] >= 1 and status["refusals"] >= 1
        finally:
            assert client.delete(f"/v1/warmpools/{pool}").status_code == 200


class _Recorder:
    def __init__(self, answer: Dict[str, Any]) -> None:
        self.answer = answer
        self.requests: List[Tuple[str, str, bytes]] = []


def _handler(recorder: _Recorder) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
            pass

        def _answer(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            recorder.requests.append((self.command, self.path, self.rfile.read(length) if length else b""))

        def do_POST(self) -> None:
            self._record()
            self._answer(201, recorder.answer)

        def do_DELETE(self) -> None:
            self._record()
            self._answer(200, {"name": "cold-1", "deleted": True})

    return Handler


@pytest.fixture
def stand_in(tmp_path: "os.PathLike[str]") -> Iterator[Tuple[str, _Recorder]]:
    path = os.path.join(str(tmp_path), "fake.sock")
    recorder = _Recorder({})
    server = socketserver.ThreadingUnixStreamServer(path, _handler(recorder))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield path, recorder
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _view(name: str, status_extra: Dict[str, Any]) -> Dict[str, Any]:
    status = {"phase": "Running", "level": "standard", "runtime": "python:3.11", "limits": {}, "createdAt": "now", "creatorUID": 0, "writablePaths": ["/tmp"], "execs": 0}
    status.update(status_extra)
    return {"metadata": {"name": name}, "spec": {}, "status": status}


def test_from_pool_never_passes_off_a_cold_sandbox(stand_in: Tuple[str, _Recorder]) -> None:
    """A daemon that ignores ``pool`` answers 201 with a cold sandbox and no status.warm: the
    SDK deletes it and raises pool_ignored."""
    path, recorder = stand_in
    recorder.answer = _view("cold-1", {})
    with pytest.raises(SafeSpaceError) as ignored:
        Sandbox.from_pool("python-std", socket=path)
    assert ignored.value.code == "pool_ignored"
    assert [(m, p) for m, p, _ in recorder.requests] == [("POST", "/v1/sandboxes?pool=python-std"), ("DELETE", "/v1/sandboxes/cold-1")]
    assert recorder.requests[0][2] == b""  # no body: a claim, not a Sandbox to create
    recorder.requests.clear()
    with pytest.raises(SafeSpaceError) as ignored_async:
        asyncio.run(AsyncSandbox.from_pool("python-std", socket=path))
    assert ignored_async.value.code == "pool_ignored"
    assert [m for m, _, _ in recorder.requests] == ["POST", "DELETE"]


def test_from_pool_claims_a_warm_sandbox(stand_in: Tuple[str, _Recorder]) -> None:
    path, recorder = stand_in
    recorder.answer = _view("warm-1", {"warm": True})
    sbx = Sandbox.from_pool("py std/1", socket=path)
    try:
        assert sbx.name == "warm-1" and sbx.info.raw["status"]["warm"] is True
        assert recorder.requests[0][1] == "/v1/sandboxes?pool=py%20std%2F1"
    finally:
        sbx.close()
