// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "SafeSpace",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "safespace-runtime", targets: ["safespace-runtime"]),
        .executable(name: "safespace", targets: ["safespace"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
        // SHA-256 of rootfs trees (RootfsListing): BoringSSL's, not one of our own.
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
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
        // Whether this host can run SafeSpace (`safespace doctor`, the daemon at start,
        // scripts/install-node --check): containerd, cgroups, user namespaces, libseccomp,
        // capabilities, AppArmor, gVisor. Reads the host; changes nothing.
        .target(name: "HostChecks", dependencies: ["LinuxKernel", "CSeccomp"]),
        .target(name: "Cgroups", dependencies: ["Errors", "LinuxKernel", "OCI", "CSafeSpace"]),
        .target(name: "SeccompFilters", dependencies: ["Errors", "OCI", "LinuxKernel", "CSeccomp", "CSafeSpace"]),
        // Host id ranges are leases of LinuxKernel's LeaseStore; the node's other state (CPUs,
        // volumes, sandbox leases) and its sweep are SandboxHosting's.
        .target(name: "Runtime", dependencies: ["Errors", "OCI", "LinuxKernel", "Cgroups", "SeccompFilters", "CSafeSpace"]),
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
        .executableTarget(
            name: "safespace-runtime",
            dependencies: ["Runtime", "GVisor", "Cgroups", "SeccompFilters", .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        // The node side of a sandbox: a validated Sandbox -> bundle, leases, writable layer, id
        // range, CPUs, volume, seccomp event agent, container; and its release. Front ends:
        // `safespace run`, the daemon. Never linked into safespace-runtime.
        .target(name: "SandboxHosting", dependencies: ["Errors", "OCI", "LinuxKernel", "Cgroups", "Runtime", "GVisor", "SandboxSpec", "SeccompFilters", "NodeResources"]),
        .executableTarget(
            name: "safespace",
            dependencies: ["Errors", "Runtime", "SandboxSpec", "SandboxHosting", "SeccompFilters", "NodeResources", "HostChecks", .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .testTarget(name: "OCITests", dependencies: ["OCI"]),
        .testTarget(name: "HostChecksTests", dependencies: ["HostChecks"]),
        .testTarget(name: "CgroupsTests", dependencies: ["Cgroups", "OCI", "Errors"]),
        .testTarget(name: "NodeResourcesTests", dependencies: ["NodeResources", "OCI", "LinuxKernel", "Errors"]),
        .testTarget(name: "SandboxSpecTests", dependencies: ["SandboxSpec", "OCI", "SeccompFilters", "NodeResources", "Errors"]),
        .testTarget(name: "SeccompFiltersTests", dependencies: ["SeccompFilters", "OCI", "Errors"]),
        .testTarget(name: "SandboxHostingTests", dependencies: ["SandboxHosting", "SandboxSpec", "OCI", "NodeResources", "Runtime", "LinuxKernel", "Errors"]),
        .testTarget(name: "RuntimeTests", dependencies: ["OCI", "Runtime", "LinuxKernel", "Errors"]),
        .testTarget(name: "GVisorTests", dependencies: ["GVisor", "Runtime", "OCI", "LinuxKernel"]),
        .testTarget(name: "IntegrationTests", dependencies: ["OCI", "Runtime", "SeccompFilters", "NodeResources", "LinuxKernel", "SandboxHosting"]),
    ],
    swiftLanguageModes: [.v6]
)
