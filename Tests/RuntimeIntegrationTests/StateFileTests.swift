import Foundation
import TestSupport
import Testing

/// state.json as other processes read it: it carries the bundle's config.json bytes as its spec
/// when the create left the spec unchanged (StateStore.encode).
@Suite(.enabled(if: Harness.isRoot, "needs root to run containers"), .serialized)
struct StateFileTests {
    @Test(
        "a config.json that starts with a byte order mark: state, start and delete from other processes read the state")
    func byteOrderMark() throws {
        let bundle = try Harness.busyboxBundle(["true"])
        let path = bundle + "/config.json"
        try (Data([0xEF, 0xBB, 0xBF]) + Data(contentsOf: URL(fileURLWithPath: path))).write(
            to: URL(fileURLWithPath: path))
        let c = try TestContainer("bom", bundle: bundle)
        defer { c.destroy() }
        try #require(try c.create().status == 0)
        let state = try c.rt(["state", c.id])
        #expect(state.status == 0 && state.stdout.contains("\"created\""), "\(state.stderr)")
        #expect(try c.start().status == 0)
        #expect(c.waitFor(status: "stopped"))
        #expect(try c.delete().status == 0)
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }
}
