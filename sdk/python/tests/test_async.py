"""The asyncio client against the real daemon (plain asyncio.run: no test plugin needed)."""

from __future__ import annotations

import asyncio
from typing import List, Tuple

import pytest

from conftest import SMALL, Daemon
from safespace import AsyncSandbox, FileNotFound, PolicyRefused, Sandbox, SandboxNotFound, Timeout


def test_async_lifecycle_commands_files(daemon: Daemon, sock: str) -> None:
    async def main() -> None:
        async with AsyncSandbox(runtime="python:3.11", name=daemon.name("async"), resources=SMALL, timeout=600) as sbx:
            assert sbx.name == daemon.name("async") and sbx.info is not None and sbx.info.phase == "Running"
            r = await sbx.commands.run("echo out; echo err >&2; exit 7", envs={"A": "1"})
            assert (r.stdout, r.stderr, r.exit_code) == ("out\n", "err\n", 7)
            out = await sbx.run_code("print(6 * 7)")
            assert out.stdout == "42\n" and out.exit_code == 0
            data = bytes(range(256)) * 64
            assert (await sbx.files.write("/workspace/b.bin", data)).bytes == len(data)
            assert await sbx.files.read("/workspace/b.bin") == data
            with pytest.raises(FileNotFound):
                await sbx.files.read("/workspace/missing")
            assert [s.name for s in await AsyncSandbox.list()] == [sbx.name]
            again = await AsyncSandbox.connect(sbx.name)
            assert (await again.files.read("/workspace/b.bin")) == data
            await again.close()
            info = await sbx.get_info()
            assert info.usage is not None
        assert await AsyncSandbox.list() == []
        assert await sbx.kill() is False

    asyncio.run(main())


def test_async_streaming_with_coroutine_callbacks_in_order(daemon: Daemon, sock: str) -> None:
    """As the sync streaming test: the command waits for files the callbacks write."""

    async def main() -> None:
        sbx = await AsyncSandbox.create(name=daemon.name("astream"), resources=SMALL)
        try:
            events: List[Tuple[str, str]] = []

            async def on_stdout(text: str) -> None:
                events.append(("stdout", text))
                await sbx.files.write("/tmp/go1", b"")

            def on_stderr(text: str) -> None:  # a plain function is fine too
                events.append(("stderr", text))

            wait = "n=0; while [ ! -e /tmp/go1 ]; do sleep 0.02; n=$((n+1)); [ $n -lt 3000 ] || exit 99; done"
            r = await sbx.commands.run(f"echo a; {wait}; echo b >&2", timeout=120, on_stdout=on_stdout, on_stderr=on_stderr)
            assert events == [("stdout", "a\n"), ("stderr", "b\n")]
            assert (r.stdout, r.stderr, r.exit_code) == ("a\n", "b\n", 0)
        finally:
            assert await sbx.kill() is True
            await sbx.close()

    asyncio.run(main())


def test_async_concurrent_execs_and_errors(daemon: Daemon, sock: str) -> None:
    async def main() -> None:
        async with AsyncSandbox(name=daemon.name("aconc"), resources=SMALL) as sbx:
            # Many execs in one sandbox at once: each waits for all to have started.
            n = 4
            script = "touch /tmp/started.$0; while [ $(ls /tmp | grep -c started) -lt {n} ]; do sleep 0.02; done; echo $0"
            results = await asyncio.gather(*(sbx.commands.exec(["sh", "-c", script.format(n=n), str(i)], timeout=120) for i in range(n)))
            assert [r.stdout for r in results] == [f"{i}\n" for i in range(n)]
            with pytest.raises(Timeout) as timed_out:
                await sbx.commands.run("exec sleep 60", timeout=1)
            assert timed_out.value.result is not None and timed_out.value.result.exit_code == 137
            with pytest.raises(PolicyRefused):
                await sbx.files.write("/etc/x", b"")
        with pytest.raises(SandboxNotFound):
            await AsyncSandbox.connect(daemon.name("aconc"))
        # egress is served by the daemon's filter: a name not on the list gets NXDOMAIN.
        probe = (
            "import socket\ntry:\n    socket.getaddrinfo('example.com', 443)\n    print('resolved')\n"
            "except socket.gaierror as e:\n    print('nxdomain' if e.errno == socket.EAI_NONAME else e.errno)\n"
        )
        async with AsyncSandbox(name=daemon.name("anet"), resources=SMALL, egress=["pypi.org"]) as net:
            looked_up = await net.commands.exec(["python3", "-c", probe], timeout=60)
            assert looked_up.stdout == "nxdomain\n", looked_up.stderr
        unstarted = AsyncSandbox(resources=SMALL)
        with pytest.raises(RuntimeError):
            unstarted.name

    asyncio.run(main())
    assert Sandbox.list() == []
