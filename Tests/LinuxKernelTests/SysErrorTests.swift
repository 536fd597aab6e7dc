import Glibc
import Testing
@testable import LinuxKernel

/// `SysError` (operation, path, errno, field) and `sys`, the EINTR-retrying call wrapper.
struct SysErrorTests {
    @Test("description: field, operation, path, strerror and the errno name")
    func description() {
        #expect("\(SysError("mount proc on", path: "/proc", errno: EPERM))" == "mount proc on /proc: Operation not permitted (EPERM)")
        #expect("\(SysError("chdir", path: "/x", errno: ENOENT, field: "process.cwd"))" == "process.cwd: chdir /x: No such file or directory (ENOENT)")
        #expect("\(SysError("capset", errno: EPERM))" == "capset: Operation not permitted (EPERM)")
        // A number with no name has no parenthesis.
        #expect(!"\(SysError("x", errno: 41))".contains("("))
    }

    @Test("the errno defaults to the current errno")
    func currentErrno() {
        errno = EXDEV
        #expect(SysError("rename").errno == EXDEV)
    }

    @Test("sys retries on EINTR, returns a non-negative result, throws SysError on another errno")
    func sysRetries() throws {
        var calls = 0
        let r = try sys("read", path: "/p") { () -> Int in
            calls += 1
            if calls < 3 {
                errno = EINTR
                return -1
            }
            return 5
        }
        #expect(r == 5 && calls == 3)
        let error = #expect(throws: SysError.self) {
            try sys("open", path: "/q") { () -> Int32 in
                errno = EACCES
                return -1
            }
        }
        #expect(error?.operation == "open")
        #expect(error?.path == "/q")
        #expect(error?.errno == EACCES)
    }

    @Test("Rlimits: OCI names are <sys/resource.h>'s numbers; an unknown type and soft > hard are refused naming the field")
    func rlimits() throws {
        #expect(Rlimits.resources["RLIMIT_NOFILE"] == Int32(RLIMIT_NOFILE.rawValue))
        #expect(Rlimits.resources["RLIMIT_NPROC"] == Int32(__RLIMIT_NPROC.rawValue))
        #expect(Rlimits.resources["RLIMIT_CORE"] == Int32(RLIMIT_CORE.rawValue))
        #expect(Rlimits.resources["RLIMIT_RTTIME"] == Int32(__RLIMIT_RTTIME.rawValue))
        #expect(Rlimits.resources.count == 16)
        let unknown = #expect(throws: RuntimeError.self) {
            try Rlimits.set(type: "RLIMIT_FOO", soft: 1, hard: 1, field: "process.rlimits[0]")
        }
        #expect(unknown?.message == #"process.rlimits[0].type: unknown rlimit "RLIMIT_FOO""#)
        let inverted = #expect(throws: RuntimeError.self) {
            try Rlimits.set(type: "RLIMIT_CORE", soft: 2, hard: 1, field: "process.rlimits[1]")
        }
        #expect(inverted?.message == "process.rlimits[1]: soft limit 2 is above hard limit 1 for RLIMIT_CORE")
        // Setting the limits this process already has changes nothing.
        var core = rlimit()
        try #require(getrlimit(__rlimit_resource_t(RLIMIT_CORE.rawValue), &core) == 0)
        try Rlimits.set(type: "RLIMIT_CORE", soft: UInt64(core.rlim_cur), hard: UInt64(core.rlim_max), field: "f")
    }
}
