"""The synchronous client against a real safespaced: lifecycle, commands, streaming,
run_code, files, connect, list, timeouts."""

from __future__ import annotations

import hashlib
import time
from typing import List, Tuple

import pytest

from conftest import SMALL, Daemon
from safespace import (
    CommandResult,
    Conflict,
    FileNotFound,
    PolicyRefused,
    QuotaExceeded,
    Sandbox,
    SandboxNotFound,
    Timeout,
)


def test_lifecycle(daemon: Daemon, sock: str) -> None:
    name = daemon.name("life")
    sbx = Sandbox(runtime="python:3.11", name=name, resources=SMALL, timeout=600)
    try:
        assert sbx.name == name
        assert sbx.info.phase == "Running"
        assert sbx.info.runtime == "python:3.11"
        assert sbx.info.limits["memoryBytes"] == 128 << 20
        assert sbx.info.expires_at is not None
        assert "/workspace" in sbx.info.writable_paths
        assert [s.name for s in Sandbox.list()] == [name]
        info = sbx.get_info()
        assert info.usage is not None and info.usage["pids"] >= 1
        assert sbx.is_running()
        assert sbx.commands.run("id -u").stdout == "1000\n"
    finally:
        assert sbx.kill() is True
    assert sbx.kill() is False  # gone already: not an error
    assert not sbx.is_running()
    with pytest.raises(SandboxNotFound):
        sbx.get_info()
    assert Sandbox.list() == []
    sbx.close()


def test_context_manager_deletes_on_exit_also_after_an_error(daemon: Daemon, sock: str) -> None:
    with Sandbox(name=daemon.name("ctx"), resources=SMALL) as sbx:
        assert sbx.commands.run("true").exit_code == 0
    assert Sandbox.list() == []
    with pytest.raises(ZeroDivisionError):
        with Sandbox(name=daemon.name("ctx2"), resources=SMALL):
            1 / 0
    assert Sandbox.list() == []


def test_generated_name_and_socket_from_environment(daemon: Daemon, sock: str) -> None:
    with Sandbox(resources=SMALL) as sbx:  # SAFESPACE_SOCKET is the test daemon's (fixture)
        assert sbx.name.startswith("sandbox-")
        assert sbx.info.runtime == "python:3.11"  # the daemon's default runtime


def test_commands_exit_codes_output_env_cwd_stdin(daemon: Daemon, sock: str) -> None:
    with Sandbox(name=daemon.name("cmd"), resources=SMALL) as sbx:
        r = sbx.commands.run("echo out; echo err >&2; exit 3")
        assert (r.stdout, r.stderr, r.exit_code) == ("out\n", "err\n", 3)
        assert not r.timed_out and not r.oom_killed and not r.truncated and r.killed_by is None
        assert r.duration_ms >= 0
        assert sbx.commands.run("kill -9 $$").exit_code == 137  # 128 + SIGKILL
        # Through sh -c: pipes, expansion, quotes.
        assert sbx.commands.run("printf '%s|' a 'b c' | tr '|' '\\n' | wc -l").stdout.strip() == "2"
        r = sbx.commands.run('echo "$GREETING $OTHER"; pwd', envs={"GREETING": "hi", "OTHER": "x y"}, cwd="/tmp")
        assert r.stdout == "hi x y\n/tmp\n"
        assert sbx.commands.run("cat; echo", stdin="from stdin").stdout == "from stdin\n"
        assert sbx.commands.exec(["printf", "%s", "$HOME;"]).stdout == "$HOME;"  # no shell
        with pytest.raises(PolicyRefused) as refused:
            sbx.commands.run("true", cwd="relative")
        assert refused.value.field == "cwd" and refused.value.status == 400


