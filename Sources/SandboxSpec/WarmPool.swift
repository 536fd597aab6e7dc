/// The `WarmPool` resource of `llmsafespace.dev/v1`: a number of sandboxes made ahead of need
/// from one Sandbox spec (the template), handed out by a claim in one round trip.
///
/// ```yaml
/// apiVersion: llmsafespace.dev/v1
/// kind: WarmPool
/// metadata: {name: python-std}
/// spec:
///   minSize: 4            # ready sandboxes kept (default 1)
///   maxSize: 16           # ready + claimed (default: max(minSize, 4))
///   maxAgeSeconds: 3600   # older ready ones are replaced (default 3600)
///   recycle: false        # true: a used sandbox goes back to the pool when verified
///   preloadPackages: ["numpy==2.1.3"]   # name==version each: a read-only layer of the pool
///   waiveAdvisories: ["GHSA-xxxx-xxxx-xxxx"]  # OSV ids (or aliases) accepted anyway
///   whenEmpty: create     # create (a cold create) | refuse (503); default: the daemon's
///   template:             # a Sandbox spec
///     runtime: python:3.11
///     resources: {cpu: "1", memory: 1Gi}
/// ```
///
/// Decoding is strict like `Sandbox`'s (an unknown or duplicate key is an error naming its
/// path). `preloadPackages` entries must be pins (`name==version`, PEP 440); the allowlist,
/// the advisory scan and the build of the layer are the daemon's
/// (SafeSpaceDaemon/PackageLayer.swift).
///
/// `recycle: true` (issue 14): a claimed sandbox released by its owner's delete or its
/// lifetime's end goes back to the ready set only when every check passes, each recorded
/// (audit `pool.recycle`, metric `safespaced_pool_recycles_total{pool,outcome,check}`); the
/// first failed check destroys it and the pool refills. Checked (safespaced `PoolRecycle`):
/// - `age`: younger than `maxAgeSeconds` (counted from when it was made, not claimed);
/// - `securityEvents`: no seccomp denial ever (the seccomp agent's live count, since it was
///   made) and no egress denial ever (the egress filter's count for the sandbox);
/// - `python`: the warm interpreter is stopped (its socket removed) and no System V IPC
///   object (shm, message queue, semaphore set) exists in the sandbox's IPC namespace;
/// - `processes`: its cgroup holds its PID 1 (the agent) and nothing else;
/// - `writablePaths`: every writable path, `/dev/shm`, `/dev/mqueue` and the agent's socket
///   directory is as it was made — no entry added, removed or changed, same mode, owner and
///   extended attributes (a tree digest taken at warm-up, compared). A sandbox that leaves
///   anything there is destroyed, not emptied: recycling is for sandboxes that leave
///   nothing behind;
/// - `packages`: the interpreter's package trees (Python: `site-packages`/`dist-packages`
///   of the system and the user site under HOME; Node: global `node_modules`) hashed
///   (SHA-256 of every file, modes, owners, symlink targets) equal to the digest taken at
///   warm-up;
/// - `counters`: the cgroup's CPU time is re-based and its memory peak reset (cgroup v1
///   `memory.max_usage_in_bytes`; v2 has no global reset, so the peak is not reported after
///   a recycle), the per-sandbox egress series removed;
/// - `python` again: a fresh warm interpreter is started and answers.
/// Not carried over: env and cwd are per exec (the agent's own never change); the owner,
/// lifetime, port forwards and running execs (killed first) are reset. `recycle: true` is
/// refused for gVisor levels and for a writable root (`filesystem.readOnlyRoot: false`).

import OCI

/// A warm pool.
public struct WarmPool: Codable, Sendable, Equatable {
    public static let kind = "WarmPool"
    /// Longest pool name: a pool sandbox is named `<pool>-<8 hex digits>`, which must stay a
    /// DNS-1123 label (at most 63 characters, RFC 1123 section 2.1).
    public static let maxNameLength = 40
    /// Largest `spec.maxSize`.
    public static let maxSizeLimit = 256
    public static let defaultMinSize = 1
    public static let defaultMaxAgeSeconds = 3600

    public var apiVersion: String
    public var kind: String
    public var metadata: ObjectMeta
    public var spec: WarmPoolSpec

    public init(
        apiVersion: String = Sandbox.apiVersion, kind: String = WarmPool.kind, metadata: ObjectMeta = .init(),
        spec: WarmPoolSpec = .init()
    ) {
        self.apiVersion = apiVersion
        self.kind = kind
        self.metadata = metadata
        self.spec = spec
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case apiVersion, kind, metadata, spec
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        (apiVersion, kind) = try decoder.decodeResourceHeader(kind: WarmPool.kind)
        metadata = try c.decodeIfPresent(ObjectMeta.self, forKey: .metadata) ?? .init()
        spec = try c.decodeIfPresent(WarmPoolSpec.self, forKey: .spec) ?? .init()
    }

    /// Decodes one `WarmPool` from YAML or JSON text. Decoding only: call `validate()`.
    /// - Throws: `SandboxError` naming the field (`.syntax`, `.duplicateField`,
    ///   `.unknownField`, `.wrongType`, `.missingField`).
    public static func decode(yaml text: String) throws(SandboxError) -> WarmPool {
        try Sandbox.decodeResource(WarmPool.self, yaml: text)
    }

