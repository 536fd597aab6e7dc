"""Typed errors from the real daemon's answers, and from a socket nobody serves."""

from __future__ import annotations

import os
from typing import List

import pytest

from conftest import ALLOCATABLE_MEMORY, SMALL, Daemon
from safespace import (
    Conflict,
    NotFound,
    PolicyRefused,
    QuotaExceeded,
    SafeSpaceError,
    Sandbox,
    SandboxNotFound,
    Timeout,
    Unavailable,
)


def test_unknown_sandbox(daemon: Daemon, sock: str) -> None:
    with pytest.raises(SandboxNotFound) as e:
        Sandbox.connect(daemon.name("ghost"))
    err = e.value
    assert isinstance(err, NotFound) and isinstance(err, SafeSpaceError)
    assert (err.code, err.status, err.field) == ("not_found", 404, "name")
    assert daemon.name("ghost") in err.message
    assert str(err).startswith(f"GET /v1/sandboxes/{daemon.name('ghost')}: 404 not_found: ")


def test_bad_fields_name_the_field(daemon: Daemon, sock: str) -> None:
    with pytest.raises(PolicyRefused) as bad_quantity:
        Sandbox(name=daemon.name("bad"), resources={"memory": "lots"})
    assert bad_quantity.value.status == 400 and bad_quantity.value.field == "spec.resources.memory"
    with pytest.raises(PolicyRefused) as unknown:
        Sandbox(name=daemon.name("bad"), spec={"colour": "blue"})
    assert unknown.value.code == "unknown_field" and unknown.value.field == "spec.colour"
    with pytest.raises(PolicyRefused) as bad_name:
        Sandbox(name="Not_A_Label", resources=SMALL)
    assert bad_name.value.field == "metadata.name"
    with pytest.raises(ValueError):
        Sandbox(runtime="python:3.11", spec={"runtime": "node:18"})  # given twice: refused before sending
    with pytest.raises(ValueError):
        Sandbox(timeout=0)
    assert Sandbox.list() == []


def test_name_taken(daemon: Daemon, sock: str) -> None:
    with Sandbox(name=daemon.name("dup"), resources=SMALL):
        with pytest.raises(Conflict) as taken:
            Sandbox(name=daemon.name("dup"), resources=SMALL)
        assert taken.value.code == "exists" and taken.value.status == 409 and taken.value.field == "metadata.name"


def test_overcommit(daemon: Daemon, sock: str) -> None:
    """The test daemon's node offers 4 GiB (conftest): 3 GiB fit, 2 GiB more do not."""
    assert ALLOCATABLE_MEMORY == "4Gi"
    with Sandbox(name=daemon.name("big1"), resources={"cpu": "100m", "memory": "3Gi", "ephemeralStorage": "64Mi"}):
        with pytest.raises(QuotaExceeded) as refused:
            Sandbox(name=daemon.name("big2"), resources={"cpu": "100m", "memory": "2Gi", "ephemeralStorage": "64Mi"})
        err = refused.value
        assert (err.code, err.status, err.field) == ("overcommitted", 429, "spec.resources.memory")
        assert "allocatable" in err.message
        assert [s.name for s in Sandbox.list()] == [daemon.name("big1")]


EGRESS_PROBE = r"""
import socket
try:
    socket.getaddrinfo("example.com", 443)
    print("lookup resolved")
except socket.gaierror as e:
    print("lookup nxdomain" if e.errno == socket.EAI_NONAME else "lookup gaierror%d" % e.errno)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("192.0.2.1", 9))
print("source", s.getsockname()[0])
t = socket.socket()
t.settimeout(3)
try:
    t.connect(("192.0.2.1", 8443))
    print("tcp connected")
except socket.timeout:
    print("tcp dropped")
except OSError as e:
    print("tcp error%d" % e.errno)
"""


