"""Sandbox.from_pool: against the real daemon (which has no warm pools yet), and against a
small stand-in server for the answers a daemon with pools (or one that ignores ``pool``)
gives, since the real one cannot give them yet."""

from __future__ import annotations

import asyncio
import json
import os
import socketserver
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from conftest import Daemon
from safespace import AsyncSandbox, PolicyRefused, SafeSpaceError, Sandbox


def test_from_pool_is_refused_by_a_daemon_without_pools(daemon: Daemon, sock: str) -> None:
    """Today the daemon reads no ``pool`` and wants a body: 400 malformed_json, raised as
    PolicyRefused with the daemon's message, and nothing is created. When warm pools land
    (issue 14: POST /v1/sandboxes?pool=NAME, body optional) this test fails on purpose: then
    make a pool in the test daemon and assert the claim (status.warm)."""
    with pytest.raises(PolicyRefused) as refused:
        Sandbox.from_pool("python-std")
    err = refused.value
    assert (err.status, err.code) == (400, "malformed_json")
    assert err.request == "POST /v1/sandboxes?pool=python-std"
    assert Sandbox.list() == []
    with pytest.raises(PolicyRefused):
        asyncio.run(AsyncSandbox.from_pool("python-std"))
    assert Sandbox.list() == []


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
