import OCI

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

        // Network: a sandbox without egress rules has an empty network namespace (loopback
        // only); egress rules are enforced by the node's network (SandboxNetwork, wired by
        // SandboxHosting, which refuses them on a host without an egress filter). `ingress:
        // true` lets the node reach the sandbox's ports: with egress rules on its address (the
        // nftables table admits new connections), and at every native level through
        // safespaced's port forward (`POST /v1/sandboxes/{name}/ports/{port}`), which dials
        // 127.0.0.1 inside the sandbox's network namespace. At a gVisor level without egress
        // rules runsc runs `--network=none`: the loopback is the sentry's own netstack, which
        // nothing of the node can reach.
        if let network = spec.networkAccess, network.ingress == true, network.egress?.isEmpty ?? true,
            let level = SecurityLevel.of(self), level.profile.backend == .gvisor
        {
            refuse(
                "spec.networkAccess.ingress",
                "at securityLevel \(level.rawValue) a sandbox without egress rules has only gVisor's own loopback (runsc --network=none), which the node cannot reach"
            )
        }

        // A domain is reached through the egress filter on both 80 and 443; the filter's rules
        // name the domain only, so a domain rule limited to one of them cannot be enforced.
        for (index, rule) in (spec.networkAccess?.egress ?? []).enumerated() {
            guard rule.domain != nil, let ports = rule.ports, !ports.isEmpty else { continue }
            if !Set([80, 443]).isSubset(of: Set(ports.map(\.port))) {
                refuse(
                    "spec.networkAccess.egress[\(index)].ports",
                    "a domain is reached on both 80 and 443 (through the egress filter); limiting it to some of them")
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
