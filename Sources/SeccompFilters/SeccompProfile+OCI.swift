import LinuxKernel
import OCI

/// What a Docker-format profile's `archMap`, `includes` and `excludes` are resolved against:
/// the machine and the process the filter is for.
public struct SeccompTarget: Sendable, Equatable {
    /// OCI name of the native architecture, `SCMP_ARCH_X86_64`.
    public var architecture: String
    /// The process's bounding set (`CAP_SYS_ADMIN`…): `includes.caps` needs all of its
    /// capabilities there, `excludes.caps` any one.
    public var capabilities: Set<String>
    /// `uname -r`, `6.1.0-18-amd64`: compared with `minKernel` by major.minor.patch.
    public var kernelRelease: String

    public init(architecture: String, capabilities: Set<String>, kernelRelease: String) {
        self.architecture = architecture
        self.capabilities = capabilities
        self.kernelRelease = kernelRelease
    }

    /// This machine, for a process with `capabilities` in its bounding set.
    public static func host(capabilities: Set<String> = []) -> SeccompTarget {
        let release =
            (try? Files.readString("/proc/sys/kernel/osrelease"))?.split(separator: "\n").first.map(String.init) ?? "0"
        return SeccompTarget(
            architecture: SeccompNames.nativeArchitecture, capabilities: capabilities, kernelRelease: release)
    }

    /// Docker's spelling of the native architecture in `includes.arches` (`amd64`, `arm64`).
    var dockerArchitecture: String {
        Self.dockerNames[architecture] ?? architecture.replacingPrefix("SCMP_ARCH_", with: "").lowercased()
    }

    static let dockerNames = [
        "SCMP_ARCH_X86_64": "amd64", "SCMP_ARCH_X86": "x86", "SCMP_ARCH_X32": "x32", "SCMP_ARCH_AARCH64": "arm64",
        "SCMP_ARCH_ARM": "arm", "SCMP_ARCH_PPC64LE": "ppc64le", "SCMP_ARCH_PPC64": "ppc64", "SCMP_ARCH_S390X": "s390x",
        "SCMP_ARCH_S390": "s390", "SCMP_ARCH_RISCV64": "riscv64", "SCMP_ARCH_MIPS64": "mips64",
        "SCMP_ARCH_MIPSEL64": "mipsel64",
    ]

    /// Whether the kernel is at least `version` (`4.8`, `5.6.0`).
    func kernelAtLeast(_ version: String) -> Bool? {
        guard let wanted = Self.numbers(version, strict: true) else { return nil }
        let running = Self.numbers(kernelRelease, strict: false) ?? [0]
        for i in 0..<3 {
            let (a, b) = (i < running.count ? running[i] : 0, i < wanted.count ? wanted[i] : 0)
            if a != b { return a > b }
        }
        return true
    }

    /// `6.1.0-18-amd64` -> [6, 1, 0]; strict: every dot-separated part must be a number.
    static func numbers(_ release: String, strict: Bool) -> [Int]? {
        let head = release.split(whereSeparator: { $0 == "-" || $0 == "+" || $0 == " " }).first ?? ""
        let parts = head.split(separator: ".", omittingEmptySubsequences: false).map { Int($0) }
        if strict { return parts.isEmpty || parts.count > 3 || parts.contains(nil) ? nil : parts.compactMap { $0 } }
        let numbers = Array(parts.prefix { $0 != nil }.compactMap { $0 })
        return numbers.isEmpty ? nil : numbers
    }
}