def test_streaming_delivers_chunks_in_order_while_the_command_runs(daemon: Daemon, sock: str) -> None:
    """The command waits for files that only the callbacks write: it can go on only if each
    chunk reached the client while it ran, so this checks streaming and the order of chunks
    across stdout and stderr without timing anything."""
    with Sandbox(name=daemon.name("stream"), resources=SMALL) as sbx:
        events: List[Tuple[str, str]] = []

        def on_stdout(text: str) -> None:
            events.append(("stdout", text))
            if "a" in text:
                sbx.files.write("/tmp/go1", b"")
            if "c" in text:
                sbx.files.write("/tmp/go3", b"")

        def on_stderr(text: str) -> None:
            events.append(("stderr", text))
            sbx.files.write("/tmp/go2", b"")

        wait = "n=0; while [ ! -e /tmp/{f} ]; do sleep 0.02; n=$((n+1)); [ $n -lt 3000 ] || exit 99; done"
        script = "; ".join(
            ["echo a", wait.format(f="go1"), "echo b >&2", wait.format(f="go2"), "echo c", wait.format(f="go3"), "exit 5"]
        )
        r = sbx.commands.run(script, timeout=120, on_stdout=on_stdout, on_stderr=on_stderr)
        assert events == [("stdout", "a\n"), ("stderr", "b\n"), ("stdout", "c\n")]
        assert (r.stdout, r.stderr, r.exit_code) == ("a\nc\n", "b\n", 5)


def test_streaming_keeps_line_separators_inside_chunks(daemon: Daemon, sock: str) -> None:
    """U+2028, U+0085 and CR are line breaks to str.splitlines; the NDJSON is split at \\n only."""
    with Sandbox(name=daemon.name("seps"), resources=SMALL) as sbx:
        chunks: List[str] = []
        code = "import sys; sys.stdout.write('x\\u2028y\\u0085z\\rw\\n' + 'é' * 5000)"
        r = sbx.run_code(code, on_stdout=chunks.append)
        expected = "x\u2028y\u0085z\rw\n" + "é" * 5000
        assert "".join(chunks) == expected and r.stdout == expected and r.exit_code == 0


def test_streaming_callback_error_ends_the_command(daemon: Daemon, sock: str) -> None:
    with Sandbox(name=daemon.name("cberr"), resources=SMALL) as sbx:

        def stop(text: str) -> None:
            raise KeyboardInterrupt("enough")

        # The command keeps writing: the daemon notices the closed connection when it next
        # writes to it (a silent process is noticed only at its next output or its timeout).
        with pytest.raises(KeyboardInterrupt):
            sbx.commands.run("echo go; while :; do echo more; sleep 0.05; done", on_stdout=stop, timeout=600)
        # The daemon saw the client go and killed the process: no exec left running.
        deadline = time.monotonic() + 60
        while sbx.get_info().execs != 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sbx.get_info().execs == 0
        procs = sbx.commands.run("for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done").stdout
        assert "for p in" in procs  # the listing sees processes (itself) ...
        assert "echo more" not in procs  # ... and the streamed command is gone


def test_run_code(daemon: Daemon, sock: str) -> None:
    with Sandbox(runtime="python:3.11", name=daemon.name("code"), resources=SMALL) as sbx:
        out = sbx.run_code("import sys; print(sum(range(10))); print('e', file=sys.stderr)")
        assert (out.stdout, out.stderr, out.exit_code) == ("45\n", "e\n", 0)
        failed = sbx.run_code("raise ValueError('boom')")
        assert failed.exit_code == 1 and "ValueError: boom" in failed.stderr
        # Quotes and newlines pass untouched (an argument, no shell in between).
        assert sbx.run_code("s = '''a \"b\" $c `d`\n'''\nprint(s, end='')").stdout == 'a "b" $c `d`\n'
        # Code above 100,000 bytes goes on stdin (one argument is at most 128 KiB).
        big = "x = 0\n" + "x += 1\n" * 30000 + "print(x)\n"
        assert len(big) > 200_000
        assert sbx.run_code(big).stdout == "30000\n"
        assert sbx.run_code("echo $0", language="sh").stdout == "sh\n"
        with pytest.raises(ValueError):
            sbx.run_code("1", language="cobol")


