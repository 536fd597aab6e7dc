/// `safespace gc`: reclaims what killed `safespace run`s and `create`s left on this node.
import ArgumentParser
import Glibc
import NodeResources
import SandboxHosting

struct GCCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc",
        abstract: "Reclaim the sandboxes, containers and leases of processes that are gone.",
        discussion: """
            Everything a sandbox takes on the node is recorded with its owner (pid and start \
            time). gc reclaims what belongs to dead owners: sandboxes of killed `safespace run`s \
            (container, cgroup, bundle directory and its mounts, pinned CPUs, host id range, \
            ephemeral storage volume), half-made containers of killed creates, CPU allocations \
            and id ranges of dead holders, orphaned volumes, sandbox networks of dead holders \
            (veth, nftables table, network namespace file, address lease). What a live process owns is never \
            touched, so gc is safe while sandboxes run. Exit status 1 if something could not be \
            reclaimed (it stays recorded for the next gc).
            """)

    @OptionGroup var node: NodePathOptions

    func run() throws {
        if geteuid() != 0 { throw CLIError(.needsRoot, "safespace gc needs root (cgroups, mounts, /run)") }
        let report = try SandboxHost(
            configuration: .init(
                stateRoot: node.root, bundleRoot: node.bundleRoot, ephemeralStorageBase: node.ephemeralStorage)
        ).gc()
        print(report.description)
        for error in report.errors { Diagnostics.error(error) }
        if !report.errors.isEmpty { throw ExitCode(1) }
    }
}