extension SeccompProfile {
    /// The OCI `linux.seccomp` of this profile for `target`, as moby and containers/common
    /// resolve it: `archMap`'s entry for the native architecture becomes `architectures`,
    /// entries whose `includes`/`excludes` do not hold for the target are left out, `name`
    /// becomes `names`, errno names become numbers.
    ///
    /// - Throws: `SeccompError` naming `source` and the entry (`syscalls[3].errno`).
    public func resolved(for target: SeccompTarget, source: String) throws -> Seccomp {
        func fail(_ field: String, _ message: String) -> SeccompError {
            SeccompError(.invalidProfile, message, field: "\(source): \(field)")
        }
        /// A check of `SeccompNames`, whose errors name the field but not the source.
        func check(_ body: () throws -> Void) throws {
            do { try body() } catch var error as SeccompError {
                error.field = "\(source): \(error.field ?? "")"
                throw error
            }
        }
        var out = Seccomp(defaultAction: defaultAction)
        out.defaultErrnoRet = try errno(number: defaultErrnoRet, name: defaultErrno, field: "defaultErrnoRet", fail)
        try check { _ = try SeccompNames.action(defaultAction, errnoRet: out.defaultErrnoRet, field: "defaultAction") }
        if let architectures, !architectures.isEmpty, let archMap, !archMap.isEmpty {
            throw fail("archMap", "both architectures and archMap are given; use one")
        }
        if let architectures { out.architectures = architectures }
        if let native = archMap?.first(where: { $0.architecture == target.architecture }) {
            out.architectures = [native.architecture] + (native.subArchitectures ?? [])
        }
        for (i, arch) in (out.architectures ?? []).enumerated() {
            try check {
                _ = try SeccompNames.architecture(arch, field: archMap == nil ? "architectures[\(i)]" : "archMap")
            }
        }
        for (i, flag) in (flags ?? []).enumerated() where SeccompNames.flags[flag] == nil {
            throw fail("flags[\(i)]", "unknown flag \"\(flag)\"")
        }
        out.flags = flags
        out.listenerPath = listenerPath
        out.listenerMetadata = listenerMetadata
        var syscalls: [Seccomp.Syscall] = []
        for (i, entry) in (self.syscalls ?? []).enumerated() {
            let field = "syscalls[\(i)]"
            guard try applies(entry, to: target, field: field, fail) else { continue }
            let names: [String]
            switch (entry.name, entry.names) {
            case (let name?, let list?) where !list.isEmpty:
                throw fail(field, "both name (\(name)) and names are given; use one")
            case (let name?, _): names = [name]
            case (nil, let list?): names = list
            case (nil, nil): throw fail(field + ".names", "missing")
            }
            let errnoRet = try errno(number: entry.errnoRet, name: entry.errno, field: field + ".errnoRet", fail)
            try check { _ = try SeccompNames.action(entry.action, errnoRet: errnoRet, field: field + ".action") }
            for (k, name) in names.enumerated() where name.isEmpty {
                throw fail("\(field).names[\(k)]", "empty syscall name")
            }
            if names.isEmpty { throw fail(field + ".names", "empty: an entry names at least one syscall") }
            for (j, arg) in (entry.args ?? []).enumerated() {
                if arg.index > 5 {
                    throw fail("\(field).args[\(j)].index", "\(arg.index) is not an argument index (0-5)")
                }
                if SeccompNames.operators[arg.op] == nil {
                    throw fail("\(field).args[\(j)].op", "unknown operator \"\(arg.op)\"")
                }
            }
            let args = entry.args?.map {
                Seccomp.Arg(index: $0.index, value: $0.value, valueTwo: $0.valueTwo, op: $0.op)
            }
            syscalls.append(
                Seccomp.Syscall(
                    names: names, action: entry.action, errnoRet: errnoRet, args: args?.isEmpty == true ? nil : args))
        }
        out.syscalls = syscalls
        return out
    }

    private func applies(
        _ entry: Syscall, to target: SeccompTarget, field: String, _ fail: (String, String) -> SeccompError
    ) throws -> Bool {
        let arch = target.dockerArchitecture
        if let ex = entry.excludes {
            if let arches = ex.arches, arches.contains(arch) { return false }
            if let caps = ex.caps, caps.contains(where: target.capabilities.contains) { return false }
            if let v = ex.minKernel {
                guard let atLeast = target.kernelAtLeast(v) else {
                    throw fail(field + ".excludes.minKernel", "\"\(v)\" is not a kernel version")
                }
                if atLeast { return false }
            }
        }
        if let inc = entry.includes {
            if let arches = inc.arches, !arches.isEmpty, !arches.contains(arch) { return false }
            if let caps = inc.caps, !caps.allSatisfy(target.capabilities.contains) { return false }
            if let v = inc.minKernel {
                guard let atLeast = target.kernelAtLeast(v) else {
                    throw fail(field + ".includes.minKernel", "\"\(v)\" is not a kernel version")
                }
                if !atLeast { return false }
            }
        }
        return true
    }

    /// errnoRet, or the number of Podman's errno name; both given must agree.
    private func errno(number: UInt32?, name: String?, field: String, _ fail: (String, String) -> SeccompError) throws
        -> UInt32?
    {
        guard let name else { return number }
        guard let value = ErrnoNames.number(name) else { throw fail(field, "unknown errno name \"\(name)\"") }
        if let number, number != value { throw fail(field, "\(number) and the errno name \(name) (\(value)) disagree") }
        return value
    }
}

extension String {
    func replacingPrefix(_ prefix: String, with replacement: String) -> String {
        hasPrefix(prefix) ? replacement + dropFirst(prefix.count) : self
    }
}
