import OCI

/// Device access rules (`linux.resources.devices`), reduced to the v1 devices controller's
/// model, which both drivers enforce: a default (allow or deny) and exceptions per
/// (type, major, minor) with `rwm` access bits (kernel Documentation/admin-guide/cgroup-v1/devices.rst).
///
/// The same reduced set becomes v1 `devices.deny`/`devices.allow` writes and, on v2, an eBPF
/// `BPF_PROG_TYPE_CGROUP_DEVICE` program (`DeviceFilter`), so a spec behaves alike on both.
public struct DeviceRules: Equatable, Sendable {
    /// One exception: type `c` or `b` (`a` = both), major/minor nil for `*`, access bits.
    public struct Exception: Hashable, Sendable {
        public var type: Character
        public var major: Int64?
        public var minor: Int64?
        public var access: Access
    }

    public struct Access: OptionSet, Hashable, Sendable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        // Bit values of the kernel's BPF_DEVCG_ACC_* (include/uapi/linux/bpf.h).
        public static let mknod = Access(rawValue: 1)
        public static let read = Access(rawValue: 2)
        public static let write = Access(rawValue: 4)
        public static let all: Access = [.read, .write, .mknod]

        var text: String {
            (contains(.read) ? "r" : "") + (contains(.write) ? "w" : "") + (contains(.mknod) ? "m" : "")
        }
    }

    public var defaultAllow: Bool
    /// In rule order; with `defaultAllow` false they allow, with true they deny.
    public var exceptions: [Exception]

    static let field = "linux.resources.devices"

    /// What every container may use whatever its spec says: runc's `AllowedDevices` (libcontainer
    /// specconv) minus its `c *:* m` and `b *:* m` mknod wildcards — null, zero, full, random,
    /// urandom, tty, ptmx and the pts ptys (`/dev/console` of a terminal is a pts).
    public static let defaultAllowed: [Resources.DeviceCgroup] = [
        .init(allow: true, type: "c", major: 1, minor: 3, access: "rwm"),
        .init(allow: true, type: "c", major: 1, minor: 5, access: "rwm"),
        .init(allow: true, type: "c", major: 1, minor: 7, access: "rwm"),
        .init(allow: true, type: "c", major: 1, minor: 8, access: "rwm"),
        .init(allow: true, type: "c", major: 1, minor: 9, access: "rwm"),
        .init(allow: true, type: "c", major: 5, minor: 0, access: "rwm"),
        .init(allow: true, type: "c", major: 5, minor: 2, access: "rwm"),
        .init(allow: true, type: "c", major: 136, minor: nil, access: "rwm"),
    ]

    /// The rules a container gets, as runc builds them: deny all, then `linux.resources.devices`
    /// as written, in order, then the default allow list (so a spec cannot take /dev/null away).
    /// A node listed in `linux.devices` gets no read or write access here: access to it is what
    /// `linux.resources.devices` says, so an explicit deny holds (runc
    /// `specconv.CreateCgroupConfig`; containerd and Docker add an allow rule for each device
    /// they pass). It gets `m` only, after the spec's rules, because the init creates the node
    /// from inside the cgroup (runc allows `m` for every device instead: `c *:* m`, `b *:* m`).
    /// `runtimeDevices` are devices the runtime itself needs in the cgroup (the gVisor sentry's
    /// /dev/kvm), allowed `rwm` last.
    /// - Throws: `CgroupError` naming `linux.resources.devices[i]` for a bad type or access.
    public static func effective(
        _ specRules: [Resources.DeviceCgroup]?, linuxDevices: [Device] = [], runtimeDevices: [Device] = []
    ) throws -> DeviceRules {
        var rules = DeviceRules(defaultAllow: false, exceptions: [])
        for (i, r) in (specRules ?? []).enumerated() { try rules.apply(r, field: "\(field)[\(i)]") }
        for r in defaultAllowed { try rules.apply(r, field: "default device") }
        for (i, d) in linuxDevices.enumerated() where d.type != "p" {
            let type = d.type == "u" ? "c" : d.type
            try rules.apply(
                .init(allow: true, type: type, major: d.major, minor: d.minor, access: "m"),
                field: "linux.devices[\(i)]")
        }
        for d in runtimeDevices where d.type != "p" {
            let type = d.type == "u" ? "c" : d.type
            try rules.apply(
                .init(allow: true, type: type, major: d.major, minor: d.minor, access: "rwm"),
                field: "runtime device \(d.path)")
        }
        return rules
    }

    /// Applies one rule with the v1 controller's semantics: `a *:*` resets the default and
    /// drops every exception; a rule agreeing with the default removes its bits from the
    /// exception of the same (type, major, minor); otherwise its bits are added there.
    mutating func apply(_ r: Resources.DeviceCgroup, field: String) throws {
        let type: Character
        switch r.type ?? "a" {
        case "a": type = "a"
        case "c": type = "c"
        case "b": type = "b"
        default: throw CgroupError.invalid("\(field).type", "\"\(r.type ?? "")\" is not a, c or b")
        }
        var access: Access = []
        for ch in r.access ?? "rwm" {
            switch ch {
            case "r": access.insert(.read)
            case "w": access.insert(.write)
            case "m": access.insert(.mknod)
            default:
                throw CgroupError.invalid("\(field).access", "\"\(r.access ?? "")\" has characters other than r, w, m")
            }
        }
        if access.isEmpty { return }
        let major = r.major.flatMap { $0 < 0 ? nil : $0 }
        let minor = r.minor.flatMap { $0 < 0 ? nil : $0 }
        if type == "a" && major == nil && minor == nil {
            defaultAllow = r.allow
            exceptions = []
            return
        }
        if type == "a" {
            // `a` with a number means both kinds; v1 would read any `a` as "everything".
            for t in ["c", "b"] {
                try apply(
                    .init(allow: r.allow, type: t, major: r.major, minor: r.minor, access: r.access), field: field)
            }
            return
        }
        let key = (type, major, minor)
        if let i = exceptions.firstIndex(where: { ($0.type, $0.major, $0.minor) == key }) {
            if r.allow == defaultAllow {
                exceptions[i].access.subtract(access)
                if exceptions[i].access.isEmpty { exceptions.remove(at: i) }
            } else {
                exceptions[i].access.formUnion(access)
            }
        } else if r.allow != defaultAllow {
            exceptions.append(Exception(type: type, major: major, minor: minor, access: access))
        }
    }

    /// The v1 `devices.allow`/`devices.deny` writes: the default first (`a`), then exceptions.
    func v1Writes() -> [CgroupWrite] {
        let (defaultFile, exceptionFile) =
            defaultAllow ? ("devices.allow", "devices.deny") : ("devices.deny", "devices.allow")
        var out = [CgroupWrite(controller: "devices", file: defaultFile, value: "a", field: Self.field)]
        for e in exceptions {
            let major = e.major.map(String.init) ?? "*"
            let minor = e.minor.map(String.init) ?? "*"
            out.append(
                CgroupWrite(
                    controller: "devices", file: exceptionFile, value: "\(e.type) \(major):\(minor) \(e.access.text)",
                    field: Self.field))
        }
        return out
    }
}
