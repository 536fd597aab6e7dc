/// The seccomp part of the policy: which profile a sandbox runs under, as OCI `linux.seccomp`
/// (`SandboxPolicy.seccomp`, called by `bundle`), and the checks of the fields that choose it
/// (`Sandbox.seccompIssues`, part of `validate`). seccomp/README.md explains the profiles.
import OCI
import SeccompFilters

extension SandboxPolicy {
    /// `linux.seccomp` of `sandbox`, from the first of:
    ///
    /// 1. `spec.securityContext.seccompProfile`: `Localhost` loads `localhostProfile` (a Docker
    ///    or Podman profile file), `RuntimeDefault` is the built-in `default`, `Unconfined` is
    ///    no filter (validation lets only `securityLevel: custom` ask for that);
    /// 2. the SandboxProfile of `spec.profileRef`: its `seccompProfile`, a built-in name or a
    ///    file relative to the SandboxProfile; its `language` must be the runtime's;
    /// 3. the built-in `default` (seccomp/default.json).
    ///
    /// The Docker-format profile is resolved for this machine and a process whose bounding set
    /// is `capabilities` (`includes`/`excludes`, `archMap`) and each entry is checked, so that an
    /// error names the profile's own entry (`syscalls[3].action`).
    ///
    /// - Throws: `SandboxError` naming the Sandbox field that chose the profile.
    public static func seccomp(
        for sandbox: Sandbox, capabilities: [String] = [], profiles: SeccompProfiles = SeccompProfiles(),
        target: SeccompTarget? = nil
    ) throws(SandboxError) -> Seccomp? {
        var (profile, source, field): (SeccompProfile, String, String)
        let ref = sandbox.spec.securityContext?.seccompProfile
        if let ref {
            field = "spec.securityContext.seccompProfile"
            if sandbox.spec.profileRef != nil, try sandboxProfileSeccomp(sandbox, profiles) != nil {
                throw SandboxError(
                    .invalidValue, field: field,
                    "both this and the SandboxProfile of spec.profileRef name a seccomp profile; keep one")
            }
            switch ref.type {
            case "Unconfined": return nil
            case "Localhost":
                field += ".localhostProfile"
                (profile, source) = try profiles.seccompProfile(
                    ref.localhostProfile ?? "", relativeTo: profiles.directory, field: field)
            default:
                (profile, source) = try profiles.seccompProfile(
                    SeccompProfiles.defaultName, relativeTo: profiles.directory, field: field)
            }
        } else if let named = try sandboxProfileSeccomp(sandbox, profiles) {
            field = "spec.profileRef"
            (profile, source) = try profiles.seccompProfile(named.reference, relativeTo: named.base, field: field)
        } else {
            field = "spec.securityLevel"
            (profile, source) = try profiles.seccompProfile(
                SeccompProfiles.defaultName, relativeTo: profiles.directory, field: field)
        }
        do {
            let target = target ?? .host(capabilities: Set(capabilities))
            return try profile.resolved(for: target, source: source)
        } catch {
            throw SandboxError(.invalidValue, field: field, "\(error)")
        }
    }

    /// The seccomp profile reference of the sandbox's SandboxProfile, nil without profileRef
    /// or when the SandboxProfile names none.
    private static func sandboxProfileSeccomp(_ sandbox: Sandbox, _ profiles: SeccompProfiles) throws(SandboxError) -> (
        reference: String, base: String
    )? {
        guard let ref = sandbox.spec.profileRef else { return nil }
        let (profile, base) = try profiles.sandboxProfile(ref.name, field: "spec.profileRef.name")
        let runtime = sandbox.spec.runtime ?? Sandbox.defaultRuntime
        let language = String(runtime.split(separator: ":").first ?? "")
        if let wanted = profile.spec.language, wanted != language {
            throw SandboxError(
                .invalidValue, field: "spec.profileRef",
                "SandboxProfile \(ref.name) is for \(wanted); the sandbox runs \(runtime)")
        }
        return profile.spec.seccompProfile.map { ($0, base) }
    }
}

extension Sandbox {
    /// `spec.securityContext.seccompProfile`: Kubernetes' types; `Localhost` needs
    /// `localhostProfile` (absolute, or relative to the profile directory without `..`), the
    /// others take none. `spec.profileRef.name`: a DNS-1123 label.
    public func seccompIssues() -> [FieldIssue] {
        var issues: [FieldIssue] = []
        let field = "spec.securityContext.seccompProfile"
        if let ref = spec.securityContext?.seccompProfile {
            switch ref.type {
            case "Localhost":
                let path = ref.localhostProfile ?? ""
                if path.isEmpty {
                    issues.append(
                        FieldIssue(.missingField, field: field + ".localhostProfile", "required with type Localhost"))
                } else if !path.hasPrefix("/") && path.split(separator: "/").contains("..") {
                    issues.append(
                        FieldIssue(
                            .invalidValue, field: field + ".localhostProfile",
                            "\(path): a relative path may not contain .."))
                }
            case "RuntimeDefault", "Unconfined":
                if ref.localhostProfile != nil {
                    issues.append(
                        FieldIssue(.invalidValue, field: field + ".localhostProfile", "only for type Localhost"))
                }
            default:
                issues.append(
                    FieldIssue(
                        .invalidValue, field: field + ".type",
                        "\"\(ref.type)\" is not RuntimeDefault, Localhost or Unconfined"))
            }
        }
        if let name = spec.profileRef?.name, let problem = Sandbox.dns1123LabelProblem(name) {
            issues.append(FieldIssue(.invalidValue, field: "spec.profileRef.name", problem))
        }
        return issues
    }
}
