"""Typed exceptions, mapped from the daemon's error answers.

Every error of the API is ``{"error": {"code", "message", "field"}}`` with an HTTP status
(``Sources/SafeSpaceDaemon/openapi.yaml``, ``components.schemas.Error``). The exception class
is chosen by ``code`` first (the stable word), then by the status for a code this SDK does
not know yet:

=================================================  =====================  ==============
codes                                               class                  usual status
=================================================  =====================  ==============
``not_found``                                       :class:`SandboxNotFound`  404
``file_not_found``                                  :class:`FileNotFound`     404
``overcommitted``, ``too_many_sandboxes``,          :class:`QuotaExceeded`    429, 413, 507
``too_large``, ``no_space``
``malformed_json``, ``malformed``,                  :class:`PolicyRefused`    400, 403
``unknown_field``, ``duplicate_field``,
``wrong_type``, ``missing_field``,
``invalid_value``, ``not_enforceable``,
``path_escape``, ``not_writable``, ``forbidden``
``exists``, ``not_running``, ``not_a_file``,       :class:`Conflict`         409
``being_deleted``
``pool_not_found`` (a warm pool)                    :class:`NotFound`         404
``shutting_down``, ``pool_empty``; no daemon        :class:`Unavailable`      503
an exec that ran out of time; a client timeout      :class:`Timeout`          (200)
anything else (``internal``, ``create_failed``...)  :class:`SafeSpaceError`   500
=================================================  =====================  ==============
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Dict, Optional, Type

if TYPE_CHECKING:
    from ._models import CommandResult

__all__ = [
    "SafeSpaceError",
    "NotFound",
    "SandboxNotFound",
    "FileNotFound",
    "QuotaExceeded",
    "PolicyRefused",
    "Conflict",
    "Unavailable",
    "Timeout",
]


class SafeSpaceError(Exception):
    """An error of the daemon or of talking to it.

    Attributes:
        code: The API's error code (``not_found``, ``overcommitted``, ...), or one of this SDK
            for errors that never reached the daemon (``unreachable``, ``client_timeout``,
            ``pool_ignored``, ``bad_response``).
        message: The daemon's message, verbatim.
        field: The request field at fault (``spec.resources.memory``, ``path``, ...), or None.
        status: The HTTP status of the answer, or None when there was none (the socket did not
            answer; an error reported inside a streamed exec, whose status was already 200).
        request: ``"METHOD /path"`` of the call that failed, or None.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str = "error",
        field: Optional[str] = None,
        status: Optional[int] = None,
        request: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.status = status
        self.request = request

    def __str__(self) -> str:
        where = f"{self.request}: " if self.request else ""
        status = f"{self.status} " if self.status is not None else ""
        field = f" (field {self.field})" if self.field else ""
        return f"{where}{status}{self.code}: {self.message}{field}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, "
            f"field={self.field!r}, status={self.status!r})"
        )


class NotFound(SafeSpaceError):
    """Something named does not exist (404)."""


class SandboxNotFound(NotFound):
    """No sandbox of that name (``not_found``), or not one the caller may see."""


class FileNotFound(NotFound):
    """No file at that path in the sandbox (``file_not_found``)."""


class QuotaExceeded(SafeSpaceError):
    """A limit of the node or of the daemon would be passed: the node's allocatable CPU or
    memory (429 ``overcommitted``), ``limits.maxSandboxes`` (429 ``too_many_sandboxes``), a
    body or file above ``limits.maxRequestBytes``/``maxFileBytes`` (413 ``too_large``), or the
    sandbox's storage is full (507 ``no_space``)."""


class PolicyRefused(SafeSpaceError):
    """The daemon refused the request as asked: a bad or unknown field, a field this node
    cannot enforce (``not_enforceable``: e.g. egress, or ``securityLevel: high``, while the
    daemon does not serve them), a file path outside the writable paths or through a symlink
    (``not_writable``, ``path_escape``), or a caller without access (403 ``forbidden``).
    ``field`` names the field."""


