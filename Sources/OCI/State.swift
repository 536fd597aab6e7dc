/// runtime.md#state: the state a runtime reports and passes to hooks on stdin.
#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// runtime.md#state. `status` is one of `creating`, `created`, `running`, `stopped`.
public struct State: Codable, Sendable, Equatable {
    public var ociVersion: String
    public var id: String
    public var status: String
    public var pid: Int32?
    public var bundle: String
    public var annotations: [String: String]?

    public init(id: String, status: String, pid: Int32?, bundle: String, annotations: [String: String]?) {
        self.ociVersion = Spec.version
        self.id = id
        self.status = status
        self.pid = pid
        self.bundle = bundle
        self.annotations = annotations
    }
}

/// The JSON `runc state` prints (runc's `cState`), which containerd's shim decodes.
public struct RuncState: Codable, Sendable, Equatable {
    public var ociVersion: String
    public var id: String
    public var pid: Int32
    public var status: String
    public var bundle: String
    public var rootfs: String
    /// RFC 3339 with nanoseconds.
    public var created: String
    public var annotations: [String: String]?
    /// The user owning the container's state directory (`list`; empty in `state`, as runc).
    public var owner: String
    /// Not runc's: for a container whose `create` has not finished (`creating`, or `stopped`
    /// when that create died), the pid of the process running it. Absent otherwise.
    public var creator: Int32?

    public init(
        id: String, pid: Int32, status: String, bundle: String, rootfs: String, created: String,
        annotations: [String: String]?
    ) {
        self.ociVersion = Spec.version
        self.id = id
        self.pid = pid
        self.status = status
        self.bundle = bundle
        self.rootfs = rootfs
        self.created = created
        self.owner = ""
        self.annotations = annotations
    }
}
