"""Pieces that need no daemon: URL paths, the exec stream's decoding, the error mapping."""

from __future__ import annotations

import pytest

from safespace import Conflict, PolicyRefused, QuotaExceeded, SafeSpaceError, SandboxNotFound, Timeout, Unavailable
from safespace._core import ExecStream, code_command, create_body, file_path, sandbox_path
from safespace._errors import from_response


def test_paths_are_encoded_per_component_and_dot_segments_survive() -> None:
    assert file_path("/workspace/a b/c?d#e%f") == "workspace/a%20b/c%3Fd%23e%25f"
    assert file_path("/workspace/../x/./y") == "workspace/%2E%2E/x/%2E/y"
    assert file_path("/tmp/ü") == "tmp/%C3%BC"
    assert sandbox_path("..", "/exec") == "/v1/sandboxes/%2E%2E/exec"
    assert sandbox_path("a/b") == "/v1/sandboxes/a%2Fb"
    with pytest.raises(ValueError):
        file_path("relative/path")


def test_create_body_maps_arguments_to_the_sandbox_resource() -> None:
    body = create_body(
        name="n", runtime="python:3.11", security_level="high", egress=["pypi.org", {"domain": "x.org", "ports": [{"port": 443}]}],
        timeout=599.5, exec_timeout=30, resources={"cpu": "1"}, spec={"filesystem": {"readOnlyRoot": True}}, labels={"a": "b"},
    )
    assert body == {
        "apiVersion": "llmsafespace.dev/v1",
        "kind": "Sandbox",
        "metadata": {"name": "n", "labels": {"a": "b"}},
        "spec": {
            "filesystem": {"readOnlyRoot": True},
            "runtime": "python:3.11",
            "securityLevel": "high",
            "networkAccess": {"egress": [{"domain": "pypi.org"}, {"domain": "x.org", "ports": [{"port": 443}]}]},
            "timeoutSeconds": 600,
            "timeout": 30,
            "resources": {"cpu": "1"},
        },
    }


def test_exec_stream() -> None:
    stream = ExecStream("POST /x")
    assert stream.feed('{"stdout":"a"}') == ("stdout", "a")
    assert stream.feed('{"stderr":"b"}') == ("stderr", "b")
    assert stream.feed("") is None
    assert stream.feed('{"stdout":"c"}') == ("stdout", "c")
    assert stream.feed('{"exitCode":3,"durationMs":5,"timedOut":false,"oomKilled":false}') is None
    result = stream.finish()
    assert (result.stdout, result.stderr, result.exit_code, result.duration_ms) == ("ac", "b", 3, 5)
    # An error the daemon hit once the answer had started is raised, typed.
    failing = ExecStream("POST /x")
    with pytest.raises(SandboxNotFound) as gone:
        failing.feed('{"error":{"code":"not_found","message":"no sandbox named x","field":"name"}}')
    assert gone.value.status is None and gone.value.field == "name"
    cut = ExecStream("POST /x")
    cut.feed('{"stdout":"a"}')
    with pytest.raises(SafeSpaceError) as ended:
        cut.finish()
    assert ended.value.code == "bad_response"
    with pytest.raises(SafeSpaceError):
        ExecStream("POST /x").feed("not json")


def test_error_mapping_by_code_then_status() -> None:
    def err(status: int, body: bytes) -> SafeSpaceError:
        return from_response(status, body, "GET /x")

    e = err(429, b'{"error":{"code":"overcommitted","message":"m","field":"spec.resources.cpu"}}')
    assert type(e) is QuotaExceeded and (e.code, e.message, e.field, e.status) == ("overcommitted", "m", "spec.resources.cpu", 429)
    assert type(err(400, b'{"error":{"code":"not_enforceable","message":"m","field":null}}')) is PolicyRefused
    assert type(err(409, b'{"error":{"code":"not_running","message":"m","field":null}}')) is Conflict
    assert type(err(503, b'{"error":{"code":"shutting_down","message":"m","field":null}}')) is Unavailable
    assert type(err(504, b"gateway")) is Timeout
    assert type(err(409, b'{"error":{"code":"some_new_code","message":"m","field":null}}')) is Conflict
    plain = err(500, b"oops")
    assert type(plain) is SafeSpaceError and plain.message == "oops" and plain.code == "http_error"


def test_run_code_commands() -> None:
    assert code_command("print(1)", "python") == (["python3", "-c", "print(1)"], None)
    big = "#" * 100_001
    assert code_command(big, "python") == (["python3", "-"], big)
    assert code_command("1", "javascript")[0][:2] == ["node", "-e"]
