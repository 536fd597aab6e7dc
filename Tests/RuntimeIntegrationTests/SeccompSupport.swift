import Foundation
import OCI
import Runtime
import SeccompFilters
import TestSupport
import Testing

/// Helpers of the seccomp integration tests: the static C probe (Tests/Probes/seccomp_probe.c),
/// bundles that carry it, and the repository's profiles resolved for this machine.
enum SeccompHarness {
    static let repo: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    static let nodeRootfs = "/var/lib/safespace/rootfs/node-18/rootfs"
    static var hasNodeRootfs: Bool { FileManager.default.fileExists(atPath: nodeRootfs + "/usr/bin/node") }
    static let podmanProfile = "/usr/share/containers/seccomp.json"

    /// A directory holding `seccomp_probe`, built with `cc -static -pthread`. Named by a hash
    /// of the source, so test runs share one build and leave one directory behind.
    static let probeDir: Result<String, ProbeError> = {
        do {
            let source = repo + "/Tests/Probes/seccomp_probe.c"
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325
            for byte in try Data(contentsOf: URL(fileURLWithPath: source)) {
                hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3
            }
            let dir = NSTemporaryDirectory() + "safespace-seccomp-probe-" + String(hash, radix: 16)
            if FileManager.default.isExecutableFile(atPath: dir + "/seccomp_probe") { return .success(dir) }
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let tmp = dir + "/seccomp_probe.\(getpid())"
            let r = try Harness.run("/usr/bin/cc", ["-static", "-pthread", "-O2", "-o", tmp, source])
            guard r.status == 0 else { return .failure(ProbeError(message: "cc: \(r.stderr)")) }
            guard rename(tmp, dir + "/seccomp_probe") == 0 else {
                return .failure(ProbeError(message: "rename \(tmp): errno \(errno)"))
            }
            return .success(dir)
        } catch {
            return .failure(ProbeError(message: "\(error)"))
        }
    }()

    struct ProbeError: Error, CustomStringConvertible {
        var message: String
        var description: String { message }
    }

    /// A busybox bundle whose `/bin/seccomp_probe` runs with `args` under `seccomp`.
    static func probeBundle(_ args: [String], seccomp: Seccomp?, edit: (inout Spec) -> Void = { _ in }) throws -> String
    {
        let dir = try probeDir.get()
        let bundle = try Harness.busyboxBundle(["/bin/seccomp_probe"] + args) { spec in
            spec.linux?.seccomp = seccomp
            edit(&spec)
        }
        try FileManager.default.copyItem(atPath: dir + "/seccomp_probe", toPath: bundle + "/rootfs/bin/seccomp_probe")
        return bundle
    }

    /// Runs the probe in a fresh container; returns the result and what the container left behind.
    static func runProbe(_ args: [String], seccomp: Seccomp?, edit: (inout Spec) -> Void = { _ in }) throws -> (
        Harness.Result, [String]
    ) {
        let c = try TestContainer("sec", bundle: try probeBundle(args, seccomp: seccomp, edit: edit))
        defer { c.destroy() }
        let r = try c.run()
        return (r, c.leftovers())
    }

    /// A bundle on the node rootfs, read-only, with tmpfs /tmp and /workspace (as pythonBundle).
    static func nodeBundle(_ args: [String], edit: (inout Spec) -> Void = { _ in }) throws -> String {
        let bundle = try Harness.tempDir("nodebundle")
        var spec = DefaultSpec.make(rootfs: nodeRootfs, args: args)
        spec.root = Root(path: nodeRootfs, readonly: true)
        spec.process?.env = ["PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp"]
        let tmp = ["nosuid", "nodev", "mode=1777", "size=64m"]
        spec.mounts! += [
            Mount(destination: "/tmp", type: "tmpfs", source: "tmpfs", options: tmp),
            Mount(destination: "/workspace", type: "tmpfs", source: "tmpfs", options: tmp),
        ]
        edit(&spec)
        try Harness.writeSpec(spec, bundle: bundle)
        return bundle
    }

    /// The probe's directory bind-mounted read-only at /mnt.
    static func probeMount() throws -> Mount {
        Mount(destination: "/mnt", type: "bind", source: try probeDir.get(), options: ["rbind", "ro"])
    }

    /// A profile file (Docker/Podman format) as OCI linux.seccomp for a process without capabilities.
    static func resolved(_ path: String) throws -> Seccomp {
        let profile = try SeccompProfile.decode(Array(try Data(contentsOf: URL(fileURLWithPath: path))), source: path)
        return try profile.resolved(for: .host(), source: path)
    }

    /// The probe's output as `what -> result` (`thread -> ok`, `mount -> EPERM`).
    static func results(_ out: String) -> [String: String] {
        var map: [String: String] = [:]
        for line in lines(out) {
            guard let space = line.lastIndex(of: " ") else { continue }
            map[String(line[..<space])] = String(line[line.index(after: space)...])
        }
        return map
    }

    /// A profile that denies nothing but what `rules` say (default ALLOW), native arch only.
    static func allowing(_ rules: [Seccomp.Syscall], architectures: [String]? = nil) -> Seccomp {
        Seccomp(defaultAction: "SCMP_ACT_ALLOW", architectures: architectures, syscalls: rules)
    }
}
