/// `exec --cgroup` (runc 1.1 exec.go `getSubCgroupPaths`): existing sub-cgroups of the
/// container's cgroup that an exec'd process joins instead of the container's own.
///
/// Forms, each a `--cgroup` value:
/// - `PATH`: one value only; on cgroup v2 the sub-cgroup of the unified hierarchy, on v1 the
///   same sub-cgroup in every hierarchy of the container;
/// - `CONTROLLER[,CONTROLLER...]:PATH` (cgroup v1): that sub-cgroup in the hierarchies of
///   those controllers (`cpu`, `memory`, `name=systemd`, `unified` for a hybrid host's v2
///   hierarchy); the other hierarchies keep the container's cgroup.
/// `PATH` is relative to the container's cgroup (a leading `/` is dropped); `..` is refused.
public struct SubCgroups: Sendable, Equatable, Codable {
    /// Controller -> sub-cgroup path; the key "" stands for every hierarchy.
    public var paths: [String: String]

    public init(paths: [String: String] = [:]) {
        self.paths = paths
    }

    public var isEmpty: Bool { paths.isEmpty }

    /// Parses `--cgroup` values.
    /// - Throws: `CgroupError` (`.invalidValue`, field `--cgroup`) for more than one `:`, an
    ///   empty controller, a path form beside others, or a path with `..` or naming the
    ///   container's cgroup itself.
    public init(parsing values: [String]) throws {
        var paths: [String: String] = [:]
        for value in values {
            let parts = value.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard parts.count <= 2 else {
                throw Self.invalid("\(value): more than one \":\" (use [<controller>:]<path>)")
            }
            let path = try Self.clean(parts.count == 2 ? parts[1] : parts[0], value: value)
            if parts.count == 1 {
                guard values.count == 1 else {
                    throw Self.invalid("\(value): a path without <controller>: must be the only --cgroup")
                }
                paths[""] = path
                continue
            }
            for controller in parts[0].split(separator: ",", omittingEmptySubsequences: false).map(String.init) {
                guard !controller.isEmpty else { throw Self.invalid("\(value): empty <controller> before \":\"") }
                paths[controller] = path  // given twice: the last wins, as in runc 1.1.5
            }
        }
        self.paths = paths
    }

    /// `path` without leading or trailing `/` and empty components.
    static func clean(_ path: String, value: String) throws -> String {
        let components = path.split(separator: "/").filter { $0 != "." }
        guard !components.isEmpty, !components.contains("..") else {
            throw Self.invalid("\(value): \"\(path)\" is not a sub-cgroup path of the container's cgroup")
        }
        return components.joined(separator: "/")
    }

    static func invalid(_ message: String) -> CgroupError {
        CgroupError(.invalidValue, operation: "exec", field: "--cgroup", message: message)
    }
}

extension Cgroup {
    /// The directory per hierarchy that a process given `sub` joins: the sub-cgroup where
    /// `sub` names it, else the container's own (pure: nothing is checked on disk).
    /// - Throws: `CgroupError` (field `--cgroup`) for a controller none of the container's
    ///   hierarchies has, or a controller-prefixed form on a cgroup v2 host.
    public func directories(joining sub: SubCgroups) throws -> [String] {
        try hierarchyDirectories(joining: sub).map(\.directory)
    }

    /// `directories(joining:)` with each directory's hierarchy key (`unified` for cgroup v2).
    func hierarchyDirectories(joining sub: SubCgroups) throws -> [(key: String, directory: String)] {
        if sub.isEmpty { return directories.sorted(by: { $0.key < $1.key }).map { ($0.key, $0.value) } }
        if mode == .unified {
            guard sub.paths.count == 1, let path = sub.paths[""], let dir = directories["unified"] else {
                throw SubCgroups.invalid("on a cgroup v2 host give one sub-cgroup path without <controller>:")
            }
            return [("unified", CgroupPath.join(dir, path))]
        }
        let named = sub.paths.keys.filter { !$0.isEmpty }
        for controller in named
        where !directories.keys.contains(where: { Self.controllers(ofHierarchy: $0).contains(controller) }) {
            throw SubCgroups.invalid(
                "unknown controller \(controller): the container's cgroup hierarchies are \(directories.keys.sorted().joined(separator: " "))"
            )
        }
        return directories.sorted(by: { $0.key < $1.key }).map { key, dir in
            if let all = sub.paths[""] { return (key, CgroupPath.join(dir, all)) }
            let path = Self.controllers(ofHierarchy: key).lazy.compactMap { sub.paths[$0] }.first
            return (key, path.map { CgroupPath.join(dir, $0) } ?? dir)
        }
    }

    /// Moves `pid` into the container's cgroup, or the sub-cgroups `sub` names (which must
    /// exist: runc joins, it does not create).
    /// - Throws: `CgroupError` from `directories(joining:)`; `CgroupError` (`.invalidValue`,
    ///   `--cgroup`) for a sub-cgroup that does not exist; `CgroupError` (`write`) otherwise.
    public func attach(pid: Int32, joining sub: SubCgroups) throws {
        let targets = try directories(joining: sub)
        if !sub.isEmpty {
            for dir in targets where !CgroupFS.isDirectory(dir) {
                throw SubCgroups.invalid("no such sub-cgroup: \(dir) (make it first; exec joins existing cgroups only)")
            }
        }
        for dir in targets {
            try CgroupFS.write(dir + "/cgroup.procs", String(pid), field: sub.isEmpty ? "" : "--cgroup")
        }
    }

    /// The controller names a hierarchy key stands for: `cpu,cpuacct` -> cpu, cpuacct;
    /// `unified` -> unified; `name=systemd` -> name=systemd.
    static func controllers(ofHierarchy key: String) -> [String] {
        key.split(separator: ",").map(String.init)
    }
}
