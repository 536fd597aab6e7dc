/// `safespace rootfs`: the runtime root filesystems of this node.
import ArgumentParser
import Foundation
import SandboxSpec

struct RootfsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rootfs",
        abstract: "List, build and verify runtime root filesystems.",
        subcommands: [List.self, Build.self, Verify.self, Listing.self, Seal.self])

    /// Runs `body`, printing an error as `safespace: error: …` and exiting 1 for a digest
    /// mismatch, 125 (an error of safespace) for anything else.
    static func reportingErrors(_ body: () throws -> Void) throws {
        do { try body() } catch let code as ExitCode { throw code } catch {
            Diagnostics.error("\(error)")
            if case RootfsError.digestMismatch = error { throw ExitCode(1) }
            throw ExitCode(Diagnostics.setupFailure)
        }
    }

    struct StoreOptions: ParsableArguments {
        @Option(help: "Rootfs store directory.")
        var store: String = RootfsStore.defaultRoot
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the installed runtimes.")

        @OptionGroup var options: StoreOptions

        func run() throws {
            var manifests: [RootfsManifest] = []
            try reportingErrors { manifests = try RootfsStore(root: options.store).list() }
            let rows =
                [["RUNTIME", "SUITE", "SIZE", "CREATED", "DIGEST"]]
                + manifests.map { manifest in
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
        static let configuration = CommandConfiguration(
            abstract: "Build and install the rootfs of a recipe (python, node).")

        @Argument(help: "Recipe name or runtime: python, python:3.11, node.")
        var name: String

        @Flag(help: "Rebuild even if the runtime is installed.")
        var force = false

        @OptionGroup var options: StoreOptions

        func run() throws {
            // The script seals the tree with this very program (`safespace rootfs seal`).
            let store = RootfsStore(root: options.store)
            // On a terminal, one progress line (ProgressLine); elsewhere the script's output as is.
            let progress = isatty(2) == 1 ? ProgressLine(title: "building \(name)") : nil
            defer { progress?.finish() }
            try reportingErrors {
                do {
                    try store.build(
                        name: name, force: force, safespace: RootfsStore.currentExecutable(),
                        onOutput: progress.map { line in { line.update($0) } })
                } catch {
                    progress?.finish(showingRecent: true)
                    throw error
                }
            }
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Recompute the digest of an installed runtime and compare it with its manifest.",
            discussion: """
                Exits 0 when the tree matches its manifest, 1 when it does not (naming the first \
                differing path when the rootfs recorded its listing), 125 when it cannot be read. \
                Needs root: a rootfs holds files only root reads (/etc/shadow).
                """)

        @Argument(help: "Runtime: python, python:3.11, node.")
        var runtime: String

        @OptionGroup var options: StoreOptions

        func run() throws {
            try reportingErrors {
                let manifest = try RootfsStore(root: options.store).verify(runtime: runtime)
                print("\(manifest.runtime): matches its manifest (\(manifest.digest))")
            }
        }
    }

    struct Listing: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the listing the digest of an installed runtime is computed over.",
            discussion:
                "One line per path (rootfs/README.md, \"What the digest covers\"); diff two to see what changed.")

        @Argument(help: "Runtime: python, python:3.11, node.")
        var runtime: String

        @Flag(help: "Print the listing recorded when the rootfs was sealed, not the tree's.")
        var recorded = false

        @OptionGroup var options: StoreOptions

        func run() throws {
            try reportingErrors {
                let store = RootfsStore(root: options.store)
                let (manifest, path) = try store.resolve(runtime: runtime)
                let listing: RootfsListing
                if recorded {
                    guard let saved = try store.recordedListing(for: manifest) else {
                        Diagnostics.error(
                            "runtime \"\(manifest.runtime)\" has no recorded listing (sealed before listings were recorded)"
                        )
                        throw ExitCode(Diagnostics.setupFailure)
                    }
                    listing = saved
                } else {
                    listing = try RootfsListing.scan(path)
                }
                FileHandle.standardOutput.write(Data(listing.text))
            }
        }
    }

    struct Seal: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write manifest.json and rootfs.listing for DIRECTORY/rootfs (a step of build-rootfs).",
            discussion: """
                Computes the digest of DIRECTORY/rootfs, reads its installed packages from \
                var/lib/dpkg/status, and writes DIRECTORY/manifest.json and DIRECTORY/rootfs.listing. \
                Prints the runtime, digest, size in bytes and package count.
                """)

        @Argument(help: "Build directory holding rootfs/.")
        var directory: String

        @Option(help: "Recipe name (python).")
        var name: String

        @Option(help: "Runtime version (3.11).")
        var version: String

        @Option(help: "What a Sandbox names (default NAME:VERSION).")
        var runtime: String?

        @Option(help: "Debian suite (bookworm).")
        var suite: String

        @Option(help: "dpkg architecture (amd64).")
        var architecture: String

        func run() throws {
            try reportingErrors {
                let manifest = try RootfsStore.seal(
                    directory: directory, name: name, version: version, runtime: runtime,
                    debianSuite: suite, architecture: architecture)
                print(
                    "\(manifest.runtime) \(manifest.digest) \(manifest.sizeBytes) bytes \(manifest.packages.count) packages"
                )
            }
        }
    }
}