    /// Reads and decodes the file at `path`.
    /// - Throws: `SandboxError`; a file that cannot be read is a `.syntax` issue naming it.
    public static func load(path: String) throws(SandboxError) -> WarmPool {
        try Sandbox.loadResource(WarmPool.self, path: path)
    }

    /// `spec.minSize` with its default.
    public var minSize: Int { spec.minSize ?? WarmPool.defaultMinSize }
    /// `spec.maxSize` with its default, `max(minSize, 4)`.
    public var maxSize: Int { spec.maxSize ?? max(minSize, 4) }
    /// `spec.preloadPackages` as pins, in order; entries that are not pins are left out
    /// (`validate()` refuses them).
    public var preloadPins: [PackagePin] {
        (spec.preloadPackages ?? []).compactMap { try? PackagePin.parse($0).get() }
    }
    /// `spec.maxAgeSeconds` with its default (seconds).
    public var maxAgeSeconds: Int { spec.maxAgeSeconds ?? WarmPool.defaultMaxAgeSeconds }

    /// The Sandbox a pool sandbox is made from: the template with the defaults a create
    /// applies (`spec.runtime` `Sandbox.defaultRuntime`), named `sandboxName`.
    public func sandbox(named sandboxName: String) -> Sandbox {
        var spec = self.spec.template ?? SandboxSpec()
        if spec.runtime == nil { spec.runtime = Sandbox.defaultRuntime }
        return Sandbox(metadata: ObjectMeta(name: sandboxName), spec: spec)
    }

    /// Whether a create of `spec` may be served by this pool: equal to the template once both
    /// have the defaults a create applies.
    public func matches(_ spec: SandboxSpec) -> Bool {
        var asked = spec
        if asked.runtime == nil { asked.runtime = Sandbox.defaultRuntime }
        return asked == sandbox(named: "x").spec
    }

    /// Checks every field: the header, `metadata.name` (a DNS-1123 label of at most
    /// `maxNameLength` characters), `0 <= minSize <= maxSize <= maxSizeLimit`,
    /// `maxAgeSeconds > 0`, `whenEmpty` (create, refuse), and the template as a Sandbox spec
    /// (its issues named `spec.template.…`), `preloadPackages` (each `name==version`, no name
    /// twice, a python runtime), `waiveAdvisories` (ids); `recycle: true` is `.notEnforceable`
    /// with a gVisor level or a writable root.
    /// - Throws: `SandboxError` listing every issue, each naming its field.
    public func validate() throws(SandboxError) {
        var issues: [FieldIssue] = []
        func invalid(_ field: String, _ message: String) {
            issues.append(FieldIssue(.invalidValue, field: field, message))
        }
        if apiVersion != Sandbox.apiVersion {
            invalid("apiVersion", "must be \(Sandbox.apiVersion), not \"\(apiVersion)\"")
        }
        if kind != WarmPool.kind { invalid("kind", "must be \(WarmPool.kind), not \"\(kind)\"") }
        if let name = metadata.name {
            if let problem = Sandbox.dns1123LabelProblem(name) {
                invalid("metadata.name", problem)
            } else if name.count > WarmPool.maxNameLength {
                invalid(
                    "metadata.name",
                    "at most \(WarmPool.maxNameLength) characters (its sandboxes are named <pool>-<8 hex digits>), not \(name.count)"
                )
            }
        } else {
            issues.append(FieldIssue(.missingField, field: "metadata.name", "required"))
        }
        if let min = spec.minSize, min < 0 { invalid("spec.minSize", "must be 0 or more, not \(min)") }
        if let max = spec.maxSize, !(1...WarmPool.maxSizeLimit).contains(max) {
            invalid("spec.maxSize", "must be 1-\(WarmPool.maxSizeLimit), not \(max)")
        }
        if minSize > maxSize, minSize >= 0 {
            invalid("spec.minSize", "\(minSize) is above spec.maxSize (\(maxSize)); minSize <= maxSize")
        }
        if let age = spec.maxAgeSeconds, age <= 0 {
            invalid("spec.maxAgeSeconds", "must be a positive number of seconds, not \(age)")
        }
        if let when = spec.whenEmpty, !WarmPoolSpec.WhenEmpty.allCases.map(\.rawValue).contains(when) {
            invalid("spec.whenEmpty", "\"\(when)\" is not one of create, refuse")
        }
        if spec.template == nil {
            issues.append(FieldIssue(.missingField, field: "spec.template", "required (a Sandbox spec)"))
        } else {
            do { try sandbox(named: "pool-template").validate() } catch {
                for issue in error.issues {
                    var moved = issue
                    if issue.field.hasPrefix("spec.") {
                        moved.field = "spec.template." + issue.field.dropFirst("spec.".count)
                    } else if issue.field == "spec" {
                        moved.field = "spec.template"
                    }
                    issues.append(moved)
                }
            }
        }
        if let packages = spec.preloadPackages, !packages.isEmpty {
            var seen: [String: Int] = [:]
            for (i, text) in packages.enumerated() {
                switch PackagePin.parse(text) {
                case .failure(let error): invalid("spec.preloadPackages[\(i)]", error.message)
                case .success(let pin):
                    if let first = seen[pin.name] {
                        invalid(
                            "spec.preloadPackages[\(i)]",
                            "\(pin.name) is given already by spec.preloadPackages[\(first)]")
                    }
                    seen[pin.name] = seen[pin.name] ?? i
                }
            }
            let runtime = spec.template?.runtime ?? Sandbox.defaultRuntime
            if !runtime.hasPrefix("python:") {
                invalid("spec.preloadPackages", "Python packages need a python runtime; the template runs \(runtime)")
            }
        }
        for (i, id) in (spec.waiveAdvisories ?? []).enumerated()
        where id.isEmpty || !id.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.:".contains($0)) }) {
            invalid(
                "spec.waiveAdvisories[\(i)]", "\"\(id)\" is not an advisory id (e.g. GHSA-xxxx-xxxx-xxxx, PYSEC-2024-1)"
            )
        }
        if spec.recycle == true, let template = spec.template {
            // Recycling verifies a used sandbox from the host (its cgroup, its writable paths
            // through its init's root, the seccomp agent's live counts): the native backend
            // only, and only where the rest of the root cannot have been written.
            let sandbox = sandbox(named: "pool-template")
            if let level = SecurityLevel.of(sandbox), level.profile.backend == .gvisor {
                issues.append(
                    FieldIssue(
                        .notEnforceable, field: "spec.recycle",
                        "recycle: true needs a native level; \(level.rawValue) (spec.template.securityLevel) runs under gVisor, whose sandboxes the pool cannot verify from the host"
                    ))
            }
            if template.filesystem?.readOnlyRoot == false {
                issues.append(
                    FieldIssue(
                        .notEnforceable, field: "spec.recycle",
                        "recycle: true needs a read-only root (spec.template.filesystem.readOnlyRoot: false): a writable root is neither reset nor verified"
                    ))
            }
        }
        if !issues.isEmpty { throw SandboxError(issues) }
    }
}

