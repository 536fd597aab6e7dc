/// safespaced's start and run: options, configuration, the state directory's lock, recovery,
/// the socket (0660 root:<group>; bound here, or inherited from safespaced.socket), the server
/// and the sandbox service under one ServiceGroup (SIGTERM/SIGINT: graceful shutdown).
import CSafeSpace
import Foundation
import Glibc
import Hummingbird
import Logging
import Metrics
import NIOCore
import Prometheus
import ServiceLifecycle
import SystemdSupport

/// Command-line options of safespaced.
public struct DaemonOptions: Sendable {
    public var configPath = DaemonConfig.defaultPath
    public var socketPath = DaemonConfig.defaultSocket
    public var stateDir = DaemonConfig.defaultStateDir

    public static let usage = """
        usage: safespaced [--config FILE] [--socket PATH] [--state-dir DIR]

          --config FILE     configuration (YAML; default \(DaemonConfig.defaultPath); a missing file means defaults)
          --socket PATH     unix socket of the API (default \(DaemonConfig.defaultSocket))
          --state-dir DIR   the daemon's state (default \(DaemonConfig.defaultStateDir))
        """

    /// Parses `arguments` (without argv[0]).
    /// - Throws: `ConfigError` naming the bad option.
    public static func parse(_ arguments: [String]) throws -> DaemonOptions {
        var options = DaemonOptions()
        var rest = arguments[...]
        while let arg = rest.popFirst() {
            let (name, inline): (String, String?) = {
                if let eq = arg.firstIndex(of: "="), arg.hasPrefix("--") {
                    return (String(arg[..<eq]), String(arg[arg.index(after: eq)...]))
                }
                return (arg, nil)
            }()
            func value() throws -> String {
                if let inline { return inline }
                guard let next = rest.popFirst(), !next.isEmpty else {
                    throw ConfigError("\(name): a value is required")
                }
                return next
            }
            switch name {
            case "--config": options.configPath = try value()
            case "--socket": options.socketPath = try value()
            case "--state-dir": options.stateDir = try value()
            case "-h", "--help": throw ConfigError(usage)
            default: throw ConfigError("unknown option \(arg)\n\(usage)")
            }
        }
        for (flag, path) in [("--socket", options.socketPath), ("--state-dir", options.stateDir)]
        where !path.hasPrefix("/") {
            throw ConfigError("\(flag) \(path): must be an absolute path")
        }
        return options
    }
}

/// The sandbox side of the daemon as a service: lifetimes while it runs, the drain on
/// graceful shutdown (before the server stops: it is later in the group).
struct SandboxService: Service {
    let manager: SandboxManager

    func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            await manager.reapExpired()
            try? await Task.sleep(for: .milliseconds(250))
        }
        await manager.shutdown()
    }
}

/// `WATCHDOG=1` every half of the unit's `WatchdogSec=` while the daemon runs.
struct WatchdogService: Service {
    let interval: Duration

    func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            Systemd.notify("WATCHDOG=1")
            try? await Task.sleep(for: min(interval / 2, .milliseconds(500)))
        }
    }
}

