import Foundation
import LinuxKernel
import OCI
import Runtime
import TestSupport
import Testing

/// One container under test: its own `--root`, a unique id and a bundle. `destroy()` force-deletes
/// it and removes the root and the bundle; tests call it in `defer`.
struct TestContainer {
    let id: String
    let root: String
    let bundle: String

    init(_ prefix: String, bundle: String) throws {
        self.id = Harness.uniqueID(prefix)
        self.root = try Harness.tempDir("root")
        self.bundle = bundle
    }

    /// `safespace-runtime --root ROOT ARGS…`
    @discardableResult
    func rt(_ args: [String], stdin: String? = nil) throws -> Harness.Result {
        try Harness.spawn([Harness.runtimeBinary, "--root", root] + args, stdin: stdin)
    }

    @discardableResult func run(_ extra: [String] = []) throws -> Harness.Result {
        try rt(["run", "--bundle", bundle] + extra + [id])
    }
    @discardableResult func create(_ extra: [String] = []) throws -> Harness.Result {
        try rt(["create", "--bundle", bundle] + extra + [id])
    }
    @discardableResult func start() throws -> Harness.Result { try rt(["start", id]) }
    @discardableResult func delete(force: Bool = false) throws -> Harness.Result {
        try rt(["delete"] + (force ? ["--force"] : []) + [id])
    }

    /// The `state` JSON, or nil when `state` fails.
    func state() -> [String: Any]? {
        guard let r = try? rt(["state", id]), r.status == 0 else { return nil }
        return (try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8))) as? [String: Any]
    }

    var status: String? { state()?["status"] as? String }
    var pid: Int32? { (state()?["pid"] as? NSNumber)?.int32Value }

    /// Polls `state` until the status is `wanted` (bounded; not a timing assertion).
    @discardableResult
    func waitFor(status wanted: String) -> Bool {
        Harness.eventually { status == wanted }
    }

    func leftovers() -> [String] { Harness.leftovers(id: id, root: root) }

    func destroy() {
        _ = try? rt(["delete", "--force", id])
        Harness.cleanup(root, bundle)
    }
}

extension Harness {
    /// Runs `sh -c script` with `run` in a fresh busybox container and deletes it; returns the
    /// result and what the container left on the host right after `run` returned.
    static func runScript(_ script: String, prefix: String = "iso", edit: (inout Spec) -> Void = { _ in }) throws -> (
        Result, [String]
    ) {
        let c = try TestContainer(prefix, bundle: try busyboxBundle(["sh", "-c", script], edit: edit))
        defer { c.destroy() }
        let r = try c.run()
        return (r, c.leftovers())
    }

    /// The same with a Python-rootfs bundle.
    static func runPython(_ args: [String], prefix: String = "py", edit: (inout Spec) -> Void = { _ in }) throws -> (
        Result, [String]
    ) {
        let c = try TestContainer(prefix, bundle: try pythonBundle(args, edit: edit))
        defer { c.destroy() }
        let r = try c.run()
        return (r, c.leftovers())
    }

    /// A bundle whose root is the shared Python rootfs, read-only, with tmpfs /tmp and /workspace.
    static func pythonBundle(
        _ args: [String], tmpOptions: [String] = ["nosuid", "nodev", "mode=1777", "size=16m"],
        edit: (inout Spec) -> Void = { _ in }
    ) throws -> String {
        let bundle = try tempDir("pybundle")
        defer { if !FileManager.default.fileExists(atPath: bundle + "/config.json") { cleanup(bundle) } }
        var spec = DefaultSpec.make(rootfs: pythonRootfs, args: args)
        spec.root = Root(path: pythonRootfs, readonly: true)
        spec.process?.env = ["PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp", "PYTHONDONTWRITEBYTECODE=1"]
        spec.mounts! += [
            Mount(destination: "/tmp", type: "tmpfs", source: "tmpfs", options: tmpOptions),
            Mount(destination: "/workspace", type: "tmpfs", source: "tmpfs", options: tmpOptions),
        ]
        edit(&spec)
        try writeSpec(spec, bundle: bundle)
        return bundle
    }

    /// Rewrites `<bundle>/config.json` as untyped JSON (for values `Spec` cannot hold: -1, "abc").
    static func patchConfig(bundle: String, _ edit: (inout [String: Any]) -> Void) throws {
        let url = URL(fileURLWithPath: bundle + "/config.json")
        var obj = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        edit(&obj)
        try JSONSerialization.data(withJSONObject: obj, options: [.prettyPrinted]).write(to: url)
    }

    /// A host shell script (mode 0755) at `dir/name` running `body`.
    static func script(_ dir: String, _ name: String, _ body: String) throws -> String {
        let path = dir + "/" + name
        try "#!/bin/sh\n\(body)\n".write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o755)
        return path
    }

    /// `Foundation.Process` started in the background with piped output (for `run` that waits).
    final class Background: @unchecked Sendable {
        let process = Foundation.Process()
        private let out = Pipe(), err = Pipe()
        private var outData = Data(), errData = Data()
        private let group = DispatchGroup()

        init(_ path: String, _ args: [String]) throws {
            process.executableURL = URL(fileURLWithPath: path)
            process.arguments = args
            process.standardInput = FileHandle.nullDevice
            process.standardOutput = out
            process.standardError = err
            try process.run()
            for (pipe, isOut) in [(out, true), (err, false)] {
                group.enter()
                DispatchQueue.global().async {
                    let d = pipe.fileHandleForReading.readDataToEndOfFile()
                    if isOut { self.outData = d } else { self.errData = d }
                    self.group.leave()
                }
            }
        }

        /// Waits for exit; shell-style status (128+N for a signal).
        func wait() -> Result {
            process.waitUntilExit()
            group.wait()
            let status =
                process.terminationReason == .uncaughtSignal
                ? 128 + process.terminationStatus : process.terminationStatus
            return Result(
                status: status, stdout: String(decoding: outData, as: UTF8.self),
                stderr: String(decoding: errData, as: UTF8.self))
        }

        func terminate() {
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
    }

    /// gethostname(2) of the test process (the host's UTS namespace).
    static func hostname() -> String {
        var buf = [CChar](repeating: 0, count: 256)
        gethostname(&buf, buf.count)
        return String(nulTerminated: buf)
    }
}
