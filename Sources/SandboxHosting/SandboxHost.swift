/// SandboxHost: the node side of a sandbox. It turns a validated `Sandbox` into a running
/// sandbox and releases everything it took: the bundle directory and its lease, the writable
/// layer (overlay over the store's rootfs, idmapped in a user namespace), the host uid range,
/// pinned CPUs, the ephemeral storage volume, the seccomp event agent, and the container
/// (create/start/wait/kill/delete through Runtime's `ContainerRuntime`).
///
/// Front ends: `safespace run` (the CLI) and, later, the daemon. The library is usable from a
/// long-running multithreaded process: it keeps no global state, installs no signal handlers
/// and never exits; errors are thrown, and what is worth telling but not an error goes to
/// `Configuration.messages`. Every fork goes through Runtime (its spawn and `init` paths).
/// It must not import ArgumentParser or anything of a front end.
import Cgroups
import Foundation
import GVisor
import Glibc
import NodeResources
import OCI
import Runtime
import SandboxNetwork
import SandboxSpec

/// The node-side host of sandboxes. Stateless: all the node state it takes is on disk, each
/// piece recorded with its owner (SandboxLeases.swift), and held by a `PreparedSandbox`.
/// The pinned CPUs and host id ranges are leases of runtime.json's `LeaseStore`
/// (`RuntimeConfiguration.leaseStore`), which `safespace-runtime` allocates ranges from too.
public struct SandboxHost: Sendable {
    /// Where the node's state lives, and where messages go.
    public struct Configuration: Sendable {
        /// `--root` of the runtime's state (`ContainerRuntime`).
        public var stateRoot: String
        /// Parent of the bundle directories (`SandboxLeases`), `/run/safespace-bundles`.
        public var bundleRoot: String
        /// `EphemeralStorage` base of the volumes.
        public var ephemeralStorageBase: String
        /// Rootfs store directory (`RootfsStore`).
        public var rootfsStore: String
        /// Directory of SandboxProfiles and Localhost seccomp profiles (`SeccompProfiles`).
        public var seccompProfiles: String
        /// Receives warnings and the seccomp summary; called from any thread. Default: dropped.
        public var messages: @Sendable (Message) -> Void
        /// What containers run with (`ContainerRuntime.backends`). Default: this runtime's own
        /// backend and gVisor's (security level high).
        public var backends: RuntimeBackends
        /// The node's egress filter, hosted by the front end (`safespace run`, `safespaced`);
        /// nil: sandboxes with `spec.networkAccess.egress` are refused.
        public var egressFilter: (any SandboxEgressFilter)?
        /// Address pool of sandbox networks: an IPv4 prefix of /30 subnets
        /// (`SandboxNetworks.defaultPool`, 100.64.0.0/16).
        public var networkPool: String = SandboxNetworks.defaultPool
        /// Directory of the sandboxes' network namespace files.
        public var networkNamespaces: String = SandboxNetworks.defaultNamespaceDirectory

        public init(
            stateRoot: String = "/run/safespace", bundleRoot: String = "/run/safespace-bundles",
            ephemeralStorageBase: String = EphemeralStorage.defaultBase,
            rootfsStore: String = RootfsStore.defaultRoot, seccompProfiles: String = SeccompProfiles.defaultDirectory,
            messages: @escaping @Sendable (Message) -> Void = { _ in },
            backends: RuntimeBackends = RuntimeBackends([NativeBackend(), GVisorBackend()])
        ) {
            self.stateRoot = stateRoot
            self.bundleRoot = bundleRoot
            self.ephemeralStorageBase = ephemeralStorageBase
            self.rootfsStore = rootfsStore
            self.seccompProfiles = seccompProfiles
            self.messages = messages
            self.backends = backends
        }

        func warn(_ text: String) { messages(.warning(text)) }
    }

