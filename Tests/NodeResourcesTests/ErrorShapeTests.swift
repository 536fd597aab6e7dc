import Errors
import Testing

@testable import NodeResources

/// ResourceError in the common shape.
struct ResourceErrorShapeTests {
    @Test("a bad quantity: invalidValue at the Sandbox field")
    func quantity() {
        let error = #expect(throws: ResourceError.self) {
            _ = try Quantity.bytes("500m", field: "spec.resources.memory")
        }
        #expect(
            error?.code == .invalidValue && error?.codeName == "resources.invalidValue"
                && error?.category == .invalidArgument)
        #expect(error?.field == "spec.resources.memory" && error?.errno == nil && error?.operation == nil)
        #expect(error?.description == "spec.resources.memory: \(error?.message ?? "")")
    }

    @Test("more than the node has can never be given; a failed call keeps its errno")
    func nodeAndSyscall() {
        let node = NodeCapacity(cpus: 1, memoryBytes: 1 << 30)
        let error = #expect(throws: ResourceError.self) {
            try node.check(cpuMillis: 2000, memoryBytes: nil, field: "spec.resources")
        }
        #expect(error?.code == .exceedsNode && error?.field == "spec.resources.cpu")
        let read = #expect(throws: ResourceError.self) { _ = try CPUAllocator.readText("/nonexistent/cpus") }
        #expect(read?.code == .failed && read?.category == .internal && read?.errno == 2 && read?.operation != nil)
        #expect(read?.description.hasPrefix("/nonexistent/cpus: ") == true)
    }
}
