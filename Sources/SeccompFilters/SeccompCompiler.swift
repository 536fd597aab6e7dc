import CSafeSpace
import CSeccomp
import Glibc
import LinuxKernel
import OCI

/// A compiled seccomp filter: classic BPF instructions (8 bytes each, `struct sock_filter`)
/// and the seccomp(2) flags to load it with.
public struct SeccompProgram: Sendable, Equatable {
    /// The BPF program: the ENOSYS stub, then libseccomp's program (`seccomp_export_bpf`).
    public var bpf: [UInt8]
    /// SECCOMP_FILTER_FLAG_* bits for seccomp(SECCOMP_SET_MODE_FILTER, flags, prog);
    /// NEW_LISTENER when a rule notifies.
    public var flags: UInt32
    /// Syscall names the profile named that libseccomp does not know (skipped, reported).
    public var unknownSyscalls: [String]
    /// What the caller should report: rules libseccomp drops that would only make the filter
    /// stricter than written.
    public var warnings: [String]

    public init(bpf: [UInt8], flags: UInt32, unknownSyscalls: [String] = [], warnings: [String] = []) {
        self.bpf = bpf
        self.flags = flags
        self.unknownSyscalls = unknownSyscalls
        self.warnings = warnings
    }

    /// seccomp(2) returns a listener fd (SCMP_ACT_NOTIFY is used).
    public var notifies: Bool { flags & SeccompNames.flagNewListener != 0 }

    public var instructionCount: Int { bpf.count / 8 }
}

