import Errors
import Testing

@testable import SandboxSpec

/// SandboxError and RootfsError in the common shape.
struct SandboxErrorShapeTests {
    @Test("the code and field are the first issue's; the description lists them all")
    func firstIssue() {
        let error = SandboxError([
            FieldIssue(.unknownField, field: "spec.filesystm", "unknown field"),
            FieldIssue(.notEnforceable, field: "spec.storage.volumeSize", "not enforceable yet"),
        ])
        #expect(
            error.code == .unknownField && error.codeName == "sandbox.unknownField"
                && error.category == .invalidArgument)
        #expect(error.field == "spec.filesystm" && error.operation == nil && error.errno == nil)
        #expect(error.description == "spec.filesystm: unknown field\nspec.storage.volumeSize: not enforceable yet")
        #expect(SandboxError(.notEnforceable, field: "spec.x", "no").category == .unsupported)
        #expect(SandboxError(.syntax, field: "", "not YAML").field == nil)
    }

    @Test("a decoding error has its code and field")
    func decoding() {
        let error = #expect(throws: SandboxError.self) {
            try Sandbox.decode(yaml: "apiVersion: llmsafespace.dev/v1\nkind: Sandbox\nstatus: {}\n")
        }
        #expect(error?.code == .unknownField && error?.field == "status")
    }

    @Test("rootfs errors: one code per case, no field")
    func rootfs() {
        let missing = RootfsError.notInstalled(runtime: "node:20", installed: [])
        #expect(
            missing.code == .notInstalled && missing.codeName == "rootfs.notInstalled" && missing.category == .notFound)
        #expect(missing.field == nil && missing.errno == nil)
        #expect(RootfsError.invalidRuntime("x y").category == .invalidArgument)
        #expect(RootfsError.buildFailed(name: "a", script: "s", reason: "exit status 3").operation == "build")
    }

    @Test("each rootfs error's code is named after its case")
    func rootfsCodes() {
        let all: [RootfsError] = [
            .invalidRuntime("x"), .notInstalled(runtime: "x", installed: []), .invalidManifest(path: "p", reason: "r"),
            .rootfsMissing(runtime: "x", path: "p"), .unreadableStore(path: "p", reason: "r"),
            .buildScriptNotFound(searched: []),
            .buildFailed(name: "a", script: "s", reason: "r"), .unreadableTree(path: "p", reason: "r"),
            .unlistableName(path: "p"),
            .cannotWrite(path: "p", reason: "r"),
            .digestMismatch(runtime: "x", manifestDigest: "a", actualDigest: "b", difference: nil),
        ]
        #expect(all.map(\.code.rawValue) == all.map { Mirror(reflecting: $0).children.first?.label ?? "\($0)" })
        #expect(Set(all.map(\.code)).count == RootfsError.Code.allCases.count)
    }
}
