/// The node's directories and files that `run` and `gc` share (the hidden ones let tests keep
/// their own, apart from the node's). The lease store of pinned CPUs and host id ranges is
/// runtime.json's `leases` (`$SAFESPACE_RUNTIME_CONFIG`), shared with safespace-runtime.
import ArgumentParser
import NodeResources

struct NodePathOptions: ParsableArguments {
    @Option(help: "State directory of the runtime.")
    var root: String = "/run/safespace"

    @Option(help: ArgumentHelp("Directory under which bundles are written.", visibility: .hidden))
    var bundleRoot: String = "/run/safespace-bundles"

    @Option(
        name: .customLong("ephemeral-storage"),
        help: ArgumentHelp("Base directory of ephemeral storage volumes.", visibility: .hidden))
    var ephemeralStorage: String = EphemeralStorage.defaultBase
}
