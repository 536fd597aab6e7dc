import Errors
import SandboxSpec
import Testing

@testable import SandboxHosting

/// SandboxHostError in the common shape.
struct SandboxHostErrorShapeTests {
    @Test("a runtime the store cannot give is an error of spec.runtime, coded by the store's error")
    func runtime() {
        let missing = SandboxHostError(
            runtime: RootfsError.notInstalled(runtime: "node:20", installed: ["python:3.11"]))
        #expect(
            missing.code == .runtimeNotFound && missing.codeName == "host.runtimeNotFound"
                && missing.category == .notFound)
        #expect(missing.field == "spec.runtime" && missing.cause is RootfsError)
        #expect(
            missing.description
                == "spec.runtime: \(RootfsError.notInstalled(runtime: "node:20", installed: ["python:3.11"]))")
        #expect(SandboxHostError(runtime: RootfsError.invalidRuntime("a b")).code == .invalidPlan)
    }

    @Test("a failed call keeps the strerror text and the errno")
    func failed() {
        let error = SandboxHostError.failed("cannot create /x", operation: "mkdir", errno: 13)
        #expect(error.code == .failed && error.errno == 13 && error.operation == "mkdir" && error.field == nil)
        #expect(error.description == "cannot create /x: Permission denied")
        #expect(error.lines == [error.description])
    }

    @Test("failed releases: one line each, in the failures")
    func cleanup() {
        let error = SandboxHostError(cleanup: [
            (step: "bundle /b", error: SandboxHostError(.failed, "busy")),
            (step: "cpus", error: SandboxHostError(.failed, "gone")),
        ])
        #expect(error.code == .cleanupFailed && error.failures.count == 2)
        #expect(error.lines == ["cleanup: bundle /b: busy", "cleanup: cpus: gone"])
        #expect(error.description == "cleanup: bundle /b: busy\ncleanup: cpus: gone")
    }
}
