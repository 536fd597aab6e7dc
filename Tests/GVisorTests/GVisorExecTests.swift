import LinuxKernel
import Testing

@testable import GVisor
@testable import OCI
@testable import Runtime

/// What the gVisor backend refuses before `runsc exec` (GVisorSpec.checkExec): a container's
/// seccomp profile the installed runsc would not give the exec'd process, and a umask it
/// would not apply.
struct GVisorExecUnitTests {
    static let filtered = Spec(linux: Linux(seccomp: Seccomp(defaultAction: "SCMP_ACT_ALLOW")))
    static let process = OCI.Process(args: ["true"])

    @Test("a container with linux.seccomp: exec refused unless gvisor.execSeccomp says runsc applies it")
    func seccomp() throws {
        let error = #expect(throws: RuntimeError.self) {
            try GVisorSpec.checkExec(process: Self.process, container: Self.filtered, id: "c") { false }
        }
        #expect(error?.description.hasPrefix("linux.seccomp:") == true, "\(String(describing: error))")
        #expect(error?.code == .unsupported && error?.field == "linux.seccomp")
        try GVisorSpec.checkExec(process: Self.process, container: Self.filtered, id: "c") { true }
        // Without a profile the configuration is not even read.
        try GVisorSpec.checkExec(process: Self.process, container: Spec(linux: Linux()), id: "c") {
            Issue.record("configuration read for a container without a profile")
            return false
        }
    }

    @Test(
        "user.umask: only runsc's own 0022 (or none) passes",
        arguments: [(UInt32?.none, true), (0o022, true), (0o077, false), (0, false)])
    func umask(mask: UInt32?, passes: Bool) throws {
        var process = Self.process
        process.user.umask = mask
        if passes {
            try GVisorSpec.checkExec(process: process, container: Spec(), id: "c") { false }
        } else {
            let error = #expect(throws: RuntimeError.self) {
                try GVisorSpec.checkExec(process: process, container: Spec(), id: "c") { false }
            }
            #expect(error?.description.hasPrefix("process.user.umask:") == true, "\(String(describing: error))")
            #expect(error?.code == .unsupported && error?.field == "process.user.umask")
        }
    }
}
