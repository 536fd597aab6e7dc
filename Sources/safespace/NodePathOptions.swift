/// The node's directories and files that `run` and `gc` share (the hidden ones let tests keep
/// their own, apart from the node's).
import ArgumentParser
import NodeResources

struct NodePathOptions: ParsableArguments {
    @Option(help: "State directory of the runtime.")
    var root: String = "/run/safespace"

    @Option(help: ArgumentHelp("Directory under which bundles are written.", visibility: .hidden))
    var bundleRoot: String = "/run/safespace-bundles"

    @Option(name: .customLong("cpu-allocations"), help: ArgumentHelp("File of cpuPinning's CPU allocations.", visibility: .hidden))
    var cpuAllocations: String = CPUAllocator.defaultPath

    @Option(name: .customLong("ephemeral-storage"), help: ArgumentHelp("Base directory of ephemeral storage volumes.", visibility: .hidden))
    var ephemeralStorage: String = EphemeralStorage.defaultBase
}
