import Errors
import Glibc
import Testing

@testable import LinuxKernel

/// `SysError` (operation, path, errno, field) and `sys`, the EINTR-retrying call wrapper.
struct SysErrorTests {
    @Test("description: field, operation, path, strerror and the errno name")
    func description() {
        #expect(
            "\(SysError("mount proc on", path: "/proc", errno: EPERM))"
                == "mount proc on /proc: Operation not permitted (EPERM)")
        #expect(
            "\(SysError("chdir", path: "/x", errno: ENOENT, field: "process.cwd"))"
                == "process.cwd: chdir /x: No such file or directory (ENOENT)")
        #expect("\(SysError("capset", errno: EPERM))" == "capset: Operation not permitted (EPERM)")
        // A number with no name has no parenthesis.
        #expect(!"\(SysError("x", errno: 41))".contains("("))
        // A message replaces operation, path and errno.
        #expect("\(SysError(.refused, field: "f", "why", operation: "op", path: "/p", errno: EPERM))" == "f: why")
        #expect("\(SysError(.unsupported, "no such call"))" == "no such call")
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

    @Test(
        "Rlimits: OCI names are <sys/resource.h>'s numbers; an unknown type and soft > hard are refused naming the field"
    )
    func rlimits() throws {
        #expect(Rlimits.resources["RLIMIT_NOFILE"] == Int32(RLIMIT_NOFILE.rawValue))
        #expect(Rlimits.resources["RLIMIT_NPROC"] == Int32(__RLIMIT_NPROC.rawValue))
        #expect(Rlimits.resources["RLIMIT_CORE"] == Int32(RLIMIT_CORE.rawValue))
        #expect(Rlimits.resources["RLIMIT_RTTIME"] == Int32(__RLIMIT_RTTIME.rawValue))
        #expect(Rlimits.resources.count == 16)
        let unknown = #expect(throws: SysError.self) {
            try Rlimits.set(type: "RLIMIT_FOO", soft: 1, hard: 1, field: "process.rlimits[0]")
        }
        #expect(unknown?.code == .invalidValue && unknown?.field == "process.rlimits[0].type")
        #expect(unknown?.description == #"process.rlimits[0].type: unknown rlimit "RLIMIT_FOO""#)
        let inverted = #expect(throws: SysError.self) {
            try Rlimits.set(type: "RLIMIT_CORE", soft: 2, hard: 1, field: "process.rlimits[1]")
        }
        #expect(inverted?.code == .invalidValue && inverted?.field == "process.rlimits[1]")
        #expect(inverted?.description == "process.rlimits[1]: soft limit 2 is above hard limit 1 for RLIMIT_CORE")
        // Setting the limits this process already has changes nothing.
        var core = rlimit()
        try #require(getrlimit(__rlimit_resource_t(RLIMIT_CORE.rawValue), &core) == 0)
        try Rlimits.set(type: "RLIMIT_CORE", soft: UInt64(core.rlim_cur), hard: UInt64(core.rlim_max), field: "f")
    }

    @Test("SysError: a failed call renders strerror and the errno name; a refused value its message")
    func errorShape() {
        let call = SysError("mount proc on", path: "/proc", errno: EPERM, field: "mounts[0]")
        #expect(call.code == .syscall && call.codeName == "kernel.syscall" && call.category == .internal)
        #expect(call.errno == EPERM && call.operation == "mount proc on")
        #expect(call.description == "mounts[0]: mount proc on /proc: Operation not permitted (EPERM)")
        let unknown = #expect(throws: SysError.self) {
            _ = try Capability.values(["CAP_BOGUS"], field: "process.capabilities.bounding")
        }
        #expect(unknown?.code == .invalidValue && unknown?.category == .invalidArgument && unknown?.errno == nil)
        #expect(unknown?.description == #"process.capabilities.bounding: unknown capability "CAP_BOGUS""#)
        #expect(
            SysError.Code.allCases.map(\.rawValue) == [
                "syscall", "invalidValue", "unsupported", "permissionDenied", "refused", "corruptFile",
            ])
    }
}
