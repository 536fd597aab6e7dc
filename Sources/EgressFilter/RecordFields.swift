import Synchronization

extension EgressRecord {
    /// The record as flat audit fields (snake_case keys; absent values left out): `event`
    /// ("network.allowed" / "network.denied"), `sandbox`, `source`, `protocol` ("dns",
    /// "http", "tls"), `domain`, `query_type`, `destination` (ip), `port`,
    /// `original_destination` (ip:port), `bytes_out`, `bytes_in` (bytes), `duration_ms`,
    /// `reason`.
    public var auditFields: [String: String] {
        var fields: [String: String] = [
            "event": event.rawValue, "sandbox": sandbox, "source": source, "protocol": networkProtocol.rawValue,
            "bytes_out": String(bytesOut), "bytes_in": String(bytesIn), "duration_ms": String(durationMs),
            "reason": reason,
        ]
        fields["domain"] = domain
        fields["query_type"] = queryType
        fields["destination"] = destinationAddress
        fields["port"] = destinationPort.map { String($0) }
        fields["original_destination"] = originalDestination
        return fields
    }
}

/// The denied destinations of one sandbox, for the one-line summary `safespace run` prints on
/// exit (issue 13, deliverable 4): feed it every record (thread-safe), read `line`.
public final class EgressDenialSummary: Sendable {
    private let denied = Mutex<[String: Int]>([:])
    public let sandbox: String

    public init(sandbox: String) { self.sandbox = sandbox }

    /// A summary of counts gathered elsewhere (say, a daemon's `status.egress.denied`).
    public init(sandbox: String, counts: [String: Int]) {
        self.sandbox = sandbox
        denied.withLock { $0 = counts }
    }

    /// Each denied destination (domain, else ip:port) and how often it was denied.
    public var counts: [String: Int] { denied.withLock { $0 } }

    /// Counts a `network.denied` record of this sandbox by its domain (else its original
    /// destination, else "?"); other records are ignored.
    public func add(_ record: EgressRecord) {
        guard record.event == .denied, record.sandbox == sandbox else { return }
        let key = record.domain ?? record.originalDestination ?? "?"
        denied.withLock { $0[key, default: 0] += 1 }
    }

    /// "egress denied: 3 x evil.example, 1 x 10.0.0.1:443" (most frequent first, at most
    /// `limit` names, "and N more"); nil when nothing was denied.
    public func line(limit: Int = 5) -> String? {
        let counts = self.counts
        guard !counts.isEmpty else { return nil }
        let sorted = counts.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
        var text = "egress denied: " + sorted.prefix(limit).map { "\($0.value) x \($0.key)" }.joined(separator: ", ")
        if sorted.count > limit { text += ", and \(sorted.count - limit) more" }
        return text
    }
}