    /// What the host tells its front end besides errors.
    public enum Message: Sendable, Equatable {
        /// Something went wrong that does not stop the sandbox (a reclaim, the event agent).
        case warning(String)
        /// The seccomp event agent's one line of denied syscalls, when the sandbox ends.
        case seccompSummary(String)
    }

    public let configuration: Configuration

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
    }

    /// The bundle of `sandbox` on this node: its rootfs resolved in the store, the node's
    /// defaults (runtime.json's `sandboxDefaults`) applied, the policy compiled
    /// (`SandboxPolicy.bundle`). Takes nothing on the node.
    /// - Parameters:
    ///   - sandbox: validated, with `metadata.name` and `spec.runtime` set (`Sandbox.applying`).
    ///   - args: the command and its arguments.
    ///   - env: `KEY=VALUE` entries added to the process environment.
    /// - Throws: `SandboxError` from the policy; `SandboxHostError` for an unknown runtime
    ///   ("spec.runtime: …", `.runtimeNotFound`), unreadable node defaults, or egress rules on a
    ///   host without an egress filter (`.unsupported`, "spec.networkAccess.egress: …").
    public func plan(for sandbox: Sandbox, args: [String], env: [String] = []) throws -> SandboxPlan {
        // Both are set by `applying` and checked by `validate`.
        guard let id = sandbox.metadata.name, let runtimeName = sandbox.spec.runtime else {
            throw SandboxHostError(.invalidPlan, "metadata.name and spec.runtime are required")
        }
        let network = try SandboxNetworkPlan(sandbox)
        if network != nil, configuration.egressFilter == nil {
            throw SandboxHostError(
                .unsupported, field: "spec.networkAccess.egress",
                "this host runs no egress filter; a sandbox with egress rules cannot be hosted here")
        }
        let store = RootfsStore(root: configuration.rootfsStore)
        let resolved: (manifest: RootfsManifest, rootfsPath: String)
        do { resolved = try store.resolve(runtime: runtimeName) } catch {
            throw SandboxHostError(runtime: error)
        }

        let writableRoot = !(sandbox.spec.filesystem?.readOnlyRoot ?? true)
        let bundlePath = configuration.bundleRoot + "/" + id
        let rootPath = writableRoot ? bundlePath + "/rootfs" : resolved.rootfsPath
        // The node's limits for what spec.resources leaves out (runtime.json's sandboxDefaults).
        let defaults: SandboxDefaults
        do { defaults = try SandboxDefaults.load() } catch {
            throw SandboxHostError(
                .invalidConfiguration, field: error.field, error.message, operation: "load sandbox defaults",
                cause: error)
        }
        let bundle = try SandboxPolicy.bundle(
            for: sandbox, rootfs: rootPath, id: id, args: args, env: env,
            seccompProfiles: SeccompProfiles(directory: configuration.seccompProfiles), defaults: defaults)
        return SandboxPlan(
            id: id, spec: bundle.spec,
            writableLayer: bundle.writableLayer ? (resolved.rootfsPath, SandboxPolicy.writableLayerSize) : nil,
            timeout: sandbox.spec.timeout, limits: bundle.limits,
            writablePaths: SandboxPolicy.writablePaths(of: sandbox), network: network)
    }

    /// Takes the node state of `plan` and writes its bundle, in this order: ephemeral storage
    /// volumes of crashed runs reaped, the sandbox's lease and bundle directory (the name is
    /// reserved), pinned CPUs and the ephemeral storage volume, the writable layer and host id
    /// range, the seccomp event agent, `config.json`. The container is not created yet
    /// (`PreparedSandbox.create`).
    /// - Returns: the sandbox, holding all of it until its `cleanup()`.
    /// - Throws: `SandboxHostError` `.nameInUse` "metadata.name: a sandbox named … exists already" while another
    ///   live process holds the name; what a step failed with. Whatever was taken before the
    ///   failure is released first (a release that fails is reported as a warning, and stays
    ///   recorded for `gc`).
    public func prepare(_ plan: SandboxPlan) throws -> PreparedSandbox {
        // Ephemeral storage volumes of runs that crashed (HostResources.swift).
        reapVolumes()
        let sandbox = PreparedSandbox(plan: plan, configuration: configuration)
        do {
            try sandbox.prepare()
        } catch {
            do { try sandbox.cleanup() } catch {
                for line in error.lines { configuration.warn(line) }
            }
            throw error
        }
        return sandbox
    }

    /// Destroys the ephemeral storage volumes left by runs that crashed (`prepare` does it
    /// first); nothing without root.
    public func reapVolumes() {
        RunResources.reapVolumes(
            root: configuration.stateRoot, bundleRoot: configuration.bundleRoot,
            base: configuration.ephemeralStorageBase)
    }

    /// The resource usage of sandbox `id` from its cgroup (`ContainerRuntime.stats`).
    /// - Throws: what `stats` throws for an unknown or stopped sandbox.
    public func stats(id: String) throws -> CgroupStats {
        try ContainerRuntime(root: configuration.stateRoot, backends: configuration.backends).stats(id: id)
    }

    /// Reclaims everything of this node's sandboxes and containers whose owner is dead:
    /// `GarbageCollector.sweep` over this configuration's paths and runtime.json's lease store.
    /// - Throws: what loading runtime.json (`RuntimeConfiguration.load`) throws.
    public func gc() throws -> GarbageCollector.Report {
        let runtimeConfiguration = try RuntimeConfiguration.load()
        return GarbageCollector(
            stateRoot: configuration.stateRoot, bundleRoot: configuration.bundleRoot,
            cpuAllocator: runtimeConfiguration.cpuAllocator,
            idAllocator: runtimeConfiguration.idAllocator, ephemeralStorageBase: configuration.ephemeralStorageBase,
            backends: configuration.backends
        ).sweep()
    }
}

