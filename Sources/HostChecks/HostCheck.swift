// HostChecks: whether this host can run SafeSpace sandboxes and serve the CRI handlers
// (`safespace doctor`, scripts/install-node --check, the daemon at start). It reads the
// host (files under /proc and /sys, a few programs' --version) and changes nothing. It
// imports only LinuxKernel and libseccomp, never the runtime or the Sandbox model.

/// The outcome of one host check.
public struct HostCheck: Sendable, Equatable, CustomStringConvertible {
    public enum Status: String, Sendable {
        /// The host has it.
        case ok
        /// SafeSpace runs, with a feature limited (`reason` says which).
        case warn
        /// SafeSpace cannot run here until it is fixed.
        case fail
    }

    /// Stable name of the check (`HostCheck.Name`): what scripts and the daemon match on.
    public var name: String
    public var status: Status
    /// One line for a person: what was found, or what is missing and how to get it.
    public var reason: String

    public init(_ name: String, _ status: Status, _ reason: String) {
        self.name = name
        self.status = status
        self.reason = reason
    }

    /// `STATUS  NAME  REASON`, padded into columns: the line `safespace doctor` prints and
    /// scripts/install-node reads (`read -r status name reason`).
    public var description: String {
        status.rawValue.padding(4) + "  " + name.padding(24) + "  " + reason
    }

    /// The names of the checks.
    public enum Name {
        /// containerd 1.6 or newer, below 2 (the CRI handlers' drop-in is for 1.x).
        public static let containerd = "containerd"
        /// A cgroup file system at /sys/fs/cgroup (v2, v1 or hybrid).
        public static let cgroup = "cgroup"
        /// A cgroup controller: `cgroup.cpu`, `cgroup.memory`, … (available at the v2
        /// root, or mounted on v1).
        public static func controller(_ c: String) -> String { "cgroup.\(c)" }
        /// A v2 controller enabled for the root's children (cgroup.subtree_control).
        public static func delegated(_ c: String) -> String { "cgroup.subtree.\(c)" }
        /// containerd.service has Delegate=yes (systemd hosts).
        public static let containerdDelegate = "containerd.delegate"
        /// user.max_user_namespaces > 0.
        public static let userNamespaces = "userns"
        /// libseccomp 2.5.0 or newer.
        public static let libseccomp = "libseccomp"
        /// CAP_SYS_RESOURCE in the bounding set (negative oom_score_adj).
        public static let capSysResource = "cap_sys_resource"
        /// AppArmor's state, and what it means for CRI pods.
        public static let appArmor = "apparmor"
        /// runsc (gVisor), for the safespace-high handler.
        public static let gVisor = "gvisor"
    }
}

/// The checks of one host, in the order they ran.
public struct HostReport: Sendable, Equatable {
    public var checks: [HostCheck]

    public init(checks: [HostCheck]) {
        self.checks = checks
    }

    /// The checks that failed; the host can run SafeSpace when there are none.
    public var failures: [HostCheck] { checks.filter { $0.status == .fail } }

    /// True when no check failed.
    public var passed: Bool { failures.isEmpty }

    /// The check called `name`, if it ran.
    public func check(_ name: String) -> HostCheck? { checks.first { $0.name == name } }

    /// True when gVisor can serve the safespace-high handler here.
    public var offersHigh: Bool { check(HostCheck.Name.gVisor)?.status == .ok }
}

extension String {
    fileprivate func padding(_ width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }
}
