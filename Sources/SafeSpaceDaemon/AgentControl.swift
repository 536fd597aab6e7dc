/// The agent's control requests of pool recycling (`SSA_KIND_STOP_PYTHON`,
/// `SSA_KIND_START_PYTHON`, Sources/SafeSpaceAgent/include/safespace_agent_protocol.h): the
/// exec request's format with one word of argv and /dev/null as stdio, answered by one DONE
/// record. What the agent answers is untrusted like any of its records: the caller verifies
/// what it can from the host (the cgroup's processes, the socket files).
import Glibc

enum AgentControl {
    /// Seconds the agent has to answer.
    static let answerSeconds = 5

    /// Sends `kind` to the agent of `endpoint` and returns DONE's value.
    /// - Throws: `AgentUnavailable` when the agent cannot be reached or answers anything but
    ///   DONE in time.
    static func request(_ kind: AgentExec.Kind, endpoint: AgentEndpoint) throws -> Int32 {
        let fd = try AgentExec.connect(directory: endpoint.directory, name: AgentExec.agentSocket)
        defer { close(fd) }
        let null = open("/dev/null", O_RDWR | O_CLOEXEC)
        guard null >= 0 else { throw AgentUnavailable(description: "/dev/null: \(String(cString: strerror(errno)))") }
        defer { close(null) }
        let deadline = ContinuousClock.now + .seconds(answerSeconds)
        let word = kind == .stopPython ? "stop-python" : "start-python"
        try AgentExec.send(
            AgentExec.encode(kind: kind, argv: [word], env: [:], cwd: nil), fds: [null, null, null], on: fd,
            deadline: deadline)
        var reader = RecordReader()
        do {
            let (type, value, _) = try reader.next(fd, deadline: deadline)
            guard type == .done else { throw AgentUnavailable(description: "the agent answered \(type), not done") }
            return value
        } catch let error as AgentUnavailable {
            throw error
        } catch {
            throw AgentUnavailable(description: "\(error)")
        }
    }
}
