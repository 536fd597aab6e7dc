import Foundation
import Testing

@testable import Cgroups

/// A test child started with posix_spawn (no fork from the threaded test process) that blocks
/// reading stdin until `release()`, so it can be moved into a cgroup before it does its work.
struct BlockedChild {
    let pid: pid_t
    let stdinWrite: Int32

    init(_ script: String) throws {
        var fds: [Int32] = [0, 0]
        try #require(pipe(&fds) == 0)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, fds[0], 0)
        posix_spawn_file_actions_addclose(&actions, fds[1])
        let devnull = open("/dev/null", O_WRONLY)
        defer { close(devnull) }
        posix_spawn_file_actions_adddup2(&actions, devnull, 1)
        posix_spawn_file_actions_adddup2(&actions, devnull, 2)
        var pid: pid_t = 0
        let args: [UnsafeMutablePointer<CChar>?] = ["/bin/sh", "-c", "read x; " + script].map { $0.withCString { strdup($0) } } + [nil]
        defer { args.forEach { free($0) } }
        var env: [UnsafeMutablePointer<CChar>?] = ["PATH=/usr/bin:/bin".withCString { strdup($0) }, nil]
        defer { free(env[0]) }
        let rc = posix_spawn(&pid, "/bin/sh", &actions, nil, args, &env)
        close(fds[0])
        try #require(rc == 0, "posix_spawn: \(rc)")
        self.pid = pid
        self.stdinWrite = fds[1]
    }

    func release() {
        _ = write(stdinWrite, "go\n", 3)
        close(stdinWrite)
    }

    /// Waits for the child; the shell-style status (128+N for signal N).
    func wait() -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return (status & 0x7f) != 0 ? 128 + (status & 0x7f) : (status >> 8) & 0xff
    }
}

func uniqueTestParent() -> String {
    "safespace-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
}

/// Inside scripts/vm-test's VM (SAFESPACE_IN_VM=1), where v2 tests must run, never skip.
let inTestVM = ProcessInfo.processInfo.environment["SAFESPACE_IN_VM"] == "1"
