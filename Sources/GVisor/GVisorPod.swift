import CSafeSpace
import Cgroups
import Glibc
import LinuxKernel
import OCI
import Runtime

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// How the limits of a gVisor pod's containers hold on the host. Every container of the pod runs
/// in one sentry (the sandbox's host process), which sits in the pod sandbox container's
/// cgroup: that cgroup is where host limits can act. It gets, per limit, the sum over the pod's
/// containers when every container sets that limit (as kubelet sizes a pod cgroup), bounded by
/// the sandbox container's own limit when it has one; unlimited (-1) when neither bounds it.
/// Limits hold for the sandbox as a whole, not per container inside it (gVisor's own design:
/// runsc's shim moves the sandbox into the pod cgroup for the same reason).
enum GVisorPodResources {
    /// CPU quota period of the combined `cpu.quota`, in µs.
    static let period: UInt64 = 100_000

    /// What cannot be summed into one cgroup and is refused for a pod container (naming the
    /// field): CPU and memory-node sets, realtime CPU time, CPU burst and idle, blockIO,
    /// `unified`, and `memory.disableOOMKiller`.
    /// - Throws: `RuntimeError`.
    static func check(_ r: Resources?, field: String = "linux.resources") throws {
        guard let r else { return }
        let why =
            "a container of a gVisor pod runs inside the pod's sandbox, whose host cgroup holds the whole pod; this limit cannot be given to one container there"
        if let c = r.cpu {
            if !(c.cpus ?? "").isEmpty { throw RuntimeError(.unsupported, field: "\(field).cpu.cpus", why) }
            if !(c.mems ?? "").isEmpty { throw RuntimeError(.unsupported, field: "\(field).cpu.mems", why) }
            if (c.realtimeRuntime ?? 0) != 0 || (c.realtimePeriod ?? 0) != 0 {
                throw RuntimeError(.unsupported, field: "\(field).cpu.realtimeRuntime", why)
            }
            if (c.burst ?? 0) != 0 { throw RuntimeError(.unsupported, field: "\(field).cpu.burst", why) }
            if (c.idle ?? 0) != 0 { throw RuntimeError(.unsupported, field: "\(field).cpu.idle", why) }
        }
        if let b = r.blockIO, b.weight != nil || b.leafWeight != nil {
            throw RuntimeError(.unsupported, field: "\(field).blockIO", why)
        }
        if !(r.unified ?? [:]).isEmpty { throw RuntimeError(.unsupported, field: "\(field).unified", why) }
        if r.memory?.disableOOMKiller == true {
            throw RuntimeError(.unsupported, field: "\(field).memory.disableOOMKiller", why)
        }
    }

    /// The hugepage sizes `cgroup` has limit files for, with hugetlb limits set by this pod
    /// before (v1 `hugetlb.<size>.limit_in_bytes`, v2 `hugetlb.<size>.max`); empty without
    /// the controller or when none was ever set.
    static func pageSizes(of cgroup: Cgroup) -> [String] {
        guard
            let dir = cgroup.directories.first(where: { $0.key.split(separator: ",").contains("hugetlb") })?.value
                ?? (cgroup.mode == .unified ? cgroup.directories["unified"] : nil),
            let names = try? FileManager.default.contentsOfDirectory(atPath: dir)
        else { return [] }
        return names.compactMap { name -> String? in
            let parts = name.split(separator: ".")
            guard parts.count == 3, parts[0] == "hugetlb", parts[2] == "limit_in_bytes" || parts[2] == "max" else {
                return nil
            }
            return String(parts[1])
        }.sorted()
    }

    /// The smallest of the sandbox's own bound and the containers' sum (nil parts or values
    /// <= 0 mean unlimited); -1 when nothing bounds it.
    static func bound(own: Int64?, parts: [Int64?]) -> Int64 {
        var bounds: [Int64] = []
        if let own, own > 0 { bounds.append(own) }
        if !parts.isEmpty, parts.allSatisfy({ ($0 ?? 0) > 0 }) {
            bounds.append(parts.reduce(Int64(0)) { $0.addingReportingOverflow($1!).overflow ? Int64.max : $0 + $1! })
        }
        return bounds.min() ?? -1
    }

