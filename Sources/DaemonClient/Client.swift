/// A client of safespaced's API: HTTP/1.1 over its unix socket, one connection per request
/// (`Connection: close`), blocking. Foundation and Glibc only, so the CLI links no NIO.
import Foundation
import Glibc

public struct DaemonClient: Sendable {
    /// The socket clients use: `$SAFESPACE_SOCKET`, else `/run/safespace/safespaced.sock`.
    public static var defaultSocket: String {
        if let path = ProcessInfo.processInfo.environment["SAFESPACE_SOCKET"], !path.isEmpty { return path }
        return "/run/safespace/safespaced.sock"
    }

    public let socketPath: String
    /// Seconds a request may take to answer (SO_RCVTIMEO); 0: no limit.
    public var timeout: Double

    public init(socketPath: String = DaemonClient.defaultSocket, timeout: Double = 0) {
        self.socketPath = socketPath
        self.timeout = timeout
    }

    public struct Response: Sendable {
        public var status: Int
        /// Header names lowercased.
        public var headers: [String: String]
        public var body: [UInt8]

        public init(status: Int, headers: [String: String], body: [UInt8]) {
            self.status = status
            self.headers = headers
            self.body = body
        }

        public var text: String { String(decoding: body, as: UTF8.self) }
        /// The body as a JSON object, if it is one.
        public var json: [String: Any]? { (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] }
        /// `error.code`, `error.message` and `error.field` of an error body.
        public var error: (code: String, message: String, field: String?)? {
            guard let error = json?["error"] as? [String: Any], let code = error["code"] as? String,
                let message = error["message"] as? String
            else { return nil }
            return (code, message, error["field"] as? String)
        }
    }

    public struct ClientError: Error, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    /// Whether something accepts connections on the socket.
    public func isAnswering() -> Bool {
        guard let fd = try? connectSocket() else { return false }
        close(fd)
        return true
    }

    /// Sends one request and reads the whole response.
    /// - Throws: `ClientError` when the socket cannot be reached or the answer is not HTTP.
    public func request(_ method: String, _ path: String, body: [UInt8]? = nil, headers: [String: String] = [:]) throws
        -> Response
    {
        var collected: [UInt8] = []
        var response = try send(method, path, body: body, headers: headers) { collected += $0 }
        response.body = collected
        return response
    }

    /// `request` with a JSON body.
    public func request(_ method: String, _ path: String, json: Any, headers: [String: String] = [:]) throws -> Response
    {
        let data = try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys])
        var headers = headers
        headers["Content-Type"] = "application/json"
        return try request(method, path, body: [UInt8](data), headers: headers)
    }

    /// Sends one request; the body of the answer goes to `onBody` as it arrives (chunked
    /// transfer decoded), for streamed answers such as `application/x-ndjson`.
    /// - Returns: status and headers (the body is empty: it went to `onBody`).
    public func send(
        _ method: String, _ path: String, body: [UInt8]? = nil, headers: [String: String] = [:],
        onBody: ([UInt8]) throws -> Void
    ) throws -> Response {
        let fd = try connectSocket()
        defer { close(fd) }
        var head = "\(method) \(path) HTTP/1.1\r\nHost: safespaced\r\nConnection: close\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        if let body {
            head += "Content-Length: \(body.count)\r\n"
        } else if method == "POST" || method == "PUT" {
            head += "Content-Length: 0\r\n"
        }
        head += "\r\n"
        try writeAll(fd, Array(head.utf8) + (body ?? []))

        var reader = Reader(fd: fd)
        guard let statusLine = try reader.line() else {
            throw ClientError("safespaced closed the connection without answering")
        }
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let status = Int(parts[1]) else {
            throw ClientError("not an HTTP answer: \(statusLine)")
        }
        var responseHeaders: [String: String] = [:]
        while let line = try reader.line(), !line.isEmpty {
            guard let colon = line.firstIndex(of: ":") else { continue }
            responseHeaders[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(
                in: .whitespaces)
        }
        if responseHeaders["transfer-encoding"]?.lowercased().contains("chunked") == true {
            while true {
                guard let sizeLine = try reader.line(),
                    let size = Int(sizeLine.split(separator: ";").first ?? "", radix: 16)
                else {
                    throw ClientError("bad chunked encoding")
                }
                if size == 0 {
                    while let line = try reader.line(), !line.isEmpty {}
                    break
                }
                try onBody(try reader.bytes(size))
                _ = try reader.line()
            }
        } else if let length = responseHeaders["content-length"].flatMap({ Int($0) }) {
            if length > 0 { try onBody(try reader.bytes(length)) }
        } else {
            while let chunk = try reader.some() { try onBody(chunk) }
        }
        return Response(status: status, headers: responseHeaders, body: [])
    }

    private func connectSocket() throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ClientError("socket: \(String(cString: strerror(errno)))") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(socketPath.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            close(fd)
            throw ClientError("\(socketPath): too long for a unix socket path")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, byte) in bytes.enumerated() { raw[i] = byte }
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if result != 0 {
            let text = String(cString: strerror(errno))
            close(fd)
            throw ClientError("cannot reach safespaced at \(socketPath): \(text)")
        }
        if timeout > 0 {
            var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - floor(timeout)) * 1e6))
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        }
        return fd
    }

    private func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            // The server may answer (413) and close before it read the whole body.
            if n < 0 && (errno == EPIPE || errno == ECONNRESET) { return }
            if n <= 0 { throw ClientError("write to \(socketPath): \(String(cString: strerror(errno)))") }
            offset += n
        }
    }

    /// Buffered reads of a socket.
    private struct Reader {
        let fd: Int32
        var buffer: [UInt8] = []
        var start = 0

        init(fd: Int32) { self.fd = fd }

        mutating func fill() throws -> Bool {
            if start > 65536 {
                buffer.removeFirst(start)
                start = 0
            }
            var chunk = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if n < 0 && errno == EINTR { continue }
                if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                    throw ClientError("safespaced did not answer in time")
                }
                if n < 0 { throw ClientError("read: \(String(cString: strerror(errno)))") }
                if n == 0 { return false }
                buffer += chunk[..<n]
                return true
            }
        }

        /// One CRLF-terminated line without its CRLF; nil at EOF.
        mutating func line() throws -> String? {
            while true {
                if let end = buffer[start...].firstIndex(of: 0x0A) {
                    var line = buffer[start..<end]
                    if line.last == 0x0D { line = line.dropLast() }
                    start = end + 1
                    return String(decoding: line, as: UTF8.self)
                }
                guard try fill() else { return nil }
            }
        }

        mutating func bytes(_ count: Int) throws -> [UInt8] {
            while buffer.count - start < count {
                guard try fill() else { throw ClientError("the answer ended early") }
            }
            defer { start += count }
            return Array(buffer[start..<start + count])
        }

        mutating func some() throws -> [UInt8]? {
            if start < buffer.count {
                defer { start = buffer.count }
                return Array(buffer[start...])
            }
            guard try fill() else { return nil }
            return try some()
        }
    }
}
