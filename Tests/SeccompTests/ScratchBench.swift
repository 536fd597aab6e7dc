import Foundation
import Testing
@testable import OCI
@testable import Seccomp

struct ScratchBench {
    @Test func timings() throws {
        for name in ["default", "python"] {
            let path = BuiltinProfileTests.directory + "/" + name + ".json"
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            let clock = ContinuousClock()
            var s: Seccomp!
            let t0 = clock.measure { for _ in 0..<20 { s = try! SeccompProfile.decode(Array(data), source: path).resolved(for: .host(), source: path) } }
            let t1 = clock.measure { for _ in 0..<20 { _ = try! SeccompCompiler.compile(s) } }
            let dir = NSTemporaryDirectory() + "cachebench-\(name)"
            let cache = SeccompCache(directory: dir)
            _ = try cache.program(for: s)
            let t2 = clock.measure { for _ in 0..<20 { _ = try! cache.program(for: s) } }
            let enc = try JSONEncoder().encode(s!)
            let t3 = clock.measure { for _ in 0..<20 { _ = try! JSONDecoder().decode(Seccomp.self, from: enc) } }
            let p = try SeccompCompiler.compile(s)
            let penc = try JSONEncoder().encode(p)
            let t4 = clock.measure { for _ in 0..<20 { _ = try! JSONDecoder().decode(SeccompProgram.self, from: penc) } }
            print("BENCH \(name): resolve \(t0/20) compile \(t1/20) cachehit \(t2/20) decodeOCI \(t3/20) (\(enc.count)B) decodeProgram \(t4/20) (\(penc.count)B, \(p.instructionCount) insns)")
            try? FileManager.default.removeItem(atPath: dir)
        }
    }
}
