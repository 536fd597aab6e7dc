import CSeccomp

/// The ENOSYS stub: a few BPF instructions put in front of libseccomp's program so that a
/// syscall numbered above every syscall the profile names returns ENOSYS instead of the
/// default action (seccomp/README.md, "Syscalls newer than the profile").
///
/// glibc falls back to an older syscall only on ENOSYS (clone3 -> clone, faccessat2 ->
/// faccessat, fchmodat2 -> fchmodat); a profile written before a syscall existed cannot name
/// it, so its default EPERM would break the fallback. runc solves the same problem the same
/// way (libcontainer/seccomp/patchbpf); libseccomp 2.5 has no notion of "newer than".
///
/// The stub checks the architecture first (every architecture of the filter has its own
/// numbering), and on x86_64 keeps x32 calls (bit 30 set) apart from native ones. An
/// architecture the filter does not include jumps straight into libseccomp's program, whose
/// bad-architecture action applies. Jumps only go forward, so libseccomp's program is
/// unchanged behind it.
public enum EnosysStub {
    /// SECCOMP_RET_ERRNO | ENOSYS.
    public static let enosys: UInt32 = SeccompNames.actionErrno | 38
    static let x32Bit: UInt32 = 0x4000_0000

    /// The largest syscall number the profile names on one architecture of the filter.
    public struct Horizon: Equatable, Sendable {
        /// AUDIT_ARCH_* as the kernel reports it in seccomp_data.arch.
        public var auditArch: UInt32
        /// Largest number among the names (for x86_64: native calls only).
        public var max: UInt32?
        /// x86_64 only: the largest x32 number (with bit 30), when x32 is in the filter.
        public var maxX32: UInt32?
        /// x86_64 only: bit 30 separates x32 calls from native ones.
        public var splitsX32: Bool
    }

    /// Horizons of `architectures` (libseccomp tokens) for the syscall `names`.
    public static func horizons(architectures: [UInt32], names: [String]) -> [Horizon] {
        var result: [Horizon] = []
        func largest(_ token: UInt32) -> UInt32? {
            names.compactMap { name -> UInt32? in
                let nr = seccomp_syscall_resolve_name_arch(token, name)
                // Negative: unknown (__NR_SCMP_ERROR) or a pseudo number for "not on this arch".
                return nr >= 0 ? UInt32(nr) : nil
            }.max()
        }
        for token in architectures {
            let isX32 = token == SeccompNames.archX32
            let audit = isX32 ? SeccompNames.archX86_64 : token
            var h =
                result.first(where: { $0.auditArch == audit })
                ?? Horizon(auditArch: audit, max: nil, maxX32: nil, splitsX32: audit == SeccompNames.archX86_64)
            if isX32 { h.maxX32 = largest(token) } else { h.max = largest(token) }
            if let i = result.firstIndex(where: { $0.auditArch == audit }) { result[i] = h } else { result.append(h) }
        }
        return result.filter { $0.max != nil || $0.maxX32 != nil }
    }

    /// The stub for `horizons`; empty when there is nothing to check.
    public static func instructions(_ horizons: [Horizon]) throws -> [BPFInstruction] {
        guard !horizons.isEmpty else { return [] }
        var asm = Assembler()
        asm.emit(.load(BPFInstruction.offsetArch))
        for (i, h) in horizons.enumerated() {
            asm.branch(BPFInstruction.jeq, h.auditArch, true: .section(i), false: .next)
        }
        asm.always(.filter)
        for (i, h) in horizons.enumerated() {
            asm.place(.section(i))
            asm.emit(.load(BPFInstruction.offsetNr))
            if h.splitsX32 {
                asm.branch(BPFInstruction.jset, x32Bit, true: .x32(i), false: .next)
                asm.above(h.max)
                asm.place(.x32(i))
                asm.above(h.maxX32)
            } else {
                asm.above(h.max)
            }
        }
        asm.place(.enosys)
        asm.emit(.ret(enosys))
        asm.place(.filter)
        return try asm.resolve()
    }

    /// A forward-only assembler with symbolic targets.
    struct Assembler {
        enum Label: Hashable { case next, section(Int), x32(Int), enosys, filter }
        enum Item {
            case fixed(BPFInstruction)
            case branch(UInt16, UInt32, Label, Label)
            case always(Label)
        }
        var items: [Item] = []
        var labels: [Label: Int] = [:]

        mutating func emit(_ i: BPFInstruction) { items.append(.fixed(i)) }
        mutating func branch(_ op: UInt16, _ k: UInt32, true t: Label, false f: Label) {
            items.append(.branch(op, k, t, f))
        }
        mutating func always(_ target: Label) { items.append(.always(target)) }
        mutating func place(_ label: Label) { labels[label] = items.count }

        /// `nr > max` -> ENOSYS, else into the filter; without a max, into the filter.
        mutating func above(_ max: UInt32?) {
            if let max { branch(BPFInstruction.jgt, max, true: .enosys, false: .filter) } else { always(.filter) }
        }

        func resolve() throws -> [BPFInstruction] {
            try items.enumerated().map { pc, item in
                func offset(_ label: Label) throws -> UInt32 {
                    if label == .next { return 0 }
                    guard let target = labels[label], target > pc else {
                        throw SeccompError(.invalidProgram, "ENOSYS stub: bad jump target \(label)")
                    }
                    return UInt32(target - pc - 1)
                }
                switch item {
                case .fixed(let i): return i
                case .always(let l): return .jumpAlways(try offset(l))
                case .branch(let op, let k, let t, let f):
                    let (jt, jf) = (try offset(t), try offset(f))
                    guard jt <= 255, jf <= 255 else {
                        throw SeccompError(.invalidProgram, "ENOSYS stub: jump too long")
                    }
                    return .jump(op, k, UInt8(jt), UInt8(jf))
                }
            }
        }
    }
}
