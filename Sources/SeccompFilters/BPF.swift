/// Classic BPF as seccomp(2) runs it: `struct sock_filter` (linux/filter.h), 8 bytes each in
/// host byte order, and the few opcodes libseccomp and the ENOSYS stub use.
public struct BPFInstruction: Equatable, Sendable, CustomStringConvertible {
    public var code: UInt16
    public var jt: UInt8
    public var jf: UInt8
    public var k: UInt32

    public init(code: UInt16, jt: UInt8 = 0, jf: UInt8 = 0, k: UInt32) {
        self.code = code
        self.jt = jt
        self.jf = jf
        self.k = k
    }

    // linux/bpf_common.h
    public static let ld: UInt16 = 0x00, ldx: UInt16 = 0x01, st: UInt16 = 0x02, stx: UInt16 = 0x03
    public static let alu: UInt16 = 0x04, jmp: UInt16 = 0x05, ret: UInt16 = 0x06, misc: UInt16 = 0x07
    public static let w: UInt16 = 0x00, abs: UInt16 = 0x20, mem: UInt16 = 0x60, imm: UInt16 = 0x00
    public static let ja: UInt16 = 0x00, jeq: UInt16 = 0x10, jgt: UInt16 = 0x20, jge: UInt16 = 0x30, jset: UInt16 = 0x40
    public static let and: UInt16 = 0x50, or: UInt16 = 0x40
    public static let k: UInt16 = 0x00, x: UInt16 = 0x08, a: UInt16 = 0x10
    public static let tax: UInt16 = 0x00, txa: UInt16 = 0x80

    /// `struct seccomp_data` offsets (linux/seccomp.h): nr, arch, instruction_pointer, args[6].
    public static let offsetNr: UInt32 = 0, offsetArch: UInt32 = 4

    /// `ld [offset]` of a 32-bit word of seccomp_data.
    public static func load(_ offset: UInt32) -> BPFInstruction {
        BPFInstruction(code: ld | w | abs, k: offset)
    }

    /// A conditional jump on the accumulator against `k`; offsets count from the next instruction.
    public static func jump(_ op: UInt16, _ k: UInt32, _ jt: UInt8, _ jf: UInt8) -> BPFInstruction {
        BPFInstruction(code: jmp | op | Self.k, jt: jt, jf: jf, k: k)
    }

    public static func jumpAlways(_ offset: UInt32) -> BPFInstruction {
        BPFInstruction(code: jmp | ja, k: offset)
    }

    public static func ret(_ action: UInt32) -> BPFInstruction {
        BPFInstruction(code: ret | Self.k, k: action)
    }

    public var description: String {
        "{0x\(String(code, radix: 16)), \(jt), \(jf), 0x\(String(k, radix: 16))}"
    }

    /// Instructions from the bytes `seccomp_export_bpf` writes.
    /// - Throws: when the length is not a multiple of 8.
    public static func decode(_ bytes: [UInt8]) throws -> [BPFInstruction] {
        guard bytes.count % 8 == 0 else {
            throw SeccompError(.invalidProgram, "BPF program of \(bytes.count) bytes is not whole instructions")
        }
        return stride(from: 0, to: bytes.count, by: 8).map { i in
            let code = UInt16(bytes[i]) | UInt16(bytes[i + 1]) << 8
            var k = UInt32(bytes[i + 4])
            k |= UInt32(bytes[i + 5]) << 8
            k |= UInt32(bytes[i + 6]) << 16
            k |= UInt32(bytes[i + 7]) << 24
            return BPFInstruction(code: code, jt: bytes[i + 2], jf: bytes[i + 3], k: k)
        }
    }

    public static func encode(_ program: [BPFInstruction]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(program.count * 8)
        for i in program {
            out += [UInt8(i.code & 0xff), UInt8(i.code >> 8), i.jt, i.jf]
            out += [UInt8(i.k & 0xff), UInt8(i.k >> 8 & 0xff), UInt8(i.k >> 16 & 0xff), UInt8(i.k >> 24)]
        }
        return out
    }
}

/// BPF_MAXINSNS (linux/bpf_common.h): the kernel refuses longer seccomp programs.
public let bpfMaxInstructions = 4096
