import ArgumentParser
import Glibc
import Runtime

// `init` runs in the container's fresh namespaces: go there before any parsing.
if CommandLine.arguments.count > 1 && CommandLine.arguments[1] == "init" {
    ContainerInit.main()
}
// The host process of a container of a gVisor pod (GVisorPod.swift).
if CommandLine.arguments.count > 1 && CommandLine.arguments[1] == "gvisor-wait" {
    GVisorWaiter.main(CommandLine.arguments)
}
RuntimeCommand.main()
