/// The preloaded packages of warm pools in the pool manager: the layer built when a pool is
/// added, its verification in each new sandbox before it is ready, and
/// `GET /v1/warmpools/{name}/scan`.
import Foundation
import Hummingbird
import LinuxKernel
import SandboxSpec

extension PoolManager {
    var layerBuilder: PackageLayerBuilder { PackageLayerBuilder(settings: manager.config.packages) }

    /// Builds (or reuses) the layer of `pool` off the event loop, audited `pool.layer_built`.
    /// - Throws: `APIError` 400 with the `PackageLayerError`'s code, field and message.
    func buildLayer(_ pool: WarmPool, caller: Caller) async throws -> PackageLayer? {
        guard !pool.preloadPins.isEmpty else { return nil }
        let builder = layerBuilder
        let result = await blocking { () -> Result<PackageLayer?, PackageLayerError> in
            do throws(PackageLayerError) { return .success(try builder.build(pool)) } catch { return .failure(error) }
        }
        let name = pool.metadata.name ?? ""
        switch result {
        case .success(let layer):
            manager.audit.record(
                "pool.layer_built", sandbox: nil, caller: caller, outcome: "ok",
                fields: [
                    "pool": .string(name), "layer": .string(layer?.path ?? ""),
                    "packages": .string(layer.map { $0.packages.map(\.description).joined(separator: " ") } ?? ""),
                    "manifestDigest": .string(layer?.listing.digest ?? ""),
                ])
            return layer
        case .failure(let error):
            manager.audit.record(
                "pool.layer_built", sandbox: nil, caller: caller, outcome: "denied",
                fields: ["pool": .string(name), "error": .string(error.description)])
            throw APIError.badRequest(error.message, field: error.field, code: error.code)
        }
    }

    /// Compares the layer as the new sandbox sees it with the layer's manifest; a difference
    /// (a file changed, added or removed) or a tree that cannot be read destroys the sandbox,
    /// is audited `pool.layer_verified` (outcome `denied`) and thrown, so that the sandbox is
    /// never made ready (the refill's error becomes the pool's `status.lastError`).
    /// With `background` (a refill), the walk runs under SCHED_IDLE as the refill's create does.
    func verifyLayer(
        _ sandbox: ManagedSandbox, layer: PackageLayer?, pool: String, background: Bool = false
    ) async throws {
        guard let layer, let initPid = sandbox.record.initPid else { return }
        let problem: String? = await blocking {
            Scheduling.running(background ? .idle : nil) {
                do { return try layer.verify(initPid: initPid).map { "\($0)" } } catch { return "\(error)" }
            }
        }
        guard let problem else { return }
        manager.audit.record(
            "pool.layer_verified", sandbox: sandbox.name, caller: nil, outcome: "denied",
            fields: ["pool": .string(pool), "layer": .string(layer.path), "difference": .string(problem)])
        try? await manager.delete(sandbox, reason: .error, caller: nil)
        throw APIError(
            .internalServerError, "layer_tampered",
            "the package layer \(layer.path) differs from its manifest in sandbox \(sandbox.name): \(problem)")
    }
}

extension DaemonAPI {
    /// `GET /v1/warmpools/{name}/scan`: the pool's packages (its layer's, dependencies
    /// included) against the advisory database as it is now.
    func registerPoolScan(on router: Router<DaemonContext>) {
        router.get("/v1/warmpools/:name/scan") { _, context in
            _ = try context.requireCaller()
            let entry = try pools.entry(context.parameters.get("name") ?? "")
            let (pool, layer) = (entry.pool, entry.layer)
            let builder = pools.layerBuilder
            let result = await blocking { () -> Result<[OSVFinding], PackageLayerError> in
                do throws(PackageLayerError) {
                    return .success(try builder.scan(pool, layer: layer))
                } catch { return .failure(error) }
            }
            let findings: [OSVFinding]
            switch result {
            case .success(let f): findings = f
            case .failure(let error):
                throw APIError(.serviceUnavailable, error.code, error.message, field: error.field)
            }
            return JSON.response([
                "pool": entry.name, "database": builder.settings.advisoryDatabase,
                "packages": (layer?.packages ?? pool.preloadPins).map(\.description),
                "findings": findings.map(\.json), "unwaived": findings.count { !$0.waived },
            ])
        }
    }
}
