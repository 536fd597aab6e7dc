import NodeResources
/// `spec.resources`: parsed and checked by `SandboxLimits` (the Resources target), completed
/// with the node's `SandboxDefaults`, checked against the node's capacity, and turned into
/// `linux.resources` by the policy. The CPUs of `cpuPinning` and the ephemeral storage volume
/// are node state: the caller (`safespace run`) allocates them and completes the spec.
import OCI

extension SandboxError {
    /// A resource request the node cannot honour, as an `.invalidValue` issue of its field.
    init(_ error: ResourceError) {
        self.init(.invalidValue, field: error.field ?? "", error.message)
    }
}

extension Sandbox {
    /// The limits of `spec.resources` as written (nil where a field is absent).
    /// - Throws: `SandboxError(.invalidValue)` naming the field (`spec.resources.memory`).
    public func limits() throws(SandboxError) -> SandboxLimits {
        guard let r = spec.resources else { return SandboxLimits() }
        do {
            return try SandboxLimits.parse(
                cpu: r.cpu, memory: r.memory, ephemeralStorage: r.ephemeralStorage, cpuPinning: r.cpuPinning)
        } catch {
            throw SandboxError(error)
        }
    }

    /// The limits the sandbox runs with: `spec.resources`, each absent value from the node's
    /// `defaults` (so every sandbox has a CPU, memory and ephemeral storage limit).
    /// - Throws: `SandboxError(.invalidValue)` naming `spec.resources.cpu` / `.memory` for a
    ///   limit above what `capacity` (the node) has, or `sandboxDefaults.cpu` / `.memory` for
    ///   such a default; the errors of `limits()`.
    public func effectiveLimits(defaults: SandboxDefaults, capacity: NodeCapacity) throws(SandboxError) -> SandboxLimits
    {
        let own = try limits()
        do {
            try capacity.check(cpuMillis: own.cpuMillis, memoryBytes: own.memoryBytes, field: "spec.resources")
            if own.cpuMillis == nil || own.memoryBytes == nil { try defaults.check(against: capacity) }
        } catch {
            throw SandboxError(error)
        }
        return own.filled(with: defaults)
    }

    /// The issue of `limits()`, if any (part of `validate()`).
    public func resourceIssues() -> [FieldIssue] {
        do {
            _ = try limits()
            return []
        } catch {
            return error.issues
        }
    }
}

extension SandboxPolicy {
    /// `linux.resources` of a sandbox with `limits` (`Sandbox.effectiveLimits`): cpu.max and
    /// memory (no swap), pids.max from the node's defaults, every device denied (the runtime
    /// allows its default set, as runc does). The pinned cpuset is the caller's to add, after
    /// allocating it.
    static func resources(limits: SandboxLimits, defaults: SandboxDefaults) -> Resources {
        limits.ociResources(pidsLimit: defaults.pidsLimit, devices: [.init(allow: false, access: "rwm")])
    }
}