    /// The sandbox cgroup's resources for the pod: `own` is the sandbox container's
    /// `linux.resources`, `containers` those of the pod's containers. Device rules are not
    /// touched (the sandbox's stay; the pod's containers reach no host device).
    /// - Parameter cgroupPageSizes: the hugepage sizes the sandbox's cgroup has limits for
    ///   (`hugetlb.<size>.limit_in_bytes` / `.max`), so a size no one bounds any more goes back
    ///   to unlimited.
    static func combined(own: Resources?, containers: [Resources?], cgroupPageSizes: [String] = []) -> Resources {
        var out = Resources()
        let ownMemory = own?.memory
        var memory = ownMemory ?? Resources.Memory()
        memory.limit = bound(own: ownMemory?.limit, parts: containers.map { $0?.memory?.limit })
        // Swap (OCI: memory+swap) follows the same rule only when every container sets it.
        let swaps = containers.map { $0?.memory?.swap }
        if ownMemory?.swap != nil || (!swaps.isEmpty && swaps.allSatisfy { $0 != nil }) {
            memory.swap = bound(own: ownMemory?.swap, parts: swaps)
            if let limit = memory.limit, limit > 0, let swap = memory.swap, swap > 0, swap < limit {
                memory.swap = limit
            }
        } else {
            // Not every container bounds it: memory+swap unbounded (an old total below a new
            // memory limit would make the kernel refuse the limit).
            memory.swap = -1
        }
        memory.reservation = nil
        out.memory = memory

        var cpu = own?.cpu ?? Resources.CPU()
        let shares = containers.compactMap { $0?.cpu?.shares }
        // Without any, back to the sandbox's own or the kernel's default (1024).
        cpu.shares = shares.isEmpty ? (own?.cpu?.shares ?? 1024) : (own?.cpu?.shares ?? 0) + shares.reduce(0, +)
        // Quotas as CPUs (quota / period), summed, at a 100 ms period.
        let cpusOf: (Resources.CPU?) -> Double? = { c in
            guard let c, let q = c.quota, q > 0 else { return nil }
            return Double(q) / Double(c.period ?? period)
        }
        let parts = containers.map { cpusOf($0?.cpu) }
        var bounds: [Double] = []
        if let o = cpusOf(own?.cpu) { bounds.append(o) }
        if !parts.isEmpty, parts.allSatisfy({ $0 != nil }) { bounds.append(parts.reduce(0) { $0 + $1! }) }
        if let cpus = bounds.min() {
            cpu.period = period
            cpu.quota = Int64((cpus * Double(period)).rounded(.up))
        } else {
            cpu.period = period
            cpu.quota = -1
        }
        out.cpu = cpu

        // pids.max is at most PID_MAX_LIMIT (4194304, include/linux/threads.h): above, unlimited.
        let pids = bound(own: own?.pids?.limit, parts: containers.map { $0?.pids?.limit })
        out.pids = Resources.Pids(limit: pids > 4_194_304 ? -1 : pids)

        var pageSizes = Set((own?.hugepageLimits ?? []).map(\.pageSize)).union(cgroupPageSizes)
        for c in containers { pageSizes.formUnion((c?.hugepageLimits ?? []).map(\.pageSize)) }
        var huge: [Resources.HugepageLimit] = []
        for size in pageSizes.sorted() {
            let ownLimit = own?.hugepageLimits?.first { $0.pageSize == size }?.limit
            let containerLimits = containers.map { $0?.hugepageLimits?.first { $0.pageSize == size }?.limit }
            var bounds: [UInt64] = []
            if let ownLimit { bounds.append(ownLimit) }
            if !containerLimits.isEmpty, containerLimits.allSatisfy({ $0 != nil }) {
                bounds.append(containerLimits.reduce(UInt64(0)) { $0 &+ $1! })
            }
            // No bound for this size: the largest value the kernel takes (unlimited).
            huge.append(Resources.HugepageLimit(pageSize: size, limit: bounds.min() ?? UInt64(Int64.max)))
        }
        out.hugepageLimits = huge.isEmpty ? nil : huge
        return out
    }
}

