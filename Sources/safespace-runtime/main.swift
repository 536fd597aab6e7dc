import ArgumentParser
import GVisor
import Glibc
import Runtime

// `init` runs in the container's fresh namespaces: go there before any parsing.
if CommandLine.arguments.count > 1 && CommandLine.arguments[1] == "init" {
    ContainerInit.main()
}
// The host process of a container of a gVisor pod (GVisor/GVisorPod.swift).
if CommandLine.arguments.count > 1 && CommandLine.arguments[1] == "gvisor-wait" {
    GVisorWaiter.main(CommandLine.arguments)
}
// The hot verbs' plain command lines (what containerd, podman and CRI send for every
// container) without ArgumentParser's reflection; anything else, and every refusal, is its.
let invocation = RuncInvocation.parse(CommandLine.arguments)
// The verbs that start processes in a container run from the sealed binary from here on, so
// that no process the container can see ever runs the host's file (SealedExecutable). Any
// argument equal to one of them counts: a false match costs one exec, a miss would not be safe.
// A plain `create` or `run` of a container with a PID namespace of its own needs none: its
// helpers are seen by no container before they run the sealed binary.
if CommandLine.arguments.dropFirst().contains(where: { ["create", "run", "exec"].contains($0) }) {
    do {
        switch invocation {
        case .create(_, let flags, _), .run(_, let flags, _, _, _):
            try SealedExecutable.reexecIfUnsealed(creatingFrom: flags.bundle)
        default: try SealedExecutable.reexecIfUnsealed()
        }
    } catch {
        let message = Array("safespace-runtime: \(error)\n".utf8)
        _ = write(2, message, message.count)
        exit(1)
    }
}
if let invocation {
    do { try invocation.perform() } catch let code as ExitCode {
        // `run`'s status (what ArgumentParser's exit(withError:) does with an ExitCode).
        exit(code.rawValue)
    } catch { RuntimeCommand.exit(withError: error) }
    exit(0)
}
RuncCommandLine.preflight(CommandLine.arguments) {
    RuntimeCommand.configuration.subcommands.map { $0._commandName } + ["help"]
}
RuntimeCommand.main()
