/// The `SandboxProfile` resource of `llmsafespace.dev/v1` (reference/security-model.md,
/// "Seccomp Profiles"): settings a `Sandbox` takes by naming the profile in `spec.profileRef`.
///
/// ```yaml
/// apiVersion: llmsafespace.dev/v1
/// kind: SandboxProfile
/// metadata:
///   name: custom-python
/// spec:
///   language: python
///   seccompProfile: profiles/python-restricted.json
/// ```
///
/// Decoding is strict, as for `Sandbox`.
public struct SandboxProfile: Codable, Sendable, Equatable {
    public static let kind = "SandboxProfile"

    public var apiVersion: String
    public var kind: String
    public var metadata: ObjectMeta
    public var spec: SandboxProfileSpec

    public init(metadata: ObjectMeta, spec: SandboxProfileSpec) {
        self.apiVersion = Sandbox.apiVersion
        self.kind = Self.kind
        self.metadata = metadata
        self.spec = spec
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case apiVersion, kind, metadata, spec
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        (apiVersion, kind) = try decoder.decodeResourceHeader(kind: Self.kind)
        self.metadata = try c.decodeIfPresent(ObjectMeta.self, forKey: .metadata) ?? .init()
        self.spec = try c.decodeIfPresent(SandboxProfileSpec.self, forKey: .spec) ?? .init()
    }

    /// Reads a SandboxProfile from a YAML or JSON file and checks apiVersion and kind.
    /// - Throws: `SandboxError` naming the file and the field.
    public static func load(path: String) throws(SandboxError) -> SandboxProfile {
        let profile = try Sandbox.loadResource(SandboxProfile.self, path: path)
        var issues: [FieldIssue] = []
        if profile.apiVersion != Sandbox.apiVersion {
            issues.append(FieldIssue(.invalidValue, field: "apiVersion", "\(path): must be \(Sandbox.apiVersion)"))
        }
        if profile.kind != kind {
            issues.append(FieldIssue(.invalidValue, field: "kind", "\(path): must be \(kind)"))
        }
        if let language = profile.spec.language, Sandbox.runtimeProblem(language + ":1") != nil {
            issues.append(
                FieldIssue(
                    .invalidValue, field: "spec.language",
                    "\(path): \"\(language)\" is not a language name (python, node)"))
        }
        if !issues.isEmpty { throw SandboxError(issues) }
        return profile
    }
}

/// `SandboxProfile.spec`.
public struct SandboxProfileSpec: Codable, Sendable, Equatable {
    /// The language of the runtimes the profile is for (`python`, `node`): a sandbox whose
    /// `spec.runtime` is another language cannot use it.
    public var language: String?
    /// A built-in seccomp profile (`default`, `python`, `node`) or the path of a profile file
    /// (Docker/Podman format; relative to the SandboxProfile's own file).
    public var seccompProfile: String?

    public init(language: String? = nil, seccompProfile: String? = nil) {
        self.language = language
        self.seccompProfile = seccompProfile
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case language, seccompProfile
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        language = try c.decodeIfPresent(String.self, forKey: .language)
        seccompProfile = try c.decodeIfPresent(String.self, forKey: .seccompProfile)
    }
}
