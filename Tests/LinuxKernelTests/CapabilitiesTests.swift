import Glibc
import Testing

@testable import LinuxKernel

/// `Capability`: capability names and numbers (capabilities(7), through libcap).
struct CapabilitiesTests {
    @Test("names parse case-insensitively, with or without CAP_, to linux/capability.h's numbers")
    func names() {
        #expect(Capability.value(named: "CAP_CHOWN") == 0)
        #expect(Capability.value(named: "CAP_KILL") == 5)
        #expect(Capability.value(named: "CAP_NET_RAW") == 13)
        #expect(Capability.value(named: "net_raw") == 13)
        #expect(Capability.value(named: "Cap_Sys_Admin") == 21)
        #expect(Capability.value(named: "CAP_AUDIT_READ") == 37)
        #expect(Capability.value(named: "CAP_NOPE") == nil)
        #expect(Capability.value(named: "") == nil)
    }

    @Test("the kernel's last capability is /proc/sys/kernel/cap_last_cap; every one up to it libcap knows round-trips")
    func lastCapAndRoundTrip() throws {
        let last = Capability.lastCap
        #expect("\(last)" == (try Files.readString("/proc/sys/kernel/cap_last_cap")).trimmed)
        #expect(last >= 37)
        for cap in 0...last {
            guard let name = cap_name(cap) else { continue }
            #expect(name.hasPrefix("CAP_"))
            #expect(Capability.value(named: name) == cap, "\(name)")
        }
        for cap in 0...Int32(37) { #expect(cap_name(cap) != nil, "\(cap)") }
        #expect(cap_name(13) == "CAP_NET_RAW")
        #expect(cap_name(999) == nil)
    }

    @Test("values resolves a list in order; nil is empty; an unknown name throws naming the field")
    func values() throws {
        #expect(try Capability.values(nil, field: "process.capabilities.bounding") == [])
        #expect(try Capability.values(["CAP_KILL", "chown", "CAP_NET_BIND_SERVICE"], field: "f") == [5, 0, 10])
        let error = #expect(throws: SysError.self) {
            try Capability.values(["CAP_KILL", "CAP_NOPE"], field: "process.capabilities.effective")
        }
        #expect(error?.code == .invalidValue)
        #expect(error?.field == "process.capabilities.effective")
        #expect(error?.description == #"process.capabilities.effective: unknown capability "CAP_NOPE""#)
    }
}
