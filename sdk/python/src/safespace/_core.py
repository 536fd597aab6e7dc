"""What the sync and the asyncio clients share: the socket, request bodies, URL paths, the
exec stream's decoding and the mapping of transport failures to typed errors."""

from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import quote

import httpx

from ._errors import SafeSpaceError, Timeout, Unavailable, from_error_object, from_response
from ._models import CommandResult

DEFAULT_SOCKET = "/run/safespace/safespaced.sock"
"""The daemon's socket when ``SAFESPACE_SOCKET`` is unset (``DaemonConfig.defaultSocket``)."""

DEFAULT_REQUEST_TIMEOUT = 120.0
"""Seconds a call other than an exec waits for the daemon's answer (a create on a loaded
node takes seconds: it mounts, makes a cgroup and starts the sandbox's init)."""

USE_DEFAULT: Any = object()
"""Marks an argument left at the client's default (where None means "no limit")."""

EXEC_GRACE = 30.0
"""Seconds an exec with a time limit waits beyond it: the daemon kills the process at the
limit and then answers."""

BASE_URL = "http://localhost"
NDJSON = "application/x-ndjson"
ARG_MAX_CODE = 100_000
"""``run_code`` passes code up to this many bytes as an argument (``python3 -c``), larger
code on stdin: one argument is at most MAX_ARG_STRLEN (131072 bytes, execve(2))."""

EgressRule = Union[str, Mapping[str, Any]]


def socket_path(socket: Optional[str]) -> str:
    """``socket`` if given, else ``$SAFESPACE_SOCKET``, else the default socket."""
    return socket or os.environ.get("SAFESPACE_SOCKET") or DEFAULT_SOCKET


def segment(text: str) -> str:
    """One URL path segment: every byte but RFC 3986 unreserved characters percent-encoded,
    and ``.``/``..`` as ``%2E``/``%2E%2E``, so that no client-side normalisation (RFC 3986
    §5.2.4, which httpx applies to raw dot segments) turns it into another URL: a file path
    ``/workspace/../x`` reaches the daemon as written and is refused there (``path_escape``)."""
    if text in (".", ".."):
        return "%2E" * len(text)
    return quote(text, safe="")


def sandbox_path(name: str, *rest: str) -> str:
    """``/v1/sandboxes/{name}`` with the name encoded, plus ``rest`` appended as is."""
    return "/v1/sandboxes/" + segment(name) + "".join(rest)


def file_path(path: str) -> str:
    """The ``{path}`` of ``/v1/sandboxes/{name}/files/{path}``: the absolute path in the
    sandbox without its leading ``/``, each component encoded on its own.

    Raises:
        ValueError: ``path`` is not absolute.
    """
    if not path.startswith("/"):
        raise ValueError(f"file path must be absolute (a path in the sandbox, e.g. /workspace/x): {path!r}")
    return "/".join(segment(part) for part in path[1:].split("/"))


