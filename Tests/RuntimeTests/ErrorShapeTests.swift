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
        #expect(
            error?.code == .invalidSpec && error?.codeName == "runtime.invalidSpec"
                && error?.category == .invalidArgument)
        #expect(error?.field?.hasPrefix("linux.namespaces[") == true && error?.field?.hasSuffix("].type") == true)
        #expect(error?.description == "\(error?.field ?? ""): unknown namespace type \"bogus\"")
    }

    /// Exact texts: containerd, podman and docker match substrings of them (ClientWordings.swift).
    @Test("the client wordings are runc's")
    func wordings() {
        #expect(RuntimeError.containerNotFound("c1").description == #"container "c1" does not exist"#)
        #expect(RuntimeError.containerNotFound("c1").code == .notFound)
        #expect(RuntimeError.containerExists("c1").description == #"container "c1" already exists"#)
        #expect(
            RuntimeError.containerExists("c1", beingCreatedBy: "pid 7").description
                == #"container "c1" already exists (being created by pid 7)"#)
        #expect(RuntimeError.notRunning().description == "container not running")
        #expect(
            RuntimeError.notRunning("cannot exec in a stopped container").description
                == "cannot exec in a stopped container: container not running")
        #expect(RuntimeError.notRunning().category == .failedPrecondition)
        #expect(RuntimeError.notPaused("c1").description == "container c1 is not paused: container not paused")
        #expect(RuntimeError.startStopped().description == "cannot start a container that has stopped")
        #expect(RuntimeError.startRunning().description == "cannot start an already running container")
        #expect(
            RuntimeError.deleteNotStopped("c1", status: "running").description
                == "cannot delete container c1 that is not stopped: running")
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

    @Test("a pod annotation or a backend the program lacks: a code, the field apart, the text runc-style")
    func backendAndPodRole() {
        let key = PodRole.typeKeys[0]
        let unknown = #expect(throws: RuntimeError.self) { _ = try PodRole.of([key: "bogus"]) }
        #expect(unknown?.code == .invalidSpec && unknown?.field == "annotations[\(key)]")
        #expect(
            unknown?.description
                == "annotations[\(key)]: unknown container type \"bogus\" (expected sandbox or container)")
        let unnamed = #expect(throws: RuntimeError.self) { _ = try PodRole.of([key: "container"]) }
        #expect(unnamed?.code == .invalidSpec && unnamed?.field == "annotations[\(key)]")
        let missing = #expect(throws: RuntimeError.self) { _ = try RuntimeBackends.native.backend(.gvisor) }
        #expect(missing?.code == .unsupported && missing?.category == .unsupported && missing?.field == nil)
        #expect(missing?.description == "the gvisor backend is not available in this program (it runs native)")
    }

    /// The init reports a failure as text on the init socket; the parent rethrows it with the
    /// code (and field, operation, errno) the init threw, the description unchanged.
    @Test("an error crosses the init socket with its code, field and text")
    func initProtocol() throws {
        func roundTrip(_ error: any Error) throws -> any Error {
            let data = try JSONEncoder().encode(InitMessage(reporting: error))
            return try JSONDecoder().decode(InitMessage.self, from: data).reportedError(
                default: "container init failed", operation: "exec")
        }
        let runtime = RuntimeError(
            .invalidSpec, field: "process.user.uid",
            "uid 5 is not mapped in the container's user namespace (linux.uidMappings)")
        let r = try #require(try roundTrip(runtime) as? RuntimeError)
        #expect(
            r.code == .invalidSpec && r.field == "process.user.uid" && r.description == runtime.description
                && r.operation == nil)
        let exec = RuntimeError.executableNotFound("pyhton")
        let e = try #require(try roundTrip(exec) as? RuntimeError)
        #expect(
            e.code == .executableNotFound && e.field == exec.field && e.operation == "exec"
                && e.description == exec.description)
        let sys = SysError("mount proc on", path: "/proc", errno: EPERM, field: "mounts[0]")
        let s = try #require(try roundTrip(sys) as? SysError)
        #expect(s.code == .syscall && s.field == "mounts[0]" && s.errno == EPERM && s.operation == "mount proc on")
        #expect(s.description == sys.description)
        struct Plain: Error, CustomStringConvertible { var description: String { "something broke" } }
        let p = try #require(try roundTrip(Plain()) as? RuntimeError)
        #expect(p.code == .initFailed && p.field == nil && p.operation == "exec" && p.description == "something broke")
        let empty = InitMessage(type: "error").reportedError(default: "container init failed")
        #expect((empty as? RuntimeError)?.code == .initFailed && "\(empty)" == "container init failed")
    }

    @Test("codes have stable names")
    func names() {
        #expect(RuntimeError.Code(rawValue: "notRunning") == .notRunning)
        #expect(RuntimeError.Code.allCases.allSatisfy { ErrorCategory.allCases.contains($0.category) })
    }
}
