import OCI
import Testing

@testable import NodeResources

struct QuantityTests {
    @Test(
        "cpu quantities in millicores",
        arguments: [
            ("1", 1000), ("500m", 500), ("2", 2000), ("0.5", 500), ("1.5", 1500), ("+2", 2000), ("100m", 100),
            ("0.0015", 2),
        ] as [(String, Int64)])
    func milli(text: String, value: Int64) throws {
        #expect(try Quantity.milli(text, field: "f") == value)
    }

    @Test(
        "byte quantities",
        arguments: [
            ("1Gi", 1 << 30), ("512Mi", 512 << 20), ("1G", 1_000_000_000), ("100M", 100_000_000), ("1.5Ki", 1536),
            ("5Gi", 5 << 30), ("123", 123), ("1k", 1000), ("0.5", 1),
        ] as [(String, Int64)])
    func bytes(text: String, value: Int64) throws {
        #expect(try Quantity.bytes(text, field: "f") == value)
    }

    @Test(
        "bad quantities name the field",
        arguments: ["lots", "-1", "", "1.2.3", "1Q", "Gi", ".", "1e3", "1 Gi", "99999999999Ei"])
    func bad(text: String) {
        #expect {
            _ = try Quantity.bytes(text, field: "spec.resources.memory")
        } throws: { "\($0)".hasPrefix("spec.resources.memory: ") }
    }

    @Test("m is not a byte suffix")
    func milliBytes() {
        #expect(throws: ResourceError.self) { _ = try Quantity.bytes("500m", field: "f") }
    }
}

struct SandboxLimitsTests {
    @Test("cpu, memory and the default pids limit become linux.resources")
    func conversion() throws {
        let l = try SandboxLimits.parse(cpu: "500m", memory: "1Gi", ephemeralStorage: "5Gi", cpuPinning: nil)
        let r = l.ociResources(devices: [.init(allow: false, access: "rwm")])
        #expect(r.cpu?.quota == 50_000 && r.cpu?.period == 100_000 && r.cpu?.cpus == nil)
        #expect(r.memory?.limit == 1 << 30 && r.memory?.swap == 1 << 30)  // no swap
        #expect(r.pids?.limit == SandboxLimits.defaultPidsLimit)
        #expect(r.devices == [.init(allow: false, access: "rwm")])
        #expect(l.ephemeralStorageBytes == 5 << 30)
        // No limits given: still the pids limit.
        let none = try SandboxLimits.parse(cpu: nil, memory: nil, ephemeralStorage: nil, cpuPinning: nil).ociResources()
        #expect(none.cpu == nil && none.memory == nil && none.pids?.limit == SandboxLimits.defaultPidsLimit)
    }

    @Test("pinning: whole CPUs, written as a cpuset")
    func pinning() throws {
        let l = try SandboxLimits.parse(cpu: "2", memory: nil, ephemeralStorage: nil, cpuPinning: true)
        #expect(l.pinnedCPUCount == 2)
        let r = l.ociResources(pinnedCPUs: [2, 3])
        #expect(r.cpu?.cpus == "2-3" && r.cpu?.quota == 200_000)
    }

    @Test(
        "bad input names the field",
        arguments: [
            ("lots", nil, nil, false, "spec.resources.cpu"), ("-1", nil, nil, false, "spec.resources.cpu"),
            ("0", nil, nil, false, "spec.resources.cpu"), (nil, "lots", nil, false, "spec.resources.memory"),
            (nil, "1Ki", nil, false, "spec.resources.memory"),
            (nil, nil, "-5Gi", false, "spec.resources.ephemeralStorage"),
            ("1500m", nil, nil, true, "spec.resources.cpuPinning"), (nil, nil, nil, true, "spec.resources.cpuPinning"),
        ] as [(String?, String?, String?, Bool, String)])
    func bad(cpu: String?, memory: String?, storage: String?, pin: Bool, field: String) {
        #expect {
            _ = try SandboxLimits.parse(cpu: cpu, memory: memory, ephemeralStorage: storage, cpuPinning: pin)
        } throws: { ($0 as? ResourceError)?.field == field }
    }

    @Test("cpu lists", arguments: [([0, 1, 2, 5], "0-2,5"), ([3], "3"), ([1, 3, 4], "1,3-4")] as [([Int], String)])
    func cpuList(cpus: [Int], text: String) {
        #expect(CPUList.format(cpus) == text)
        #expect(CPUList.parse(text) == cpus)
    }
}
