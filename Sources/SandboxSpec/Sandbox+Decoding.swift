/// Reading a `Sandbox` from YAML or JSON text.
import Foundation
import Yams

#if canImport(Glibc)
    import Glibc
#endif

extension Sandbox {
    /// Decodes one `Sandbox` from YAML or JSON (a JSON document is YAML; Yams reads both).
    ///
    /// Decoding only: call `validate()` before using the result.
    /// - Throws: `SandboxError` naming the field: `.syntax` for text that is not one YAML/JSON
    ///   document, `.duplicateField`, `.unknownField`, `.wrongType`, `.missingField`.
    public static func decode(yaml text: String) throws(SandboxError) -> Sandbox {
        try decodeResource(Sandbox.self, yaml: text)
    }

    /// `decode(yaml:)` for any strict resource type of llmsafespace.dev/v1 (`SandboxProfile`).
    static func decodeResource<T: Decodable>(_ type: T.Type, yaml text: String) throws(SandboxError) -> T {
        // Pass 1: the node tree, for what Codable cannot see: duplicate keys (Yams keeps the
        // last one, which would let a second `runAsUser:` silently win) and the top-level shape.
        let root: Node
        do {
            guard let node = try Parser(yaml: text).singleRoot() else {
                throw SandboxError(.syntax, field: "", "empty document: expected a Sandbox mapping")
            }
            root = node
        } catch let error as SandboxError {
            throw error
        } catch {
            throw SandboxError(.syntax, field: "", "not valid YAML or JSON: \(error)")
        }
        guard root.mapping != nil else {
            throw SandboxError(.wrongType, field: "", "expected a mapping (apiVersion, kind, metadata, spec)")
        }
        try rejectDuplicateKeys(root, path: "")

        // Pass 2: typed, strict decoding.
        do {
            return try YAMLDecoder().decode(T.self, from: text)
        } catch let error as SandboxError {
            throw error
        } catch let error as DecodingError {
            // Yams wraps errors thrown by `init(from:)` (our unknown-field errors) in
            // `.dataCorrupted`; unwrap them.
            if case .dataCorrupted(let context) = error, let inner = context.underlyingError as? SandboxError {
                throw inner
            }
            throw SandboxError([issue(for: error)])
        } catch {
            throw SandboxError(.syntax, field: "", "\(error)")
        }
    }

    /// Decodes a `Sandbox` from UTF-8 YAML or JSON bytes.
    public static func decode(data: Data) throws(SandboxError) -> Sandbox {
        guard let text = String(data: data, encoding: .utf8) else {
            throw SandboxError(.syntax, field: "", "not UTF-8 text")
        }
        return try decode(yaml: text)
    }

    /// Reads and decodes the file at `path` (`-` reads standard input).
    /// - Throws: `SandboxError`; a file that cannot be read is a `.syntax` issue naming the path.
    public static func load(path: String) throws(SandboxError) -> Sandbox {
        try loadResource(Sandbox.self, path: path)
    }

    /// `load(path:)` for any strict resource type of llmsafespace.dev/v1 (`SandboxProfile`).
    static func loadResource<T: Decodable>(_ type: T.Type, path: String) throws(SandboxError) -> T {
        let data: Data
        if path == "-" {
            data = FileHandle.standardInput.readDataToEndOfFile()
        } else {
            // open(2)/read(2) rather than Data(contentsOf:): works for pipes and /dev/fd/N and
            // reports the real errno.
            guard let handle = FileHandle(forReadingAtPath: path) else {
                throw SandboxError(.syntax, field: "", "cannot read \(path): \(String(cString: strerror(errno)))")
            }
            defer { try? handle.close() }
            do { data = try handle.readToEnd() ?? Data() } catch {
                throw SandboxError(.syntax, field: "", "cannot read \(path): \(String(cString: strerror(errno)))")
            }
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw SandboxError(.syntax, field: "", "\(path): not UTF-8 text")
        }
        do {
            return try decodeResource(T.self, yaml: text)
        } catch {
            // Prefix document-level problems with the file name.
            throw SandboxError(
                error.issues.map { issue in
                    var issue = issue
                    if issue.field.isEmpty { issue.message = "\(path): \(issue.message)" }
                    return issue
                })
        }
    }

    private static func rejectDuplicateKeys(_ node: Node, path: String) throws(SandboxError) {
        switch node {
        case .scalar:
            return
        case .sequence(let sequence):
            for (index, element) in sequence.enumerated() {
                try rejectDuplicateKeys(element, path: "\(path)[\(index)]")
            }
        case .mapping(let mapping):
            var seen = Set<String>()
            for (key, value) in mapping {
                let name = key.string ?? "\(key)"
                let childPath = fieldPath(path, name)
                guard seen.insert(name).inserted else {
                    throw SandboxError(.duplicateField, field: childPath, "duplicate field")
                }
                try rejectDuplicateKeys(value, path: childPath)
            }
        }
    }

    /// A `DecodingError` from Yams as an issue that names the field.
    static func issue(for error: DecodingError) -> FieldIssue {
        switch error {
        case .typeMismatch(let type, let context):
            return FieldIssue(.wrongType, field: fieldPath(context.codingPath), "expected \(describe(type))")
        case .valueNotFound(let type, let context):
            return FieldIssue(
                .wrongType, field: fieldPath(context.codingPath), "expected \(describe(type)), found null")
        case .keyNotFound(let key, let context):
            return FieldIssue(.missingField, field: fieldPath(context.codingPath + [key]), "required")
        case .dataCorrupted(let context):
            return FieldIssue(.wrongType, field: fieldPath(context.codingPath), context.debugDescription)
        @unknown default:
            return FieldIssue(.syntax, field: "", "\(error)")
        }
    }

    /// `Int.self` -> "an integer", for messages a user reads.
    private static func describe(_ type: Any.Type) -> String {
        let name = String(describing: type)
        switch name {
        case "Int", "Int64", "Int32", "UInt32", "UInt64": return "an integer"
        case "Bool": return "a boolean (true or false)"
        case "String": return "a string"
        default:
            if name.contains("Sequence") || name.hasPrefix("Array") { return "a list" }
            if name.contains("Mapping") || name.hasPrefix("Dictionary") { return "a mapping" }
            if name.contains("Scalar") { return "a single value, not a list or mapping" }
            return name
        }
    }
}
