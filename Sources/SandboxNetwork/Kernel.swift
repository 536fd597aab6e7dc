/// The kernel calls of a sandbox's topology: network namespace files (ip-netns(8)'s layout:
/// an nsfs bind mount on a file), veth pairs, addresses and routes through rtnetlink(7)
/// (CSandboxNetwork), each wrapped to throw `NetworkError` with the errno.
import CSandboxNetwork
import Glibc
import LinuxKernel

enum Kernel {
    static func check(_ rc: Int32, _ operation: String, _ what: String) throws {
        guard rc < 0 else { return }
        let e = -rc
        throw NetworkError(
            .failed, "\(operation) \(what): \(String(cString: strerror(e)))", operation: operation, errno: e)
    }

    /// Makes the directory of namespace files shared (MS_SHARED) over a bind mount of itself, as
    /// ip-netns(8) does for /run/netns: an unmount there reaches the copies of the mount in
    /// mount namespaces made later, so a removed namespace is not kept alive by them.
    static func prepareNamespaceDirectory(_ directory: String) throws {
        try Files.makeDirectories(directory, mode: 0o711)
        if mount("", directory, nil, UInt(MS_SHARED | MS_REC), nil) == 0 { return }
        guard errno == EINVAL else { throw NetworkError(.failed, "mount --make-rshared \(directory)", errno: errno) }
        // Not a mount point yet.
        guard mount(directory, directory, nil, UInt(MS_BIND | MS_REC), nil) == 0 else {
            throw NetworkError(.failed, "mount --rbind \(directory) \(directory)", operation: "mount", errno: errno)
        }
        guard mount("", directory, nil, UInt(MS_SHARED | MS_REC), nil) == 0 else {
            throw NetworkError(.failed, "mount --make-rshared \(directory)", operation: "mount", errno: errno)
        }
    }

    /// A new network namespace bind-mounted on `path` (created, 0444).
    static func createNamespace(at path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o444)
        guard fd >= 0 else { throw NetworkError(.failed, "create \(path)", operation: "open", errno: errno) }
        close(fd)
        try check(ssn_netns_create(path), "mount nsfs on", path)
    }

    /// Unmounts (MNT_DETACH) and removes namespace file `path`; nothing when it is gone.
    static func removeNamespace(at path: String) throws {
        if umount2(path, Int32(MNT_DETACH)) != 0 && errno != EINVAL && errno != ENOENT {
            throw NetworkError(.failed, "umount \(path)", operation: "umount", errno: errno)
        }
        if unlink(path) != 0 && errno != ENOENT {
            throw NetworkError(.failed, "unlink \(path)", operation: "unlink", errno: errno)
        }
    }
}

/// The connection tracking table (ctnetlink) of this network namespace.
enum Conntrack {
    /// The IPv4 entries whose original source or destination is `address`; with `delete`,
    /// deleted. Conntrack entries outlive the rules and links of a sandbox: the next sandbox
    /// given the same address must not find its flows. A kernel without ctnetlink
    /// (EPROTONOSUPPORT) counts 0.
    /// - Returns: how many were found.
    /// - Throws: `NetworkError` `.failed` with the errno.
    @discardableResult
    static func entries(of address: IPv4Address, delete: Bool) throws -> Int {
        let rc = ssn_conntrack_flush(address.networkOrder, delete ? 1 : 0)
        if rc == -EPROTONOSUPPORT { return 0 }
        try Kernel.check(rc, delete ? "delete conntrack entries of" : "list conntrack entries of", "\(address)")
        return Int(rc)
    }
}

/// A NETLINK_ROUTE socket in one network namespace (rtnetlink(7)).
final class RouteSocket {
    let fd: Int32

    /// - Parameter namespace: a namespace file; nil for this process's namespace.
    init(namespace: String? = nil) throws {
        var nsfd: Int32 = -1
        if let namespace {
            nsfd = open(namespace, O_RDONLY | O_CLOEXEC)
            guard nsfd >= 0 else {
                throw NetworkError(.failed, "open \(namespace)", operation: "open", errno: errno)
            }
        }
        defer { if nsfd >= 0 { close(nsfd) } }
        let fd = ssn_rtnl_open(nsfd)
        try Kernel.check(fd, "socket(NETLINK_ROUTE) in", namespace ?? "this namespace")
        self.fd = fd
    }

    deinit { close(fd) }

    /// A veth pair: `host` here, `peer` in the namespace of file `namespace`.
    func createVeth(host: String, peer: String, peerNamespace namespace: String) throws {
        let nsfd = open(namespace, O_RDONLY | O_CLOEXEC)
        guard nsfd >= 0 else { throw NetworkError(.failed, "open \(namespace)", operation: "open", errno: errno) }
        defer { close(nsfd) }
        try Kernel.check(ssn_veth_create(fd, host, peer, nsfd), "create veth", "\(host) (peer \(peer))")
    }

    /// Deletes link `name` (a veth's peer goes with it); nothing when there is none.
    func deleteLink(_ name: String) throws {
        let rc = ssn_link_delete(fd, name)
        if rc == -ENODEV { return }
        try Kernel.check(rc, "delete link", name)
    }

    func linkExists(_ name: String) -> Bool { ssn_link_index(fd, name) > 0 }

    func up(_ name: String) throws { try Kernel.check(ssn_link_up(fd, name), "set up link", name) }

    func addAddress(_ address: IPv4Address, prefix: Int, to name: String) throws {
        try Kernel.check(
            ssn_addr_add(fd, name, address.networkOrder, Int32(prefix)), "add address",
            "\(address)/\(prefix) to \(name)")
    }

    func addDefaultRoute(via gateway: IPv4Address, dev name: String) throws {
        try Kernel.check(
            ssn_route_default(fd, name, gateway.networkOrder), "add route", "default via \(gateway) dev \(name)")
    }
}
