/// Files in and out of a gVisor (`securityLevel: high`) sandbox. runsc keeps what the sandbox
/// writes in its own overlay inside the sentry, so the host's view of the sandbox's root
/// (`/proc/<pid>/root`, openat2) never sees those files. The file is read and written from
/// inside instead: an exec of `/bin/sh` with a fixed script (`script`), the path passed as an
/// argument (`"$2"`, never interpolated into shell text), as the sandbox's own user (so what
/// it writes is that user's, 0644 under umask 022), with the same rules as `SandboxFiles`:
/// the daemon checks the path lexically first (`SandboxFiles.target`: below a writable path,
/// no `.`/`..`, no NUL), and the script refuses a symbolic link on any component of the way
/// (`test -L`, as RESOLVE_NO_SYMLINKS does), a missing directory on a read, a component that
/// is not a directory, and a target that is not a regular file.
///
/// What differs from the native level: the checks and the open are separate steps inside the
/// sandbox (a process of the sandbox racing them can redirect the write to another path of
/// the sandbox its user may write, never out of it: the sentry resolves every path in the
/// sandbox's own file system, and the host boundary is gVisor's); mounts below a writable
/// path are not refused (the sandbox cannot mount); the sandbox needs `/bin/sh` and `cat`
/// (both rootfs of the node have them).
import Foundation
import Glibc
import Runtime

struct InSandboxFiles: Sendable {
    let runtime: ContainerRuntime
    /// The container id (the sandbox's name).
    let id: String

    /// Seconds a file operation may take inside the sandbox.
    static let timeoutSeconds = 120

    /// `sh -c script safespace-files MODE PATH`: MODE `put` (stdin to PATH, directories on the
    /// way made 0755) or `get` (PATH to stdout). Exit 40: a symbolic link on the way; 41: not
    /// a regular file; 42: no such file or directory; 43: a component is not a directory.
    static let script = """
        mode=$1 path=$2 d= rest=${2#/}
        while :; do
          case $rest in
          */*) c=${rest%%/*}; rest=${rest#*/} ;;
          *) break ;;
          esac
          d=$d/$c
          if [ -L "$d" ]; then exit 40; fi
          if [ ! -e "$d" ]; then
            [ "$mode" = put ] || exit 42
            mkdir -m 0755 -- "$d" || exit 44
          fi
          [ -d "$d" ] || exit 43
        done
        f=$d/$rest
        if [ -L "$f" ]; then exit 40; fi
        if [ "$mode" = put ]; then
          if [ -e "$f" ] && [ ! -f "$f" ]; then exit 41; fi
          umask 022
          exec cat > "$f"
        fi
        [ -e "$f" ] || exit 42
        [ -f "$f" ] || exit 41
        exec cat -- "$f"
        """

    /// Writes `bytes` to `target` (created 0644 or truncated), as the sandbox's user.
    /// - Returns: the SHA-256 of the bytes, hex.
    /// - Throws: `APIError` as `SandboxFiles.write`.
    func write(_ target: SandboxFiles.Target, bytes: [UInt8]) throws -> String {
        let result = try run("put", target, stdin: bytes, maxOutput: 64 << 10)
        try check(result, target)
        return SandboxFiles.sha256(bytes)
    }

    /// Reads `target`, at most `limit` bytes.
    /// - Throws: `APIError` as `SandboxFiles.read`.
    func read(_ target: SandboxFiles.Target, limit: Int) throws -> [UInt8] {
        let result = try run("get", target, stdin: [], maxOutput: limit + 1)
        try check(result, target)
        if result.truncated || result.stdout.count > limit {
            throw APIError(
                .contentTooLarge, "too_large",
                "\(target.absolute) is above the limit of \(limit) bytes (limits.maxFileBytes)", field: "path")
        }
        return result.stdout
    }

    private func run(_ mode: String, _ target: SandboxFiles.Target, stdin: [UInt8], maxOutput: Int) throws
        -> ExecResult
    {
        var request = ExecRequest(command: ["/bin/sh", "-c", Self.script, "safespace-files", mode, target.absolute])
        request.stdin = stdin
        request.cwd = "/"
        // The system's cat and mkdir, not whatever the sandbox put first on its own PATH.
        request.env = ["PATH": "/usr/bin:/bin"]
        request.timeoutSeconds = Self.timeoutSeconds
        // Ids from 2^62 up: never an exec's (those count from 1).
        let handle = ExecHandle(id: UInt64.random(in: (1 << 62)...UInt64(Int64.max)), request: request)
        do {
            return try ExecRunner.run(runtime: runtime, id: id, handle: handle, maxOutput: maxOutput, emit: nil)
        } catch let error as APIError where error.code == "exec_failed" {
            throw APIError(
                .internalServerError, "internal",
                "\(target.absolute): cannot run /bin/sh in the sandbox to move the file: \(error.message)",
                field: "path")
        }
    }

    /// The API error of a finished file script, nil for success.
    private func check(_ result: ExecResult, _ target: SandboxFiles.Target) throws {
        let path = target.absolute
        if result.timedOut {
            throw APIError(
                .internalServerError, "internal",
                "\(path): the file operation did not finish within \(Self.timeoutSeconds) s in the sandbox",
                field: "path")
        }
        switch result.exitCode {
        case 0: return
        case 40: throw SandboxFiles.error(ELOOP, path)
        case 41: throw APIError(.conflict, "not_a_file", "\(path) is not a regular file", field: "path")
        case 42: throw SandboxFiles.error(ENOENT, path)
        case 43: throw SandboxFiles.error(ENOTDIR, path)
        default:
            let text = String(decoding: result.stderr, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            if text.contains("No space left") || text.contains("Disk quota") { throw SandboxFiles.error(ENOSPC, path) }
            if text.contains("Permission denied") { throw SandboxFiles.error(EACCES, path) }
            if text.contains("Read-only file system") { throw SandboxFiles.error(EROFS, path) }
            throw APIError(
                .internalServerError, "internal",
                "\(path): the file operation in the sandbox exited \(result.exitCode): \(text)", field: "path")
        }
    }
}
