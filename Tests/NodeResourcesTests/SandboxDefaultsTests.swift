import Foundation
import Testing

@testable import NodeResources

/// The node configuration's `sandboxDefaults` read from a file, and the node's capacity.
struct SandboxDefaultsFileTests {
    static func file(_ text: String) throws -> String {
        let path = NSTemporaryDirectory() + "safespace-node-\(UUID().uuidString.prefix(8)).json"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test("load: the file's sandboxDefaults over the built-in values; a file without the key is the built-in values")
    func load() throws {
        let path = try Self.file(
            #"{"securityLevel": "standard", "sandboxDefaults": {"memory": "256Mi", "nofile": 4096}}"#)
        defer { unlink(path) }
        let d = try SandboxDefaults.load(environment: [SandboxDefaults.pathVariable: path])
        #expect(d == SandboxDefaults(memoryBytes: 256 << 20, nofile: 4096))
        let other = try Self.file(#"{"securityLevel": "high"}"#)
        defer { unlink(other) }
        #expect(try SandboxDefaults.load(environment: [SandboxDefaults.pathVariable: other]) == SandboxDefaults())
    }

    @Test(
        "load: a missing named file, malformed JSON and a sandboxDefaults that is no object are errors",
        arguments: [
            (nil, SandboxDefaults.pathVariable), (#"{"sandboxDefaults": ["#, "sandboxDefaults"),
            (#"{"sandboxDefaults": "1Gi"}"#, "sandboxDefaults"),
        ])
    func loadErrors(text: String?, field: String) throws {
        let path = try text.map { try Self.file($0) } ?? "/nonexistent/runtime.json"
        defer { unlink(path) }
        let error = #expect(throws: ResourceError.self) {
            try SandboxDefaults.load(environment: [SandboxDefaults.pathVariable: path])
        }
        #expect(error?.field == field)
        #expect(error?.message.contains(path) == true, "\(String(describing: error))")
    }

    @Test("the node's capacity: at least one CPU, no more than are online; MemTotal in bytes")
    func capacity() throws {
        let node = try NodeCapacity.read()
        let online = try #require(
            CPUList.parse(try CPUAllocator.readText("/sys/devices/system/cpu/online").trimmingWhitespace))
        #expect(node.cpus >= 1 && node.cpus <= online.count)
        #expect(node.memoryBytes > 64 << 20 && node.memoryBytes % 1024 == 0)
        #expect(throws: ResourceError.self) {
            try node.check(cpuMillis: Int64(node.cpus) * 1000 + 1, memoryBytes: nil, field: "spec.resources")
        }
        try node.check(cpuMillis: Int64(node.cpus) * 1000, memoryBytes: node.memoryBytes, field: "spec.resources")
        #expect(
            NodeCapacity.formatCPU(2500) == "2.5" && NodeCapacity.formatCPU(100_000_000) == "100000"
                && NodeCapacity.formatCPU(10) == "0.01")
    }
}