/// One sandbox as the node runs it, made by `SandboxHost.plan` from a Sandbox.
public struct SandboxPlan: Sendable {
    /// Container id; the sandbox name.
    public var id: String
    /// The bundle's config.json. With `writableLayer`, `root.path` is `<bundle>/rootfs`.
    public var spec: Spec
    /// For a writable root: the store's rootfs (overlay lowerdir) and the tmpfs size of the layer.
    public var writableLayer: (lowerdir: String, size: String)?
    /// Seconds the workload may run (`spec.timeout`); nil for no limit. Enforced by
    /// `PreparedSandbox.wait(timeout:)`.
    public var timeout: Int?
    /// `spec.resources` as numbers; `spec.linux.resources` holds all but the pinned CPUs and
    /// the ephemeral storage volume, which `SandboxHost.prepare` takes (HostResources.swift).
    public var limits = SandboxLimits()
    /// The sandbox's writable paths (the tmpfs mounts an ephemeral storage volume replaces).
    public var writablePaths: [String] = []
    /// `spec.networkAccess.egress`: the sandbox's network (veth, nftables, egress filter); nil
    /// keeps only `lo`.
    public var network: SandboxNetworkPlan?

    public init(
        id: String, spec: Spec, writableLayer: (lowerdir: String, size: String)? = nil, timeout: Int? = nil,
        limits: SandboxLimits = SandboxLimits(), writablePaths: [String] = [], network: SandboxNetworkPlan? = nil
    ) {
        self.id = id
        self.spec = spec
        self.writableLayer = writableLayer
        self.timeout = timeout
        self.limits = limits
        self.writablePaths = writablePaths
        self.network = network
    }
}

extension RuntimeConfiguration {
    /// The node's CPU allocator: leases in `leaseStore`, beside the host id ranges; an earlier
    /// version's allocation file (`CPUAllocator.legacyPath`) is moved in unless `leases` is set.
    public var cpuAllocator: CPUAllocator {
        CPUAllocator(store: leaseStore, legacyPath: readsLegacyLeases ? CPUAllocator.legacyPath : nil)
    }
}
