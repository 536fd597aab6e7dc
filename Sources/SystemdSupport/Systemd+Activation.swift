import CSystemd
import Glibc

/// Socket activation (sd_listen_fds(3), systemd.socket(5)): the fds a `.socket` unit passes,
/// with their names, and the check that an fd is what a daemon serving HTTP on a unix socket
/// can serve on.
extension Systemd {
    /// One fd passed by socket activation: its number (from `SD_LISTEN_FDS_START`, 3) and its
    /// name from `LISTEN_FDNAMES` (the unit's `FileDescriptorName=`, by default the socket unit's
    /// name, e.g. `safespaced.socket`; `"unknown"` when the variable is unset).
    public struct ListenedFD: Sendable, Equatable {
        public var fd: Int32
        public var name: String
        public init(fd: Int32, name: String) {
            self.fd = fd
            self.name = name
        }
    }

    /// What socket activation passed to this process, with names:
    /// `sd_listen_fds_with_names(1, &names)` (sd_listen_fds(3)). Like `listenFDs()` it checks
    /// `LISTEN_PID` is this process, sets `FD_CLOEXEC` on each fd and unsets `LISTEN_PID`,
    /// `LISTEN_FDS` and `LISTEN_FDNAMES`, so that no child inherits them.
    /// - Returns: the fds in the unit's order; empty when none were passed or the variables
    ///   name another process.
    /// - Throws: `ActivationError.malformed` when the variables are set for this process but
    ///   malformed (the negative errno of sd_listen_fds_with_names).
    public static func listenedFDs() throws -> [ListenedFD] {
        var names: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = nil
        let n = sd_listen_fds_with_names(1, &names)
        defer {
            if let names {
                var i = 0
                while let name = names[i] {
                    free(name)
                    i += 1
                }
                free(names)
            }
        }
        if n < 0 { throw ActivationError.malformed(errno: -n) }
        return (0..<Int(n)).map { i in
            ListenedFD(fd: listenFDsStart + Int32(i), name: names?[i].map { String(cString: $0) } ?? "unknown")
        }
    }

    /// Why an fd is not a listening `AF_UNIX` `SOCK_STREAM` socket bound to a path, or why the
    /// activation variables cannot be used.
    public enum ActivationError: Error, Sendable, Equatable, CustomStringConvertible {
        /// `LISTEN_FDS`/`LISTEN_PID`/`LISTEN_FDNAMES` set for this process but not parseable.
        case malformed(errno: Int32)
        /// fstat(2) or getsockopt(2) failed on the fd (e.g. EBADF: nothing open there).
        case unusable(fd: Int32, errno: Int32)
        /// The fd is open but not a socket (`kind`: regular file, pipe, ...).
        case notASocket(fd: Int32, kind: String)
        /// A socket of another family than `AF_UNIX` (`family`: AF_INET, AF_INET6, AF_NETLINK, ...).
        case wrongFamily(fd: Int32, family: String)
        /// A unix socket of another type than `SOCK_STREAM` (`type`: SOCK_DGRAM, SOCK_SEQPACKET).
        case wrongType(fd: Int32, type: String)
        /// A stream socket on which listen(2) was not called (`SO_ACCEPTCONN` is 0).
        case notListening(fd: Int32)
        /// Listening, but bound to no path: unnamed, or an abstract address (`@name`).
        case noPath(fd: Int32, address: String)

        public var description: String { description(fdName: nil) }

        /// The description with the fd's name from `LISTEN_FDNAMES` beside its number
        /// (`fd 3 (safespaced.socket) is a regular file, not a socket`).
        public func description(fdName: String?) -> String {
            func label(_ fd: Int32) -> String { fdName.map { "fd \(fd) (\($0))" } ?? "fd \(fd)" }
            switch self {
            case .malformed(let e):
                return "LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES are malformed: \(String(cString: strerror(e)))"
            case .unusable(let fd, let e):
                return "\(label(fd)): \(String(cString: strerror(e)))"
            case .notASocket(let fd, let kind):
                return "\(label(fd)) is a \(kind), not a socket"
            case .wrongFamily(let fd, let family):
                return "\(label(fd)) is an \(family) socket, not AF_UNIX"
            case .wrongType(let fd, let type):
                return "\(label(fd)) is an AF_UNIX \(type) socket, not SOCK_STREAM"
            case .notListening(let fd):
                return "\(label(fd)) is an AF_UNIX SOCK_STREAM socket that is not listening (listen(2) was not called)"
            case .noPath(let fd, let address):
                return "\(label(fd)) is a listening AF_UNIX socket bound to no path (\(address))"
            }
        }
    }

