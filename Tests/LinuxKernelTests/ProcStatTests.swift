import Foundation
import Glibc
import Testing

@testable import LinuxKernel

/// A child started with posix_spawn (never fork from the threaded test process), stdio on
/// /dev/null; the caller reaps it.
func spawnChild(_ path: String, _ args: [String]) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    for fd: Int32 in 0...2 {
        posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0)
    }
    let argv: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, path, &actions, nil, argv, environ)
    try #require(rc == 0, "posix_spawn \(path): \(rc)")
    return pid
}

/// Polls `condition` every 10 ms for up to 10 s (a bound against hanging, not a timing test).
func within10s(_ condition: () -> Bool) -> Bool {
    for _ in 0..<1000 {
        if condition() { return true }
        usleep(10_000)
    }
    return condition()
}

/// `ProcStat` (the /proc/PID/stat parser, proc(5)) and `ProcessIdentity` (pid + start time).
struct ProcStatTests {
    @Test(
        "this process: running or sleeping (its main thread's state), its parent, the start time ProcessIdentity.current records"
    )
    func ownProcess() throws {
        let me = try #require(ProcStat.read(pid: getpid()))
        #expect("RS".contains(me.state))
        #expect(me.parentPid == getppid())
        #expect(me.startTime > 0)
        let identity = ProcessIdentity.current()
        #expect(identity == ProcessIdentity(pid: getpid(), startTime: me.startTime))
        #expect(identity.isAlive)
        #expect(identity.description == "pid \(getpid())")
    }

    @Test("no process: pid 0, a negative pid and one above pid_max read as nil and are not alive")
    func noProcess() throws {
        let pidMax = try #require(Int32(try Files.readString("/proc/sys/kernel/pid_max").trimmed))
        #expect(ProcStat.read(pid: 0) == nil)
        #expect(ProcStat.read(pid: -1) == nil)
        #expect(ProcStat.read(pid: pidMax + 1) == nil)
        #expect(!ProcessIdentity(pid: pidMax + 1, startTime: 1).isAlive)
    }

    @Test(
        "a command name with spaces and parentheses; alive, then a zombie (not alive), then gone; another start time is another process"
    )
    func childLifecycle() throws {
        let dir = try scratchDirectory("procstat")
        defer { try? Files.removeTree(dir) }
        // comm is the name exec was given: ") S 1 (x" would fool a parser that splits at the first ')'.
        let path = dir + "/a) S 1 (b"
        try #require(symlink("/bin/sleep", path) == 0)
        let pid = try spawnChild(path, ["sleep", "60"])
        var reaped = false
        defer {
            if !reaped {
                kill(pid, SIGKILL)
                var status: Int32 = 0
                waitpid(pid, &status, 0)
            }
        }
        let stat = try #require(ProcStat.read(pid: pid))
        #expect(try Files.readString("/proc/\(pid)/comm") == "a) S 1 (b\n")
        #expect(stat.parentPid == getpid())
        #expect("RSD".contains(stat.state))
        #expect(stat.startTime >= ProcessIdentity.current().startTime)
        let identity = ProcessIdentity(pid: pid, startTime: stat.startTime)
        #expect(identity.isAlive)
        #expect(!ProcessIdentity(pid: pid, startTime: stat.startTime + 1).isAlive)

        #expect(kill(pid, SIGKILL) == 0)
        #expect(within10s { ProcStat.read(pid: pid)?.state == "Z" })
        #expect(ProcStat.read(pid: pid)?.startTime == stat.startTime)
        #expect(!identity.isAlive)

        var status: Int32 = 0
        #expect(waitpid(pid, &status, 0) == pid)
        reaped = true
        #expect(ProcStat.read(pid: pid) == nil)
        #expect(!identity.isAlive)
    }

    @Test("ProcessIdentity encodes as {pid, startTime}")
    func coding() throws {
        let identity = ProcessIdentity(pid: 42, startTime: 123_456)
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        #expect(String(decoding: try encoder.encode(identity), as: UTF8.self) == #"{"pid":42,"startTime":123456}"#)
        #expect(
            try JSONDecoder().decode(ProcessIdentity.self, from: Data(#"{"startTime":7,"pid":9}"#.utf8))
                == ProcessIdentity(pid: 9, startTime: 7))
    }
}