def create_body(
    *,
    name: Optional[str],
    runtime: Optional[str],
    security_level: Optional[str],
    egress: Optional[Sequence[EgressRule]],
    timeout: Optional[int],
    exec_timeout: Optional[int],
    resources: Optional[Mapping[str, Any]],
    spec: Optional[Mapping[str, Any]],
    labels: Optional[Mapping[str, str]],
) -> Dict[str, Any]:
    """A ``POST /v1/sandboxes`` body: an ``llmsafespace.dev/v1`` Sandbox.

    ``egress`` entries become ``spec.networkAccess.egress[]``: a string is ``{"domain": s}``,
    a mapping is passed as written (``{"domain": ..., "ports": [{"port": 443}]}``).
    ``timeout`` is ``spec.timeoutSeconds`` (the sandbox's lifetime), ``exec_timeout``
    ``spec.timeout`` (the default limit of one exec). ``spec`` adds other Sandbox spec fields
    (``filesystem``, ``securityContext``, ``profileRef``, ...).

    Raises:
        ValueError: ``spec`` repeats a field given by its own argument.
    """
    out_spec: Dict[str, Any] = dict(spec or {})
    own: Dict[str, Any] = {}
    if runtime is not None:
        own["runtime"] = runtime
    if security_level is not None:
        own["securityLevel"] = security_level
    if egress is not None:
        rules: List[Any] = [{"domain": rule} if isinstance(rule, str) else dict(rule) for rule in egress]
        own["networkAccess"] = {"egress": rules}
    if timeout is not None:
        own["timeoutSeconds"] = whole_seconds(timeout, "timeout")
    if exec_timeout is not None:
        own["timeout"] = whole_seconds(exec_timeout, "exec_timeout")
    if resources is not None:
        own["resources"] = dict(resources)
    for key, value in own.items():
        if key in out_spec:
            raise ValueError(f"spec.{key} is given twice: as an argument and in spec=")
        out_spec[key] = value
    metadata: Dict[str, Any] = {}
    if name is not None:
        metadata["name"] = name
    if labels:
        metadata["labels"] = dict(labels)
    return {"apiVersion": "llmsafespace.dev/v1", "kind": "Sandbox", "metadata": metadata, "spec": out_spec}


def whole_seconds(value: float, what: str) -> int:
    """A positive time in seconds as the API's integer, rounded up (a limit is never
    shortened).

    Raises:
        ValueError: not positive.
    """
    if value <= 0:
        raise ValueError(f"{what} must be a positive number of seconds, got {value!r}")
    return int(math.ceil(value))


def exec_body(
    command: Sequence[str],
    *,
    envs: Optional[Mapping[str, str]],
    cwd: Optional[str],
    timeout: Optional[float],
    stdin: Optional[str],
) -> Dict[str, Any]:
    """A ``POST /v1/sandboxes/{name}/exec`` body (``ExecRequest``)."""
    body: Dict[str, Any] = {"command": list(command)}
    if envs:
        body["env"] = dict(envs)
    if cwd is not None:
        body["cwd"] = cwd
    if timeout is not None:
        body["timeoutSeconds"] = whole_seconds(timeout, "timeout")
    if stdin is not None:
        body["stdin"] = stdin
    return body


def exec_read_timeout(timeout: Optional[float]) -> Optional[float]:
    """How long the client waits for an exec's answer (or its next line): the exec's limit
    plus ``EXEC_GRACE``; without a limit, as long as the daemon lets it run."""
    return None if timeout is None else whole_seconds(timeout, "timeout") + EXEC_GRACE


def code_command(code: str, language: str) -> Tuple[List[str], Optional[str]]:
    """The command (and stdin) that runs ``code``: ``python3 -c CODE`` for ``python``,
    ``node -e CODE`` for ``javascript``/``node``, ``sh -c CODE`` for ``sh``/``bash``; code
    above ``ARG_MAX_CODE`` bytes is read from stdin instead (``python3 -``, ``node -``,
    ``sh -s``).

    Raises:
        ValueError: an unknown language.
    """
    table = {
        "python": (["python3", "-c"], ["python3", "-"]),
        "python3": (["python3", "-c"], ["python3", "-"]),
        "javascript": (["node", "-e"], ["node", "-"]),
        "js": (["node", "-e"], ["node", "-"]),
        "node": (["node", "-e"], ["node", "-"]),
        "sh": (["sh", "-c"], ["sh", "-s"]),
        "bash": (["bash", "-c"], ["bash", "-s"]),
    }
    if language not in table:
        raise ValueError(f"unknown language {language!r} (known: {', '.join(sorted(table))})")
    as_argument, from_stdin = table[language]
    if len(code.encode("utf-8")) <= ARG_MAX_CODE:
        return as_argument + [code], None
    return list(from_stdin), code


