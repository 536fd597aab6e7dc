import Glibc
import LinuxKernel
import OCI

/// Checks of a config.json made before anything is created, so that bad input leaves nothing
/// behind. Every error names the OCI field (runtime-spec config.md, config-linux.md).
package enum SpecValidation {
    /// sysctl keys that are namespaced (runc's validator, sysctl(8)): the namespace they need.
    static func namespace(forSysctl key: String) -> String? {
        let ipc: Set<String> = [
            "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
            "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced",
        ]
        if ipc.contains(key) || key.hasPrefix("fs.mqueue.") { return "ipc" }
        if key == "kernel.hostname" || key == "kernel.domainname" { return "uts" }
        if key.hasPrefix("net.") { return "network" }
        return nil
    }

    static func validate(_ spec: Spec, bundle: String) throws {
        guard spec.ociVersion.hasPrefix("1.") else {
            throw RuntimeError(
                .invalidSpec, field: "ociVersion", "\"\(spec.ociVersion)\" is not a runtime-spec 1.x version")
        }
        guard let process = spec.process else { throw RuntimeError(.invalidSpec, field: "process", "missing") }
        try validate(process: process, field: "process")
        guard let root = spec.root, !root.path.isEmpty else {
            throw RuntimeError(.invalidSpec, field: "root.path", "missing")
        }
        _ = root
        let linux = spec.linux ?? Linux()
        var types = Set<String>()
        for (i, ns) in (linux.namespaces ?? []).enumerated() {
            guard NamespaceKind.flags[ns.type] != nil else {
                throw RuntimeError(
                    .invalidSpec, field: "linux.namespaces[\(i)].type", "unknown namespace type \"\(ns.type)\"")
            }
            guard types.insert(ns.type).inserted else {
                throw RuntimeError(
                    .invalidSpec, field: "linux.namespaces[\(i)].type", "namespace \"\(ns.type)\" listed twice")
            }
            if let path = ns.path, !path.isEmpty, !Files.exists(path) {
                throw RuntimeError(.invalidSpec, field: "linux.namespaces[\(i)].path", "\(path) does not exist")
            }
        }
        let own = Set((linux.namespaces ?? []).filter { ($0.path ?? "").isEmpty }.map(\.type))
        guard types.contains("mount") else {
            throw RuntimeError(
                .invalidSpec, field: "linux.namespaces",
                "a mount namespace is required (the runtime never mounts in the host's)")
        }
        // runc's validator (uts, sysctl): hostname, domainname and namespaced sysctls need the
        // namespace in linux.namespaces, new or joined by path; a joined one must not be the
        // runtime's own (the host's), whose hostname or settings would change.
        func privateNamespace(_ type: String) throws -> Bool {
            guard let (i, ns) = (linux.namespaces ?? []).enumerated().first(where: { $0.element.type == type }) else {
                return false
            }
            guard let path = ns.path, !path.isEmpty else { return true }
            return try !isRuntimeNamespace(path, type: type, field: "linux.namespaces[\(i)].path")
        }
        guard try privateNamespace("mount") else {
            // Joining the runtime's own mount namespace by path is no mount namespace at all.
            throw RuntimeError(
                .invalidSpec, field: "linux.namespaces",
                "the mount namespace joined by path is the runtime's own (the host's); a mount namespace of the container's own is required"
            )
        }
        for (field, value) in [("hostname", spec.hostname), ("domainname", spec.domainname)] where value != nil {
            guard try privateNamespace("uts") else {
                throw RuntimeError(
                    .invalidSpec, field: field,
                    "setting a \(field) needs a uts namespace of the container's own in linux.namespaces (new, or joined by path but not the host's)"
                )
            }
        }
        for (key, _) in linux.sysctl ?? [:] {
            guard let ns = namespace(forSysctl: key) else {
                throw RuntimeError(
                    .invalidSpec, field: "linux.sysctl",
                    "\"\(key)\" is not a namespaced sysctl; only ipc, uts and net keys can be set inside a container")
            }
            if key == "kernel.hostname" {
                // Two sources for one value, applied in an order no field states (runc refuses it too).
                throw RuntimeError(
                    .invalidSpec, field: "linux.sysctl",
                    "\"kernel.hostname\" conflicts with the hostname field; set hostname instead")
            }
            if key == "kernel.domainname", spec.domainname != nil {
                throw RuntimeError(
                    .invalidSpec, field: "linux.sysctl",
                    "\"kernel.domainname\" conflicts with the domainname field; set only one of them")
            }
            guard try privateNamespace(ns) else {
                throw RuntimeError(
                    .invalidSpec, field: "linux.sysctl",
                    "\"\(key)\" needs a \(ns) namespace of the container's own in linux.namespaces (new, or joined by path but not the host's)"
                )
            }
        }
        if own.contains("user") && UserNamespaceRange.wantsAllocation(spec) {
            // `llmsafespace.dev/userns: auto`: the runtime allocates the range (IDAllocator).
        } else if own.contains("user") {
            if (linux.uidMappings ?? []).isEmpty {
                throw RuntimeError(.invalidSpec, field: "linux.uidMappings", "a new user namespace needs uid mappings")
            }
            if (linux.gidMappings ?? []).isEmpty {
                throw RuntimeError(.invalidSpec, field: "linux.gidMappings", "a new user namespace needs gid mappings")
            }
        } else if !(linux.uidMappings ?? []).isEmpty || !(linux.gidMappings ?? []).isEmpty, !types.contains("user") {
            throw RuntimeError(
                .invalidSpec, field: "linux.uidMappings", "mappings given without a user namespace in linux.namespaces")
        }
        for (i, m) in (spec.mounts ?? []).enumerated() {
            let field = "mounts[\(i)]"
            guard m.destination.hasPrefix("/") else {
                throw RuntimeError(
                    .invalidSpec, field: "\(field).destination", "\"\(m.destination)\" is not an absolute path")
            }
            let dest = cleanPath(m.destination)
            if dest.hasPrefix("/proc/") {
                throw RuntimeError(
                    .invalidSpec, field: "\(field).destination",
                    "mounting over \(dest) is refused: nothing may be mounted over a path under /proc")
            }
            if dest == "/proc" && m.type != "proc" {
                throw RuntimeError(
                    .invalidSpec, field: "\(field).destination", "only a proc file system may be mounted at /proc")
            }
            let opts = MountOptions(m.options ?? [])
            if m.type == "bind" || opts.isBind {
                guard let src = m.source, !src.isEmpty else {
                    throw RuntimeError(.invalidSpec, field: "\(field).source", "a bind mount needs a source")
                }
                let abs = src.hasPrefix("/") ? src : bundle + "/" + src
                guard Files.exists(abs) else {
                    throw RuntimeError(.invalidSpec, field: "\(field).source", "\(abs) does not exist")
                }
            }
        }
        for (i, d) in (linux.devices ?? []).enumerated() {
            guard ["c", "b", "u", "p"].contains(d.type) else {
                throw RuntimeError(
                    .invalidSpec, field: "linux.devices[\(i)].type", "\"\(d.type)\" is not one of c, b, u, p")
            }
            guard d.path.hasPrefix("/dev/") else {
                throw RuntimeError(.invalidSpec, field: "linux.devices[\(i)].path", "\(d.path) is not under /dev")
            }
        }
        try validate(personality: linux.personality)
        if let prop = linux.rootfsPropagation, MountOptions.propagation(named: prop) == nil {
            throw RuntimeError(.invalidSpec, field: "linux.rootfsPropagation", "unknown propagation \"\(prop)\"")
        }
        if let p = process.apparmorProfile, !p.isEmpty, !AppArmor.isEnabled {
            throw RuntimeError(
                .unsupported, field: "process.apparmorProfile",
                "\"\(p)\" asked for, but AppArmor is not enabled on this host")
        }
        if let l = process.selinuxLabel, !l.isEmpty {
            throw RuntimeError(.unsupported, field: "process.selinuxLabel", "SELinux is not supported by this runtime")
        }
    }

    /// Whether the namespace file at `path` is the runtime's own namespace of `type` (the same
    /// inode as /proc/self/ns/TYPE), as runc's isHostNetNS checks for net sysctls.
    /// - Throws: `SysError` naming `field` when `path` cannot be stat(2)ed.
    static func isRuntimeNamespace(_ path: String, type: String, field: String) throws -> Bool {
        let names = ["network": "net", "mount": "mnt"]
        var mine = stat()
        var theirs = stat()
        guard stat("/proc/self/ns/" + (names[type] ?? type), &mine) == 0 else { return false }
        guard stat(path, &theirs) == 0 else { throw SysError("stat", path: path, field: field) }
        return mine.st_dev == theirs.st_dev && mine.st_ino == theirs.st_ino
    }

    /// config-linux.md#personality: domain LINUX or LINUX32; no flag values are defined yet.
    static func validate(personality: Personality?) throws {
        guard let personality else { return }
        guard Personality.domains[personality.domain] != nil else {
            throw RuntimeError(
                .invalidSpec, field: "linux.personality.domain",
                "\"\(personality.domain)\" is not one of LINUX, LINUX32")
        }
        if let flags = personality.flags, !flags.isEmpty {
            throw RuntimeError(
                .unsupported, field: "linux.personality.flags",
                "\(flags.joined(separator: ", ")): runtime-spec defines no personality flags yet; refusing rather than ignoring them"
            )
        }
    }

    package static func validate(process: Process, field: String) throws {
        guard let args = process.args, !args.isEmpty, !args[0].isEmpty else {
            throw RuntimeError(.invalidSpec, field: "\(field).args", "at least the executable is required")
        }
        guard process.cwd.hasPrefix("/") else {
            throw RuntimeError(.invalidSpec, field: "\(field).cwd", "\"\(process.cwd)\" is not an absolute path")
        }
        try ProcessSetup.checkCwdPath(process.cwd, field: "\(field).cwd")
        for (i, r) in (process.rlimits ?? []).enumerated() {
            guard Rlimits.resources[r.type] != nil else {
                throw RuntimeError(.invalidSpec, field: "\(field).rlimits[\(i)].type", "unknown rlimit \"\(r.type)\"")
            }
            guard r.soft <= r.hard else {
                throw RuntimeError(
                    .invalidSpec, field: "\(field).rlimits[\(i)]", "soft \(r.soft) is above hard \(r.hard)")
            }
        }
        let caps = process.capabilities
        for (set, names) in [
            ("bounding", caps?.bounding), ("effective", caps?.effective), ("inheritable", caps?.inheritable),
            ("permitted", caps?.permitted), ("ambient", caps?.ambient),
        ] {
            _ = try Capability.values(names, field: "\(field).capabilities.\(set)")
        }
        for e in process.env ?? [] where !e.contains("=") {
            throw RuntimeError(.invalidSpec, field: "\(field).env", "\"\(e)\" is not of the form KEY=value")
        }
        if let adj = process.oomScoreAdj, adj < -1000 || adj > 1000 {
            throw RuntimeError(.invalidSpec, field: "\(field).oomScoreAdj", "\(adj) is outside -1000...1000")
        }
    }
}