class Conflict(SafeSpaceError):
    """The request conflicts with the sandbox's state (409): the name is taken (``exists``),
    the sandbox is not running (``not_running``) or is being deleted (``being_deleted``), or
    the path is not a regular file (``not_a_file``)."""


class Unavailable(SafeSpaceError):
    """The daemon does not serve: it is shutting down (503 ``shutting_down``), or nothing
    answers on the socket (``unreachable``)."""


class Timeout(SafeSpaceError):
    """Out of time. Raised by ``commands.run``/``run_code`` when the exec hit its time limit
    (the daemon killed it: ``result.exit_code`` is 137, ``result.timed_out`` True), and when
    the daemon did not answer within the client's ``request_timeout`` (``client_timeout``).

    Attributes:
        result: For an exec that timed out, its :class:`~safespace.CommandResult` (the output
            it wrote before it was killed); otherwise None.
    """

    def __init__(self, message: str, *, result: Optional["CommandResult"] = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.result = result


_BY_CODE: Dict[str, Type[SafeSpaceError]] = {
    "not_found": SandboxNotFound,
    "file_not_found": FileNotFound,
    "overcommitted": QuotaExceeded,
    "too_many_sandboxes": QuotaExceeded,
    "too_large": QuotaExceeded,
    "no_space": QuotaExceeded,
    "malformed_json": PolicyRefused,
    "malformed": PolicyRefused,
    "unknown_field": PolicyRefused,
    "duplicate_field": PolicyRefused,
    "wrong_type": PolicyRefused,
    "missing_field": PolicyRefused,
    "invalid_value": PolicyRefused,
    "not_enforceable": PolicyRefused,
    "path_escape": PolicyRefused,
    "not_writable": PolicyRefused,
    "forbidden": PolicyRefused,
    "exists": Conflict,
    "not_running": Conflict,
    "not_a_file": Conflict,
    "being_deleted": Conflict,
    "shutting_down": Unavailable,
}

_BY_STATUS: Dict[int, Type[SafeSpaceError]] = {
    400: PolicyRefused,
    403: PolicyRefused,
    404: NotFound,
    408: Timeout,
    409: Conflict,
    413: QuotaExceeded,
    429: QuotaExceeded,
    503: Unavailable,
    504: Timeout,
    507: QuotaExceeded,
}


def error_class(code: str, status: Optional[int]) -> Type[SafeSpaceError]:
    """The exception class of an API error: by ``code``, else by ``status``, else the base."""
    if code in _BY_CODE:
        return _BY_CODE[code]
    if status is not None and status in _BY_STATUS:
        return _BY_STATUS[status]
    return SafeSpaceError


def from_error_object(error: Any, status: Optional[int], request: Optional[str]) -> SafeSpaceError:
    """The exception for the ``error`` member of an error body (a dict), or for anything else
    the daemon sent where an error was expected."""
    if isinstance(error, dict):
        code = str(error.get("code") or "error")
        message = str(error.get("message") or "")
        field = error.get("field")
        field = str(field) if field is not None else None
    else:
        code, message, field = "bad_response", f"unexpected error answer: {error!r}", None
    return error_class(code, status)(message, code=code, field=field, status=status, request=request)


def from_response(status: int, body: bytes, request: str) -> SafeSpaceError:
    """The exception for a non-2xx answer with ``body`` (normally the API's JSON error)."""
    try:
        decoded = json.loads(body.decode("utf-8")) if body else None
    except (UnicodeDecodeError, ValueError):
        decoded = None
    if isinstance(decoded, dict) and isinstance(decoded.get("error"), dict):
        return from_error_object(decoded["error"], status, request)
    text = body.decode("utf-8", errors="replace").strip() or f"HTTP {status}"
    cls = error_class("", status)
    return cls(text, code="http_error", status=status, request=request)
