/// The security level's part of the policy: the one function that applies a level to the
/// bundle spec (`SecurityLevelPolicy.apply`, called last by `SandboxPolicy.bundle`), and the
/// validation rule that keeps fields from lowering a level (`Sandbox.securityLevelIssues`).
import OCI

public enum SecurityLevelPolicy {
    /// Applies the level of `sandbox` (already validated) to `spec`, as its profile says:
    ///
    /// - every level: the level annotation (the runtime picks the backend from it), no
    ///   capability, no_new_privs — asserted here, whatever built the spec before;
    /// - native levels (`standard`, `custom`): a user namespace whose host range the runtime
    ///   allocates (`uid 0..65535` -> 65536 host ids of this sandbox alone);
    /// - `high`: no user namespace in the spec (runsc ignores OCI id mappings; its sandbox runs
    ///   as an unprivileged host user in a user namespace of its own), and no OCI seccomp
    ///   profile unless the Sandbox asks for one (the sentry is the system call boundary; a
    ///   profile loaded inside it must be one runsc can enforce, or the runtime refuses it).
    public static func apply(_ sandbox: Sandbox, to spec: inout Spec) {
        let level = SecurityLevel.of(sandbox) ?? .default
        let profile = level.profile
        var annotations = spec.annotations ?? [:]
        annotations[SandboxPolicy.Annotation.securityLevel] = level.rawValue
        if !profile.capabilities {
            spec.process?.capabilities = Capabilities(
                bounding: [], effective: [], inheritable: [], permitted: [], ambient: [])
        }
        if profile.noNewPrivileges { spec.process?.noNewPrivileges = true }

        var namespaces = spec.linux?.namespaces ?? []
        namespaces.removeAll { $0.type == NamespaceType.user.rawValue }
        if profile.userNamespace {
            namespaces.insert(Namespace(type: NamespaceType.user.rawValue), at: 0)
            annotations[SafeSpaceAnnotation.userNamespace] = SafeSpaceAnnotation.userNamespaceAuto
        } else {
            annotations[SafeSpaceAnnotation.userNamespace] = nil
            spec.linux?.uidMappings = nil
            spec.linux?.gidMappings = nil
        }
        spec.linux?.namespaces = namespaces
        if profile.seccomp == .gvisorSentry && !asksForSeccompProfile(sandbox) {
            spec.linux?.seccomp = nil
        }
        spec.annotations = annotations
    }

    /// Whether the Sandbox names a seccomp profile itself: `securityContext.seccompProfile`, or a
    /// SandboxProfile (`profileRef`), which may.
    static func asksForSeccompProfile(_ sandbox: Sandbox) -> Bool {
        sandbox.spec.securityContext?.seccompProfile != nil || sandbox.spec.profileRef != nil
    }
}

extension Sandbox {
    /// Fields that would take the sandbox below its level's floor: errors unless the level is
    /// `custom`, each naming the field and the level.
    public func securityLevelIssues() -> [FieldIssue] {
        guard let level = SecurityLevel.of(self), !level.profile.fieldsMayWeaken else { return [] }
        var issues: [FieldIssue] = []
        func weakens(_ field: String, _ what: String) {
            issues.append(
                FieldIssue(
                    .invalidValue, field: field,
                    "\(what) weakens securityLevel \(level.rawValue); only securityLevel: custom may lower a level"))
        }
        if level.profile.readOnlyRoot, spec.filesystem?.readOnlyRoot == false {
            weakens("spec.filesystem.readOnlyRoot", "false (a writable root)")
        }
        if spec.securityContext?.seccompProfile?.type == "Unconfined" {
            weakens("spec.securityContext.seccompProfile.type", "Unconfined (no seccomp filter)")
        }
        return issues
    }
}
