/// `spec.networkAccess.egress` of a sandbox on this node: its network (SandboxNetwork: lease,
/// namespace file, veth, nftables table), its registration with the node's egress filter, and
/// the resolv.conf that points it at the host side of its veth. Taken by `prepare`, released
/// by `cleanup` (reverse order), swept by `gc` when the process holding it died.
import Foundation
import Glibc
import LinuxKernel
import OCI
import Runtime
import SandboxNetwork
import SandboxSpec

/// The network part of a `SandboxPlan`: what `spec.networkAccess` asks for.
public struct SandboxNetworkPlan: Sendable, Equatable {
    /// Every egress rule, as the filter takes them.
    public var rules: [SandboxEgressRule]
    /// The `cidr` rules, forwarded by the host.
    public var cidrRules: [CIDRRule]
    /// The field of the first `cidr` rule (named when forwarding is off).
    public var cidrField: String
    /// `spec.networkAccess.ingress` (default false).
    public var ingress: Bool

    /// The plan of `sandbox`, or nil when it asks for no egress (it keeps only `lo`).
    /// - Throws: `SandboxHostError` `.invalidPlan` naming the rule's field for a `cidr` or port
    ///   that `validate` would have refused.
    public init?(_ sandbox: Sandbox) throws {
        guard let network = sandbox.spec.networkAccess, let egress = network.egress, !egress.isEmpty else {
            return nil
        }
        var rules: [SandboxEgressRule] = []
        var cidrRules: [CIDRRule] = []
        var cidrField: String?
        for (index, rule) in egress.enumerated() {
            let field = "spec.networkAccess.egress[\(index)]"
            if let domain = rule.domain {
                rules.append(.domain(domain))
                continue
            }
            guard let text = rule.cidr else {
                throw SandboxHostError(.invalidPlan, field: field, "give one of domain or cidr")
            }
            let prefix: IPv4Prefix
            do { prefix = try IPv4Prefix(text, field: field + ".cidr") } catch {
                throw SandboxHostError(
                    .invalidPlan, field: field + ".cidr", (error as? NetworkError)?.message ?? "\(error)", cause: error)
            }
            var ports: [CIDRRule.Port]?
            if let list = rule.ports, !list.isEmpty {
                ports = try list.enumerated().map { portIndex, port in
                    guard let number = UInt16(exactly: port.port), number > 0 else {
                        throw SandboxHostError(
                            .invalidPlan, field: "\(field).ports[\(portIndex)].port",
                            "must be 1-65535, not \(port.port)")
                    }
                    return CIDRRule.Port(port: number, protocol: (port.protocol ?? "TCP").lowercased())
                }
            }
            cidrRules.append(CIDRRule(prefix: prefix, ports: ports))
            rules.append(.cidr(prefix, ports: ports?.map(\.port)))
            cidrField = cidrField ?? field + ".cidr"
        }
        self.rules = rules
        self.cidrRules = cidrRules
        self.cidrField = cidrField ?? "spec.networkAccess.egress"
        self.ingress = network.ingress ?? false
    }
}

enum NetworkHosting {
    /// `resolv.conf` in the bundle, bind-mounted read-only on /etc/resolv.conf.
    static let resolvConf = "resolv.conf"

    /// Takes the network of `plan` (SandboxNetworks.attach), registers it with the filter and
    /// points `spec` at it: `linux.namespaces[network].path`, and /etc/resolv.conf naming the
    /// host side's address when the rootfs has one to mount over. Each release goes to
    /// `cleanup` as soon as its piece is taken.
    static func prepare(
        _ network: SandboxNetworkPlan, plan: SandboxPlan, bundle: String, configuration: SandboxHost.Configuration,
        spec: inout Spec, cleanup: inout [(String, () throws -> Void)]
    ) throws {
        guard let filter = configuration.egressFilter else {
            throw SandboxHostError(
                .unsupported, field: "spec.networkAccess.egress",
                "this host runs no egress filter; a sandbox with egress rules cannot be hosted here")
        }
        let leases = try RuntimeConfiguration.load().leaseStore
        let networks: SandboxNetworks
        do {
            networks = try SandboxNetworks(
                pool: configuration.networkPool, leases: leases, namespaceDirectory: configuration.networkNamespaces)
        } catch let error as NetworkError {
            throw SandboxHostError(
                .invalidConfiguration, field: error.field, error.message, operation: "network pool", cause: error)
        }
        let attachment = try networks.attach(
            sandbox: plan.id, ports: filter.egressPorts, cidrRules: network.cidrRules, ingress: network.ingress,
            cidrField: network.cidrField)
        cleanup.append(("network of \(plan.id)", attachment.detach))
        try filter.register(
            sandbox: plan.id, source: attachment.sandboxAddress, hostAddress: attachment.hostAddress,
            rules: network.rules)
        cleanup.append(("egress filter registration of \(plan.id)", { filter.unregister(sandbox: plan.id) }))

        // Never without the namespace: a spec with no linux section would join the host's network.
        if spec.linux == nil { spec.linux = Linux() }
        var namespaces = spec.linux?.namespaces ?? []
        if let i = namespaces.firstIndex(where: { $0.type == "network" }) {
            namespaces[i].path = attachment.namespacePath
        } else {
            namespaces.append(Namespace(type: "network", path: attachment.namespacePath))
        }
        spec.linux?.namespaces = namespaces
        // sysfs can be mounted only with CAP_SYS_ADMIN in the user namespace that owns the
        // mounter's network namespace (fs/sysfs/mount.c: kobj_ns_current_may_mount ->
        // net_current_may_mount). This namespace is made by the host (owned by the initial
        // user namespace), so a sandbox in a user namespace of its own gets EPERM: its /sys
        // is an empty read-only tmpfs instead (nothing of the host's /sys is shown).
        if namespaces.contains(where: { $0.type == "user" }), var mounts = spec.mounts {
            for i in mounts.indices where mounts[i].destination == "/sys" && mounts[i].type == "sysfs" {
                mounts[i] = Mount(
                    destination: "/sys", type: "tmpfs", source: "tmpfs",
                    options: ["nosuid", "noexec", "nodev", "ro", "mode=555", "size=4k"])
            }
            spec.mounts = mounts
        }

        let rootfs = plan.writableLayer?.lowerdir ?? plan.spec.root?.path ?? ""
        var target = stat()
        if lstat(rootfs + "/etc/resolv.conf", &target) == 0, target.st_mode & S_IFMT == S_IFREG {
            let file = bundle + "/" + resolvConf
            cleanup.append(
                (
                    "resolv.conf of \(plan.id)",
                    {
                        if unlink(file) != 0 && errno != ENOENT {
                            throw SandboxHostError.failed("cannot remove \(file)", operation: "unlink")
                        }
                    }
                ))
            try Files.writeAtomically(file, Array("nameserver \(attachment.hostAddress)\n".utf8), mode: 0o644)
            spec.mounts =
                (spec.mounts ?? []) + [
                    Mount(
                        destination: "/etc/resolv.conf", type: "bind", source: file,
                        options: ["rbind", "ro", "nosuid", "nodev", "noexec"])
                ]
        } else {
            configuration.warn(
                "\(plan.id): the rootfs has no /etc/resolv.conf to mount over (scripts/build-rootfs makes one); resolvers default to 127.0.0.1, so name lookups need nameserver \(attachment.hostAddress) (the egress filter) set by the workload"
            )
        }
    }
}
