import Foundation
import Glibc
import Testing

@testable import Runtime

/// The seccomp event agent is made by the daemon while other threads create sandboxes. It once
/// set umask(077) around bind(2): umask is the process's, so a directory another thread made
/// meanwhile came out 0700, and a sandbox's mapped root could not reach its volume (EACCES).
@Suite struct SeccompAgentUmaskTests {
    @Test("binding the agent's socket leaves the process umask alone; the socket is 0600")
    func agentDoesNotChangeUmask() throws {
        let dir = FileManager.default.temporaryDirectory.path + "/ss-umask-\(getpid())"
        #expect(mkdir(dir, 0o755) == 0)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let mask = umask(0o022)
        umask(mask)
        let expected = 0o755 & ~mask
        let agents = Thread {
            for i in 0..<200 {
                (try? SeccompEventAgent(path: "\(dir)/agent\(i).sock"))?.close()
            }
        }
        agents.start()
        var wrong: [String] = []
        for i in 0..<4000 {
            let path = "\(dir)/d\(i)"
            guard mkdir(path, 0o755) == 0 else { continue }
            var st = stat()
            if stat(path, &st) == 0, st.st_mode & 0o777 != expected { wrong.append(path) }
        }
        while !agents.isFinished { usleep(1000) }
        #expect(wrong.isEmpty, "directories made while the agent bound: \(wrong.prefix(3))")
        let agent = try SeccompEventAgent(path: "\(dir)/final.sock")
        defer { agent.close() }
        var st = stat()
        #expect(stat("\(dir)/final.sock", &st) == 0 && st.st_mode & 0o777 == 0o600)
    }
}
