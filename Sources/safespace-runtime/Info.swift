import ArgumentParser
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Glibc
import LinuxKernel
import OCI
import Runtime
import SeccompFilters

/// runtime-spec features.md: what this runtime implements.
struct FeaturesDocument: Encodable {
    struct LinuxFeatures: Encodable {
        struct Enabled: Encodable { var enabled: Bool }
        struct CgroupFeatures: Encodable { var v1: Bool; var v2: Bool; var systemd: Bool; var systemdUser: Bool; var rdma: Bool }
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
    static let configuration = CommandConfiguration(abstract: "Print the features this runtime implements (features.md).")
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

struct SpecCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "spec", abstract: "Write a default config.json to the bundle.")
    @OptionGroup var globals: GlobalOptions
    @Option(name: [.short, .long]) var bundle: String = "."
    func run() throws {
        let path = bundle + "/config.json"
        if access(path, F_OK) == 0 { throw ValidationError("File \(path) exists. Remove it first") }
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let data = try enc.encode(DefaultSpec.make())
        try Files.writeAtomically(path, Array(data), mode: 0o644)
    }
}
