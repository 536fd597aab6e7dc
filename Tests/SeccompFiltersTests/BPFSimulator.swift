@testable import SeccompFilters

/// Runs a seccomp BPF program the way the kernel does (kernel/seccomp.c, net/core/filter.c's
/// classic BPF), for tests that check what a compiled filter answers without loading it.
struct BPFSimulator {
    let program: [BPFInstruction]

    init(_ program: SeccompProgram) throws {
        self.program = try BPFInstruction.decode(program.bpf)
    }

    /// `struct seccomp_data` as the kernel fills it: nr, arch, instruction pointer, args.
    struct Call {
        var nr: Int32
        var arch: UInt32 = SeccompNames.archX86_64
        var args: [UInt64] = [0, 0, 0, 0, 0, 0]

        init(_ name: String, arch: UInt32 = SeccompNames.archX86_64, args: [UInt64] = []) {
            let token = arch
            self.nr = SeccompNames.syscall(name, arch: token)!
            self.arch = arch == SeccompNames.archX32 ? SeccompNames.archX86_64 : arch
            self.args = args + Array(repeating: 0, count: 6 - args.count)
        }

        init(nr: Int32, arch: UInt32 = SeccompNames.archX86_64, args: [UInt64] = []) {
            self.nr = nr
            self.arch = arch
            self.args = args + Array(repeating: 0, count: 6 - args.count)
        }

        /// The 32-bit word at `offset` of seccomp_data (little endian).
        func word(_ offset: UInt32) -> UInt32 {
            switch offset {
            case 0: return UInt32(bitPattern: nr)
            case 4: return arch
            case 8, 12: return 0
            default:
                let i = Int(offset - 16) / 8
                let value = args[i]
                return (offset - 16) % 8 == 0
                    ? UInt32(truncatingIfNeeded: value) : UInt32(truncatingIfNeeded: value >> 32)
            }
        }
    }

    /// The SECCOMP_RET_* value the program returns for `call`.
    func run(_ call: Call) -> UInt32 {
        var a: UInt32 = 0
        var x: UInt32 = 0
        var mem = [UInt32](repeating: 0, count: 16)
        var pc = 0
        while pc < program.count {
            let i = program[pc]
            pc += 1
            let cls = i.code & 0x07
            switch cls {
            case BPFInstruction.ld:
                switch i.code & 0xe0 {
                case BPFInstruction.abs: a = call.word(i.k)
                case BPFInstruction.mem: a = mem[Int(i.k)]
                default: a = i.k  // imm
                }
            case BPFInstruction.ldx:
                x = i.code & 0xe0 == BPFInstruction.mem ? mem[Int(i.k)] : i.k
            case BPFInstruction.st: mem[Int(i.k)] = a
            case BPFInstruction.stx: mem[Int(i.k)] = x
            case BPFInstruction.alu:
                let operand = i.code & 0x08 == BPFInstruction.x ? x : i.k
                switch i.code & 0xf0 {
                case 0x00: a = a &+ operand
                case 0x10: a = a &- operand
                case 0x20: a = a &* operand
                case 0x40: a |= operand
                case 0x50: a &= operand
                case 0x60: a = operand < 32 ? a << operand : 0
                case 0x70: a = operand < 32 ? a >> operand : 0
                case 0x80: a = 0 &- a
                case 0xa0: a ^= operand
                default: fatalError("alu op \(i)")
                }
            case BPFInstruction.jmp:
                let operand = i.code & 0x08 == BPFInstruction.x ? x : i.k
                let taken: Bool
                switch i.code & 0xf0 {
                case BPFInstruction.ja:
                    pc += Int(i.k)
                    continue
                case BPFInstruction.jeq: taken = a == operand
                case BPFInstruction.jgt: taken = a > operand
                case BPFInstruction.jge: taken = a >= operand
                case BPFInstruction.jset: taken = a & operand != 0
                default: fatalError("jmp op \(i)")
                }
                pc += Int(taken ? i.jt : i.jf)
            case BPFInstruction.ret:
                return i.code & 0x18 == BPFInstruction.a ? a : i.k
            case BPFInstruction.misc:
                if i.code & 0xf8 == BPFInstruction.txa { a = x } else { x = a }
            default:
                fatalError("opcode \(i)")
            }
        }
        fatalError("program fell off its end")
    }
}
