import CSeccomp
import Glibc

/// The names of config-linux.md#seccomp (actions, operators, architectures, flags) and the
/// values seccomp.h and linux/seccomp.h give them.
public enum SeccompNames {
    /// `SCMP_ACT_*` without the errno: the action part of a `SECCOMP_RET_*` value.
    public static let actions: [String: UInt32] = [
        "SCMP_ACT_KILL": 0x0000_0000, "SCMP_ACT_KILL_THREAD": 0x0000_0000,
        "SCMP_ACT_KILL_PROCESS": 0x8000_0000, "SCMP_ACT_TRAP": 0x0003_0000,
        "SCMP_ACT_ERRNO": 0x0005_0000, "SCMP_ACT_NOTIFY": 0x7fc0_0000,
        "SCMP_ACT_TRACE": 0x7ff0_0000, "SCMP_ACT_LOG": 0x7ffc_0000, "SCMP_ACT_ALLOW": 0x7fff_0000,
    ]

    public static let actionErrno: UInt32 = 0x0005_0000
    public static let actionTrace: UInt32 = 0x7ff0_0000
    public static let actionNotify: UInt32 = 0x7fc0_0000
    public static let actionAllow: UInt32 = 0x7fff_0000
    public static let actionLog: UInt32 = 0x7ffc_0000
    public static let actionKillProcess: UInt32 = 0x8000_0000

    /// The largest errno a rule may give: the kernel clamps SECCOMP_RET_ERRNO data to MAX_ERRNO
    /// (4095, include/linux/err.h) and libseccomp takes values below it only.
    public static let maxErrno: UInt32 = 4094

    /// The `SECCOMP_RET_*` value of an OCI action and errnoRet.
    ///
    /// errnoRet belongs to SCMP_ACT_ERRNO and SCMP_ACT_TRACE only (default EPERM); elsewhere it
    /// is an error, as config-linux.md asks ("the runtime MUST print an error and fail").
    /// - Throws: `SeccompError` naming `field` for an unknown action or a bad errnoRet.
    public static func action(_ name: String, errnoRet: UInt32?, field: String) throws -> UInt32 {
        guard let base = actions[name] else {
            throw SeccompError(
                .invalidProfile, "unknown action \"\(name)\" (one of \(actions.keys.sorted().joined(separator: ", ")))",
                field: field)
        }
        guard base == actionErrno || base == actionTrace else {
            if let errnoRet {
                throw SeccompError(
                    .invalidProfile, "errnoRet \(errnoRet) is given but \(name) returns no errno", field: field)
            }
            return base
        }
        let errno = errnoRet ?? 1  // EPERM
        guard errno <= maxErrno else {
            throw SeccompError(.invalidProfile, "errnoRet \(errno) is out of range (0-\(maxErrno))", field: field)
        }
        return base | errno
    }

    /// How strongly the kernel ranks an action when filters or rules disagree
    /// (seccomp_run_filters: KILL_PROCESS > KILL_THREAD > TRAP > ERRNO > USER_NOTIF > TRACE > LOG > ALLOW).
    public static func precedence(_ action: UInt32) -> Int {
        switch action & 0xffff_0000 {
        case actionKillProcess: 8
        case 0: 7
        case 0x0003_0000: 6
        case actionErrno: 5
        case actionNotify: 4
        case actionTrace: 3
        case actionLog: 2
        default: 1
        }
    }

    public static let operators: [String: scmp_compare] = [
        "SCMP_CMP_NE": SCMP_CMP_NE, "SCMP_CMP_LT": SCMP_CMP_LT, "SCMP_CMP_LE": SCMP_CMP_LE,
        "SCMP_CMP_EQ": SCMP_CMP_EQ, "SCMP_CMP_GE": SCMP_CMP_GE, "SCMP_CMP_GT": SCMP_CMP_GT,
        "SCMP_CMP_MASKED_EQ": SCMP_CMP_MASKED_EQ,
    ]