/// Compiles OCI `linux.seccomp` (config-linux.md#seccomp) into BPF with libseccomp, in the
/// parent; the init loads the result as its last step before execve(2).
///
/// Rules (seccomp/README.md has the reasons):
/// - the filter covers the native architecture plus `architectures`; a syscall of any other
///   architecture (a 32-bit `int 0x80` on x86_64 when SCMP_ARCH_X86 is not listed) kills the
///   process (SIGSYS);
/// - a syscall name libseccomp does not know is skipped and reported while the entry's other
///   names stay enforced; an empty name is an error;
/// - in one entry, conditions on different arguments are ANDed into one rule; when an argument
///   index repeats, every condition becomes a rule of its own (ORed), as runc does, since
///   libseccomp refuses two conditions on one argument in a rule;
/// - SCMP_CMP_MASKED_EQ: `value` is the mask and `valueTwo` the datum (`arg & value == valueTwo`);
/// - libseccomp keeps only the first unconditional rule of a syscall and silently drops the
///   syscall's other rules: of several unconditional rules the most restrictive is kept, a
///   conditional rule stricter than the unconditional one is an error (the filter would be
///   weaker than written), a laxer one is dropped; each drop is a warning;
/// - with a denying default action, syscalls numbered above every syscall the profile names
///   return ENOSYS (`EnosysStub`);
/// - SCMP_ACT_NOTIFY needs `listenerPath`; it may not apply to sendmsg(2), with which the
///   runtime hands the listener its fd after loading the filter.
public enum SeccompCompiler {
    /// - Throws: `SeccompError` naming the `linux.seccomp` field at fault (libseccomp's own
    ///   failures included).
    public static func compile(_ seccomp: Seccomp) throws -> SeccompProgram {
        let field = "linux.seccomp"
        let defaultAction = try SeccompNames.action(
            seccomp.defaultAction, errnoRet: seccomp.defaultErrnoRet, field: field + ".defaultAction")
        if seccomp.listenerMetadata != nil && (seccomp.listenerPath ?? "").isEmpty {
            throw SeccompError(
                .invalidProfile, "listenerMetadata is set without listenerPath", field: field + ".listenerMetadata")
        }
        guard let ctx = seccomp_init(defaultAction) else {
            throw SeccompError(.libseccompFailed, "seccomp_init failed", field: field, operation: "seccomp_init")
        }
        defer { seccomp_release(ctx) }
        // No NO_NEW_PRIVS from libseccomp: process.noNewPrivileges decides that.
        _ = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0)
        _ = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SeccompNames.actionKillProcess)

        var architectures = [seccomp_arch_native()]
        for (i, name) in (seccomp.architectures ?? []).enumerated() {
            let token = try SeccompNames.architecture(name, field: "\(field).architectures[\(i)]")
            let rc = seccomp_arch_add(ctx, token)
            if rc != 0 && rc != -EEXIST {
                throw SeccompError(
                    .libseccompFailed, "seccomp_arch_add \(name): \(String(cString: strerror(-rc)))",
                    field: "\(field).architectures[\(i)]", operation: "seccomp_arch_add", errno: -rc)
            }
            if !architectures.contains(token) { architectures.append(token) }
        }

        var flags: UInt32 = 0
        for (i, name) in (seccomp.flags ?? []).enumerated() {
            guard let bit = SeccompNames.flags[name] else {
                throw SeccompError(
                    .invalidProfile,
                    "unknown flag \"\(name)\" (one of \(SeccompNames.flags.keys.sorted().joined(separator: ", ")))",
                    field: "\(field).flags[\(i)]")
            }
            flags |= bit
        }

        let (collected, unknown) = try collectRules(seccomp)
        // A rule with the default action is redundant, and libseccomp refuses it (EACCES).
        let (rules, warnings) = try resolveShadowing(collected.filter { $0.action != defaultAction })
        try checkNotify(seccomp, rules: rules, defaultAction: defaultAction)
        if rules.count > 32 {
            // A binary tree of syscall numbers instead of a linear scan (libseccomp 2.5
            // misbehaves with it and no rules, hence the threshold, as in runc).
            _ = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2)
        }
        for rule in rules {
            let rc = rule.conditions.withUnsafeBufferPointer {
                seccomp_rule_add_array(ctx, rule.action, rule.nr, UInt32($0.count), $0.baseAddress)
            }
            if rc != 0 {
                throw SeccompError(
                    .libseccompFailed, "seccomp_rule_add \(rule.name): \(String(cString: strerror(-rc)))",
                    field: rule.field, operation: "seccomp_rule_add", errno: -rc)
            }
        }
        if rules.contains(where: { $0.action & 0xffff_0000 == SeccompNames.actionNotify })
            || defaultAction == SeccompNames.actionNotify
        {
            flags |= SeccompNames.flagNewListener
            if flags & SeccompNames.flagTsync != 0 { flags |= SeccompNames.flagTsyncEsrch }
        }

        var program = try BPFInstruction.decode(try export(ctx))
        if stubApplies(defaultAction) {
            let names = (seccomp.syscalls ?? []).flatMap(\.names)
            program =
                try EnosysStub.instructions(EnosysStub.horizons(architectures: architectures, names: names)) + program
        }
        guard program.count <= bpfMaxInstructions else {
            throw SeccompError(
                .invalidProfile,
                "the filter has \(program.count) BPF instructions; the kernel takes at most \(bpfMaxInstructions)",
                field: field)
        }
        return SeccompProgram(
            bpf: BPFInstruction.encode(program), flags: flags, unknownSyscalls: unknown, warnings: warnings)
    }

    /// runc's rule: only a denying default gets the stub. ALLOW, LOG and TRACE let newer syscalls
    /// through anyway, and a default of ERRNO(ENOSYS) already is the answer.
    static func stubApplies(_ defaultAction: UInt32) -> Bool {
        switch defaultAction & 0xffff_0000 {
        case SeccompNames.actionAllow, SeccompNames.actionLog, SeccompNames.actionTrace: return false
        default: return defaultAction != EnosysStub.enosys
        }
    }

    /// One libseccomp rule: a syscall number, an action and ANDed conditions.
    struct Rule {
        var nr: Int32
        var name: String
        var action: UInt32
        var conditions: [scmp_arg_cmp]
        var field: String
    }

    static func collectRules(_ seccomp: Seccomp) throws -> ([Rule], [String]) {
        var rules: [Rule] = []
        var unknown: [String] = []
        for (i, entry) in (seccomp.syscalls ?? []).enumerated() {
            let field = "linux.seccomp.syscalls[\(i)]"
            let action = try SeccompNames.action(entry.action, errnoRet: entry.errnoRet, field: field + ".action")
            if action == SeccompNames.actionNotify && (seccomp.listenerPath ?? "").isEmpty {
                throw SeccompError(
                    .invalidProfile,
                    "SCMP_ACT_NOTIFY needs linux.seccomp.listenerPath, the agent that answers the notifications",
                    field: field + ".action")
            }
            var conditions: [scmp_arg_cmp] = []
            for (j, arg) in (entry.args ?? []).enumerated() {
                guard arg.index < 6 else {
                    throw SeccompError(
                        .invalidProfile, "\(arg.index) is not an argument index (0-5)",
                        field: "\(field).args[\(j)].index")
                }
                guard let op = SeccompNames.operators[arg.op] else {
                    throw SeccompError(
                        .invalidProfile,
                        "unknown operator \"\(arg.op)\" (one of \(SeccompNames.operators.keys.sorted().joined(separator: ", ")))",
                        field: "\(field).args[\(j)].op")
                }
                conditions.append(scmp_arg_cmp(arg: arg.index, op: op, datum_a: arg.value, datum_b: arg.valueTwo ?? 0))
            }
            let indexes = conditions.map(\.arg)
            let groups: [[scmp_arg_cmp]] = Set(indexes).count == indexes.count ? [conditions] : conditions.map { [$0] }
            guard !entry.names.isEmpty else {
                throw SeccompError(
                    .invalidProfile, "empty: an entry names at least one syscall", field: field + ".names")
            }
            for (k, name) in entry.names.enumerated() {
                guard !name.isEmpty else {
                    throw SeccompError(.invalidProfile, "empty syscall name", field: "\(field).names[\(k)]")
                }
                guard let nr = SeccompNames.syscall(name) else {
                    if !unknown.contains(name) { unknown.append(name) }
                    continue
                }
                for group in groups {
                    rules.append(Rule(nr: nr, name: name, action: action, conditions: group, field: field))
                }
            }
        }
        return (rules, unknown)
    }

    /// libseccomp keeps the first unconditional rule of a syscall and silently drops every other
    /// rule of it with another action. So that no profile gets a filter weaker than written:
    /// of several unconditional rules the most restrictive one is kept (Podman's default profile
    /// both allows setns and denies it without CAP_SYS_ADMIN); a conditional rule stricter than
    /// the unconditional one is an error; whatever is dropped is reported.
    /// - Returns: the rules to add, and the warnings.
    static func resolveShadowing(_ rules: [Rule]) throws -> ([Rule], [String]) {
        var warnings: [String] = []
        var kept: [Int32: Rule] = [:]
        for rule in rules where rule.conditions.isEmpty {
            guard let current = kept[rule.nr] else {
                kept[rule.nr] = rule
                continue
            }
            guard rule.action != current.action else { continue }
            let stricter = SeccompNames.precedence(rule.action) > SeccompNames.precedence(current.action)
            let (winner, loser) = stricter ? (rule, current) : (current, rule)
            kept[rule.nr] = winner
            warnings.append(
                "\(loser.field): the rule for \(rule.name) is dropped: \(winner.field) gives it a more restrictive action unconditionally"
            )
        }
        var out: [Rule] = []
        var reported = Set<String>()
        for rule in rules {
            guard let winner = kept[rule.nr] else {
                out.append(rule)
                continue
            }
            if rule.conditions.isEmpty {
                if rule.field == winner.field && rule.action == winner.action
                    && !out.contains(where: { $0.nr == rule.nr && $0.conditions.isEmpty })
                {
                    out.append(rule)
                }
                continue
            }
            guard rule.action != winner.action, reported.insert("\(rule.field) \(rule.name)").inserted else { continue }
            if SeccompNames.precedence(rule.action) > SeccompNames.precedence(winner.action) {
                throw SeccompError(
                    .unsupported,
                    "the argument-conditional rule for \(rule.name) would be dropped by libseccomp, which keeps only the unconditional rule of \(winner.field) for it; the filter would be weaker than written (write the exception as conditions on the other rule, or use a default action that denies)",
                    field: rule.field)
            }
            warnings.append(
                "\(rule.field): the argument-conditional rule for \(rule.name) is dropped: \(winner.field) applies to it unconditionally"
            )
        }
        return (out, warnings)
    }

    /// After loading a notifying filter the init sends the listener fd with sendmsg(2): a
    /// notification for that call would wait for an agent that cannot have the fd yet.
    static func checkNotify(_ seccomp: Seccomp, rules: [Rule], defaultAction: UInt32) throws {
        guard let sendmsg = SeccompNames.syscall("sendmsg") else { return }
        for rule in rules where rule.nr == sendmsg && rule.action == SeccompNames.actionNotify {
            throw SeccompError(
                .unsupported,
                "SCMP_ACT_NOTIFY cannot apply to sendmsg: the runtime hands the listener its fd with sendmsg(2) after loading the filter",
                field: rule.field)
        }
        if defaultAction == SeccompNames.actionNotify
            && !rules.contains(where: {
                $0.nr == sendmsg && $0.conditions.isEmpty && $0.action != SeccompNames.actionNotify
            })
        {
            throw SeccompError(
                .unsupported,
                "SCMP_ACT_NOTIFY as the default action needs sendmsg named with another action: the runtime hands the listener its fd with sendmsg(2) after loading the filter",
                field: "linux.seccomp.defaultAction")
        }
    }

    /// `seccomp_export_bpf` writes to an fd: a pipe, drained by this thread after the export
    /// (a pipe of 1 MiB holds the largest program the kernel accepts, 4096 * 8 bytes, many times).
    private static func export(_ ctx: scmp_filter_ctx) throws -> [UInt8] {
        var fds: [Int32] = [-1, -1]
        guard ss_pipe2_cloexec(&fds) == 0 else {
            throw SeccompError(
                .libseccompFailed, "pipe: \(String(cString: strerror(errno)))", operation: "pipe2", errno: errno)
        }
        defer { close(fds[0]) }
        _ = fcntl(fds[1], F_SETPIPE_SZ, Int32(1 << 20))
        let rc = seccomp_export_bpf(ctx, fds[1])
        close(fds[1])
        if rc != 0 {
            throw SeccompError(
                .libseccompFailed, "seccomp_export_bpf: \(String(cString: strerror(-rc)))", field: "linux.seccomp",
                operation: "seccomp_export_bpf", errno: -rc)
        }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fds[0], $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 {
                throw SeccompError(
                    .libseccompFailed, "read exported BPF: \(String(cString: strerror(errno)))", operation: "read",
                    errno: errno)
            }
            if n == 0 { return out }
            out.append(contentsOf: buf[0..<n])
        }
    }
}
