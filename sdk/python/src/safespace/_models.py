"""Results of the API, as plain dataclasses (field names of the API in snake_case)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

__all__ = ["CommandResult", "SandboxInfo", "WriteInfo"]


@dataclass
class CommandResult:
    """The end of one exec (``ExecResult`` of the API).

    Attributes:
        stdout: What the process wrote to stdout, decoded as UTF-8 (invalid bytes are U+FFFD).
        stderr: The same for stderr.
        exit_code: The exit status; 128+N when signal N ended the process (137: killed, also
            on timeout).
        duration_ms: Wall time of the process, milliseconds.
        timed_out: The exec hit its time limit and was killed.
        oom_killed: The sandbox's OOM killer ended it.
        truncated: Output beyond the daemon's ``limits.maxExecOutputBytes`` was dropped (only a
            non-streamed exec is capped; with callbacks everything is delivered).
        killed_by: Why the daemon killed it (``sandbox deleted``, ``daemon shutdown``,
            ``client disconnected``), or None.
    """

    stdout: str
    stderr: str
    exit_code: int
    duration_ms: int = 0
    timed_out: bool = False
    oom_killed: bool = False
    truncated: bool = False
    killed_by: Optional[str] = None

    @classmethod
    def from_api(cls, obj: Mapping[str, Any], stdout: Optional[str] = None, stderr: Optional[str] = None) -> "CommandResult":
        """From the API's JSON (``exitCode``, ``durationMs``, ...); ``stdout``/``stderr``
        replace the object's own (a streamed exec's exit line has none)."""
        return cls(
            stdout=stdout if stdout is not None else str(obj.get("stdout", "")),
            stderr=stderr if stderr is not None else str(obj.get("stderr", "")),
            exit_code=int(obj["exitCode"]),
            duration_ms=int(obj.get("durationMs", 0)),
            timed_out=bool(obj.get("timedOut", False)),
            oom_killed=bool(obj.get("oomKilled", False)),
            truncated=bool(obj.get("truncated", False)),
            killed_by=obj.get("killedBy"),
        )


@dataclass
class SandboxInfo:
    """A sandbox as the daemon describes it (``SandboxView``).

    Attributes:
        name: ``metadata.name``.
        phase: ``Creating``, ``Running`` or ``Deleting``.
        level: The security level (``standard``, ``custom``, ...).
        runtime: The runtime (``python:3.11``).
        created_at: ISO 8601 creation time.
        expires_at: ISO 8601 end of its lifetime (``spec.timeoutSeconds``), or None.
        creator_uid: The uid that created it.
        writable_paths: The paths files may be written below (``/tmp``, ``/workspace``).
        execs: Execs running in it now.
        limits: ``cpuMillis``, ``memoryBytes``, ``ephemeralStorageBytes`` (None: unset).
        usage: From its cgroup (``cpuSeconds``, ``memoryBytes``, ``memoryPeakBytes``, ``pids``);
            only from ``Sandbox.info()``, None in ``Sandbox.list()``.
        raw: The whole JSON object (the resource as created plus ``status``).
        warm: Claimed from a warm pool, made before the claim (``status.warm``).
        pool: The warm pool that made it (``status.pool``), or None.
    """

    name: str
    phase: str
    level: str
    runtime: str
    created_at: str
    expires_at: Optional[str]
    creator_uid: int
    writable_paths: List[str]
    execs: int
    limits: Dict[str, Optional[int]]
    usage: Optional[Dict[str, Any]]
    raw: Dict[str, Any] = field(repr=False)
    warm: bool = False
    pool: Optional[str] = None

    @classmethod
    def from_api(cls, obj: Mapping[str, Any]) -> "SandboxInfo":
        status = obj.get("status") or {}
        return cls(
            name=str((obj.get("metadata") or {}).get("name", "")),
            phase=str(status.get("phase", "")),
            level=str(status.get("level", "")),
            runtime=str(status.get("runtime", "")),
            created_at=str(status.get("createdAt", "")),
            expires_at=status.get("expiresAt"),
            creator_uid=int(status.get("creatorUID", -1)),
            writable_paths=list(status.get("writablePaths") or []),
            execs=int(status.get("execs", 0)),
            limits=dict(status.get("limits") or {}),
            usage=status.get("usage"),
            raw=dict(obj),
            warm=bool(status.get("warm", False)),
            pool=status.get("pool"),
        )


@dataclass
class WriteInfo:
    """The answer to a file write.

    Attributes:
        path: The absolute path written in the sandbox.
        bytes: Bytes written.
        sha256: Hex SHA-256 of the content, computed by the daemon.
    """

    path: str
    bytes: int
    sha256: str