    /// SECCOMP_FILTER_FLAG_* (linux/seccomp.h) that a profile may ask for.
    public static let flags: [String: UInt32] = [
        "SECCOMP_FILTER_FLAG_TSYNC": 1, "SECCOMP_FILTER_FLAG_LOG": 2, "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
        "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": 32,
    ]
    public static let flagTsync: UInt32 = 1
    /// Set by the compiler when a rule notifies: seccomp(2) then returns the listener fd.
    public static let flagNewListener: UInt32 = 8
    /// With TSYNC and NEW_LISTENER together the kernel wants this one too.
    public static let flagTsyncEsrch: UInt32 = 16

    /// The libseccomp token (`SCMP_ARCH_*`, the AUDIT_ARCH_* value for real architectures) of
    /// an OCI architecture name (`SCMP_ARCH_X86_64`).
    /// - Throws: `SeccompError` naming `field` when libseccomp does not know it.
    public static func architecture(_ name: String, field: String) throws -> UInt32 {
        let short = (name.hasPrefix("SCMP_ARCH_") ? String(name.dropFirst(10)) : name).lowercased()
        let token = short.isEmpty ? 0 : seccomp_arch_resolve_name(short)
        guard token != 0 else {
            throw SeccompError(.invalidProfile, "architecture \"\(name)\" is not known to libseccomp", field: field)
        }
        return token
    }

    /// AUDIT_ARCH_* of the x86 family (linux/audit.h); SCMP_ARCH_X32 is libseccomp's own token
    /// (x32 calls reach the kernel as x86_64 ones with bit 30 of the number set).
    public static let archX86_64: UInt32 = 0xC000_003E
    public static let archX86: UInt32 = 0x4000_0003
    public static let archX32: UInt32 = 0x4000_003E

    /// The OCI name of the architecture this process runs on (`SCMP_ARCH_X86_64`).
    public static var nativeArchitecture: String {
        let native = seccomp_arch_native()
        let known = ["X86_64", "AARCH64", "X86", "ARM", "PPC64LE", "PPC64", "S390X", "RISCV64", "MIPSEL64", "MIPS64"]
        let name = known.first { seccomp_arch_resolve_name($0.lowercased()) == native } ?? "NATIVE"
        return "SCMP_ARCH_" + name
    }

    /// features.md's `linux.seccomp`: what `safespace-runtime features` reports.
    public struct Features: Encodable, Sendable {
        public var enabled = true
        public var actions: [String]
        public var operators: [String]
        public var archs: [String]
        public var knownFlags: [String]
        public var supportedFlags: [String]
    }

    public static var features: Features {
        let archs = [
            "SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64",
            "SCMP_ARCH_MIPS",
            "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64",
            "SCMP_ARCH_MIPSEL64N32",
            "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64", "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390", "SCMP_ARCH_S390X",
            "SCMP_ARCH_PARISC", "SCMP_ARCH_PARISC64", "SCMP_ARCH_RISCV64",
        ].filter { (try? architecture($0, field: "")) != nil }
        let flagNames = flags.keys.sorted()
        return Features(
            actions: actions.keys.sorted(), operators: operators.keys.sorted(), archs: archs,
            knownFlags: flagNames, supportedFlags: flagNames)
    }

    /// The syscall number of `name` on `arch`, nil when libseccomp does not know it there.
    public static func syscall(_ name: String, arch: UInt32? = nil) -> Int32? {
        let nr = arch.map { seccomp_syscall_resolve_name_arch($0, name) } ?? seccomp_syscall_resolve_name(name)
        return nr == __NR_SCMP_ERROR ? nil : nr
    }

    /// The name of syscall `nr` on `arch` (an AUDIT_ARCH_* value), or `syscall_<nr>`.
    public static func syscallName(_ nr: Int32, arch: UInt32) -> String {
        // An x86_64 number with the x32 bit is an x32 syscall (libseccomp has a token for it).
        let token = arch == archX86_64 && nr & 0x4000_0000 != 0 ? archX32 : arch
        guard let cName = seccomp_syscall_resolve_num_arch(token, nr) else { return "syscall_\(nr)" }
        defer { free(cName) }
        return String(cString: cName)
    }
}
