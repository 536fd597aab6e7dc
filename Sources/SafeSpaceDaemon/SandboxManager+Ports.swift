/// `POST /v1/sandboxes/{name}/ports/{port}`: who may open a port forward into a sandbox, and
/// the audit records of its opening and closing (the forwarding itself is `PortForwards`).
import Foundation
import OCI
import SandboxSpec

extension SandboxManager {
    /// Opens (or gives the open) forward from a host loopback port to `portText` of `sandbox`.
    /// The caller is the sandbox's owner or root (`sandbox(_:for:)` checked that).
    /// - Returns: the host port and whether it was opened by this call.
    /// - Throws: `APIError`: 400 naming `port` for a port outside 1-65535; 403 naming
    ///   `spec.networkAccess.ingress` when the sandbox did not ask for ingress (the default);
    ///   400 `not_enforceable` naming `spec.securityLevel` for a gVisor sandbox (its network
    ///   stack is the sentry's: no namespace of the node holds its loopback); 409 when it is
    ///   not running.
    func openPort(_ sandbox: ManagedSandbox, portText: String, caller: Caller) throws -> (
        hostPort: UInt16, opened: Bool
    ) {
        // Every refusal is audited (port.opened, outcome denied), as the API's others are.
        func refuse(_ error: APIError) -> APIError {
            audit.record(
                "port.opened", sandbox: sandbox.name, caller: caller, outcome: "denied",
                fields: ["port": .string(portText), "error": .string(error.message)])
            return error
        }
        guard let number = Int(portText), number >= 1, number <= 65535 else {
            throw refuse(APIError.badRequest("\"\(portText)\": a TCP port is 1-65535", field: "port"))
        }
        let port = UInt16(number)
        let record = sandbox.record
        let resource = (try? JSONSerialization.jsonObject(with: record.resource)) as? [String: Any]
        let network = (resource?["spec"] as? [String: Any])?["networkAccess"] as? [String: Any]
        guard network?["ingress"] as? Bool == true else {
            throw refuse(
                APIError(
                    .forbidden, "ingress_not_allowed",
                    "sandbox \(sandbox.name) does not allow connections into it; create it with spec.networkAccess.ingress: true",
                    field: "spec.networkAccess.ingress"))
        }
        if SecurityLevel(rawValue: record.level)?.profile.backend == .gvisor {
            throw refuse(
                APIError.badRequest(
                    "sandbox \(sandbox.name) runs at securityLevel \(record.level) under gVisor, whose network stack (and loopback) is the sentry's own, not a namespace of the node: its ports cannot be forwarded",
                    field: "spec.securityLevel", code: "not_enforceable"))
        }
        guard record.phase == .running, let pid = record.initPid, let start = record.initStartTime else {
            throw APIError(.conflict, "not_running", "sandbox \(sandbox.name) is \(record.phase.rawValue.lowercased())")
        }
        let result = try ports.open(sandbox: sandbox.name, port: port, initPid: pid, initStartTime: start)
        // A delete that began meanwhile, or a release to its pool (a recycle: true pool): its
        // close may have run before this forward existed.
        let now = sandbox.record
        if now.phase != .running || now.isPoolReady || (!caller.isRoot && now.creatorUID != caller.uid) {
            closePorts(sandbox.name, reason: .error)
            throw APIError(.conflict, "not_running", "sandbox \(sandbox.name) is being deleted")
        }
        if result.opened {
            audit.record(
                "port.opened", sandbox: sandbox.name, caller: caller, outcome: "ok",
                fields: ["port": .int(number), "hostPort": .int(Int(result.hostPort)), "address": .string("127.0.0.1")])
            logger.info(
                "port forward opened",
                metadata: ["sandbox": "\(sandbox.name)", "port": "\(number)", "hostPort": "\(result.hostPort)"])
        }
        return result
    }

    /// Closes the forwards of sandbox `name` (its delete, daemon stop), one `port.closed`
    /// record each.
    func closePorts(_ name: String, reason: DeleteReason) {
        for closed in ports.close(sandbox: name) {
            audit.record(
                "port.closed", sandbox: name, caller: nil, outcome: "ok",
                fields: [
                    "port": .int(Int(closed.port)), "hostPort": .int(Int(closed.hostPort)),
                    "reason": .string(reason.rawValue),
                ])
        }
    }
}
