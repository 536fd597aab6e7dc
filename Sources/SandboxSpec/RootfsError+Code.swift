import Errors

/// The rootfs store's errors in the common shape (domain `rootfs`): one code per case. No
/// field: the caller that knows which Sandbox field named the runtime adds it
/// (`spec.runtime: …`, SandboxHost).
extension RootfsError: CodedError {
    public enum Code: String, ErrorCode {
        case invalidRuntime, notInstalled, invalidManifest, rootfsMissing, unreadableStore, buildScriptNotFound,
            buildFailed
        case unreadableTree, unlistableName, cannotWrite, digestMismatch

        public var category: ErrorCategory {
            switch self {
            case .invalidRuntime: .invalidArgument
            case .notInstalled: .notFound
            case .invalidManifest, .rootfsMissing, .unreadableStore, .buildScriptNotFound, .buildFailed,
                .unreadableTree, .unlistableName, .cannotWrite, .digestMismatch:
                .internal
            }
        }
    }

    public static let domain = "rootfs"

    public var code: Code {
        switch self {
        case .invalidRuntime: .invalidRuntime
        case .notInstalled: .notInstalled
        case .invalidManifest: .invalidManifest
        case .rootfsMissing: .rootfsMissing
        case .unreadableStore: .unreadableStore
        case .buildScriptNotFound: .buildScriptNotFound
        case .buildFailed: .buildFailed
        case .unreadableTree: .unreadableTree
        case .unlistableName: .unlistableName
        case .cannotWrite: .cannotWrite
        case .digestMismatch: .digestMismatch
        }
    }

    public var field: String? { nil }

    public var operation: String? {
        switch self {
        case .invalidManifest: "read manifest"
        case .unreadableStore: "list"
        case .buildFailed: "build"
        case .unreadableTree, .unlistableName: "list"
        case .cannotWrite: "write"
        case .digestMismatch: "verify"
        default: nil
        }
    }

    public var errno: Int32? { nil }
}
