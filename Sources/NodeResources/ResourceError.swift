/// A sandbox resource request that cannot be honoured: the `Sandbox` field at fault
/// (`spec.resources.memory`), what is wrong, and the errno when a syscall failed.
public struct ResourceError: Error, CustomStringConvertible, Sendable, Equatable {
    public var field: String
    public var message: String
    public var errno: Int32

    public init(field: String, _ message: String, errno: Int32 = 0) {
        self.field = field
        self.message = message
        self.errno = errno
    }

    public var description: String { "\(field): \(message)" }
}
