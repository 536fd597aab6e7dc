"""SafeSpace's Python SDK: sandboxes of safespaced, the node-local sandbox daemon, over its
unix socket (``$SAFESPACE_SOCKET``, default ``/run/safespace/safespaced.sock``).

::

    from safespace import Sandbox

    with Sandbox(runtime="python:3.11", timeout=600) as sbx:
        r = sbx.commands.run("echo hello", on_stdout=print)
        sbx.files.write("/workspace/data.csv", b"a,b\\n1,2\\n")
        out = sbx.run_code("print(open('/workspace/data.csv').read())")
        print(out.stdout, out.exit_code)

:class:`Sandbox` is synchronous, :class:`AsyncSandbox` its asyncio twin. Errors are typed
(:class:`SafeSpaceError` and its subclasses) from the API's error codes.
"""

from ._async import AsyncCommands, AsyncFiles, AsyncOutputCallback, AsyncSandbox
from ._core import DEFAULT_SOCKET
from ._errors import (
    Conflict,
    FileNotFound,
    NotFound,
    PolicyRefused,
    QuotaExceeded,
    SafeSpaceError,
    SandboxNotFound,
    Timeout,
    Unavailable,
)
from ._models import CommandResult, SandboxInfo, WriteInfo
from ._sync import Commands, Files, OutputCallback, Sandbox

__version__ = "0.1.0"

__all__ = [
    "Sandbox",
    "AsyncSandbox",
    "Commands",
    "Files",
    "AsyncCommands",
    "AsyncFiles",
    "OutputCallback",
    "AsyncOutputCallback",
    "CommandResult",
    "SandboxInfo",
    "WriteInfo",
    "SafeSpaceError",
    "NotFound",
    "SandboxNotFound",
    "FileNotFound",
    "QuotaExceeded",
    "PolicyRefused",
    "Conflict",
    "Unavailable",
    "Timeout",
    "DEFAULT_SOCKET",
]
