import ArgumentParser
import Glibc
import LinuxKernel
import OCI
import Runtime
import SeccompFilters

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// runtime-spec features.md: what this runtime implements.
struct FeaturesDocument: Encodable {
    struct LinuxFeatures: Encodable {
        struct Enabled: Encodable { var enabled: Bool }
        struct CgroupFeatures: Encodable {
            var v1: Bool
            var v2: Bool
            var systemd: Bool
            var systemdUser: Bool
            var rdma: Bool
        }
        struct MountExtensions: Encodable { var idmap: Enabled }
        var namespaces: [String]
        var capabilities: [String]
        var cgroup: CgroupFeatures
        var seccomp: SeccompNames.Features
        var apparmor: Enabled
        var selinux: Enabled
        var intelRdt: Enabled
        var mountExtensions: MountExtensions
    }
    var ociVersionMin = "1.0.0"
    var ociVersionMax = Spec.version
    var hooks = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"]
    var mountOptions: [String]
    var linux: LinuxFeatures
    var annotations: [String: String]
}

struct Features: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the features this runtime implements (features.md).")
    @OptionGroup var globals: GlobalOptions
    func run() throws {
        var caps: [String] = []
        for c in 0...Capability.lastCap {
            if let name = cap_name(c) { caps.append(name) }
        }
        let doc = FeaturesDocument(
            mountOptions: (MountOptionsNames.all).sorted(),
            linux: .init(
                namespaces: ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
                capabilities: caps,
                cgroup: .init(v1: true, v2: true, systemd: false, systemdUser: false, rdma: false),
                seccomp: SeccompNames.features, apparmor: .init(enabled: false), selinux: .init(enabled: false),
                intelRdt: .init(enabled: false), mountExtensions: .init(idmap: .init(enabled: false))),
            annotations: ["io.github.safespace.version": RuntimeVersion.version])
        try printJSON(doc)
    }
}

enum MountOptionsNames {
    /// The options `MountOptions` parses (flags, propagation, recursive attributes).
    static var all: [String] { MountOptions.knownNames }
}

/// runc's `spec`: writes runc's default config.json (`DefaultSpec.runc`) into the bundle, laid
/// out as runc writes it (Go's indented JSON, tabs, no final newline; mode 0666 less the umask).
/// `--rootless` (the global flag, as `runc spec --rootless`) writes runc's rootless variant.
/// Fails, as runc does, when the bundle cannot be entered or config.json exists.
struct SpecCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spec", abstract: "Create a new specification file (config.json), runc's default.",
        discussion:
            "With --rootless: runc's configuration for a rootless container (a user namespace mapping root to the caller)."
    )
    @OptionGroup var globals: GlobalOptions
    @Option(name: [.short, .long], help: "Path to the root of the bundle directory.") var bundle: String?
    func run() throws {
        try perform(globals) { _ in
            // runc chdirs into the bundle and names the file relative to it.
            if let bundle, !bundle.isEmpty, chdir(bundle) != 0 {
                throw RuntimeError(.invalidSpec, "chdir \(bundle): \(goErrorText(errno))")
            }
            let path = "config.json"
            if access(path, F_OK) == 0 { throw RuntimeError(.alreadyExists, "File \(path) exists. Remove it first") }
            let data = try GoJSON.marshalIndent(DefaultSpec.runc(rootless: globals.rootless))
            let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o666)
            guard fd >= 0 else { throw RuntimeError(.invalidSpec, "open \(path): \(goErrorText(errno))") }
            defer { close(fd) }
            try Files.writeAll(fd: fd, data)
        }
    }
}

/// strerror(3) as Go prints an errno: lower case (`no such file or directory`).
func goErrorText(_ code: Int32) -> String {
    let text = String(cString: strerror(code))
    return text.prefix(1).lowercased() + text.dropFirst()
}
