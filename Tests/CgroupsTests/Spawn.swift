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
        let args: [UnsafeMutablePointer<CChar>?] =
            ["/bin/sh", "-c", "read x; " + script].map { $0.withCString { strdup($0) } } + [nil]
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

/// A frozen cgroup whose sub-cgroups `sub` and `sub/deeper` (in every hierarchy) each hold a
/// process, `sub/deeper` frozen by itself: `killAndDestroy` kills all three and removes every
/// directory; then `create` of the same path under a frozen parent is refused naming
/// `linux.cgroupsPath`, leaving nothing. Shared by the v1 (HostTests) and v2 (CgroupsV2Tests) suites.
func checkKillAndDestroyFrozenTree(parent: String) throws {
    var cg = try Cgroup.resolve(cgroupsPath: "\(parent)/c", id: "c")
    try cg.create()
    defer {
        cg.thawSubtree()
        _ = try? cg.killAll(signal: SIGKILL)
        try? cg.destroy()
    }
    let children = try (0..<3).map { _ in try BlockedChild("exec sleep 60") }
    try cg.attach(pid: children[0].pid)
    for dir in cg.directories.values.sorted() {
        for (i, sub) in ["sub", "sub/deeper"].enumerated() {
            let path = dir + "/" + sub
            _ = try CgroupFS.mkdirIfMissing(path)
            if CgroupFS.exists(path + "/cpuset.cpus") { try CgroupV1.inheritCpuset(path) }
            try CgroupFS.write(path + "/cgroup.procs", String(children[i + 1].pid))
        }
    }
    children.forEach { $0.release() }
    let (freezer, v2) = try #require(cg.freezerDirectory)
    try CgroupFS.write(freezer + "/sub/deeper/" + (v2 ? "cgroup.freeze" : "freezer.state"), v2 ? "1" : "FROZEN")
    try cg.setFrozen(true)
    #expect(cg.allProcesses().count == 3)
    // The children are ours: reap them meanwhile, or their zombies would keep the cgroups busy.
    nonisolated(unsafe) var statuses: [Int32] = []
    let reaped = DispatchSemaphore(value: 0)
    DispatchQueue.global().async {
        statuses = children.map { $0.wait() }
        reaped.signal()
    }
    try cg.killAndDestroy(timeout: 10)
    reaped.wait()
    #expect(statuses == [137, 137, 137])
    for dir in cg.directories.values { #expect(!CgroupFS.exists(dir), "\(dir) remains") }

    // A frozen parent freezes a new leaf too: create refuses it and removes what it made.
    var frozenParent = try Cgroup.resolve(cgroupsPath: parent, id: "p")
    try frozenParent.create()
    defer {
        try? frozenParent.setFrozen(false)
        try? frozenParent.destroy()
    }
    try frozenParent.setFrozen(true)
    var again = try Cgroup.resolve(cgroupsPath: "\(parent)/c", id: "c")
    #expect {
        try again.create()
    } throws: { "\($0)".hasPrefix("linux.cgroupsPath: the cgroup is frozen") }
    #expect(again.created.isEmpty)
    for dir in again.directories.values { #expect(!CgroupFS.exists(dir), "\(dir) remains") }
}
