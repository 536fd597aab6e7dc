"""The daemon verbs of the ``safespace`` CLI that the SDK's tests share a daemon with:
``create`` (and the daemon's refusal as an error), ``ps --format``, and ``audit tail`` on a
real daemon's log and on files made here (last N, a line still being written, --follow
through appends, truncation and a replaced file)."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from pathlib import Path
from typing import List

from conftest import Daemon, daemon_binary


def safespace(*argv: str, sock: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SAFESPACE_SOCKET=sock)
    return subprocess.run([str(daemon_binary().parent / "safespace"), *argv], env=env, capture_output=True, text=True, timeout=300, check=check)


def record(seq: int, kind: str = "exec.finished", sandbox: str = "demo") -> str:
    return json.dumps(
        {"time": f"2026-12-03T00:00:{seq:02d}.000Z", "seq": seq, "type": kind, "sandbox": sandbox, "caller": {"uid": 0, "pid": 1}, "outcome": "ok", "exitCode": 0, "prev": "0" * 64},
        separators=(",", ":"),
    )


def test_create_ps_rm(daemon: Daemon, sock: str) -> None:
    name = daemon.name("cli")
    created = safespace("create", "--runtime", "python:3.11", "--name", name, "--lifetime", "600", sock=sock)
    assert created.stdout == name + "\n"
    table = safespace("ps", sock=sock).stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "LEVEL", "RUNTIME", "CREATED", "EXPIRES", "EXECS", "UID"]
    assert table[1].split()[:2] == [name, "Running"]
    items = json.loads(safespace("ps", "--format", "json", sock=sock).stdout)["items"]
    assert [i["metadata"]["name"] for i in items] == [name]
    assert [i["metadata"]["name"] for i in json.loads(safespace("ps", "--json", sock=sock).stdout)["items"]] == [name]
    again = safespace("create", "--name", name, sock=sock, check=False)  # the daemon's 409, as an error
    assert again.returncode == 125 and again.stderr.startswith("safespace: error: ") and name in again.stderr, again.stderr
    assert safespace("rm", name, sock=sock).stdout == name + "\n"
    bad = safespace("create", "--runtime", "cobol:1", sock=sock, check=False)
    assert bad.returncode == 125 and "runtime" in bad.stderr, bad.stderr
    assert safespace("ps", "--format", "json", sock=sock).stdout.strip() == '{"items":[]}'


def test_audit_tail_of_the_daemons_log(daemon: Daemon, sock: str) -> None:
    name = safespace("create", "--runtime", "python:3.11", "--lifetime", "600", sock=sock).stdout.strip()
    safespace("rm", name, sock=sock)
    log = str(daemon.dir / "audit.jsonl")
    lines = safespace("audit", "tail", "-n", "2", "--format", "json", log, sock=sock).stdout.splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["sandbox.created", "sandbox.deleted"]
    assert lines == Path(log).read_text().splitlines()[-2:]  # the lines as written
    table = safespace("audit", "tail", "-n", "1", log, sock=sock).stdout.splitlines()
    assert table[0].split() == ["TIME", "SEQ", "TYPE", "SANDBOX", "UID", "OUTCOME", "FIELDS"]
    assert table[1].split()[2:6] == ["sandbox.deleted", name, "0", "ok"]
    assert "reason=request" in table[1]


def test_audit_tail_last_lines(tmp_path: Path, sock: str) -> None:
    log = tmp_path / "audit.jsonl"
    # More than one 64 KiB block, and a last line still being written (no newline).
    records = [record(i) + " " * 1000 for i in range(1, 201)]
    log.write_text("\n".join(records) + "\n" + record(201)[:40])
    out = safespace("audit", "tail", "-n", "3", "--format", "json", str(log), sock=sock).stdout.splitlines()
    assert out == records[-3:]
    everything = safespace("audit", "tail", "-n", "1000", "--format", "json", str(log), sock=sock).stdout.splitlines()
    assert everything == records
    assert safespace("audit", "tail", "-n", "0", str(log), sock=sock).stdout.splitlines()[1:] == []
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert safespace("audit", "tail", "--format", "json", str(empty), sock=sock).stdout == ""
    missing = safespace("audit", "tail", str(tmp_path / "none"), sock=sock, check=False)
    assert missing.returncode == 125 and "cannot open" in missing.stderr


def read_lines(proc: "subprocess.Popen[bytes]", count: int, seconds: float = 30) -> List[str]:
    assert proc.stdout
    out = b""
    deadline = time.monotonic() + seconds
    while out.count(b"\n") < count:
        left = deadline - time.monotonic()
        assert left > 0, f"got only {out!r}"
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk, f"tail ended: {out!r}"
            out += chunk
    return out.decode().splitlines()


def test_audit_tail_follow(tmp_path: Path, sock: str) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_text(record(1) + "\n" + record(2) + "\n")
    proc = subprocess.Popen(
        [str(daemon_binary().parent / "safespace"), "audit", "tail", "-n", "1", "-f", "--format", "json", str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert read_lines(proc, 1) == [record(2)]
        with open(log, "a") as f:  # a record written in two pieces: printed once whole
            f.write(record(3)[:30])
            f.flush()
            time.sleep(0.5)
            f.write(record(3)[30:] + "\n" + record(4) + "\n")
        assert read_lines(proc, 2) == [record(3), record(4)]
        log.write_text(record(1, "sandbox.created") + "\n")  # truncated in place
        assert read_lines(proc, 1) == [record(1, "sandbox.created")]
        os.rename(log, tmp_path / "audit.jsonl.1")  # rotated: a new file at the path
        log.write_text(record(1, "sandbox.deleted") + "\n")
        assert read_lines(proc, 1) == [record(1, "sandbox.deleted")]
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