extension GVisorBackend {
    // MARK: pod sandbox

    /// A joined network namespace, opened (close-on-exec; the caller closes `fd`) and checked
    /// through that fd not to be the host's (the namespace of this runtime or of pid 1): runsc
    /// would hand it to the sandbox. Callers use the fd (its /proc path), never the path again,
    /// so the path cannot be swapped after the check.
    /// - Returns: nil without a joined network namespace.
    /// - Throws: `RuntimeError`/`SysError` naming the namespace entry.
    static func podNetwork(_ spec: Spec) throws -> (index: Int, path: String, fd: Int32)? {
        guard let (i, ns) = (spec.linux?.namespaces ?? []).enumerated().first(where: { $0.element.type == "network" }),
            let path = ns.path, !path.isEmpty
        else { return nil }
        let field = "linux.namespaces[\(i)].path"
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SysError("open", path: path, errno: errno, field: field) }
        var target = stat()
        guard fstat(fd, &target) == 0 else {
            let e = errno
            close(fd)
            throw SysError("fstat", path: path, errno: e, field: field)
        }
        for host in ["/proc/self/ns/net", "/proc/1/ns/net"] {
            var st = stat()
            if stat(host, &st) == 0, st.st_dev == target.st_dev, st.st_ino == target.st_ino {
                close(fd)
                throw RuntimeError(
                    .unsupported, field: field,
                    "\(path) is the host's network namespace; the gVisor level would hand the host's network to the sandbox"
                )
            }
        }
        return (i, path, fd)
    }

    // MARK: pod containers

    /// The pod sandbox container a pod container runs in: a gVisor container of this root
    /// that is running.
    /// - Throws: `RuntimeError` naming the sandbox-id annotation.
    static func podSandbox(_ sandboxID: String, in runtime: ContainerRuntime) throws -> ContainerState {
        let store = runtime.store
        let field = "annotations[\(PodRole.sandboxKeys[0])]"
        guard let sandbox = try? store.load(sandboxID) else {
            throw RuntimeError(
                .notFound, field: field,
                "pod sandbox \"\(sandboxID)\" is not a container of this runtime root (\(store.root))")
        }
        guard sandbox.backend == .gvisor else {
            throw RuntimeError(
                .invalidSpec, field: field,
                "pod sandbox \"\(sandboxID)\" runs at the standard level; a gVisor container cannot join it (set llmsafespace.dev/security-level on the pod, or use the safespace-high handler)"
            )
        }
        if let pod = sandbox.gvisor?.podSandbox {
            throw RuntimeError(
                .invalidSpec, field: field,
                "\"\(sandboxID)\" is a container of pod sandbox \"\(pod)\", not a pod sandbox")
        }
        // Only a sandbox made as one (runsc booted it for a pod: --oci-seccomp for every
        // container's profile).
        guard (try? PodRole.of(sandbox.annotations)) == .sandbox else {
            throw RuntimeError(
                .invalidSpec, field: field,
                "\"\(sandboxID)\" was not created as a pod sandbox (annotations[\(PodRole.typeKeys[0])]: sandbox)")
        }
        let status = runtime.status(of: sandbox)
        guard status == .running else {
            throw RuntimeError(
                status == .paused ? .paused : .notRunning, field: field,
                "pod sandbox \"\(sandboxID)\" is \(status.rawValue), not running")
        }
        return sandbox
    }

    /// Refuses what a pod container cannot have at the gVisor level: a terminal (runsc takes a
    /// pod container's stdio from `runsc start`, which a waiter makes), namespaces other than the
    /// sandbox's (checked by device and inode against /proc/<sandbox pid>/ns), and limits that
    /// cannot be summed into the sandbox's cgroup.
    /// - Throws: `RuntimeError` naming the field.
    static func checkPodContainer(_ spec: Spec, sandbox: ContainerState) throws {
        if spec.process?.terminal == true {
            throw RuntimeError(
                .unsupported, field: "process.terminal",
                "not supported for a container of a gVisor pod (its stdio are handed over at start, where no console socket is)"
            )
        }
        let names = ["network": "net", "ipc": "ipc", "uts": "uts"]
        var joinedNetwork = false
        for (i, ns) in (spec.linux?.namespaces ?? []).enumerated() {
            guard let path = ns.path, !path.isEmpty else {
                if ns.type == "network" {
                    throw RuntimeError(
                        .invalidSpec, field: "linux.namespaces[\(i)]",
                        "a container of a gVisor pod shares its sandbox's network stack; join the sandbox's network namespace by path"
                    )
                }
                continue
            }
            guard let name = names[ns.type] else {
                throw RuntimeError(
                    .unsupported, field: "linux.namespaces[\(i)].path",
                    "a container of a gVisor pod can join only the sandbox's network, ipc and uts namespaces, not \(ns.type)"
                )
            }
            var given = stat()
            var own = stat()
            let sandboxPath = "/proc/\(sandbox.pid)/ns/\(name)"
            guard stat(path, &given) == 0 else {
                throw SysError("stat", path: path, errno: errno, field: "linux.namespaces[\(i)].path")
            }
            guard stat(sandboxPath, &own) == 0, given.st_dev == own.st_dev, given.st_ino == own.st_ino else {
                throw RuntimeError(
                    .invalidSpec, field: "linux.namespaces[\(i)].path",
                    "\(path) is not the \(ns.type) namespace of pod sandbox \"\(sandbox.id)\" (\(sandboxPath)); a container of a gVisor pod runs inside that sandbox"
                )
            }
            if ns.type == "network" { joinedNetwork = true }
        }
        if !joinedNetwork {
            throw RuntimeError(
                .invalidSpec, field: "linux.namespaces",
                "a container of a gVisor pod shares its sandbox's network stack; join the sandbox's network namespace by path"
            )
        }
        try GVisorPodResources.check(spec.linux?.resources)
    }

    /// Sets the pod sandbox's cgroup to the combined limits of the sandbox and the pod's
    /// containers that exist now (their states in this root). The caller holds the store lock.
    static func applyPodLimits(sandbox: ContainerState, in runtime: ContainerRuntime) throws {
        let store = runtime.store
        var containers: [Resources?] = []
        for id in store.ids() where id != sandbox.id {
            guard let s = try? store.load(id), s.gvisor?.podSandbox == sandbox.id else { continue }
            containers.append(s.spec.linux?.resources)
        }
        let combined = GVisorPodResources.combined(
            own: sandbox.spec.linux?.resources, containers: containers,
            cgroupPageSizes: GVisorPodResources.pageSizes(of: sandbox.cgroup))
        runtime.log.log(
            .debug, "gVisor pod \(sandbox.id): \(containers.count) container(s); sandbox cgroup limits \(combined)")
        try sandbox.cgroup.apply(combined)
    }

    static func startFifo(_ dir: String) -> String { dir + "/start.fifo" }
    static func replyFifo(_ dir: String) -> String { dir + "/reply.fifo" }

    /// Starts the waiter: `/proc/self/exe gvisor-wait <dir> <id> <sandbox pid> <sandbox start
    /// time> <runsc> <flags…>` with this process's stdio (the container's), default signals,
    /// and fd 3 the write end of a pipe it writes a byte to once it holds the start FIFO open.
    /// Returns its pid once it is ready.
    /// - Throws: `SysError` from pipe2/posix_spawn; `RuntimeError` when it exits before ready.
    static func spawnWaiter(dir: String, id: String, sandbox: ContainerState, runsc: GVisorState) throws -> Int32 {
        var ready: [Int32] = [-1, -1]
        try sys("pipe2") { ss_pipe2_cloexec(&ready) }
        defer { close(ready[0]) }
        let argv =
            ["safespace-runtime", "gvisor-wait", dir, id, "\(sandbox.pid)", "\(sandbox.startTime)", runsc.runsc]
            + runsc.flags
        // Stdio and the ready pipe only: whatever else this process leaked would be held for
        // the container's lifetime.
        let (pid, rc) = spawnWithDefaultSignals("/proc/self/exe", argv, keepFds: 4) {
            posix_spawn_file_actions_adddup2(&$0, ready[1], 3)
        }
        close(ready[1])
        guard rc == 0 else { throw SysError("posix_spawn", path: "/proc/self/exe gvisor-wait", errno: rc) }
        var byte: UInt8 = 0
        var n: Int
        repeat { n = read(ready[0], &byte, 1) } while n < 0 && errno == EINTR
        guard n == 1 else {
            var st: Int32 = 0
            waitpid(pid, &st, 0)
            throw RuntimeError(
                .initFailed,
                "gVisor pod container \(id): its waiter exited before it was ready (status \(ss_exit_status(st)))")
        }
        return pid
    }

    /// `start` of a pod container: asks its waiter to run `runsc start` (with the container's
    /// stdio) and waits for its answer.
    /// - Throws: `RuntimeError` with runsc's error, or when the waiter is gone.
    func startPodContainer(_ state: ContainerState, in runtime: ContainerRuntime) throws {
        let store = runtime.store
        if let sandboxID = state.gvisor?.podSandbox {
            let sandbox = try? store.load(sandboxID)
            let status = sandbox.map { self.status(of: $0, in: runtime) } ?? .stopped
            guard status == .running else {
                throw RuntimeError(
                    status == .paused ? .paused : .notRunning,
                    "cannot start container \(state.id): its pod sandbox \(sandboxID) is \(status.rawValue)\(status == .paused ? "; resume it first" : "")",
                    operation: "start")
            }
        }
        let dir = store.directory(state.id)
        // Opened read-write: the open never blocks, and the waiter's write-only open finds it.
        let reply = try sys("open", path: Self.replyFifo(dir)) { open(Self.replyFifo(dir), O_RDWR | O_CLOEXEC) }
        defer { close(reply) }
        let request = open(Self.startFifo(dir), O_WRONLY | O_NONBLOCK | O_CLOEXEC)
        guard request >= 0 else {
            let e = errno
            throw RuntimeError(
                .initFailed,
                "cannot start container \(state.id): its waiter (pid \(state.pid)) is gone (\(String(cString: strerror(e))))",
                operation: "open", errno: e)
        }
        var go: UInt8 = 0x73  // "s"
        let wrote = write(request, &go, 1)
        close(request)
        guard wrote == 1 else { throw SysError("write", path: Self.startFifo(dir)) }
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            var pfd = pollfd(fd: reply, events: Int16(POLLIN), revents: 0)
            let r = poll(&pfd, 1, 200)
            if r < 0 && errno == EINTR { continue }
            if r > 0 {
                let n = read(reply, &buf, buf.count)
                guard n > 0 else { continue }
                let answer = String(decoding: buf[0..<n], as: UTF8.self)
                if answer == "ok" { return }
                throw RuntimeError(
                    .runscFailed, answer.hasPrefix("error: ") ? String(answer.dropFirst(7)) : answer, operation: "start"
                )
            }
            guard let stat = ProcStat.read(pid: state.pid), stat.startTime == state.startTime, stat.state != "Z" else {
                throw RuntimeError(
                    .initFailed,
                    "cannot start container \(state.id): its waiter (pid \(state.pid)) exited before answering",
                    operation: "start")
            }
        }
    }
}

