/// `safespaced`: the per-node daemon of SafeSpace (issue 12). See SafeSpaceDaemon.
import Foundation
import Glibc
import Runtime
import SafeSpaceDaemon

// The runtime re-executes this binary as `<argv0> init` inside a sandbox's namespaces
// (Runtime/Spawn.swift): that process must become the container's init (or the exec helper)
// before anything else runs.
if CommandLine.arguments.count == 2, CommandLine.arguments[1] == "init", getenv("_SAFESPACE_INITPIPE") != nil {
    ContainerInit.main()
}
// Every helper the daemon forks must run the sealed binary (SealedExecutable).
do { try SealedExecutable.reexecIfUnsealed() } catch {
    FileHandle.standardError.write(Data("safespaced: error: \(error)\n".utf8))
    exit(1)
}
// fds 0-2 exist (a daemon started with them closed would hand out 0-2 as sockets and pipes).
for fd: Int32 in 0...2 where fcntl(fd, F_GETFD) < 0 {
    let null = open("/dev/null", O_RDWR)
    if null >= 0 && null != fd {
        dup2(null, fd)
        close(null)
    }
}

let options: DaemonOptions
do { options = try DaemonOptions.parse(Array(CommandLine.arguments.dropFirst())) } catch {
    FileHandle.standardError.write(Data("safespaced: \(error)\n".utf8))
    exit(2)
}
do {
    try await Daemon.run(options: options)
} catch {
    FileHandle.standardError.write(Data("safespaced: error: \(error)\n".utf8))
    exit(1)
}
