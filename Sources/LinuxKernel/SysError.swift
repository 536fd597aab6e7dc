import Glibc

/// A failed system call: the operation, the path or object it acted on, and errno.
///
/// `description` reads like `mount proc on /proc: Operation not permitted (EPERM)`; `field`,
/// when set, names the OCI or Sandbox field whose value made the call fail.
public struct SysError: Error, CustomStringConvertible, Sendable {
    public var operation: String
    public var path: String?
    public var errno: Int32
    public var field: String?

    public init(_ operation: String, path: String? = nil, errno: Int32 = Glibc.errno, field: String? = nil) {
        self.operation = operation
        self.path = path
        self.errno = errno
        self.field = field
    }

    public var description: String {
        var s = field.map { "\($0): " } ?? ""
        s += operation
        if let path { s += " \(path)" }
        s += ": \(String(cString: strerror(errno)))"
        if let name = ErrnoNames.name(errno) { s += " (\(name))" }
        return s
    }
}

/// A domain error with a message only (validation, protocol), naming its field.
public struct RuntimeError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Runs `body` until it does not fail with EINTR; throws `SysError` on -1.
@discardableResult
public func sys<T: BinaryInteger>(_ operation: String, path: String? = nil, _ body: () -> T) throws -> T {
    while true {
        let r = body()
        if r >= 0 { return r }
        if errno == EINTR { continue }
        throw SysError(operation, path: path)
    }
}
