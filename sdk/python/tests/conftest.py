"""A real safespaced for the SDK's tests, as Tests/DaemonTests/DaemonHarness.swift makes one:
the built binary (``$SAFESPACE_BUILD_DIR/safespaced``, else the repository's
``.build/debug/safespaced``) on a temporary socket, with its own state directory, runtime
root, bundle root, ephemeral storage base and audit log, so that what it leaves can be
counted apart from the node's. After each test nothing may be left (no sandbox, runtime
state, bundle, volume, record, mount, cgroup or process); at the end the daemon is stopped
and everything it made removed.

As root only (the daemon makes namespaces, cgroups and mounts). Without root the tests
skip; as root a missing binary is an error unless SAFESPACE_TEST_ALLOW_SKIP=1.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List

import httpx
import pytest

REPO = Path(__file__).resolve().parents[3]

# The package under test is the source tree, also when an older copy is installed
# (test_packaging.py checks that the tree builds and installs as a package).
sys.path.insert(0, str(REPO / "sdk" / "python" / "src"))

# Small limits the tests reach on purpose: a file of 4 MiB + 1 byte is too large, output
# past 1 MiB of a non-streamed exec is dropped (truncated), and
# memory beyond 4 GiB is more than the node offers (the machine has more: admission, not
# the kernel, refuses it). 100 CPUs: admission never refuses CPU here.
MAX_FILE_BYTES = 4 << 20
MAX_EXEC_OUTPUT_BYTES = 1 << 20
ALLOCATABLE_MEMORY = "4Gi"
SMALL = {"cpu": "100m", "memory": "128Mi", "ephemeralStorage": "64Mi"}


def daemon_binary() -> Path:
    build = os.environ.get("SAFESPACE_BUILD_DIR")
    return Path(build) / "safespaced" if build else REPO / ".build" / "debug" / "safespaced"


class Daemon:
    """One safespaced on a temporary socket (see the module's docstring)."""

    def __init__(self) -> None:
        self.id = "sdk" + secrets.token_hex(4)
        self.dir = Path("/tmp") / self.id
        self.run_dir = Path("/run") / self.id
        self.ephemeral = Path("/var/lib/safespace") / (self.id + "-ephemeral")
        self.socket = str(self.dir / "d.sock")
        self.state_dir = self.dir / "state"
        self.runtime_root = self.run_dir / "runtime"
        self.bundle_root = self.run_dir / "bundles"
        self.binary = daemon_binary()
        self.proc: "subprocess.Popen[bytes] | None" = None
        for d in (self.dir, self.run_dir):
            d.mkdir(mode=0o755)
        os.chmod(self.dir, 0o755)
        self.config = self.dir / "safespaced.yaml"
        self.config.write_text(
            "audit:\n"
            f"  path: {self.dir}/audit.jsonl\n"
            "  journald: false\n"
            "node:\n"
            '  allocatableCPU: "100"\n'
            f"  allocatableMemory: {ALLOCATABLE_MEMORY}\n"
            "limits:\n"
            f"  maxFileBytes: {MAX_FILE_BYTES}\n"
            f"  maxExecOutputBytes: {MAX_EXEC_OUTPUT_BYTES}\n"
            "paths:\n"
            f"  runtimeRoot: {self.runtime_root}\n"
            f"  bundleRoot: {self.bundle_root}\n"
            f"  ephemeralStorage: {self.ephemeral}\n"
            # The egress filter's upstream: TEST-NET-1 (RFC 5737), where nothing answers. The
            # tests look up only names the sandbox may not reach, which the filter answers
            # itself (NXDOMAIN) without asking upstream.
            "network:\n"
            '  upstreamDNS: ["192.0.2.1:53"]\n'
            "pools:\n"
            f"  directory: {self.dir}/pools\n"
        )

    def start(self) -> None:
        """Starts it and waits (at most 60 s) for ``GET /v1/healthz``."""
        log = open(self.dir / "daemon.log", "ab")
        self.proc = subprocess.Popen(
            [str(self.binary), "--config", str(self.config), "--socket", self.socket, "--state-dir", str(self.state_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 60
        with httpx.Client(transport=httpx.HTTPTransport(uds=self.socket), base_url="http://localhost") as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"safespaced exited at start ({self.proc.returncode}): {self.log()}")
                try:
                    if client.get("/v1/healthz", timeout=2).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise RuntimeError(f"safespaced did not answer within 60 s: {self.log()}")

    def log(self) -> str:
        try:
            return (self.dir / "daemon.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, seconds: float = 60) -> None:
        """SIGTERM, then SIGKILL after ``seconds``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(seconds)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    @staticmethod
    def _entries(path: Path) -> List[str]:
        try:
            return sorted(e for e in os.listdir(path) if not e.startswith(".") and not e.endswith(".lock"))
        except OSError:
            return []

    def leftovers(self) -> Dict[str, List[str]]:
        """What the daemon's sandboxes hold on the node, by kind; every non-empty list is a
        leak once all are deleted (DaemonHarness.leftovers)."""
        out: Dict[str, List[str]] = {
            "runtime state": self._entries(self.runtime_root),
            "bundles (leases)": self._entries(self.bundle_root),
            "ephemeral volumes": self._entries(self.ephemeral),
            "daemon records": self._entries(self.state_dir / "sandboxes"),
        }
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
        out["mounts"] = [m for m in mounts if str(self.run_dir) in m or str(self.ephemeral) in m]
        out["cgroups"] = [c for c in self._entries(Path("/sys/fs/cgroup/safespace")) if c.startswith(self.id)]
        loops = []
        for entry in self._entries(Path("/sys/block")):
            if entry.startswith("loop"):
                try:
                    backing = (Path("/sys/block") / entry / "loop" / "backing_file").read_text()
                except OSError:
                    continue
                if str(self.ephemeral) in backing:
                    loops.append(entry)
        out["loop devices"] = loops
        return {k: v for k, v in out.items() if v}

    def tear_down(self) -> None:
        """Stops it, removes what a failed test left (by this daemon's paths only) and the
        directories."""
        self.stop(30)
        bin_dir = self.binary.parent
        for name in self._entries(self.runtime_root):
            _quiet([str(bin_dir / "safespace-runtime"), "--root", str(self.runtime_root), "delete", "--force", name])
        _quiet(
            [
                str(bin_dir / "safespace"),
                "gc",
                "--root",
                str(self.runtime_root),
                "--bundle-root",
                str(self.bundle_root),
                "--ephemeral-storage",
                str(self.ephemeral),
            ]
        )
        for d in (self.dir, self.run_dir, self.ephemeral):
            shutil.rmtree(d, ignore_errors=True)
        for name in self._entries(Path("/sys/fs/cgroup/safespace")):
            if name.startswith(self.id):
                try:
                    os.rmdir(Path("/sys/fs/cgroup/safespace") / name)
                except OSError:
                    pass

    def name(self, suffix: str) -> str:
        """A sandbox name of this run (its cgroup is recognisable by the prefix)."""
        return f"{self.id}-{suffix}"


def _quiet(argv: List[str]) -> None:
    if os.access(argv[0], os.X_OK):
        subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


@pytest.fixture(scope="session")
def daemon() -> Iterator[Daemon]:
    if os.geteuid() != 0:
        pytest.skip("the SDK's tests start a real safespaced: run them as root")
    if not daemon_binary().exists():
        message = f"no safespaced at {daemon_binary()}: swift build first (or set SAFESPACE_BUILD_DIR)"
        if os.environ.get("SAFESPACE_TEST_ALLOW_SKIP") == "1":
            pytest.skip(message)
        pytest.fail(message)
    d = Daemon()
    try:
        d.start()
        yield d
    finally:
        d.tear_down()


@pytest.fixture
def sock(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The test daemon's socket, also as ``$SAFESPACE_SOCKET`` (the SDK's default). After the
    test no sandbox may be left, nor anything a sandbox held."""
    monkeypatch.setenv("SAFESPACE_SOCKET", daemon.socket)
    yield daemon.socket
    from safespace import Sandbox

    left = [s.name for s in Sandbox.list(socket=daemon.socket)]
    for name in left:  # remove them so that one failure does not fail every later test
        with httpx.Client(transport=httpx.HTTPTransport(uds=daemon.socket), base_url="http://localhost") as client:
            client.delete(f"/v1/sandboxes/{name}", timeout=120)
    assert left == [], f"sandboxes left by the test: {left}"
    assert daemon.leftovers() == {}, f"left on the node: {daemon.leftovers()}\n{daemon.log()}"
