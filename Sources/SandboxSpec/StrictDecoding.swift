/// Strict decoding: a key the type does not declare is an error naming its path, not
/// something to drop. (Unlike OCI `config.json`, where runtimes must ignore unknown
/// properties, a `Sandbox` field that is silently dropped is a security setting that is
/// silently not applied.)

/// A coding key for any string, used to list every key a mapping really has.
struct AnyCodingKey: CodingKey {
    var stringValue: String
    var intValue: Int?

    init(stringValue: String) {
        self.stringValue = stringValue
        self.intValue = nil
    }

    init(intValue: Int) {
        self.stringValue = String(intValue)
        self.intValue = intValue
    }
}

extension Decoder {
    /// Throws `SandboxError` (`.unknownField`) for the first key of this mapping that `Keys`
    /// does not declare.
    func rejectUnknownKeys<Keys: CodingKey & CaseIterable>(_: Keys.Type) throws {
        let container = try container(keyedBy: AnyCodingKey.self)
        let known = Set(Keys.allCases.map(\.stringValue))
        // Sorted so that the error is the same from run to run.
        for key in container.allKeys.sorted(by: { $0.stringValue < $1.stringValue })
        where !known.contains(key.stringValue) {
            throw SandboxError(.unknownField, field: fieldPath(codingPath + [key]), "unknown field")
        }
    }
}

/// `[spec, filesystem, writablePaths, 1]` -> `spec.filesystem.writablePaths[1]`.
func fieldPath(_ path: [any CodingKey]) -> String {
    var result = ""
    for key in path {
        if let index = key.intValue {
            result += "[\(index)]"
        } else {
            result += result.isEmpty ? key.stringValue : ".\(key.stringValue)"
        }
    }
    return result
}

/// `spec.filesystem` + `writablePaths` -> `spec.filesystem.writablePaths`.
func fieldPath(_ parent: String, _ child: String) -> String {
    parent.isEmpty ? child : "\(parent).\(child)"
}

private enum ResourceHeaderKeys: String, CodingKey { case apiVersion, kind }

extension Decoder {
    /// `apiVersion` and `kind` of an `llmsafespace.dev/v1` resource, both required; their
    /// values are checked by the resource's validation.
    /// - Throws: `SandboxError(.missingField)` naming the missing one.
    func decodeResourceHeader(kind expectedKind: String) throws -> (apiVersion: String, kind: String) {
        let c = try container(keyedBy: ResourceHeaderKeys.self)
        guard let apiVersion = try c.decodeIfPresent(String.self, forKey: .apiVersion) else {
            throw SandboxError(.missingField, field: "apiVersion", "required (\(Sandbox.apiVersion))")
        }
        guard let kind = try c.decodeIfPresent(String.self, forKey: .kind) else {
            throw SandboxError(.missingField, field: "kind", "required (\(expectedKind))")
        }
        return (apiVersion, kind)
    }
}
