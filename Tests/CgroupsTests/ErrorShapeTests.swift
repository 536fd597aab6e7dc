import Errors
import Glibc
import OCI
import Testing

@testable import Cgroups

/// CgroupError in the common shape: the code, field and errno apart, the message as before.
struct CgroupErrorShapeTests {
    @Test("a failed write carries the field and errno; the message is the one built from a field-only message")
    func syscall() {
        let error = CgroupError(
            operation: "write", path: "/sys/fs/cgroup/a/memory.max", errno: EINVAL,
            field: "linux.resources.memory.limit")
        #expect(error.code == .syscall && error.codeName == "cgroups.syscall" && error.category == .internal)
        #expect(error.field == "linux.resources.memory.limit" && error.operation == "write" && error.errno == EINVAL)
        #expect(
            error.description
                == "linux.resources.memory.limit: write memory.max: EINVAL (Invalid argument) [/sys/fs/cgroup/a/memory.max]"
        )
        let asMessage = CgroupError(
            operation: "write", path: "/sys/fs/cgroup/a/memory.max", errno: EINVAL,
            message: "linux.resources.memory.limit")
        #expect(error.description == asMessage.description)
    }

    @Test("a refused value and a missing controller: field and reason, no errno")
    func validation() throws {
        let invalid = CgroupError.invalid("linux.resources.pids.limit", "bad")
        #expect(invalid.code == .invalidValue && invalid.category == .invalidArgument)
        #expect(invalid.field == "linux.resources.pids.limit" && invalid.errno == nil)
        #expect(invalid.description == "linux.resources.pids.limit: bad")
        var r = OCIResources()
        r.memory = OCIResources.Memory()
        r.memory?.disableOOMKiller = true
        let error = #expect(throws: CgroupError.self) { try CgroupV2.writes(r) }
        #expect(error?.code == .unsupported && error?.category == .unsupported)
        #expect(error?.field == "linux.resources.memory.disableOOMKiller")
        #expect(
            error?.description.hasPrefix("linux.resources.memory.disableOOMKiller: true cannot be honoured") == true)
    }

    @Test("codes have stable names")
    func names() {
        #expect(
            CgroupError.Code.allCases.map(\.rawValue) == [
                "syscall", "invalidValue", "unsupported", "inUse", "timedOut",
            ])
    }
}
