/// Errors of the API: `{"error": {"code", "message", "field"}}` with an HTTP status.
import Foundation
import Hummingbird
import NodeResources
import SandboxSpec

/// An error answered to the client. `code` is a stable machine-readable word, `message` the
/// whole description, `field` the request field at fault (a JSON path such as
/// `spec.resources.memory`, or `path` for a file path), when there is one.
public struct APIError: Error, HTTPResponseError, CustomStringConvertible {
    public var status: HTTPResponse.Status
    public var code: String
    public var message: String
    public var field: String?

    public init(_ status: HTTPResponse.Status, _ code: String, _ message: String, field: String? = nil) {
        self.status = status
        self.code = code
        self.message = message
        self.field = field
    }

    public var description: String { field.map { "\($0): \(message)" } ?? message }

    /// The JSON body.
    var body: [UInt8] {
        var error: [String: Any] = ["code": code, "message": message]
        error["field"] = field ?? NSNull()
        return JSON.encode(["error": error]) + [0x0A]
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        Response(
            status: status, headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
    }

    static func badRequest(_ message: String, field: String? = nil, code: String = "invalid_value") -> APIError {
        APIError(.badRequest, code, message, field: field)
    }
    static func notFound(_ name: String) -> APIError {
        APIError(.notFound, "not_found", "no sandbox named \(name)", field: "name")
    }

    /// A `SandboxError` of a Sandbox body: 400 naming its first field; all issues in the message.
    static func from(_ error: SandboxError) -> APIError {
        let first = error.issues.first
        let code: String
        switch first?.kind {
        case .syntax?: code = "malformed"
        case .unknownField?: code = "unknown_field"
        case .duplicateField?: code = "duplicate_field"
        case .wrongType?: code = "wrong_type"
        case .missingField?: code = "missing_field"
        case .notEnforceable?: code = "not_enforceable"
        default: code = "invalid_value"
        }
        return APIError(
            .badRequest, code, error.issues.map(\.description).joined(separator: "; "),
            field: first.map { $0.field.isEmpty ? nil : $0.field } ?? nil)
    }

    /// A `ResourceError` (quantities, volumes, CPUs): 400 naming its field.
    static func from(_ error: ResourceError) -> APIError {
        APIError(.badRequest, "invalid_value", "\(error)", field: error.field)
    }
}

/// JSON of `JSONSerialization` values: sorted keys, no escaped slashes.
enum JSON {
    static func encode(_ value: Any) -> [UInt8] {
        let data =
            (try? JSONSerialization.data(
                withJSONObject: value, options: [.sortedKeys, .withoutEscapingSlashes, .fragmentsAllowed]))
            ?? Data("null".utf8)
        return [UInt8](data)
    }

    /// A JSON object of `bytes`.
    /// - Throws: `APIError` 400 `malformed_json` for anything but one JSON object.
    static func object(_ bytes: [UInt8]) throws -> [String: Any] {
        if bytes.isEmpty {
            throw APIError.badRequest("the request body is empty: a JSON object is expected", code: "malformed_json")
        }
        let value: Any
        do { value = try JSONSerialization.jsonObject(with: Data(bytes), options: []) } catch {
            throw APIError.badRequest("the request body is not valid JSON: \(describe(error))", code: "malformed_json")
        }
        guard let object = value as? [String: Any] else {
            throw APIError.badRequest("the request body must be a JSON object", code: "malformed_json")
        }
        return object
    }

    private static func describe(_ error: Error) -> String {
        let ns = error as NSError
        return (ns.userInfo[NSDebugDescriptionErrorKey] as? String) ?? ns.localizedDescription
    }

    static func response(_ value: Any, status: HTTPResponse.Status = .ok) -> Response {
        Response(
            status: status, headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: encode(value) + [0x0A])))
    }
}

/// Typed access to a decoded JSON object that refuses unknown keys and wrong types, naming
/// the field (`prefix` + key).
struct JSONFields {
    let object: [String: Any]
    let prefix: String

    init(_ object: [String: Any], prefix: String = "", allowed: Set<String>) throws {
        self.object = object
        self.prefix = prefix
        for key in object.keys.sorted() where !allowed.contains(key) {
            throw APIError.badRequest(
                "unknown field (known: \(allowed.sorted().joined(separator: ", ")))", field: prefix + key,
                code: "unknown_field")
        }
    }

    func isNumber(_ value: Any) -> Bool {
        guard let n = value as? NSNumber else { return false }
        // JSONSerialization's booleans are NSNumbers of ObjC type "c" (numbers: "i", "q", "d").
        return String(cString: n.objCType) != "c"
    }

    func string(_ key: String) throws -> String? {
        guard let value = object[key], !(value is NSNull) else { return nil }
        guard let s = value as? String else { throw wrongType(key, "a string") }
        return s
    }

    func int(_ key: String) throws -> Int? {
        guard let value = object[key], !(value is NSNull) else { return nil }
        guard isNumber(value), let n = value as? NSNumber, let i = Int(exactly: n.doubleValue) else {
            throw wrongType(key, "an integer")
        }
        return i
    }

    func stringArray(_ key: String) throws -> [String]? {
        guard let value = object[key], !(value is NSNull) else { return nil }
        guard let array = value as? [Any] else { throw wrongType(key, "an array of strings") }
        return try array.enumerated().map { index, item in
            guard let s = item as? String else {
                throw APIError.badRequest("expected a string", field: "\(prefix)\(key)[\(index)]", code: "wrong_type")
            }
            return s
        }
    }

    func stringMap(_ key: String) throws -> [String: String]? {
        guard let value = object[key], !(value is NSNull) else { return nil }
        guard let map = value as? [String: Any] else { throw wrongType(key, "an object of strings") }
        var out: [String: String] = [:]
        for (k, v) in map {
            guard let s = v as? String else {
                throw APIError.badRequest("expected a string", field: "\(prefix)\(key).\(k)", code: "wrong_type")
            }
            out[k] = s
        }
        return out
    }

    private func wrongType(_ key: String, _ expected: String) -> APIError {
        APIError.badRequest("expected \(expected)", field: prefix + key, code: "wrong_type")
    }
}
