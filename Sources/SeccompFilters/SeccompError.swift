/// An invalid seccomp profile or a step of compiling one that failed.
///
/// `description` reads `linux.seccomp.syscalls[3].action: unknown action "SCMP_ACT_BOGUS"`:
/// `field` names the profile entry at fault (OCI `linux.seccomp…`, or the Docker profile's own
/// path `syscalls[3]…` prefixed with the file), `message` says what is wrong with it.
public struct SeccompError: Error, CustomStringConvertible, Sendable, Equatable {
    public var field: String?
    public var message: String

    public init(_ message: String, field: String? = nil) {
        self.message = message
        self.field = field
    }

    public var description: String {
        field.map { "\($0): \(message)" } ?? message
    }
}
