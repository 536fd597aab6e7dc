import Foundation
import OCI
import Runtime
import TestSupport
import Testing

/// Helpers of the gVisor backend's tests: bundles that ask for `high`, and what runsc left.
enum GVisor {
    static let runsc: String? = ["/usr/bin/runsc", "/usr/local/bin/runsc"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    }
    static var available: Bool { Harness.isRoot && runsc != nil && Harness.hasPythonRootfs }

    /// A python-rootfs bundle whose annotation asks for the gVisor level.
    static func bundle(_ args: [String], edit: (inout Spec) -> Void = { _ in }) throws -> String {
        try Harness.pythonBundle(args) { spec in
            spec.annotations = ["llmsafespace.dev/security-level": "high"]
            // runsc mounts its own cgroupfs when asked; the workload has no use for it.
            spec.mounts?.removeAll { $0.destination == "/sys/fs/cgroup" }
            edit(&spec)
        }
    }

    /// Host processes of runsc that name `id` (sandbox, gofer), besides `Harness.leftovers`.
    static func runscProcesses(_ id: String) -> [String] {
        let ps = (try? Harness.run("/bin/ps", ["-eo", "pid,args"]).stdout) ?? ""
        return ps.split(separator: "\n").filter { $0.contains("runsc") && $0.contains(id) }.map(String.init)
    }

    /// `safespace-runtime` with `env` added to a minimal environment.
    static func runtime(root: String, _ args: [String], env: [String: String]) throws -> Harness.Result {
        var environment = ["PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
        environment.merge(env) { $1 }
        return try Harness.run(Harness.runtimeBinary, ["--root", root] + args, env: environment)
    }

    /// The container's stored state (its cgroup directories, backend), read as JSON.
    static func storedState(_ c: TestContainer) throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: c.root + "/" + c.id + "/state.json"))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    /// The container's directory in the v1 memory hierarchy (or the v2 one).
    static func memoryCgroup(_ c: TestContainer) throws -> String {
        let state = try storedState(c)
        let dirs = try #require((state["cgroup"] as? [String: Any])?["directories"] as? [String: String])
        return try #require(dirs.first { $0.key.split(separator: ",").contains("memory") }?.value ?? dirs["unified"])
    }
}
