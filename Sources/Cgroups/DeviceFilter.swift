import CSafeSpace
import Glibc

/// The cgroup v2 device controller: an eBPF program of type BPF_PROG_TYPE_CGROUP_DEVICE,
/// generated from `DeviceRules` and attached to the container's cgroup (cgroup v2 has no
/// devices files; kernel Documentation/admin-guide/cgroup-v2.rst "Device controller").
///
/// The kernel calls it with `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`
/// (access_type = type | access << 16) and allows the operation when it returns 1. The program:
///
///     r2 = type, r3 = access, r4 = major, r5 = minor
///     for each exception:  if r2 != type goto next
///                          (access check) if r4 != major goto next; if r5 != minor goto next
///                          r0 = !default; exit
///     r0 = default; exit
///
/// The access check follows the v1 controller: with a deny default an exception must grant
/// every requested bit (`r3 & ~bits == 0`); with an allow default any requested bit it
/// names denies (`r3 & bits != 0`).
enum DeviceFilter {
    // BPF instruction classes and ops (include/uapi/linux/bpf.h, bpf_common.h).
    static let ldxMemW: UInt8 = 0x61  // BPF_LDX | BPF_MEM | BPF_W
    static let alu32AndK: UInt8 = 0x54  // BPF_ALU | BPF_AND | BPF_K
    static let alu32RshK: UInt8 = 0x74  // BPF_ALU | BPF_RSH | BPF_K
    static let alu32MovK: UInt8 = 0xb4  // BPF_ALU | BPF_MOV | BPF_K
    static let alu32MovX: UInt8 = 0xbc  // BPF_ALU | BPF_MOV | BPF_X
    static let jmpJneK: UInt8 = 0x55  // BPF_JMP | BPF_JNE | BPF_K
    static let jmpJeqK: UInt8 = 0x15  // BPF_JMP | BPF_JEQ | BPF_K
    static let exit: UInt8 = 0x95  // BPF_JMP | BPF_EXIT
    static let devBlock: Int32 = 1  // BPF_DEVCG_DEV_BLOCK
    static let devChar: Int32 = 2  // BPF_DEVCG_DEV_CHAR

    /// One `struct bpf_insn` as the kernel reads it (little-endian):
    /// code:8, dst_reg:4, src_reg:4, off:16, imm:32.
    static func insn(_ code: UInt8, dst: UInt8 = 0, src: UInt8 = 0, off: Int16 = 0, imm: Int32 = 0) -> UInt64 {
        UInt64(code) | UInt64(dst & 0xf) << 8 | UInt64(src & 0xf) << 12 | UInt64(UInt16(bitPattern: off)) << 16
            | UInt64(UInt32(bitPattern: imm)) << 32
    }

    /// The program's instructions for `rules` (pure).
    static func program(_ rules: DeviceRules) -> [UInt64] {
        var out: [UInt64] = [
            insn(ldxMemW, dst: 2, src: 1, off: 0),
            insn(alu32AndK, dst: 2, imm: 0xFFFF),
            insn(ldxMemW, dst: 3, src: 1, off: 0),
            insn(alu32RshK, dst: 3, imm: 16),
            insn(ldxMemW, dst: 4, src: 1, off: 4),
            insn(ldxMemW, dst: 5, src: 1, off: 8),
        ]
        let verdict: Int32 = rules.defaultAllow ? 0 : 1
        for e in rules.exceptions {
            // Conditions, each "goto next block" (the offset is patched once the block's length is known).
            var block: [(code: UInt8, dst: UInt8, src: UInt8, imm: Int32, jumps: Bool)] = []
            block.append((jmpJneK, 2, 0, e.type == "b" ? devBlock : devChar, true))
            let bits = Int32(e.access.rawValue)
            if rules.defaultAllow {
                block.append((alu32MovX, 1, 3, 0, false))
                block.append((alu32AndK, 1, 0, bits, false))
                block.append((jmpJeqK, 1, 0, 0, true))
            } else if e.access != .all {
                block.append((alu32MovX, 1, 3, 0, false))
                block.append((alu32AndK, 1, 0, ~bits & 0xFFFF, false))
                block.append((jmpJneK, 1, 0, 0, true))
            }
            if let major = e.major { block.append((jmpJneK, 4, 0, Int32(truncatingIfNeeded: major), true)) }
            if let minor = e.minor { block.append((jmpJneK, 5, 0, Int32(truncatingIfNeeded: minor), true)) }
            let total = block.count + 2  // + mov r0, exit
            for (i, b) in block.enumerated() {
                let off = b.jumps ? Int16(total - i - 1) : 0
                out.append(insn(b.code, dst: b.dst, src: b.src, off: off, imm: b.imm))
            }
            out.append(insn(alu32MovK, dst: 0, imm: verdict))
            out.append(insn(exit))
        }
        out.append(insn(alu32MovK, dst: 0, imm: rules.defaultAllow ? 1 : 0))
        out.append(insn(exit))
        return out
    }

    /// Loads the program for `rules` and attaches it to the cgroup directory `dir`, replacing
    /// the device program attached before (an update).
    /// - Throws: `CgroupError` naming `linux.resources.devices` with the bpf(2) errno and the
    ///   verifier's log (EPERM: no CAP_SYS_ADMIN / CAP_BPF).
    static func attach(_ rules: DeviceRules, to dir: String) throws {
        let insns = program(rules)
        var log = [CChar](repeating: 0, count: 1 << 16)
        let prog = insns.withUnsafeBufferPointer { p in
            ss_bpf_device_prog_load(p.baseAddress, UInt32(p.count), &log, UInt32(log.count))
        }
        if prog < 0 {
            let code = errno
            let verifier = String(decoding: log.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw CgroupError(
                operation: "bpf", path: dir, errno: code, field: DeviceRules.field,
                message: "loading the cgroup device program (BPF_PROG_LOAD)\(verifier.isEmpty ? "" : ": " + verifier)")
        }
        defer { close(prog) }
        let cgroupFd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if cgroupFd < 0 { throw CgroupError(operation: "open", path: dir, errno: errno, field: DeviceRules.field) }
        defer { close(cgroupFd) }
        let rc = ss_bpf_device_prog_attach(cgroupFd, prog, 1)
        if rc != 0 {
            throw CgroupError(
                operation: "bpf", path: dir, errno: errno, field: DeviceRules.field,
                message:
                    "\(rc == -1 ? "attaching the device program (BPF_PROG_ATTACH)" : "detaching the previous device program")"
            )
        }
    }

    /// How many device programs are attached to `dir` itself (tests).
    static func attachedCount(_ dir: String) -> Int {
        let fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return -1 }
        defer { close(fd) }
        return Int(ss_bpf_device_prog_count(fd))
    }
}
