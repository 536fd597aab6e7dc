import Errors
import Foundation
import Glibc
import Testing

@testable import LinuxKernel
@testable import OCI
@testable import Runtime

/// RuntimeError and the client wordings in the common shape (SysError: LinuxKernelTests).
struct RuntimeErrorShapeTests {
    @Test("a config.json field: invalidSpec, the description is field: message")
    func validation() {
        var spec = DefaultSpec.make(rootfs: "/", args: ["sh"])
        spec.linux?.namespaces?.append(Namespace(type: "bogus"))
        let error = #expect(throws: RuntimeError.self) { try SpecValidation.validate(spec, bundle: "/") }
        #expect(error?.code == .invalidSpec && error?.codeName == "runtime.invalidSpec" && error?.category == .invalidArgument)
        #expect(error?.field?.hasPrefix("linux.namespaces[") == true && error?.field?.hasSuffix("].type") == true)
        #expect(error?.description == "\(error?.field ?? ""): unknown namespace type \"bogus\"")
    }

    /// Exact texts: containerd, podman and docker match substrings of them (ClientWordings.swift).
    @Test("the client wordings are runc's")
    func wordings() {
        #expect(RuntimeError.containerNotFound("c1").description == #"container "c1" does not exist"#)
        #expect(RuntimeError.containerNotFound("c1").code == .notFound)
        #expect(RuntimeError.containerExists("c1").description == #"container "c1" already exists"#)
        #expect(RuntimeError.containerExists("c1", beingCreatedBy: "pid 7").description == #"container "c1" already exists (being created by pid 7)"#)
        #expect(RuntimeError.notRunning().description == "container not running")
        #expect(RuntimeError.notRunning("cannot exec in a stopped container").description == "cannot exec in a stopped container: container not running")
        #expect(RuntimeError.notRunning().category == .failedPrecondition)
        #expect(RuntimeError.notPaused("c1").description == "container c1 is not paused: container not paused")
        #expect(RuntimeError.startStopped().description == "cannot start a container that has stopped")
        #expect(RuntimeError.startRunning().description == "cannot start an already running container")
        #expect(RuntimeError.deleteNotStopped("c1", status: "running").description == "cannot delete container c1 that is not stopped: running")
        let exec = RuntimeError.executableNotFound("pyhton")
        #expect(exec.description == #"process.args[0]: exec: "pyhton": executable file not found in $PATH"#)
        #expect(exec.field == "process.args[0]" && exec.code == .executableNotFound)
    }

    @Test("a missing container's state is notFound with the wording containerd matches")
    func missingState() throws {
        let root = FileManager.default.temporaryDirectory.path + "/errshape-\(getpid())"
        defer { try? Files.removeTree(root) }
        let error = #expect(throws: RuntimeError.self) { _ = try StateStore(root: root).load("absent") }
        #expect(error?.code == .notFound)
        #expect(error?.description.contains(ClientWordings.doesNotExist) == true)
    }

    @Test("the transitional message-only initializer: code unspecified, the message as given")
    func transitional() {
        let error = RuntimeError("runsc exec: exit status 3")
        #expect(error.code == .unspecified && error.field == nil && error.description == "runsc exec: exit status 3")
    }

    @Test("codes have stable names")
    func names() {
        #expect(RuntimeError.Code(rawValue: "notRunning") == .notRunning)
        #expect(RuntimeError.Code.allCases.allSatisfy { ErrorCategory.allCases.contains($0.category) })
    }
}