/// `safespace-runtime gvisor-wait <dir> <id> <sandbox pid> <sandbox start time> <runsc>
/// <flags…>`: the host process of one container of a gVisor pod (see
/// `GVisorPodContainerCreation`). Holds the start FIFO open (then says so on fd 3),
/// waits for `start`'s request or the sandbox's end (a pidfd), runs `runsc start` with the
/// stdio it was given, answers "ok" or "error: <runsc's words>" on the reply FIFO, lets go of
/// the container's stdio, and exits with `runsc wait`'s status (128+N for signal N; 137 when
/// the sandbox is gone).
public enum GVisorWaiter {
    public static func main(_ args: [String]) -> Never {
        guard args.count >= 7, let sandboxPid = Int32(args[4]), let sandboxStart = UInt64(args[5]) else {
            let usage = Array(
                "usage: safespace-runtime gvisor-wait DIR ID SANDBOX-PID SANDBOX-START RUNSC [FLAGS...]\n".utf8)
            _ = usage.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
            exit(2)
        }
        let dir = args[2]
        let id = args[3]
        let state = GVisorState(runsc: args[6], flags: Array(args.dropFirst(7)), platform: "", network: "", helpers: [])
        // pidfd_open(2), then the start time: the sandbox, not a process that reused its pid.
        let sandbox = ss_pidfd_open(sandboxPid)
        guard sandbox >= 0, ProcStat.read(pid: sandboxPid)?.startTime == sandboxStart else { exit(128 + SIGKILL) }
        let runsc = Runsc(state: state, logPath: dir + "/runsc.log")
        let request = open(GVisorBackend.startFifo(dir), O_RDWR | O_CLOEXEC)
        guard request >= 0 else { exit(126) }
        var ready: UInt8 = 0x72  // "r"
        _ = write(3, &ready, 1)
        close(3)
        var byte: UInt8 = 0
        while true {
            var fds = [
                pollfd(fd: request, events: Int16(POLLIN), revents: 0),
                pollfd(fd: sandbox, events: Int16(POLLIN), revents: 0),
            ]
            if poll(&fds, 2, -1) < 0 {
                if errno == EINTR { continue }
                exit(126)
            }
            // The sandbox ended before start: the container can never run.
            if fds[1].revents != 0 { exit(128 + SIGKILL) }
            let n = read(request, &byte, 1)
            if n == 1 { break }
            if n < 0 && errno == EINTR { continue }
            exit(126)
        }
        close(request)
        close(sandbox)
        var answer = "ok"
        var started = true
        do { try runsc.check(["start", id], inheritStdio: true) } catch {
            answer = "error: \(error)"
            started = false
        }
        let reply = open(GVisorBackend.replyFifo(dir), O_WRONLY | O_NONBLOCK | O_CLOEXEC)
        if reply >= 0 {
            let bytes = Array(answer.utf8.prefix(4000))
            _ = bytes.withUnsafeBytes { write(reply, $0.baseAddress, $0.count) }
            close(reply)
        }
        // The container's stdio now live in the sentry; holding them would keep the shim's
        // copies of its output open after it exits.
        let null = open("/dev/null", O_RDWR)
        if null >= 0 {
            for fd in Int32(0)...2 { dup2(null, fd) }
            if null > 2 { close(null) }
        }
        guard started else { exit(255) }
        guard let result = try? runsc.run(["wait", id]), result.status == 0,
            let decoded = try? JSONDecoder().decode([String: JSONScalar].self, from: Data(result.stdout.utf8)),
            case .number(let status)? = decoded["exitStatus"]
        else { exit(128 + SIGKILL) }
        exit(Int32(max(0, min(255, status))))
    }
}