    /// Checks that `fd` is a listening `AF_UNIX` `SOCK_STREAM` socket bound to a path, the
    /// socket a `.socket` unit's `ListenStream=/path` passes (systemd.socket(5)): fstat(2)
    /// `S_IFSOCK`, getsockopt(2) `SO_DOMAIN`, `SO_TYPE`, `SO_ACCEPTCONN` (socket(7)),
    /// getsockname(2) (unix(7): a pathname address, not unnamed or abstract).
    /// - Returns: the path the socket is bound to.
    /// - Throws: `ActivationError` saying what the fd is instead.
    public static func unixStreamListenerPath(_ fd: Int32) throws -> String {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw ActivationError.unusable(fd: fd, errno: errno) }
        guard st.st_mode & S_IFMT == S_IFSOCK else {
            throw ActivationError.notASocket(fd: fd, kind: fileKind(st.st_mode))
        }
        func option(_ name: Int32) throws -> Int32 {
            var value: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            guard getsockopt(fd, SOL_SOCKET, name, &value, &length) == 0 else {
                throw ActivationError.unusable(fd: fd, errno: errno)
            }
            return value
        }
        let family = try option(SO_DOMAIN)
        guard family == AF_UNIX else { throw ActivationError.wrongFamily(fd: fd, family: familyName(family)) }
        let type = try option(SO_TYPE)
        guard type == Int32(SOCK_STREAM.rawValue) else {
            throw ActivationError.wrongType(fd: fd, type: typeName(type))
        }
        guard try option(SO_ACCEPTCONN) != 0 else { throw ActivationError.notListening(fd: fd) }

        var address = sockaddr_un()
        var length = socklen_t(MemoryLayout<sockaddr_un>.size)
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { throw ActivationError.unusable(fd: fd, errno: errno) }
        let pathBytes = Int(length) - MemoryLayout<sa_family_t>.size
        let bytes: [UInt8] = withUnsafeBytes(of: &address.sun_path) { Array($0.prefix(max(0, pathBytes))) }
        guard let first = bytes.first, first != 0 else {
            let address = bytes.isEmpty ? "unnamed" : "abstract @" + String(decoding: bytes.dropFirst(), as: UTF8.self)
            throw ActivationError.noPath(fd: fd, address: address)
        }
        return String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }

    private static func fileKind(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFREG: return "regular file"
        case S_IFDIR: return "directory"
        case S_IFIFO: return "pipe (FIFO)"
        case S_IFCHR: return "character device"
        case S_IFBLK: return "block device"
        case S_IFLNK: return "symbolic link"
        default: return "file of type \(String(mode & S_IFMT, radix: 8))"
        }
    }

    private static func familyName(_ family: Int32) -> String {
        switch family {
        case AF_INET: return "AF_INET"
        case AF_INET6: return "AF_INET6"
        case AF_NETLINK: return "AF_NETLINK"
        case AF_PACKET: return "AF_PACKET"
        case AF_VSOCK: return "AF_VSOCK"
        default: return "address family \(family)"
        }
    }

    private static func typeName(_ type: Int32) -> String {
        switch type {
        case Int32(SOCK_DGRAM.rawValue): return "SOCK_DGRAM"
        case Int32(SOCK_SEQPACKET.rawValue): return "SOCK_SEQPACKET"
        case Int32(SOCK_RAW.rawValue): return "SOCK_RAW"
        default: return "type \(type)"
        }
    }
}
