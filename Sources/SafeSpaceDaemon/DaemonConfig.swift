/// The daemon's configuration file (`--config`, default `/etc/safespace/safespaced.yaml`):
/// YAML, every key optional, an unknown key refused naming it. A missing file means the
/// defaults.
///
/// ```yaml
/// group: safespace                  # group whose members may call (besides root)
/// audit:
///   path: /var/log/safespace/audit.jsonl
///   journald: true
///   flush: incremental_async        # auditd.conf(5) terms: data (fdatasync each record before
///                                   # the request goes on), incremental_async (a thread syncs
///                                   # every `freq` records or 1 s after the first unsynced one),
///                                   # none (the kernel's write-back)
///   freq: 50                        # records per sync with incremental_async
/// node:
///   allocatableCPU: "2"             # Kubernetes quantity; default: the host's CPUs
///   allocatableMemory: 20Gi         # default: the host's MemTotal
/// limits:
///   maxRequestBytes: 1Mi            # JSON bodies (create, exec)
///   maxFileBytes: 64Mi              # PUT/GET of a file
///   maxExecOutputBytes: 16Mi        # stdout + stderr kept of one (non-streamed) exec
///   maxSandboxes: 256
/// shutdown:
///   gracePeriodSeconds: 10          # running execs get this long after SIGTERM, then SIGKILL
///   sandboxes: keep                 # keep | remove
/// paths:                            # the node's directories (SandboxHost.Configuration; pinned
///                                   # CPUs and id ranges are runtime.json's lease store)
///   runtimeRoot: /run/safespace
///   bundleRoot: /run/safespace-bundles
///   ephemeralStorage: /var/lib/safespace/ephemeral
///   rootfsStore: /var/lib/safespace/rootfs
///   seccompProfiles: /etc/safespace/profiles
/// network:                          # sandboxes with spec.networkAccess.egress (NetworkSettings;
///                                   # `safespace run` reads this section too)
///   pool: 100.64.0.0/16             # IPv4 prefix of the sandboxes' /30 subnets
///   dnsPort: 0                      # the egress filter's ports on 0.0.0.0; 0: the kernel picks
///   httpPort: 0
///   tlsPort: 0
///   upstreamDNS: ["192.0.2.53:53"]  # default /etc/resolv.conf; $SAFESPACE_UPSTREAM_DNS overrides
///   allowedPrivateRanges: []        # CIDRs the filter may dial although not global
///   maxConnections: 256             # concurrent proxied connections per sandbox
///   dnsQueriesPerSecond: 100        # DNS queries per second per sandbox
/// pools:                            # warm pools (WarmPools.swift)
///   directory: /etc/safespace/pools # WarmPool files (*.yaml) loaded at start
///   whenEmpty: create               # create | refuse: a claim of an empty pool (a pool's
///                                   # spec.whenEmpty wins)
///   refillPerSecond: 2              # pool sandboxes made per second at most (one at a time)
/// packages:                         # preloaded packages of warm pools (PackageLayer.swift)
///   allowlist: /etc/safespace/package-allowlist.txt  # names a pool may preload; none: refused
///   wheelhouse: /srv/wheels         # air-gapped: wheels from this directory only; default PyPI
///   advisoryDatabase: /var/lib/safespace/osv  # OSV JSON files the packages are scanned against
///   layers: /var/lib/safespace/layers         # where the pools' layers are built
///   python: python3                 # the host interpreter that runs pip
/// ```
import EgressHosting
import Foundation
import Glibc
import NodeResources
import SandboxSpec
import Yams

public struct DaemonConfig: Sendable, Equatable {
    public static let defaultPath = "/etc/safespace/safespaced.yaml"
    public static let defaultSocket = "/run/safespace/safespaced.sock"
    public static let defaultStateDir = "/run/safespaced"

    public var group = "safespace"
    public var auditPath = "/var/log/safespace/audit.jsonl"
    public var auditJournald = true
    /// `audit.flush`: when audit records reach the disk (auditd.conf(5)'s `flush` values we
    /// support: `data`, `incremental_async`, `none`).
    public var auditFlush = "incremental_async"
    /// `audit.freq`: records per background sync with `incremental_async` (1...10000).
    public var auditFreq = 50
    /// Millicores; nil: the host's CPUs (`NodeCapacity.read`).
    public var allocatableCPUMillis: Int64?
    /// Bytes; nil: the host's MemTotal.
    public var allocatableMemoryBytes: Int64?
    public var maxRequestBytes = 1 << 20
    public var maxFileBytes = 64 << 20
    public var maxExecOutputBytes = 16 << 20
    public var maxSandboxes = 256
    public var gracePeriodSeconds = 10
    public var removeSandboxesOnShutdown = false
    public var runtimeRoot = "/run/safespace"
    public var bundleRoot = "/run/safespace-bundles"
    public var ephemeralStorage = EphemeralStorage.defaultBase
    public var rootfsStore = RootfsStore.defaultRoot
    public var seccompProfiles = SeccompProfiles.defaultDirectory
    /// `network:`: the egress filter and the sandboxes' address pool.
    public var network = NetworkSettings()
    /// `pools.directory`: the WarmPool files (`*.yaml`) loaded at start.
    public var poolsDirectory = "/etc/safespace/pools"
    /// `pools.whenEmpty`: true for `refuse` (503), false for `create` (a cold create).
    public var poolsRefuseWhenEmpty = false
    /// `pools.refillPerSecond`: pool sandboxes made per second at most.
    public var poolsRefillPerSecond = 2
    /// `packages:`: the preloaded packages of warm pools.
    var packages = PackageSettings()

