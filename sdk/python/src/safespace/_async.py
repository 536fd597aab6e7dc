"""The asyncio client: :class:`AsyncSandbox`, its :class:`AsyncCommands` and
:class:`AsyncFiles`. Same calls, same errors as the synchronous client, awaited."""

from __future__ import annotations

import inspect
from types import TracebackType
from typing import Any, AsyncGenerator, Awaitable, Callable, Dict, List, Mapping, Optional, Sequence, Type, Union

import httpx

from . import _core
from ._core import EgressRule
from ._errors import SafeSpaceError
from ._models import CommandResult, SandboxInfo, WriteInfo

__all__ = ["AsyncSandbox", "AsyncCommands", "AsyncFiles", "AsyncOutputCallback"]

AsyncOutputCallback = Callable[[str], Union[Any, Awaitable[Any]]]
"""Called with each chunk of output; a coroutine function's result is awaited before the
next chunk is read."""


class _AsyncHttp:
    """One keep-alive HTTP/1.1 client on the daemon's unix socket (httpx's async ``uds``
    transport)."""

    def __init__(self, socket: Optional[str], request_timeout: float) -> None:
        self.socket = _core.socket_path(socket)
        self.request_timeout = request_timeout
        self._client: Optional[httpx.AsyncClient] = None

    @property
    def client(self) -> httpx.AsyncClient:
        """The connection pool, (re)opened on first use: a closed sandbox object still
        answers calls, on a new connection."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=httpx.AsyncHTTPTransport(uds=self.socket),
                base_url=_core.BASE_URL,
                timeout=_core.timeouts(self.request_timeout),
            )
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: Optional[bytes] = None,
        read_timeout: Any = _core.USE_DEFAULT,
        expect_json: bool = True,
    ) -> Any:
        """One request; the decoded JSON (or the raw bytes with ``expect_json=False``).

        Raises:
            SafeSpaceError: the typed error of a non-2xx answer or of a transport failure.
        """
        request = f"{method} {path}"
        timeout = _core.timeouts(self.request_timeout if read_timeout is _core.USE_DEFAULT else read_timeout)
        with _core.transport_errors(self.socket, request):
            response = await self.client.request(method, path, json=json, content=content, timeout=timeout)
        _core.raise_for_status(response.status_code, response.content, request)
        return _core.decode_json(response.content, request) if expect_json else response.content

    async def stream_lines(self, method: str, path: str, *, json: Any, read_timeout: Optional[float]) -> AsyncGenerator[str, None]:
        """An NDJSON answer, line by line (split at ``\\n`` only)."""
        request = f"{method} {path}"
        headers = {"Accept": _core.NDJSON}
        with _core.transport_errors(self.socket, request):
            async with self.client.stream(method, path, json=json, headers=headers, timeout=_core.timeouts(read_timeout)) as response:
                if response.status_code >= 300:
                    await response.aread()
                    _core.raise_for_status(response.status_code, response.content, request)
                pending = b""
                async for chunk in response.aiter_bytes():
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        yield line.decode("utf-8", errors="replace")
                if pending:
                    yield pending.decode("utf-8", errors="replace")


async def _call_back(callback: Optional[AsyncOutputCallback], text: str) -> None:
    if callback is None:
        return
    result = callback(text)
    if inspect.isawaitable(result):
        await result


class AsyncCommands:
    """``sbx.commands`` of an :class:`AsyncSandbox`."""

    def __init__(self, sandbox: "AsyncSandbox") -> None:
        self._sandbox = sandbox

    async def run(
        self,
        cmd: str,
        *,
        timeout: Optional[float] = None,
        on_stdout: Optional[AsyncOutputCallback] = None,
        on_stderr: Optional[AsyncOutputCallback] = None,
        envs: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        stdin: Optional[str] = None,
    ) -> CommandResult:
        """Runs ``cmd`` through ``sh -c``; see :meth:`safespace.Commands.run`. Callbacks may be
        plain functions or coroutine functions."""
        return await self.exec(["sh", "-c", cmd], timeout=timeout, on_stdout=on_stdout, on_stderr=on_stderr, envs=envs, cwd=cwd, stdin=stdin)

    async def exec(
        self,
        argv: Sequence[str],
        *,
        timeout: Optional[float] = None,
        on_stdout: Optional[AsyncOutputCallback] = None,
        on_stderr: Optional[AsyncOutputCallback] = None,
        envs: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        stdin: Optional[str] = None,
    ) -> CommandResult:
        """Runs ``argv`` as given (no shell); otherwise as :meth:`run`."""
        sbx = self._sandbox
        path = _core.sandbox_path(sbx.name, "/exec")
        body = _core.exec_body(argv, envs=envs, cwd=cwd, timeout=timeout, stdin=stdin)
        read_timeout = _core.exec_read_timeout(timeout)
        http = sbx._require_http()
        if on_stdout is None and on_stderr is None:
            obj = await http.call("POST", path, json=body, read_timeout=read_timeout)
            result = CommandResult.from_api(obj)
        else:
            stream = _core.ExecStream(f"POST {path}")
            lines = http.stream_lines("POST", path, json=body, read_timeout=read_timeout)
            try:
                async for line in lines:
                    event = stream.feed(line)
                    if event is not None:
                        which, text = event
                        await _call_back(on_stdout if which == "stdout" else on_stderr, text)
            finally:
                await lines.aclose()
            result = stream.finish()
        return _core.check_result(result, f"POST {path}", timeout)


class AsyncFiles:
    """``sbx.files`` of an :class:`AsyncSandbox`; see :class:`safespace.Files`."""

    def __init__(self, sandbox: "AsyncSandbox") -> None:
        self._sandbox = sandbox

    async def write(self, path: str, data: Union[bytes, bytearray, memoryview, str]) -> WriteInfo:
        """Writes ``data`` (a str as UTF-8) to ``path``; see :meth:`safespace.Files.write`."""
        content = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        sbx = self._sandbox
        obj = await sbx._require_http().call("PUT", _core.sandbox_path(sbx.name, "/files/", _core.file_path(path)), content=content)
        return WriteInfo(path=str(obj["path"]), bytes=int(obj["bytes"]), sha256=str(obj["sha256"]))

    async def read(self, path: str) -> bytes:
        """The bytes of the file at ``path``; see :meth:`safespace.Files.read`."""
        sbx = self._sandbox
        data: bytes = await sbx._require_http().call("GET", _core.sandbox_path(sbx.name, "/files/", _core.file_path(path)), expect_json=False)
        return data


class AsyncSandbox:
    """The asyncio twin of :class:`safespace.Sandbox`.

    ``AsyncSandbox(...)`` only holds the arguments; the sandbox is created by
    ``await AsyncSandbox.create(...)``, by :meth:`start`, or on entering ``async with``
    (and deleted on leaving it)::

        async with AsyncSandbox(runtime="python:3.11") as sbx:
            r = await sbx.commands.run("echo hi")
    """

    info: Optional[SandboxInfo]
    commands: AsyncCommands
    files: AsyncFiles

    def __init__(
        self,
        runtime: Optional[str] = None,
        *,
        security_level: Optional[str] = None,
        egress: Optional[Sequence[EgressRule]] = None,
        timeout: Optional[int] = None,
        name: Optional[str] = None,
        resources: Optional[Mapping[str, Any]] = None,
        exec_timeout: Optional[int] = None,
        spec: Optional[Mapping[str, Any]] = None,
        labels: Optional[Mapping[str, str]] = None,
        socket: Optional[str] = None,
        request_timeout: float = _core.DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        """Arguments as :class:`safespace.Sandbox`; nothing is sent until :meth:`start`.

        Raises:
            ValueError: a bad argument (``spec`` repeating one, a non-positive timeout).
        """
        self._body: Optional[Dict[str, Any]] = _core.create_body(
            name=name,
            runtime=runtime,
            security_level=security_level,
            egress=egress,
            timeout=timeout,
            exec_timeout=exec_timeout,
            resources=resources,
            spec=spec,
            labels=labels,
        )
        self._socket = socket
        self._request_timeout = request_timeout
        self._http: Optional[_AsyncHttp] = None
        self._name: Optional[str] = None
        self.info = None
        self.commands = AsyncCommands(self)
        self.files = AsyncFiles(self)

    @property
    def name(self) -> str:
        """``metadata.name``.

        Raises:
            RuntimeError: not created yet.
        """
        if self._name is None:
            raise RuntimeError("the sandbox is not created yet: await AsyncSandbox.create(...), sbx.start() or use async with")
        return self._name

    def _require_http(self) -> _AsyncHttp:
        if self._http is None:
            raise RuntimeError("the sandbox is not created yet (or was closed)")
        return self._http

    def _attach(self, http: _AsyncHttp, info: SandboxInfo) -> None:
        self._http = http
        self._body = None
        self._name = info.name
        self.info = info

    async def start(self) -> "AsyncSandbox":
        """Creates and starts the sandbox (``POST /v1/sandboxes``); errors as
        :class:`safespace.Sandbox`.

        Raises:
            RuntimeError: it was created (or connected) already.
        """
        if self._body is None:
            raise RuntimeError(f"sandbox {self._name} exists already")
        http = _AsyncHttp(self._socket, self._request_timeout)
        try:
            obj = await http.call("POST", "/v1/sandboxes", json=self._body)
        except BaseException:
            await http.close()
            raise
        self._attach(http, SandboxInfo.from_api(obj))
        return self

    @classmethod
    async def create(
        cls,
        runtime: Optional[str] = None,
        *,
        security_level: Optional[str] = None,
        egress: Optional[Sequence[EgressRule]] = None,
        timeout: Optional[int] = None,
        name: Optional[str] = None,
        resources: Optional[Mapping[str, Any]] = None,
        exec_timeout: Optional[int] = None,
        spec: Optional[Mapping[str, Any]] = None,
        labels: Optional[Mapping[str, str]] = None,
        socket: Optional[str] = None,
        request_timeout: float = _core.DEFAULT_REQUEST_TIMEOUT,
    ) -> "AsyncSandbox":
        """Creates and starts a sandbox; arguments and errors as :class:`safespace.Sandbox`."""
        sbx = cls(
            runtime,
            security_level=security_level,
            egress=egress,
            timeout=timeout,
            name=name,
            resources=resources,
            exec_timeout=exec_timeout,
            spec=spec,
            labels=labels,
            socket=socket,
            request_timeout=request_timeout,
        )
        return await sbx.start()

    @classmethod
    def _from_info(cls, http: _AsyncHttp, info: SandboxInfo, socket: Optional[str], request_timeout: float) -> "AsyncSandbox":
        sbx = cls(socket=socket, request_timeout=request_timeout)
        sbx._attach(http, info)
        return sbx

    @classmethod
    async def connect(cls, name: str, *, socket: Optional[str] = None, request_timeout: float = _core.DEFAULT_REQUEST_TIMEOUT) -> "AsyncSandbox":
        """Attaches to a sandbox that exists; see :meth:`safespace.Sandbox.connect`.

        Raises:
            SandboxNotFound: no sandbox of that name.
        """
        http = _AsyncHttp(socket, request_timeout)
        try:
            obj = await http.call("GET", _core.sandbox_path(name))
        except BaseException:
            await http.close()
            raise
        return cls._from_info(http, SandboxInfo.from_api(obj), socket, request_timeout)

    @classmethod
    async def from_pool(cls, pool: str, *, socket: Optional[str] = None, request_timeout: float = _core.DEFAULT_REQUEST_TIMEOUT) -> "AsyncSandbox":
        """Claims a ready sandbox of a warm pool; see :meth:`safespace.Sandbox.from_pool`
        (``info.warm``: made before the claim; a pool that is empty may answer cold or 503)."""
        http = _AsyncHttp(socket, request_timeout)
        try:
            obj = await http.call("POST", "/v1/sandboxes?pool=" + _core.segment(pool))
            info = SandboxInfo.from_api(obj)
            if "warm" not in (obj.get("status") or {}):
                try:
                    await http.call("DELETE", _core.sandbox_path(info.name))
                except SafeSpaceError as e:
                    if e.code != "not_found":
                        raise
                raise SafeSpaceError(
                    f"the daemon ignored pool={pool!r} and created a cold sandbox {info.name} (deleted again): it does not serve warm pools",
                    code="pool_ignored",
                    status=201,
                    request="POST /v1/sandboxes?pool=" + pool,
                )
        except BaseException:
            await http.close()
            raise
        return cls._from_info(http, info, socket, request_timeout)

    @classmethod
    async def list(cls, *, socket: Optional[str] = None, request_timeout: float = _core.DEFAULT_REQUEST_TIMEOUT) -> List[SandboxInfo]:
        """The caller's sandboxes (root: all); see :meth:`safespace.Sandbox.list`."""
        http = _AsyncHttp(socket, request_timeout)
        try:
            obj = await http.call("GET", "/v1/sandboxes")
        finally:
            await http.close()
        return [SandboxInfo.from_api(item) for item in obj.get("items", [])]

    async def get_info(self) -> SandboxInfo:
        """The daemon's description now, with ``usage``.

        Raises:
            SandboxNotFound: it is gone.
        """
        self.info = SandboxInfo.from_api(await self._require_http().call("GET", _core.sandbox_path(self.name)))
        return self.info

    async def run_code(
        self,
        code: str,
        language: str = "python",
        *,
        timeout: Optional[float] = None,
        on_stdout: Optional[AsyncOutputCallback] = None,
        on_stderr: Optional[AsyncOutputCallback] = None,
        envs: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
    ) -> CommandResult:
        """Runs ``code`` in a fresh interpreter; see :meth:`safespace.Sandbox.run_code`."""
        argv, stdin = _core.code_command(code, language)
        return await self.commands.exec(argv, timeout=timeout, on_stdout=on_stdout, on_stderr=on_stderr, envs=envs, cwd=cwd, stdin=stdin)

    async def kill(self) -> bool:
        """Deletes the sandbox.

        Returns:
            True when this call deleted it, False when it was gone already or another
            deletion (its lifetime's end, another client) is under way.
        """
        try:
            await self._require_http().call("DELETE", _core.sandbox_path(self.name))
        except SafeSpaceError as e:
            if e.code in ("not_found", "being_deleted"):
                return False
            raise
        return True

    delete = kill

    async def close(self) -> None:
        """Closes the connection to the daemon; the sandbox stays."""
        if self._http is not None:
            await self._http.close()

    async def __aenter__(self) -> "AsyncSandbox":
        if self._http is None:
            await self.start()
        return self

    async def __aexit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        try:
            await self.kill()
        finally:
            await self.close()

    def __repr__(self) -> str:
        return f"AsyncSandbox(name={self._name!r})"
