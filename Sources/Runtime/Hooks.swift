import CSafeSpace
import Glibc
import LinuxKernel
import OCI

/// OCI hooks (config.md#posix-platform-hooks): each runs with the container state JSON on its
/// stdin; a non-zero exit or a timeout is an error (the caller decides whether it is fatal:
/// runtime.md#lifecycle makes poststart and poststop failures warnings).
package enum Hooks {
    package static func run(_ hooks: [Hook], kind: String, state: String) throws {
        for (i, hook) in hooks.enumerated() {
            try run(hook, field: "hooks.\(kind)[\(i)]", state: state)
        }
    }

    package static func run(_ hook: Hook, field: String, state: String) throws {
        var pipeFds: [Int32] = [-1, -1]
        try sys("pipe2") { ss_pipe2_cloexec(&pipeFds) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, pipeFds[0], 0)
        let args = (hook.args ?? [hook.path])
        var cArgs: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) } + [nil]
        var cEnv: [UnsafeMutablePointer<CChar>?] = (hook.env ?? []).map { strdup($0) } + [nil]
        defer {
            cArgs.forEach { free($0) }
            cEnv.forEach { free($0) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, hook.path, &actions, nil, &cArgs, &cEnv)
        close(pipeFds[0])
        if rc != 0 {
            close(pipeFds[1])
            throw SysError("run hook", path: hook.path, errno: rc, field: field)
        }
        _ = ss_ignore_sigpipe()
        try? Files.writeAll(fd: pipeFds[1], Array(state.utf8))
        close(pipeFds[1])
        let deadline = hook.timeout.map { monotonicSeconds() + Double($0) }
        var status: Int32 = 0
        while true {
            let r = waitpid(pid, &status, deadline == nil ? 0 : WNOHANG)
            if r == pid { break }
            if r < 0 && errno != EINTR { throw SysError("waitpid hook", path: hook.path, field: field) }
            if let deadline, monotonicSeconds() > deadline {
                kill(pid, SIGKILL)
                _ = waitpid(pid, &status, 0)
                throw RuntimeError(.hookFailed, field: field, "\(hook.path) timed out after \(hook.timeout!) s")
            }
            usleep(5000)
        }
        let code = ss_exit_status(status)
        if code != 0 {
            throw RuntimeError(.hookFailed, field: field, "\(hook.path) exited with status \(code)")
        }
    }
}

package func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}
