import Foundation
import OCI
import TestSupport
import Testing

/// `create`/`run` skip the runtime's own re-execution as the sealed binary only when the
/// container gets a PID namespace of its own (SealedExecutable.helpersInvisible(to:)); a
/// container in the host's PID namespace sees the runtime process and must find it sealed.
@Suite(.enabled(if: Harness.isRoot, "needs root to run containers"), .serialized)
struct SealedParentTests {
    @Test(
        "run of a container in the host's PID namespace: the runtime it sees runs the sealed binary, not the host's file"
    )
    func hostPidNamespaceSeesSealedRuntime() throws {
        // CAP_SYS_PTRACE lets the workload read /proc/PID/exe of its parent, the `run` process
        // (the init is cloned with CLONE_PARENT); without a PID namespace of its own it sees it.
        let bundle = try Harness.busyboxBundle(["sh", "-c", "readlink /proc/$PPID/exe; echo parent=$PPID"]) { spec in
            let namespaces = spec.linux?.namespaces?.filter { $0.type != "pid" }
            spec.linux?.namespaces = namespaces
            let caps = ["CAP_SYS_PTRACE", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"]
            spec.process?.capabilities = Capabilities(bounding: caps, effective: caps, permitted: caps)
        }
        let c = try TestContainer("sealedparent", bundle: bundle)
        defer { c.destroy() }
        let r = try c.run()
        #expect(r.status == 0, "\(r.stderr)")
        let lines = r.stdout.split(separator: "\n").map(String.init)
        let hostPath = URL(fileURLWithPath: Harness.runtimeBinary).resolvingSymlinksInPath().path
        #expect(
            lines.count == 2 && !lines[0].isEmpty,
            "the workload could not read its parent's exe: \(r.stdout) \(r.stderr)")
        #expect(
            lines.first?.hasSuffix("safespace-runtime") == true || lines.first?.hasPrefix("/memfd:") == true,
            "\(r.stdout)")
        #expect(
            lines.first != hostPath && lines.first != Harness.runtimeBinary,
            "the runtime ran the host's file: \(r.stdout)")
        #expect(lines.first?.hasPrefix(Harness.buildDir) != true, "the runtime ran the host's file: \(r.stdout)")
    }
}