def test_egress_gives_a_network_that_reaches_only_the_listed_domains(daemon: Daemon, sock: str) -> None:
    """The SDK sends egress as spec.networkAccess.egress; the daemon's egress filter serves it:
    the sandbox gets an address of the node's pool (100.64.0.0/16), a name not on the list
    gets NXDOMAIN from the filter, and a connection to another port is dropped."""
    with Sandbox(
        name=daemon.name("net"), resources=SMALL, egress=["pypi.org", {"domain": "files.pythonhosted.org"}]
    ) as sbx:
        r = sbx.commands.run("python3 -c '%s'" % EGRESS_PROBE.replace("'", "'\\''"))
        assert r.exit_code == 0, r.stderr
        out = r.stdout.splitlines()
        assert "lookup nxdomain" in out, r.stdout
        assert "tcp dropped" in out, r.stdout
        source = [line.split()[1] for line in out if line.startswith("source ")]
        assert source and source[0].startswith("100.64."), r.stdout
        assert [s.name for s in Sandbox.list()] == [daemon.name("net")]
    assert Sandbox.list() == []


def test_security_level_high_runs_under_gvisor(daemon: Daemon, sock: str) -> None:
    """security_level="high" is spec.securityLevel: the daemon serves it with gVisor (runsc).
    The sandbox's kernel is gVisor's sentry; commands, streaming, timeouts and files work as
    at the standard level."""
    if not any(os.access(p, os.X_OK) for p in ("/usr/bin/runsc", "/usr/local/bin/runsc")):
        pytest.skip("runsc is not installed")
    with Sandbox(name=daemon.name("high"), resources=SMALL, security_level="high") as sbx:
        assert sbx.info.level == "high"
        assert "gVisor" in sbx.commands.run("dmesg").stdout
        result = sbx.commands.run("cat; echo err >&2; exit 7", stdin="in", envs={"A": "b"}, cwd="/tmp")
        assert (result.exit_code, result.stdout, result.stderr) == (7, "in", "err\n")
        chunks: List[str] = []
        streamed = sbx.commands.run('echo "$A"; pwd', envs={"A": "b"}, cwd="/tmp", on_stdout=chunks.append)
        assert "".join(chunks) == "b\n/tmp\n" and streamed.exit_code == 0
        with pytest.raises(Timeout) as timed_out:
            sbx.commands.run("echo before; exec sleep 60", timeout=1)
        assert timed_out.value.result is not None and timed_out.value.result.timed_out
        assert timed_out.value.result.stdout == "before\n"
        sbx.files.write("/workspace/in.txt", "through the sentry")
        assert sbx.files.read("/workspace/in.txt") == b"through the sentry"
        assert sbx.commands.run("cat /workspace/in.txt").stdout == "through the sentry"
    assert Sandbox.list() == []


def test_issue_example_arguments_map_to_the_resource(daemon: Daemon, sock: str) -> None:
    """The issue's example as written: gVisor with an allowlist of two names, both served;
    a name off the list does not resolve inside it."""
    if not any(os.access(p, os.X_OK) for p in ("/usr/bin/runsc", "/usr/local/bin/runsc")):
        pytest.skip("runsc is not installed")
    with Sandbox(
        runtime="python:3.11", security_level="high", egress=["pypi.org", "files.pythonhosted.org"], timeout=600
    ) as sbx:
        assert sbx.info.level == "high"
        out = sbx.run_code(
            "import socket\n"
            "try:\n"
            "    socket.getaddrinfo('example.com', 443)\n"
            "    print('resolved')\n"
            "except socket.gaierror:\n"
            "    print('nxdomain')\n"
        )
        assert (out.exit_code, out.stdout) == (0, "nxdomain\n"), out.stderr
    assert Sandbox.list() == []


def test_no_daemon_on_the_socket(tmp_path: "os.PathLike[str]", monkeypatch: pytest.MonkeyPatch) -> None:
    missing = os.path.join(str(tmp_path), "none.sock")
    monkeypatch.setenv("SAFESPACE_SOCKET", missing)
    with pytest.raises(Unavailable) as e:
        Sandbox.list()
    assert e.value.code == "unreachable" and e.value.status is None and missing in e.value.message