    public init() {}

    /// The keys of each section, for the unknown-key check.
    static let sections: [String: Set<String>] = [
        "": ["group", "audit", "node", "limits", "shutdown", "paths", "network", "pools", "packages"],
        "audit": ["path", "journald", "flush", "freq"],
        "node": ["allocatableCPU", "allocatableMemory"],
        "limits": ["maxRequestBytes", "maxFileBytes", "maxExecOutputBytes", "maxSandboxes"],
        "shutdown": ["gracePeriodSeconds", "sandboxes"],
        "paths": ["runtimeRoot", "bundleRoot", "ephemeralStorage", "rootfsStore", "seccompProfiles"],
        "pools": ["directory", "whenEmpty", "refillPerSecond"],
        "packages": ["allowlist", "wheelhouse", "advisoryDatabase", "layers", "python"],
    ]

    /// Reads `path`; a missing file gives the defaults.
    /// - Throws: `ConfigError` naming the file and the key (`limits.maxFileBytes: ...`).
    public static func load(path: String) throws -> DaemonConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            if access(path, F_OK) != 0 && errno == ENOENT { return DaemonConfig() }
            throw ConfigError("\(path): cannot read: \(String(cString: strerror(errno)))")
        }
        guard let text = String(data: data, encoding: .utf8) else { throw ConfigError("\(path): not UTF-8 text") }
        do { return try parse(yaml: text) } catch let error as ConfigError {
            throw ConfigError("\(path): \(error.message)")
        }
    }

    /// Parses the YAML text of a configuration file.
    public static func parse(yaml text: String) throws -> DaemonConfig {
        let root: Node?
        do { root = try Yams.compose(yaml: text) } catch { throw ConfigError("not valid YAML: \(error)") }
        var config = DaemonConfig()
        guard let root else { return config }  // an empty file: the defaults
        guard let top = root.mapping else {
            throw ConfigError("expected a mapping of sections (\(sections[""]!.sorted().joined(separator: ", ")))")
        }

        func entries(_ mapping: Node.Mapping, section: String) throws -> [(String, Node)] {
            var seen = Set<String>()
            return try mapping.map { key, value in
                guard let name = key.string else {
                    throw ConfigError("\(section.isEmpty ? "" : section + "."): keys must be strings")
                }
                let full = section.isEmpty ? name : "\(section).\(name)"
                guard sections[section]!.contains(name) else {
                    throw ConfigError(
                        "\(full): unknown key (known: \(sections[section]!.sorted().joined(separator: ", ")))")
                }
                guard seen.insert(name).inserted else { throw ConfigError("\(full): given twice") }
                return (name, value)
            }
        }
        func string(_ node: Node, _ key: String) throws -> String {
            guard let s = node.scalar?.string else { throw ConfigError("\(key): expected a string") }
            return s
        }
        func int(_ node: Node, _ key: String, min: Int = 0) throws -> Int {
            guard let s = node.scalar?.string else { throw ConfigError("\(key): expected a number") }
            let value: Int64
            if let plain = Int64(s) {
                value = plain
            } else {
                do { value = try Quantity.bytes(s, field: key) } catch { throw ConfigError("\(error)") }
            }
            guard value >= Int64(min), value <= Int64(Int32.max) * 64 else {
                throw ConfigError("\(key): \(s) is out of range (at least \(min))")
            }
            return Int(value)
        }
        func bool(_ node: Node, _ key: String) throws -> Bool {
            switch node.scalar?.string {
            case "true"?: return true
            case "false"?: return false
            default: throw ConfigError("\(key): expected true or false")
            }
        }
        func section(_ node: Node, _ name: String) throws -> [(String, Node)] {
            guard let mapping = node.mapping else {
                throw ConfigError("\(name): expected a mapping (\(sections[name]!.sorted().joined(separator: ", ")))")
            }
            return try entries(mapping, section: name)
        }

        for (name, value) in try entries(top, section: "") {
            switch name {
            case "group":
                config.group = try string(value, "group")
                if config.group.isEmpty { throw ConfigError("group: must not be empty") }
            case "audit":
                for (key, v) in try section(value, "audit") {
                    if key == "path" {
                        config.auditPath = try string(v, "audit.path")
                        guard config.auditPath.hasPrefix("/") else {
                            throw ConfigError("audit.path: must be an absolute path")
                        }
                    } else if key == "flush" {
                        config.auditFlush = try string(v, "audit.flush")
                        guard ["data", "incremental_async", "none"].contains(config.auditFlush) else {
                            throw ConfigError(
                                "audit.flush: \(config.auditFlush) is not one of data, incremental_async, none")
                        }
                    } else if key == "freq" {
                        config.auditFreq = try int(v, "audit.freq")
                        guard (1...10000).contains(config.auditFreq) else {
                            throw ConfigError("audit.freq: \(config.auditFreq) is not within 1...10000 records")
                        }
                    } else {
                        config.auditJournald = try bool(v, "audit.journald")
                    }
                }
            case "node":
                for (key, v) in try section(value, "node") {
                    let s = try string(v, "node.\(key)")
                    do {
                        if key == "allocatableCPU" {
                            config.allocatableCPUMillis = try Quantity.milli(s, field: "node.allocatableCPU")
                        } else {
                            config.allocatableMemoryBytes = try Quantity.bytes(s, field: "node.allocatableMemory")
                        }
                    } catch { throw ConfigError("\(error)") }
                }
            case "limits":
                for (key, v) in try section(value, "limits") {
                    let n = try int(v, "limits.\(key)", min: 1)
                    switch key {
                    case "maxRequestBytes": config.maxRequestBytes = n
                    case "maxFileBytes": config.maxFileBytes = n
                    case "maxExecOutputBytes": config.maxExecOutputBytes = n
                    default: config.maxSandboxes = n
                    }
                }
            case "shutdown":
                for (key, v) in try section(value, "shutdown") {
                    if key == "gracePeriodSeconds" {
                        config.gracePeriodSeconds = try int(v, "shutdown.gracePeriodSeconds")
                    } else {
                        switch try string(v, "shutdown.sandboxes") {
                        case "keep": config.removeSandboxesOnShutdown = false
                        case "remove": config.removeSandboxesOnShutdown = true
                        case let other: throw ConfigError("shutdown.sandboxes: \"\(other)\": expected keep or remove")
                        }
                    }
                }
            case "network":
                do { config.network = try NetworkSettings.parse(value) } catch { throw ConfigError("\(error)") }
            case "pools":
                for (key, v) in try section(value, "pools") {
                    switch key {
                    case "directory":
                        config.poolsDirectory = try string(v, "pools.directory")
                        guard config.poolsDirectory.hasPrefix("/") else {
                            throw ConfigError("pools.directory: must be an absolute path")
                        }
                    case "whenEmpty":
                        switch try string(v, "pools.whenEmpty") {
                        case "create": config.poolsRefuseWhenEmpty = false
                        case "refuse": config.poolsRefuseWhenEmpty = true
                        case let other: throw ConfigError("pools.whenEmpty: \"\(other)\": expected create or refuse")
                        }
                    default: config.poolsRefillPerSecond = try int(v, "pools.refillPerSecond", min: 1)
                    }
                }
            case "packages":
                for (key, v) in try section(value, "packages") {
                    let text = try string(v, "packages.\(key)")
                    guard key == "python" || text.hasPrefix("/") else {
                        throw ConfigError("packages.\(key): must be an absolute path")
                    }
                    switch key {
                    case "allowlist": config.packages.allowlist = text
                    case "wheelhouse": config.packages.wheelhouse = text
                    case "advisoryDatabase": config.packages.advisoryDatabase = text
                    case "layers": config.packages.layers = text
                    default:
                        guard !text.isEmpty else { throw ConfigError("packages.python: must not be empty") }
                        config.packages.python = text
                    }
                }
            default:  // paths
                for (key, v) in try section(value, "paths") {
                    let path = try string(v, "paths.\(key)")
                    guard path.hasPrefix("/") else { throw ConfigError("paths.\(key): must be an absolute path") }
                    switch key {
                    case "runtimeRoot": config.runtimeRoot = path
                    case "bundleRoot": config.bundleRoot = path
                    case "ephemeralStorage": config.ephemeralStorage = path
                    case "rootfsStore": config.rootfsStore = path
                    default: config.seccompProfiles = path
                    }
                }
            }
        }
        return config
    }
}

/// A configuration or start-up error of the daemon; `message` is the whole description.
public struct ConfigError: Error, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