class ExecStream:
    """Decodes an NDJSON exec answer line by line: ``{"stdout": ...}``/``{"stderr": ...}``
    chunks in the order the daemon read them, then one exit object; an ``{"error": ...}``
    line is an error the daemon hit after the answer had started."""

    def __init__(self, request: str) -> None:
        self.request = request
        self.stdout: List[str] = []
        self.stderr: List[str] = []
        self.result: Optional[CommandResult] = None

    def feed(self, line: str) -> Optional[Tuple[str, str]]:
        """One line; returns ``("stdout"|"stderr", text)`` for output, None otherwise.

        Raises:
            SafeSpaceError: the line is an error, or not what the API sends.
        """
        line = line.strip()
        if not line:
            return None
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise SafeSpaceError(f"not a JSON line in the exec stream: {line[:200]!r} ({e})", code="bad_response", request=self.request) from None
        if not isinstance(obj, dict):
            raise SafeSpaceError(f"not a JSON object in the exec stream: {line[:200]!r}", code="bad_response", request=self.request)
        if "error" in obj:
            raise from_error_object(obj["error"], None, self.request)
        for stream in ("stdout", "stderr"):
            if stream in obj and "exitCode" not in obj:
                text = str(obj[stream])
                (self.stdout if stream == "stdout" else self.stderr).append(text)
                return stream, text
        if "exitCode" in obj:
            self.result = CommandResult.from_api(obj, stdout="".join(self.stdout), stderr="".join(self.stderr))
            return None
        raise SafeSpaceError(f"unexpected line in the exec stream: {line[:200]!r}", code="bad_response", request=self.request)

    def finish(self) -> CommandResult:
        """The result once the stream ended.

        Raises:
            SafeSpaceError: the stream ended without an exit line (the daemon went away).
        """
        if self.result is None:
            raise SafeSpaceError("the exec stream ended without an exit status (the daemon closed the connection)", code="bad_response", request=self.request)
        return self.result


def check_result(result: CommandResult, request: str, timeout: Optional[float]) -> CommandResult:
    """``result``, or :class:`Timeout` carrying it when the exec ran out of time."""
    if result.timed_out:
        limit = f" of {whole_seconds(timeout, 'timeout')} s" if timeout is not None else ""
        raise Timeout(
            f"the command ran past its time limit{limit} and was killed (exit code {result.exit_code})",
            code="timed_out",
            result=result,
            request=request,
        )
    return result


def decode_json(response_body: bytes, request: str) -> Any:
    """The JSON of a successful answer.

    Raises:
        SafeSpaceError: ``bad_response`` when it is not JSON.
    """
    try:
        return json.loads(response_body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise SafeSpaceError(f"the daemon's answer is not JSON: {e}", code="bad_response", request=request) from None


def raise_for_status(status: int, body: bytes, request: str) -> None:
    """Raises the typed error of a non-2xx answer."""
    if status >= 300:
        raise from_response(status, body, request)


@contextmanager
def transport_errors(socket: str, request: str) -> Iterator[None]:
    """Maps httpx's failures to typed errors: nothing listening → :class:`Unavailable`
    (``unreachable``), a client-side timeout → :class:`Timeout` (``client_timeout``), any
    other transport failure → :class:`SafeSpaceError` (``transport``)."""
    try:
        yield
    except httpx.TimeoutException as e:
        raise Timeout(f"no answer from safespaced at {socket} in time ({type(e).__name__})", code="client_timeout", request=request) from e
    except httpx.ConnectError as e:
        raise Unavailable(f"cannot connect to safespaced at {socket}: {e} (is it running? SAFESPACE_SOCKET names another socket)", code="unreachable", request=request) from e
    except httpx.TransportError as e:
        raise SafeSpaceError(f"talking to safespaced at {socket} failed: {type(e).__name__}: {e}", code="transport", request=request) from e


def timeouts(read: Optional[float]) -> httpx.Timeout:
    """httpx timeouts: 10 s to connect (a unix socket answers at once or not at all), ``read``
    for the answer, None: wait as long as it takes."""
    return httpx.Timeout(connect=10.0, read=read, write=60.0, pool=60.0)
