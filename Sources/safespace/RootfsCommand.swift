/// `safespace rootfs`: the runtime root filesystems of this node.
import ArgumentParser
import Foundation
import SandboxSpec

struct RootfsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rootfs",
        abstract: "List and build runtime root filesystems.",
        subcommands: [List.self, Build.self])

    struct StoreOptions: ParsableArguments {
        @Option(help: "Rootfs store directory.")
        var store: String = RootfsStore.defaultRoot
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the installed runtimes.")

        @OptionGroup var options: StoreOptions

        func run() throws {
            let manifests: [RootfsManifest]
            do { manifests = try RootfsStore(root: options.store).list() } catch {
                Diagnostics.error("\(error)")
                throw ExitCode(Diagnostics.setupFailure)
            }
            let rows = [["RUNTIME", "SUITE", "SIZE", "CREATED", "DIGEST"]] + manifests.map { manifest in
                [
                    manifest.runtime, manifest.debianSuite, Self.size(manifest.sizeBytes),
                    manifest.created.formatted(.iso8601), String(manifest.digest.prefix(19)),
                ]
            }
            let widths = rows[0].indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
            for row in rows {
                let padded = row.enumerated().map { column, cell in
                    column == row.count - 1 ? cell : cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
                }
                print(padded.joined(separator: "  "))
            }
        }

        /// Bytes as MiB with one decimal.
        static func size(_ bytes: Int64) -> String {
            String(format: "%.1fMiB", Double(bytes) / 1_048_576)
        }
    }

    struct Build: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Build and install the rootfs of a recipe (python, node).")

        @Argument(help: "Recipe name or runtime: python, python:3.11, node.")
        var name: String

        @Flag(help: "Rebuild even if the runtime is installed.")
        var force = false

        @OptionGroup var options: StoreOptions

        func run() throws {
            do { try RootfsStore(root: options.store).build(name: name, force: force) } catch {
                Diagnostics.error("\(error)")
                throw ExitCode(Diagnostics.setupFailure)
            }
        }
    }
}
