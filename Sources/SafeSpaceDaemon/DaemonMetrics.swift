/// The daemon's metrics (swift-metrics, exported by swift-prometheus at `GET /metrics`).
import Metrics

enum Metrics {
    static let requests = Counter(label: "safespaced_http_requests_total")
    static let sandboxesCreated = Counter(label: "safespaced_sandboxes_created_total")
    static let sandboxesDeleted = Counter(label: "safespaced_sandboxes_deleted_total")
    static let admissionRefusals = Counter(label: "safespaced_admission_refusals_total")
    static let accessDenied = Counter(label: "safespaced_api_denied_total")
    static let execs = Counter(label: "safespaced_execs_total")
    static let execsRunning = Meter(label: "safespaced_execs_running")
    static let sandboxes = Gauge(label: "safespaced_sandboxes")
    static let execDuration = Timer(label: "safespaced_exec_duration_seconds")
    static let createDuration = Timer(label: "safespaced_sandbox_create_duration_seconds")
    /// Execs the sandbox's agent could not take, run through the runtime exec path instead.
    static let agentFallbacks = Counter(label: "safespaced_exec_agent_fallbacks_total")
    static let fileBytes = Counter(label: "safespaced_file_bytes_total")
}

/// swift-metrics' Timer, by a name that files importing Foundation (which has a `Timer`) can use.
typealias MetricsTimer = Timer

extension Timer {
    func recordInterval(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
