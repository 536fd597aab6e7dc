/// Fields this build parses but cannot enforce yet.
///
/// A sandbox that asks for a limit or an isolation the node does not apply must fail to
/// start, never run without it. Each later issue that implements one of these removes its
/// entry here (and adds the enforcement to `SandboxPolicy`).

extension Sandbox {
    /// The fields of this sandbox that the current build cannot enforce, each as a
    /// `.notEnforceable` issue naming the field. Empty when everything asked for is applied.
    public func notEnforceableYet() -> [FieldIssue] {
        var issues: [FieldIssue] = []
        func refuse(_ field: String, _ why: String) {
            issues.append(FieldIssue(.notEnforceable, field: field, "not enforceable yet: \(why); remove the field"))
        }

        // Resources (cpu, memory, ephemeralStorage, cpuPinning) are enforced: Sandbox+Resources.swift.

        // Network: every sandbox has an empty network namespace (loopback only). Asking for
        // nothing (egress: [], ingress: false) is exactly that.
        if let network = spec.networkAccess {
            if let egress = network.egress, !egress.isEmpty {
                refuse("spec.networkAccess.egress", "egress filtering is not built; sandboxes have no network")
            }
            if network.ingress == true {
                refuse("spec.networkAccess.ingress", "ingress is not built; sandboxes have no network")
            }
        }

        // Storage: everything is ephemeral (tmpfs).
        if let storage = spec.storage {
            if storage.persistent == true { refuse("spec.storage.persistent", "persistent volumes are not built") }
            if storage.volumeSize != nil { refuse("spec.storage.volumeSize", "persistent volumes are not built") }
        }

        return issues
    }
}
