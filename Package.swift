// swift-tools-version: 6.2
import PackageDescription

let package = Package(
    name: "SafeSpace",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "safespace-runtime", targets: ["safespace-runtime"]),
        .executable(name: "safespace", targets: ["safespace"]),
        .executable(name: "safespaced", targets: ["safespaced"]),
        .executable(name: "safespace-agent", targets: ["safespace-agent"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
        // The daemon only (safespaced): never linked into safespace-runtime or safespace.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        // Already in the graph through hummingbird; named for the socket-activated server
        // (ServerBootstrap on an inherited fd, ServerQuiescingHelper) and the egress filter
        // (EgressFilter: DNS responder and SNI/Host proxy; products NIOTLS and NIOHTTP1).
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.0"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.34.1"),
        // SHA-256 of rootfs trees (RootfsListing), the audit chain, file digests: BoringSSL's.
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        // The MCP server of `safespace mcp` (SafeSpaceMCP): never linked into safespace-runtime.
        .package(url: "https://github.com/modelcontextprotocol/swift-sdk", from: "0.12.1"),
    ],
    targets: [
        // The few syscalls Swift cannot call (clone stages, pivot_root, setns, close_range)
        // and the code that runs between clone and exec.
        .target(name: "CSafeSpace"),
        .systemLibrary(
            name: "CLibcap", pkgConfig: "libcap",
            providers: [.apt(["libcap-dev"])]),
        .systemLibrary(
            name: "CSeccomp", pkgConfig: "libseccomp",
            providers: [.apt(["libseccomp-dev"])]),
        .target(name: "OCI"),
        // The shape of every error (code, field, operation, errno, cause); imports nothing.
        .target(name: "Errors"),
        .target(name: "LinuxKernel", dependencies: ["Errors", "CSafeSpace", "CLibcap"]),
        // libsystemd (sd-daemon, sd-journal), for the daemon: readiness, watchdog, socket
        // activation (SystemdSupport) and journald audit records (Audit).
        .systemLibrary(
            name: "CSystemd", pkgConfig: "libsystemd",
            providers: [.apt(["libsystemd-dev"])]),
        .target(name: "SystemdSupport", dependencies: ["CSystemd"]),
        // The hash-chained audit log (JSON lines + journald) and its verifier.
        .target(name: "Audit", dependencies: ["CSystemd", .product(name: "Crypto", package: "swift-crypto")]),
        // Whether this host can run SafeSpace (`safespace doctor`, the daemon at start,
        // scripts/install-node --check): containerd, cgroups, user namespaces, libseccomp,
        // capabilities, AppArmor, gVisor. Reads the host; changes nothing.
        .target(name: "HostChecks", dependencies: ["LinuxKernel", "CSeccomp"]),
        .target(name: "Cgroups", dependencies: ["Errors", "LinuxKernel", "OCI", "CSafeSpace"]),
        .target(name: "SeccompFilters", dependencies: ["Errors", "OCI", "LinuxKernel", "CSeccomp", "CSafeSpace"]),
        // Host id ranges are leases of LinuxKernel's LeaseStore; the node's other state (CPUs,
        // volumes, sandbox leases) and its sweep are SandboxHosting's.
        .target(
            name: "Runtime", dependencies: ["Errors", "OCI", "LinuxKernel", "Cgroups", "SeccompFilters", "CSafeSpace"]),
        // The gVisor backend of Runtime: runsc driver, pods and their waiter, the spec runsc gets.
        // Registered by the front ends (safespace-runtime, SandboxHosting).
        .target(name: "GVisor", dependencies: ["Errors", "Runtime", "OCI", "LinuxKernel", "Cgroups", "CSafeSpace"]),
        // Sandbox-side resources: quantities, spec.resources -> linux.resources, CPU pinning
        // allocator (leases of LinuxKernel's LeaseStore), ephemeral storage volumes (wired into the Sandbox policy by the CLI/daemon).
        .target(name: "NodeResources", dependencies: ["Errors", "OCI", "LinuxKernel", "CSafeSpace"]),
        // Seccomp: Docker-format profiles resolved into linux.seccomp (SandboxPolicy+Seccomp.swift).
        // The built-in profiles are seccomp/*.json, compiled into the code (no resource bundle
        // to install beside the binary); BuiltinProfiles is a symlink to seccomp/, since SwiftPM
        // takes resources only from under the target's directory.
        .target(
            name: "SandboxSpec",
            dependencies: [
                "Errors", "OCI", "SeccompFilters", "NodeResources", .product(name: "Yams", package: "Yams"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            exclude: ["BuiltinProfiles/README.md"],
            resources: [
                .embedInCode("BuiltinProfiles/default.json"),
                .embedInCode("BuiltinProfiles/python.json"),
                .embedInCode("BuiltinProfiles/node.json"),
            ]),
        // The network of a sandbox with egress rules (issue 13): address pool leases, network
        // namespace files, veth pairs and routes (rtnetlink, CSandboxNetwork), nftables tables
        // through libnftables' JSON API (CNftables). No NIO: the egress filter is a protocol.
        .target(name: "CSandboxNetwork"),
        .systemLibrary(
            name: "CNftables", pkgConfig: "libnftables",
            providers: [.apt(["libnftables-dev"])]),
        .target(name: "SandboxNetwork", dependencies: ["Errors", "LinuxKernel", "CSandboxNetwork", "CNftables"]),
        // Release: a static, non-PIE executable, as runc's own binary is non-PIE (issue 17). Every
        // container starts it up to three times (the runtime, its sealed re-exec, the init);
        // static and non-PIE, no dynamic loader runs, no library is searched for or mapped, and
        // none of the ~41,000 relative relocations of a PIE dirties its pages: `--version` drops
        // from ~380 to ~150 page faults. libseccomp and libcap are linked from their .a files.
        .executableTarget(
            name: "safespace-runtime",
            dependencies: [
                "Runtime", "GVisor", "Cgroups", "SeccompFilters",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            linkerSettings: [.unsafeFlags(["-static-executable"], .when(configuration: .release))]),
        // The node side of a sandbox: a validated Sandbox -> bundle, leases, writable layer, id
        // range, CPUs, volume, seccomp event agent, container; and its release. Front ends:
        // `safespace run`, the daemon. Never linked into safespace-runtime.
        .target(
            name: "SandboxHosting",
            dependencies: [
                "Errors", "OCI", "LinuxKernel", "Cgroups", "Runtime", "GVisor", "SandboxSpec", "SeccompFilters",
                "NodeResources", "SandboxNetwork",
            ]),
        .executableTarget(
            name: "safespace",
            dependencies: [
                "Errors", "Runtime", "SandboxSpec", "SandboxHosting", "SeccompFilters", "NodeResources", "HostChecks",
                "Audit", "DaemonClient", "EgressHosting", "EgressFilter", "SafeSpaceMCP",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        // `safespace mcp`: a Model Context Protocol server over stdio whose tools drive
        // safespaced through DaemonClient (create/run/files/list/delete sandboxes).
        .target(
            name: "SafeSpaceMCP",
            dependencies: ["DaemonClient", .product(name: "MCP", package: "swift-sdk")]),
        // Tests: one unit-test target per module (<Module>Tests, root-free but for the few that
        // need the kernel: cgroups, mounts), the root-only runtime integration tests (real
        // containers through safespace-runtime and safespace run), and the tests in which real
        // clients (containerd's ctr and CRI, podman, install-node) drive the runtime. TestSupport
        // holds what they share (Harness: the one process runner and polling helper).
        .target(name: "TestSupport", dependencies: ["OCI", "Runtime"], path: "Tests/TestSupport"),
        // A client of the daemon's API over its unix socket (HTTP/1.1, Foundation only): the
        // CLI's verbs and the daemon's tests. No NIO, so `safespace` stays small.
        .target(name: "DaemonClient"),
        // openat2(2) and SO_PEERCRED's struct for the daemon.
        .target(name: "CDaemon"),
        // safespaced: the per-node daemon (issue 12). The library holds the server, the
        // sandbox registry and the API; the executable is its main.
        .target(
            name: "SafeSpaceDaemon",
            dependencies: [
                "OCI", "LinuxKernel", "Cgroups", "Runtime", "SandboxSpec", "SandboxHosting", "NodeResources",
                "CSafeSpace", "CDaemon", "Audit", "SystemdSupport", "EgressHosting", "EgressFilter", "SandboxNetwork",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            exclude: ["openapi.yaml"]),
        .executableTarget(name: "safespaced", dependencies: ["SafeSpaceDaemon", "Runtime"]),
        // PID 1 of the daemon's sandboxes (issue 14): the exec agent, C and statically linked
        // (no Swift runtime, no file of the rootfs: it runs in any rootfs, glibc or not).
        // forkserver.py is embedded as forkserver.h (scripts/embed-forkserver).
        .executableTarget(
            name: "safespace-agent", path: "Sources/SafeSpaceAgent", exclude: ["forkserver.py"],
            linkerSettings: [.unsafeFlags(["-static-executable", "-Xlinker", "--gc-sections", "-Xlinker", "-s"])]),
        // The node's egress filter (issue 13): a DNS responder answering allowed names only and
        // a transparent proxy for 80/443 that matches HTTP Host / TLS SNI and dials the name it
        // resolved itself. Hosted by safespaced or `safespace run`; never by safespace-runtime.
        .target(
            name: "EgressFilter",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]),
        // The egress filter as the front ends host it: the node's `network:` settings, the
        // filter started on 0.0.0.0, and its adapter to SandboxNetwork's SandboxEgressFilter.
        .target(
            name: "EgressHosting",
            dependencies: ["EgressFilter", "SandboxNetwork", .product(name: "Yams", package: "Yams")]),
        .testTarget(
            name: "DaemonTests",
            dependencies: [
                "DaemonClient", "SafeSpaceDaemon", "SandboxSpec", "Audit", "TestSupport", "SandboxNetwork",
                "EgressHosting",
                .product(name: "Yams", package: "Yams"),
            ]),
        .testTarget(
            name: "SafeSpaceMCPTests",
            dependencies: ["SafeSpaceMCP", "DaemonClient", .product(name: "MCP", package: "swift-sdk")]),
        .testTarget(name: "OCITests", dependencies: ["OCI"]),
        .testTarget(name: "LinuxKernelTests", dependencies: ["LinuxKernel", "Errors"]),
        .testTarget(name: "HostChecksTests", dependencies: ["HostChecks"]),
        .testTarget(name: "AuditTests", dependencies: ["Audit", "CSafeSpace"]),
        .testTarget(name: "SystemdSupportTests", dependencies: ["SystemdSupport"]),
        .testTarget(name: "CgroupsTests", dependencies: ["Cgroups", "OCI", "Errors"]),
        .testTarget(name: "NodeResourcesTests", dependencies: ["NodeResources", "OCI", "LinuxKernel", "Errors"]),
        .testTarget(
            name: "SandboxSpecTests", dependencies: ["SandboxSpec", "OCI", "SeccompFilters", "NodeResources", "Errors"]),
        .testTarget(name: "SeccompFiltersTests", dependencies: ["SeccompFilters", "OCI", "Errors"]),
        .testTarget(
            name: "SandboxHostingTests",
            dependencies: [
                "SandboxHosting", "SandboxSpec", "SandboxNetwork", "OCI", "NodeResources", "Runtime", "LinuxKernel",
                "Errors",
            ]),
        .testTarget(
            name: "RuntimeTests",
            dependencies: ["OCI", "Runtime", "LinuxKernel", "Errors", "SeccompFilters", "TestSupport"]),
        .testTarget(name: "GVisorTests", dependencies: ["GVisor", "Runtime", "OCI", "LinuxKernel"]),
        .testTarget(
            name: "RuntimeIntegrationTests",
            dependencies: [
                "OCI", "Runtime", "SeccompFilters", "NodeResources", "LinuxKernel", "SandboxHosting", "SandboxNetwork",
                "TestSupport",
            ]),
        .testTarget(name: "EgressFilterTests", dependencies: ["EgressFilter", "TestSupport"]),
        .testTarget(name: "SandboxNetworkTests", dependencies: ["SandboxNetwork", "LinuxKernel", "TestSupport"]),
        .testTarget(name: "ClientIntegrationTests", dependencies: ["OCI", "LinuxKernel", "TestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)

// Warnings are errors in every target of this package (not in its dependencies).
for target in package.targets where target.type != .system {
    target.swiftSettings = (target.swiftSettings ?? []) + [.treatAllWarnings(as: .error)]
}
