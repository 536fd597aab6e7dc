/// `spec.resources`: parsed and checked by `SandboxLimits` (the Resources target), turned into
/// `linux.resources` by the policy. The CPUs of `cpuPinning` and the ephemeral storage volume
/// are node state: the caller (`safespace run`) allocates them and completes the spec.
import OCI
import Resources

extension Sandbox {
    /// The limits of `spec.resources` (no limits when it is absent).
    /// - Throws: `SandboxError(.invalidValue)` naming the field (`spec.resources.memory`).
    public func limits() throws(SandboxError) -> SandboxLimits {
        guard let r = spec.resources else { return SandboxLimits() }
        do {
            return try SandboxLimits.parse(cpu: r.cpu, memory: r.memory, ephemeralStorage: r.ephemeralStorage, cpuPinning: r.cpuPinning)
        } catch {
            throw SandboxError(.invalidValue, field: error.field, error.message)
        }
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
    /// `linux.resources` of `sandbox`: cpu.max and memory (no swap) from `spec.resources`, the
    /// default pids limit on every sandbox, every device denied (the runtime allows its default
    /// set, as runc does). The pinned cpuset is the caller's to add, after allocating it.
    static func resources(for sandbox: Sandbox) throws(SandboxError) -> OCI.Resources {
        try sandbox.limits().ociResources(devices: [.init(allow: false, access: "rwm")])
    }
}