def test_run_code_node(daemon: Daemon, sock: str) -> None:
    with Sandbox(runtime="node:18", name=daemon.name("node"), resources=SMALL) as sbx:
        assert sbx.run_code("console.log([1,2,3].map(x => x * 2).join(','))", language="javascript").stdout == "2,4,6\n"


def test_files_round_trip(daemon: Daemon, sock: str) -> None:
    with Sandbox(name=daemon.name("files"), resources=SMALL) as sbx:
        data = bytes(range(256)) * 1000 + b"\x00\xff\r\n"
        info = sbx.files.write("/workspace/deep/er/blob.bin", data)
        assert info.path == "/workspace/deep/er/blob.bin"
        assert info.bytes == len(data) and info.sha256 == hashlib.sha256(data).hexdigest()
        assert sbx.files.read("/workspace/deep/er/blob.bin") == data
        # The process in the sandbox sees the same bytes, as its user.
        r = sbx.commands.run("sha256sum /workspace/deep/er/blob.bin; stat -c '%u %a' /workspace/deep/er/blob.bin")
        assert r.stdout.split() == [info.sha256, "/workspace/deep/er/blob.bin", "1000", "644"]
        # Written in the sandbox, read through the API; str is UTF-8; names that need encoding.
        sbx.commands.run("printf 'made inside' > '/tmp/a b?#%.txt'")
        assert sbx.files.read("/tmp/a b?#%.txt") == b"made inside"
        sbx.files.write("/tmp/ünï.txt", "grüße\n")
        assert sbx.files.read("/tmp/ünï.txt") == "grüße\n".encode()
        assert sbx.files.write("/tmp/empty", b"").bytes == 0 and sbx.files.read("/tmp/empty") == b""
        with pytest.raises(FileNotFound) as missing:
            sbx.files.read("/workspace/nope")
        assert missing.value.status == 404 and missing.value.code == "file_not_found"
        with pytest.raises(Conflict):
            sbx.files.read("/workspace/deep")
        with pytest.raises(PolicyRefused) as outside:
            sbx.files.write("/etc/passwd", b"x")
        assert outside.value.code == "not_writable" and outside.value.field == "path"
        with pytest.raises(ValueError):
            sbx.files.read("workspace/relative")


def test_file_paths_are_not_normalised_by_the_client(daemon: Daemon, sock: str) -> None:
    """A '..' in a file path reaches the daemon (which refuses it), never a URL of another
    route or sandbox: '/../../OTHER/files/workspace/x' must not read OTHER's file."""
    with Sandbox(name=daemon.name("other"), resources=SMALL) as other, Sandbox(name=daemon.name("me"), resources=SMALL) as me:
        other.files.write("/workspace/secret", b"other's")
        for path in (f"/../../{other.name}/files/workspace/secret", "/workspace/../workspace/secret", "/workspace/./x"):
            with pytest.raises(PolicyRefused) as refused:
                me.files.read(path)
            assert refused.value.code == "path_escape", path
        with pytest.raises(PolicyRefused) as refused:
            me.files.write("/tmp/../workspace/y", b"x")
        assert refused.value.code == "path_escape"
        # A symlink the sandbox planted is refused, not followed.
        me.commands.run("ln -s /etc /workspace/link")
        with pytest.raises(PolicyRefused) as refused:
            me.files.read("/workspace/link/passwd")
        assert refused.value.code == "path_escape"


def test_file_too_large(daemon: Daemon, sock: str) -> None:
    from conftest import MAX_FILE_BYTES

    with Sandbox(name=daemon.name("big"), resources=SMALL) as sbx:
        with pytest.raises(QuotaExceeded) as too_large:
            sbx.files.write("/workspace/big", b"\0" * (MAX_FILE_BYTES + 1))
        assert too_large.value.status == 413 and too_large.value.code == "too_large"
        assert sbx.files.write("/workspace/ok", b"\1" * MAX_FILE_BYTES).bytes == MAX_FILE_BYTES


