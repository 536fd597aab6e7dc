import Glibc
import CSeccomp
import Linux
import OCI

/// A compiled seccomp filter: classic BPF instructions (8 bytes each, `struct sock_filter`)
/// and the seccomp(2) flags to load it with.
public struct SeccompProgram: Codable, Sendable, Equatable {
    /// The BPF program as exported by libseccomp (`seccomp_export_bpf`).
    public var bpf: [UInt8]
    /// SECCOMP_FILTER_FLAG_* bits for seccomp(SECCOMP_SET_MODE_FILTER, flags, prog).
    public var flags: UInt32
    /// Syscall names the profile named that libseccomp does not know (skipped, reported).
    public var unknownSyscalls: [String]
}

/// Compiles OCI `linux.seccomp` (config-linux.md#seccomp) into BPF with libseccomp, in the
/// parent; the init loads the result as its last step before execve(2).
///
/// Rules (runc's and crun's): unknown syscall names are skipped with a warning while the
/// entry's other names stay enforced; an empty name is an error; within one entry,
/// conditions on different arguments are ANDed in one rule, and when an argument index repeats
/// every condition becomes a rule of its own (ORed), since libseccomp refuses two conditions on
/// one argument in a rule; for SCMP_CMP_MASKED_EQ `value` is the mask and `valueTwo` the datum.
public enum SeccompCompiler {
    /// SCMP_ACT_* values (seccomp.h); the function-like macros are computed here.
    public static func action(_ name: String, errnoRet: UInt32?, field: String) throws -> UInt32 {
        switch name {
        case "SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD": return 0x0000_0000
        case "SCMP_ACT_KILL_PROCESS": return 0x8000_0000
        case "SCMP_ACT_TRAP": return 0x0003_0000
        case "SCMP_ACT_ERRNO": return 0x0005_0000 | ((errnoRet ?? UInt32(EPERM)) & 0xffff)
        case "SCMP_ACT_TRACE": return 0x7ff0_0000 | ((errnoRet ?? UInt32(EPERM)) & 0xffff)
        case "SCMP_ACT_LOG": return 0x7ffc_0000
        case "SCMP_ACT_ALLOW": return 0x7fff_0000
        case "SCMP_ACT_NOTIFY":
            throw RuntimeError("\(field): SCMP_ACT_NOTIFY needs a listener (linux.seccomp.listenerPath), which this build does not support")
        default: throw RuntimeError("\(field): unknown seccomp action \"\(name)\"")
        }
    }

    static let operators: [String: scmp_compare] = [
        "SCMP_CMP_NE": SCMP_CMP_NE, "SCMP_CMP_LT": SCMP_CMP_LT, "SCMP_CMP_LE": SCMP_CMP_LE,
        "SCMP_CMP_EQ": SCMP_CMP_EQ, "SCMP_CMP_GE": SCMP_CMP_GE, "SCMP_CMP_GT": SCMP_CMP_GT,
        "SCMP_CMP_MASKED_EQ": SCMP_CMP_MASKED_EQ,
    ]

    /// libseccomp architecture names for the OCI `SCMP_ARCH_*` names.
    static func archToken(_ name: String, field: String) throws -> UInt32 {
        var short = name.hasPrefix("SCMP_ARCH_") ? String(name.dropFirst(10)) : name
        short = short.lowercased()
        let token = seccomp_arch_resolve_name(short)
        guard token != 0 else { throw RuntimeError("\(field): unknown architecture \"\(name)\"") }
        return token
    }

    static let flagBits: [String: UInt32] = [
        "SECCOMP_FILTER_FLAG_TSYNC": 1, "SECCOMP_FILTER_FLAG_LOG": 2, "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
    ]

    /// - Throws: `RuntimeError` naming the `linux.seccomp` field at fault.
    public static func compile(_ seccomp: Seccomp) throws -> SeccompProgram {
        let defaultAction = try action(seccomp.defaultAction, errnoRet: seccomp.defaultErrnoRet, field: "linux.seccomp.defaultAction")
        guard let ctx = seccomp_init(defaultAction) else { throw RuntimeError("linux.seccomp: seccomp_init failed") }
        defer { seccomp_release(ctx) }
        // No NO_NEW_PRIVS from libseccomp: process.noNewPrivileges decides that.
        _ = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0)
        for (i, arch) in (seccomp.architectures ?? []).enumerated() {
            let token = try archToken(arch, field: "linux.seccomp.architectures[\(i)]")
            let rc = seccomp_arch_add(ctx, token)
            if rc != 0 && rc != -EEXIST { throw SysError("seccomp_arch_add \(arch)", errno: -rc, field: "linux.seccomp.architectures[\(i)]") }
        }
        var flags: UInt32 = 0
        for (i, flag) in (seccomp.flags ?? []).enumerated() {
            guard let bit = flagBits[flag] else { throw RuntimeError("linux.seccomp.flags[\(i)]: unknown flag \"\(flag)\"") }
            flags |= bit
        }
        var unknown: [String] = []
        for (i, entry) in (seccomp.syscalls ?? []).enumerated() {
            let field = "linux.seccomp.syscalls[\(i)]"
            let act = try action(entry.action, errnoRet: entry.errnoRet, field: field + ".action")
            var conditions: [scmp_arg_cmp] = []
            for (j, arg) in (entry.args ?? []).enumerated() {
                guard arg.index < 6 else { throw RuntimeError("\(field).args[\(j)].index: \(arg.index) is not 0-5") }
                guard let op = operators[arg.op] else { throw RuntimeError("\(field).args[\(j)].op: unknown operator \"\(arg.op)\"") }
                conditions.append(scmp_arg_cmp(arg: arg.index, op: op, datum_a: arg.value, datum_b: arg.valueTwo ?? 0))
            }
            let indexes = conditions.map(\.arg)
            let rules: [[scmp_arg_cmp]] = Set(indexes).count == indexes.count ? [conditions] : conditions.map { [$0] }
            guard !entry.names.isEmpty else { throw RuntimeError("\(field).names: empty") }
            for (k, name) in entry.names.enumerated() {
                guard !name.isEmpty else { throw RuntimeError("\(field).names[\(k)]: empty syscall name") }
                let nr = seccomp_syscall_resolve_name(name)
                if nr == __NR_SCMP_ERROR {
                    unknown.append(name)
                    continue
                }
                // The default action already applies: libseccomp refuses such a rule (EACCES).
                if act == defaultAction { continue }
                for rule in rules {
                    let rc = rule.withUnsafeBufferPointer { seccomp_rule_add_array(ctx, act, nr, UInt32($0.count), $0.baseAddress) }
                    if rc != 0 {
                        throw SysError("seccomp_rule_add \(name)", errno: -rc, field: field)
                    }
                }
            }
        }
        return SeccompProgram(bpf: try export(ctx), flags: flags, unknownSyscalls: unknown)
    }

    private static func export(_ ctx: scmp_filter_ctx) throws -> [UInt8] {
        var fds: [Int32] = [-1, -1]
        try sys("pipe") { pipe(&fds) }
        defer { close(fds[0]) }
        // A filter of a few thousand rules is well under the 64 KiB pipe buffer; export in a
        // loop-free way by growing the pipe when needed.
        _ = fcntl(fds[1], 1031 /* F_SETPIPE_SZ */, Int32(1 << 20))
        let rc = seccomp_export_bpf(ctx, fds[1])
        close(fds[1])
        if rc != 0 { throw SysError("seccomp_export_bpf", errno: -rc, field: "linux.seccomp") }
        return try Files.readAll(fd: fds[0])
    }
}