/// `spec` of a `WarmPool`.
public struct WarmPoolSpec: Codable, Sendable, Equatable {
    /// What a claim of an empty pool gets.
    public enum WhenEmpty: String, CaseIterable, Sendable {
        /// A sandbox made for the claim from the template (cold), said in the response.
        case create
        /// `503` with code `pool_empty`.
        case refuse
    }

    /// Ready sandboxes kept (default 1).
    public var minSize: Int?
    /// Ready plus claimed sandboxes of the pool at most (default `max(minSize, 4)`).
    public var maxSize: Int?
    /// A ready sandbox older than this (seconds) is replaced (default 3600).
    public var maxAgeSeconds: Int?
    /// Whether a used sandbox goes back to the pool once verified (default false: destroyed
    /// and refilled).
    public var recycle: Bool?
    /// Python packages installed into a read-only layer of the pool and imported by the warm
    /// interpreter before its first exec: each `name==version` (PEP 440), allowed by the
    /// node's allowlist and free of unwaived advisories (the daemon's PackageLayer).
    public var preloadPackages: [String]?
    /// Advisory ids (or aliases: GHSA-..., PYSEC-..., CVE-...) of the OSV database the pool's
    /// packages may have.
    public var waiveAdvisories: [String]?
    /// `create` or `refuse`; nil: the daemon's `pools.whenEmpty`.
    public var whenEmpty: String?
    /// The Sandbox spec every sandbox of the pool is made from.
    public var template: SandboxSpec?

    public init(
        minSize: Int? = nil, maxSize: Int? = nil, maxAgeSeconds: Int? = nil, recycle: Bool? = nil,
        preloadPackages: [String]? = nil, waiveAdvisories: [String]? = nil, whenEmpty: String? = nil,
        template: SandboxSpec? = nil
    ) {
        self.minSize = minSize
        self.maxSize = maxSize
        self.maxAgeSeconds = maxAgeSeconds
        self.recycle = recycle
        self.preloadPackages = preloadPackages
        self.waiveAdvisories = waiveAdvisories
        self.whenEmpty = whenEmpty
        self.template = template
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case minSize, maxSize, maxAgeSeconds, recycle, preloadPackages, waiveAdvisories, whenEmpty, template
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        minSize = try c.decodeIfPresent(Int.self, forKey: .minSize)
        maxSize = try c.decodeIfPresent(Int.self, forKey: .maxSize)
        maxAgeSeconds = try c.decodeIfPresent(Int.self, forKey: .maxAgeSeconds)
        recycle = try c.decodeIfPresent(Bool.self, forKey: .recycle)
        preloadPackages = try c.decodeIfPresent([String].self, forKey: .preloadPackages)
        waiveAdvisories = try c.decodeIfPresent([String].self, forKey: .waiveAdvisories)
        whenEmpty = try c.decodeIfPresent(String.self, forKey: .whenEmpty)
        template = try c.decodeIfPresent(SandboxSpec.self, forKey: .template)
    }
}
