/// `spec.securityLevel`: what a sandbox turns on, in one table (the README's "Security levels").
///
/// Levels can only be raised by fields, never silently lowered: a field that would take a
/// sandbox below its level's floor (`SecurityLevel.Profile`) is an error unless the level is
/// `custom` (`Sandbox.securityLevelIssues()`).

import OCI

/// What `spec.securityLevel` means for a Sandbox (the type and its names are the OCI module's,
/// shared with the runtime, which reads them from the bundle's annotation).
extension SecurityLevel {
    /// The level of `sandbox`: its `spec.securityLevel`, else `default`. nil for an unknown
    /// value (validation reports it).
    public static func of(_ sandbox: Sandbox) -> SecurityLevel? {
        guard let value = sandbox.spec.securityLevel else { return .default }
        return SecurityLevel(rawValue: value)
    }

    /// Where the sandbox's seccomp filter comes from.
    public enum SeccompSource: String, Sendable {
        /// The runtime's default profile unless `securityContext.seccompProfile` names another.
        case runtimeDefault
        /// gVisor's sentry is the system call boundary (its own host filter is built in); an
        /// OCI profile is loaded inside it only when `securityContext.seccompProfile` asks.
        case gvisorSentry
    }

    /// What a level turns on: one row of the README's table. Every field is a floor.
    public struct Profile: Sendable, Equatable {
        /// Which runtime backend runs the sandbox (`SecurityLevel.backend`, the OCI module's).
        public var backend: Backend
        public var seccomp: SeccompSource
        /// `false` here: the workload holds no capability (all five sets empty).
        public var capabilities: Bool
        public var noNewPrivileges: Bool
        /// The root is read-only unless a field says otherwise (allowed only at `custom`).
        public var readOnlyRoot: Bool
        /// A user namespace with a host id range of its own (native backend).
        public var userNamespace: Bool
        /// `none`: a private network namespace with only loopback.
        public var network: String
        /// Whether fields may weaken this level's floor (`readOnlyRoot: false`, an
        /// `Unconfined` seccomp profile).
        public var fieldsMayWeaken: Bool
    }

    public var profile: Profile {
        switch self {
        case .standard:
            Profile(
                backend: backend, seccomp: .runtimeDefault, capabilities: false, noNewPrivileges: true,
                readOnlyRoot: true, userNamespace: true, network: "none", fieldsMayWeaken: false)
        case .high:
            Profile(
                backend: backend, seccomp: .gvisorSentry, capabilities: false, noNewPrivileges: true,
                readOnlyRoot: true, userNamespace: false, network: "none", fieldsMayWeaken: false)
        case .custom:
            Profile(
                backend: backend, seccomp: .runtimeDefault, capabilities: false, noNewPrivileges: true,
                readOnlyRoot: true, userNamespace: true, network: "none", fieldsMayWeaken: true)
        }
    }
}