public enum Daemon {
    /// Runs the daemon until SIGTERM/SIGINT. Call from main after
    /// `SealedExecutable.reexecIfUnsealed()`.
    /// Under systemd (`Type=notify`) it says `STATUS=` while it recovers, `READY=1` once
    /// recovery is done and the socket is up, `WATCHDOG=1` at half of `WatchdogSec=`, and
    /// `STOPPING=1` (sd_notify(3)).
    /// - Throws: `ConfigError` for a start-up failure (the message says what and where).
    public static func run(options: DaemonOptions) async throws {
        let notify: @Sendable (String) -> Void = { Systemd.notify($0) }
        var baseLogger = Logger(label: "safespaced")
        baseLogger.logLevel =
            ProcessInfo.processInfo.environment["SAFESPACED_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info
        let logger = baseLogger
        // First, before any child exists: the passed socket gets FD_CLOEXEC and the LISTEN_*
        // variables go (no helper or sandbox inherits them).
        let activatedFD = try SocketActivation.inheritedListener(socketPath: options.socketPath, logger: logger)
        let config = try DaemonConfig.load(path: options.configPath)
        guard geteuid() == 0 else { throw ConfigError("safespaced must run as root (namespaces, mounts, cgroups)") }

        let groupID = try ensureGroup(config.group)
        let lockFD = try lockStateDir(options.stateDir)
        defer { close(lockFD) }

        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets[PoolMetrics.claimDurationLabel] = PoolMetrics.claimBuckets
        MetricsSystem.bootstrap(factory)

        let auditLog = try AuditBridge.open(config: config)
        let audit = AuditTrail(logger: logger, sink: auditLog.sink)
        let egress = await DaemonEgress.start(config: config, audit: audit, logger: logger)
        let manager = try SandboxManager(
            config: config, stateDir: options.stateDir, audit: audit, logger: logger, egress: egress)
        notify("STATUS=recovering sandboxes")
        let recovered = await manager.recover()
        logger.info("recovery done", metadata: ["adopted": "\(recovered.adopted)", "removed": "\(recovered.removed)"])
        let pools = PoolManager(manager: manager, logger: logger)
        try pools.load(directory: config.poolsDirectory)
        await pools.recoverAfterRestart()

        let router = Router(context: DaemonContext.self)
        router.middlewares.add(
            AccessMiddleware(policy: AccessPolicy(group: config.group), audit: audit, logger: logger))
        let api = DaemonAPI(manager: manager, pools: pools, registry: registry)
        api.register(on: router)
        api.registerPools(on: router)
        let socketPath = options.socketPath
        let onServerRunning: @Sendable (any Channel) async -> Void = { _ in
            // bind(2) made the socket with this process's umask (only root can connect); now
            // the group may. An inherited socket gets the same owner and mode (safespaced.socket
            // sets them too, with SocketGroup= naming the default group).
            if chown(socketPath, 0, groupID) != 0 || chmod(socketPath, 0o660) != 0 {
                logger.critical("cannot set the socket's owner/mode: \(String(cString: strerror(errno)))")
                kill(getpid(), SIGTERM)
                return
            }
            notify("READY=1\nSTATUS=serving on \(socketPath); \(manager.count) sandboxes")
            logger.info("serving", metadata: ["socket": "\(socketPath)"])
        }
        let server: any Service
        if let activatedFD {
            // The socket unit's socket, as it is: never unlinked or bound anew while the unit
            // owns the path (see InheritedSocketServer).
            server = InheritedSocketServer(
                fd: activatedFD, responder: router.buildResponder(), serverName: "safespaced", logger: logger,
                onServerRunning: onServerRunning)
        } else {
            try prepareSocket(socketPath)
            server = Application(
                router: router,
                configuration: ApplicationConfiguration(
                    address: .unixDomainSocket(path: socketPath), serverName: "safespaced"),
                onServerRunning: onServerRunning,
                logger: logger)
        }
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [
                    .init(service: server),
                    .init(service: SandboxService(manager: manager)),
                    // Last: stopped first on SIGTERM (its ready sandboxes go before the drain).
                    .init(service: PoolService(pools: pools)),
                ] + (Systemd.watchdogInterval().map { [.init(service: WatchdogService(interval: $0))] } ?? []),
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do { try await group.run() } catch {
            await egress?.shutdown()
            throw error
        }
        notify("STOPPING=1")
        await egress?.shutdown()
        do { try auditLog.flush() } catch { logger.error("audit log not synced at stop: \(error)") }
        // An inherited socket stays: its unit removes it (RemoveOnStop=) or keeps listening.
        if activatedFD == nil { unlink(socketPath) }
        logger.info("stopped")
    }

    /// The gid of `name`, creating it as a system group (groupadd(8)) when missing.
    static func ensureGroup(_ name: String) throws -> UInt32 {
        if let group = getgrnam(name) { return group.pointee.gr_gid }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/groupadd")
        process.arguments = ["--system", name]
        do {
            try process.run()
            process.waitUntilExit()
        } catch {
            throw ConfigError(
                "group \(name) does not exist and groupadd could not run: \(error); create it (groupadd --system \(name)) or set group: in the configuration"
            )
        }
        guard process.terminationStatus == 0, let group = getgrnam(name) else {
            throw ConfigError(
                "group \(name) does not exist and `groupadd --system \(name)` failed (exit \(process.terminationStatus))"
            )
        }
        return group.pointee.gr_gid
    }

    /// Makes the state directory (0700) and takes its lock: one daemon per state.
    static func lockStateDir(_ dir: String) throws -> Int32 {
        do { try makeDirectories(dir, mode: 0o700) } catch { throw ConfigError("--state-dir \(dir): \(error)") }
        let fd = open(dir + "/daemon.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw ConfigError("--state-dir \(dir): cannot open daemon.lock: \(String(cString: strerror(errno)))")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            throw ConfigError("--state-dir \(dir): another safespaced holds it (daemon.lock)")
        }
        return fd
    }

    /// The socket's directory exists; a socket file left there is removed only when nothing
    /// answers on it (another daemon's live socket is never taken over).
    static func prepareSocket(_ path: String) throws {
        guard path.utf8.count < 108 else {
            throw ConfigError("--socket \(path): longer than a unix socket path may be (107 bytes)")
        }
        let dir = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
        if !dir.isEmpty {
            do { try makeDirectories(dir, mode: 0o755) } catch { throw ConfigError("--socket \(path): \(error)") }
            // Members of the group must reach the socket: the directory (/run/safespace is also
            // the runtime's state root, made 0700 by it) is made searchable, not listable.
            var st = stat()
            if stat(dir, &st) == 0, st.st_uid == 0, st.st_mode & 0o011 != 0o011 {
                _ = chmod(dir, (st.st_mode & 0o7777) | 0o011)
            }
        }
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        guard st.st_mode & S_IFMT == S_IFSOCK else { throw ConfigError("--socket \(path): exists and is not a socket") }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, byte) in path.utf8.enumerated() { raw[i] = byte }
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if connected == 0 { throw ConfigError("--socket \(path): another process is listening on it") }
        unlink(path)
    }

    static func makeDirectories(_ path: String, mode: mode_t) throws {
        var current = ""
        for part in path.split(separator: "/") {
            current += "/" + part
            if mkdir(current, mode) != 0 && errno != EEXIST {
                throw ConfigError("cannot create \(current): \(String(cString: strerror(errno)))")
            }
        }
    }
}