def test_connect_and_list(daemon: Daemon, sock: str) -> None:
    with Sandbox(name=daemon.name("one"), resources=SMALL) as one, Sandbox(name=daemon.name("two"), resources=SMALL):
        one.files.write("/workspace/note", b"left by one")
        again = Sandbox.connect(one.name)
        assert again.name == one.name and again.info.phase == "Running"
        assert again.files.read("/workspace/note") == b"left by one"
        assert again.commands.run("cat /workspace/note").stdout == "left by one"
        again.close()  # detaches; the sandbox stays
        assert one.commands.run("true").exit_code == 0
        listed = Sandbox.list()
        assert sorted(s.name for s in listed) == sorted([daemon.name("one"), daemon.name("two")])
        assert all(s.phase == "Running" and s.usage is None for s in listed)
        with pytest.raises(SandboxNotFound) as unknown:
            Sandbox.connect(daemon.name("nobody"))
        assert unknown.value.code == "not_found" and unknown.value.status == 404
    assert Sandbox.list() == []


def test_connect_as_context_manager_deletes(daemon: Daemon, sock: str) -> None:
    sbx = Sandbox(name=daemon.name("conn"), resources=SMALL)
    sbx.close()
    with Sandbox.connect(daemon.name("conn")) as attached:
        assert attached.commands.run("echo x").stdout == "x\n"
    assert Sandbox.list() == []


def test_command_timeout(daemon: Daemon, sock: str) -> None:
    with Sandbox(name=daemon.name("tmo"), resources=SMALL) as sbx:
        with pytest.raises(Timeout) as timed_out:
            sbx.commands.run("echo before; exec sleep 60", timeout=1)
        result = timed_out.value.result
        assert isinstance(result, CommandResult)
        assert result.timed_out and result.exit_code == 137 and result.stdout == "before\n"
        chunks: List[str] = []
        with pytest.raises(Timeout) as streamed:
            sbx.commands.run("echo s; exec sleep 60", timeout=1, on_stdout=chunks.append)
        assert chunks == ["s\n"] and streamed.value.result is not None and streamed.value.result.exit_code == 137
        # The sandbox's default limit of one exec (spec.timeout).
    with Sandbox(name=daemon.name("tmo2"), resources=SMALL, exec_timeout=1) as sbx:
        with pytest.raises(Timeout):
            sbx.run_code("import time; time.sleep(60)")
        assert sbx.commands.run("echo fine").stdout == "fine\n"


def test_lifetime_timeout_removes_the_sandbox(daemon: Daemon, sock: str) -> None:
    sbx = Sandbox(name=daemon.name("life1"), resources=SMALL, timeout=1)
    try:
        # The daemon removes it once its lifetime is over: Running, Deleting, then gone.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                sbx.get_info()
            except SandboxNotFound:
                break
            time.sleep(0.1)
        with pytest.raises(SandboxNotFound):
            sbx.commands.run("true")
        assert not sbx.is_running()
        assert sbx.kill() is False
    finally:
        sbx.kill()
        sbx.close()


def test_result_fields_truncated_and_oom_killed(daemon: Daemon, sock: str) -> None:
    from conftest import MAX_EXEC_OUTPUT_BYTES

    with Sandbox(name=daemon.name("fields"), resources=SMALL) as sbx:
        size = 2 * MAX_EXEC_OUTPUT_BYTES
        cut = sbx.commands.run(f"head -c {size} /dev/zero | tr '\\0' x")
        assert cut.exit_code == 0 and cut.truncated and len(cut.stdout) <= MAX_EXEC_OUTPUT_BYTES
        # Streamed, nothing is dropped.
        chunks: List[str] = []
        whole = sbx.commands.run(f"head -c {size} /dev/zero | tr '\\0' x", on_stdout=chunks.append)
        assert not whole.truncated and len(whole.stdout) == size and "".join(chunks) == whole.stdout
        # Past the sandbox's 128 MiB the OOM killer ends it.
        oom = sbx.run_code("b = []\nwhile True: b.append(bytearray(16 << 20))")
        assert oom.oom_killed and oom.exit_code == 137
