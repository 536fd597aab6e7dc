"""The synchronous client: :class:`Sandbox`, its :class:`Commands` and :class:`Files`."""

from __future__ import annotations

from contextlib import closing
from types import TracebackType
from typing import Any, Callable, Generator, List, Mapping, Optional, Sequence, Type, Union

import httpx

from . import _core
from ._core import EgressRule
from ._errors import SafeSpaceError
from ._models import CommandResult, SandboxInfo, WriteInfo

__all__ = ["Sandbox", "Commands", "Files", "OutputCallback"]

OutputCallback = Callable[[str], Any]
"""Called with each chunk of output as the daemon streams it (a str, whole UTF-8
characters; a chunk is not a line)."""


class _Http:
    """One keep-alive HTTP/1.1 client on the daemon's unix socket (httpx's ``uds``
    transport)."""

    def __init__(self, socket: Optional[str], request_timeout: float) -> None:
        self.socket = _core.socket_path(socket)
        self.request_timeout = request_timeout
        self._client: Optional[httpx.Client] = None

    @property
    def client(self) -> httpx.Client:
        """The connection pool, (re)opened on first use: a closed sandbox object still
        answers calls, on a new connection."""
        if self._client is None:
            self._client = httpx.Client(
                transport=httpx.HTTPTransport(uds=self.socket),
                base_url=_core.BASE_URL,
                timeout=_core.timeouts(self.request_timeout),
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            client.close()

    def call(
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
        ``read_timeout``: seconds to wait for the answer (None: no limit); default: the
        client's ``request_timeout``.

        Raises:
            SafeSpaceError: the typed error of a non-2xx answer or of a transport failure.
        """
        request = f"{method} {path}"
        timeout = _core.timeouts(self.request_timeout if read_timeout is _core.USE_DEFAULT else read_timeout)
        with _core.transport_errors(self.socket, request):
            response = self.client.request(method, path, json=json, content=content, timeout=timeout)
        _core.raise_for_status(response.status_code, response.content, request)
        return _core.decode_json(response.content, request) if expect_json else response.content

    def stream_lines(self, method: str, path: str, *, json: Any, read_timeout: Optional[float]) -> Generator[str, None, None]:
        """An NDJSON answer, line by line (split at ``\\n`` only: a JSON string may hold
        U+2028 or ``\\r``, which ``str.splitlines`` would split at)."""
        request = f"{method} {path}"
        headers = {"Accept": _core.NDJSON}
        with _core.transport_errors(self.socket, request):
            with self.client.stream(method, path, json=json, headers=headers, timeout=_core.timeouts(read_timeout)) as response:
                if response.status_code >= 300:
                    response.read()
                    _core.raise_for_status(response.status_code, response.content, request)
                pending = b""
                for chunk in response.iter_bytes():
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        yield line.decode("utf-8", errors="replace")
                if pending:
                    yield pending.decode("utf-8", errors="replace")


class Commands:
    """``sbx.commands``: processes in the sandbox (``POST /v1/sandboxes/{name}/exec``)."""

    def __init__(self, sandbox: "Sandbox") -> None:
        self._sandbox = sandbox

    def run(
        self,
        cmd: str,
        *,
        timeout: Optional[float] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        envs: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        stdin: Optional[str] = None,
    ) -> CommandResult:
        """Runs ``cmd`` through ``sh -c`` as the sandbox's user, with its environment, and
        waits for it.

        Args:
            cmd: A shell command line.
            timeout: Seconds (rounded up to whole seconds) after which the daemon kills it;
                default: the sandbox's ``exec_timeout`` (``spec.timeout``), else none.
            on_stdout: Called with each chunk of stdout as it is written (the exec is then
                streamed: ``Accept: application/x-ndjson``); all chunks are also in the result.
            on_stderr: The same for stderr. An exception from a callback ends the call; the
                daemon sees the connection close and kills the process.
            envs: Variables added to (or replacing) the sandbox's environment.
            cwd: Absolute working directory in the sandbox.
            stdin: Text written to the process's stdin (then closed); default: empty.

        Returns:
            The result; a non-zero ``exit_code`` is not an error.

        Raises:
            Timeout: the process ran past ``timeout`` and was killed (``e.result`` has its
                output and exit code 137).
            SandboxNotFound: the sandbox is gone.
            PolicyRefused: a bad field (``field`` names it: ``cwd``, ``env``, ...).
            SafeSpaceError: any other refusal or failure, typed by the API's error code.
        """
        return self.exec(["sh", "-c", cmd], timeout=timeout, on_stdout=on_stdout, on_stderr=on_stderr, envs=envs, cwd=cwd, stdin=stdin)

    def exec(
        self,
        argv: Sequence[str],
        *,
        timeout: Optional[float] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        envs: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        stdin: Optional[str] = None,
    ) -> CommandResult:
        """Runs ``argv`` as given (no shell); otherwise as :meth:`run`."""
        sbx = self._sandbox
        path = _core.sandbox_path(sbx.name, "/exec")
        body = _core.exec_body(argv, envs=envs, cwd=cwd, timeout=timeout, stdin=stdin)
        read_timeout = _core.exec_read_timeout(timeout)
        if on_stdout is None and on_stderr is None:
            obj = sbx._http.call("POST", path, json=body, read_timeout=read_timeout)
            result = CommandResult.from_api(obj)
        else:
            stream = _core.ExecStream(f"POST {path}")
            # closing: a callback that raises ends the answer at once (the daemon then kills
            # the process: the client disconnected).
            with closing(sbx._http.stream_lines("POST", path, json=body, read_timeout=read_timeout)) as lines:
                for line in lines:
                    event = stream.feed(line)
                    if event is None:
                        continue
                    which, text = event
                    callback = on_stdout if which == "stdout" else on_stderr
                    if callback is not None:
                        callback(text)
            result = stream.finish()
        return _core.check_result(result, f"POST {path}", timeout)


class Files:
    """``sbx.files``: files below the sandbox's writable paths
    (``/v1/sandboxes/{name}/files/{path}``). Paths are absolute paths in the sandbox; the daemon
    resolves them in the sandbox's own root and refuses ``.``/``..``, symlinks and mount points
    on the way (``PolicyRefused``, code ``path_escape``) and paths outside the writable paths
    (``not_writable``)."""

    def __init__(self, sandbox: "Sandbox") -> None:
        self._sandbox = sandbox

    def write(self, path: str, data: Union[bytes, bytearray, memoryview, str]) -> WriteInfo:
        """Writes ``data`` (a str is encoded as UTF-8) to ``path``, replacing the file; created
        0644 (missing directories 0755), owned by the sandbox's user.

        Raises:
            ValueError: ``path`` is not absolute.
            PolicyRefused: outside the writable paths, or through a symlink.
            QuotaExceeded: above the daemon's ``limits.maxFileBytes``, or the sandbox's storage
                is full.
        """
        content = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        sbx = self._sandbox
        obj = sbx._http.call("PUT", _core.sandbox_path(sbx.name, "/files/", _core.file_path(path)), content=content)
        return WriteInfo(path=str(obj["path"]), bytes=int(obj["bytes"]), sha256=str(obj["sha256"]))

    def read(self, path: str) -> bytes:
        """The bytes of the file at ``path``.

        Raises:
            ValueError: ``path`` is not absolute.
            FileNotFound: no such file.
            Conflict: not a regular file (``not_a_file``).
            PolicyRefused: outside the writable paths, or through a symlink.
            QuotaExceeded: above the daemon's ``limits.maxFileBytes``.
        """
        sbx = self._sandbox
        data: bytes = sbx._http.call("GET", _core.sandbox_path(sbx.name, "/files/", _core.file_path(path)), expect_json=False)
        return data


class Sandbox:
    """A sandbox of safespaced, created (and started) by the constructor.

    Used as a context manager, it is deleted on exit (also when the block raised)::

        with Sandbox(runtime="python:3.11", timeout=600) as sbx:
            print(sbx.commands.run("echo hi").stdout)

    Each instance keeps one keep-alive connection to the daemon's socket:
    ``socket`` if given, else ``$SAFESPACE_SOCKET``, else ``/run/safespace/safespaced.sock``.
    The calling user must be root or in the daemon's group; a non-root user sees only its
    own sandboxes.
    """

    name: str
    """``metadata.name``: given, or generated by the daemon (``sandbox-<8 hex>``)."""
    info: SandboxInfo
    """The daemon's description when created (or connected); :meth:`get_info` refreshes it."""
    commands: Commands
    files: Files

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
        """Creates and starts a sandbox (``POST /v1/sandboxes``).

        Args:
            runtime: ``spec.runtime`` (``python:3.11``, ``node:18``); default: the daemon's.
            security_level: ``spec.securityLevel`` (``standard``, ``high``, ``custom``).
            egress: ``spec.networkAccess.egress``: domains (``"pypi.org"``) or rules
                (``{"domain": "pypi.org", "ports": [{"port": 443}]}``).
            timeout: The sandbox's lifetime in seconds (``spec.timeoutSeconds``): the daemon
                removes it when over.
            name: ``metadata.name`` (a DNS-1123 label); default: generated.
            resources: ``spec.resources`` (``{"cpu": "500m", "memory": "256Mi",
                "ephemeralStorage": "1Gi"}``); what is left out comes from the node's defaults.
            exec_timeout: ``spec.timeout``, the default time limit of each exec, seconds.
            spec: Other Sandbox spec fields, as the API takes them.
            labels: ``metadata.labels``.
            socket: The daemon's socket path.
            request_timeout: Seconds to wait for an answer to a call other than an exec.

        Raises:
            PolicyRefused: a field the daemon refuses (``e.field`` names it); also a field it
                cannot enforce yet (code ``not_enforceable``).
            QuotaExceeded: the node's allocatable CPU or memory, or its sandbox count, would
                be exceeded (429).
            Conflict: the name is taken.
            Unavailable: no daemon on the socket, or it is shutting down.
        """
        body = _core.create_body(
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
        http = _Http(socket, request_timeout)
        try:
            obj = http.call("POST", "/v1/sandboxes", json=body)
        except BaseException:
            http.close()
            raise
        self._attach(http, SandboxInfo.from_api(obj))

    def _attach(self, http: _Http, info: SandboxInfo) -> None:
        self._http = http
        self.info = info
        self.name = info.name
        self.commands = Commands(self)
        self.files = Files(self)

    @classmethod
    def _from_info(cls, http: _Http, info: SandboxInfo) -> "Sandbox":
        sbx = cls.__new__(cls)
        sbx._attach(http, info)
        return sbx

    @classmethod
    def connect(cls, name: str, *, socket: Optional[str] = None, request_timeout: float = _core.DEFAULT_REQUEST_TIMEOUT) -> "Sandbox":
        """Attaches to a sandbox that exists (``GET /v1/sandboxes/{name}``). Used as a context
        manager, it too is deleted on exit; :meth:`close` detaches without deleting.

        Raises:
            SandboxNotFound: no sandbox of that name (or not one the caller may see).
        """
        http = _Http(socket, request_timeout)
        try:
            obj = http.call("GET", _core.sandbox_path(name))
        except BaseException:
            http.close()
            raise
        return cls._from_info(http, SandboxInfo.from_api(obj))

    @classmethod
    def from_pool(cls, pool: str, *, socket: Optional[str] = None, request_timeout: float = _core.DEFAULT_REQUEST_TIMEOUT) -> "Sandbox":
        """Claims a ready sandbox of the warm pool ``pool`` (``POST /v1/sandboxes?pool=NAME``,
        no body).

        The daemon hands over a ready sandbox of the pool, made before the claim, in this one
        request; the caller owns it from then on (``info.warm`` is True). When the pool is
        empty, the pool's ``spec.whenEmpty`` (or the daemon's ``pools.whenEmpty``) decides: a
        sandbox made for the claim from the pool's template (``info.warm`` False, said by the
        daemon in ``status.claim.outcome: cold``), or 503 ``pool_empty``. A daemon that answers
        201 without ``status.warm`` ignored ``pool`` (an old daemon): the sandbox it made is
        deleted and :class:`SafeSpaceError` (code ``pool_ignored``) raised, never a sandbox of
        unknown origin passed off as a pool's.

        Raises:
            NotFound: no pool of that name (``pool_not_found``).
            Unavailable: the pool is empty and refuses (``pool_empty``), or the daemon stops.
            PolicyRefused: the daemon refused the claim.
            SafeSpaceError: ``pool_ignored``, or any other typed error of the answer.
        """
        http = _Http(socket, request_timeout)
        try:
            obj = http.call("POST", "/v1/sandboxes?pool=" + _core.segment(pool))
            info = SandboxInfo.from_api(obj)
            if "warm" not in (obj.get("status") or {}):
                _delete_ignored_claim(http, info.name)
                raise SafeSpaceError(
                    f"the daemon ignored pool={pool!r} and created a cold sandbox {info.name} (deleted again): it does not serve warm pools",
                    code="pool_ignored",
                    status=201,
                    request="POST /v1/sandboxes?pool=" + pool,
                )
        except BaseException:
            http.close()
            raise
        return cls._from_info(http, info)

    @classmethod
    def list(cls, *, socket: Optional[str] = None, request_timeout: float = _core.DEFAULT_REQUEST_TIMEOUT) -> List[SandboxInfo]:
        """The caller's sandboxes (root: all), by name (``GET /v1/sandboxes``; no usage)."""
        http = _Http(socket, request_timeout)
        try:
            obj = http.call("GET", "/v1/sandboxes")
        finally:
            http.close()
        return [SandboxInfo.from_api(item) for item in obj.get("items", [])]

    def get_info(self) -> SandboxInfo:
        """The daemon's description now, with ``usage`` from the sandbox's cgroup.

        Raises:
            SandboxNotFound: it is gone (deleted, or its lifetime is over).
        """
        self.info = SandboxInfo.from_api(self._http.call("GET", _core.sandbox_path(self.name)))
        return self.info

    def is_running(self) -> bool:
        """True while the daemon has it with phase ``Running``."""
        try:
            return self.get_info().phase == "Running"
        except SafeSpaceError as e:
            if e.code == "not_found":
                return False
            raise

    def run_code(
        self,
        code: str,
        language: str = "python",
        *,
        timeout: Optional[float] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        envs: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
    ) -> CommandResult:
        """Runs ``code`` in a fresh interpreter: ``python3 -c CODE`` (``language="python"``),
        ``node -e`` (``javascript``), ``sh -c`` (``sh``); code above 100,000 bytes goes on
        stdin. Arguments and errors as :meth:`Commands.run`. (A warm interpreter, the API's
        ``{"code": ...}`` exec of warm pools, is not served by the daemon yet.)"""
        argv, stdin = _core.code_command(code, language)
        return self.commands.exec(argv, timeout=timeout, on_stdout=on_stdout, on_stderr=on_stderr, envs=envs, cwd=cwd, stdin=stdin)

    def kill(self) -> bool:
        """Deletes the sandbox (``DELETE /v1/sandboxes/{name}``): its processes are killed and
        everything it holds released.

        Returns:
            True when this call deleted it, False when it was gone already or another
            deletion (its lifetime's end, another client) is under way.
        """
        try:
            self._http.call("DELETE", _core.sandbox_path(self.name))
        except SafeSpaceError as e:
            if e.code in ("not_found", "being_deleted"):
                return False
            raise
        return True

    delete = kill

    def close(self) -> None:
        """Closes the connection to the daemon; the sandbox stays."""
        self._http.close()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        try:
            self.kill()
        finally:
            self.close()

    def __repr__(self) -> str:
        return f"Sandbox(name={self.name!r}, runtime={self.info.runtime!r}, level={self.info.level!r})"


def _delete_ignored_claim(http: _Http, name: str) -> None:
    try:
        http.call("DELETE", _core.sandbox_path(name))
    except SafeSpaceError as e:
        if e.code != "not_found":
            raise

