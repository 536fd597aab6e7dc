/// Where a sandbox's seccomp profile comes from: the built-in profiles (seccomp/*.json,
/// embedded), profile files, and SandboxProfiles in the node's profile directory.
import Foundation
import SeccompFilters

/// The seccomp profiles and SandboxProfiles of this node.
///
/// - Built-in seccomp profiles, by name: `default` (what `standard` uses), `python`, `node`.
/// - `<directory>/<name>.yaml` (or `.yml`, `.json`): the SandboxProfile `name`. Without such a
///   file, `python` and `node` name built-in SandboxProfiles of their language and seccomp
///   profile, so `profileRef: {name: python}` works on any node.
/// - A Localhost profile path (`securityContext.seccompProfile.localhostProfile`) is absolute,
///   or relative to `directory` (no `..`).
public struct SeccompProfiles: Sendable {
    public static let defaultDirectory = "/etc/safespace/profiles"
    /// The built-in profile of the `standard` and `custom` levels.
    public static let defaultName = "default"
    /// The built-in profiles by name: the files of seccomp/, as text, embedded in the binary
    /// (`embedInCode` resources of this target, Package.swift).
    public static let builtin: [String: String] = [
        "default": String(decoding: PackageResources.default_json, as: UTF8.self),
        "python": String(decoding: PackageResources.python_json, as: UTF8.self),
        "node": String(decoding: PackageResources.node_json, as: UTF8.self),
    ]

    public var directory: String

    public init(directory: String = SeccompProfiles.defaultDirectory) {
        self.directory = directory
    }

    /// A seccomp profile: a built-in name, or a file (`relativeTo` for a relative path).
    /// - Returns: the profile and what to call it in messages (the name or the path).
    /// - Throws: `SandboxError` naming `field`.
    public func seccompProfile(_ reference: String, relativeTo base: String, field: String) throws(SandboxError) -> (
        SeccompProfile, source: String
    ) {
        if let text = Self.builtin[reference] {
            do {
                return (
                    try SeccompProfile.decode(Array(text.utf8), source: "built-in profile \(reference)"),
                    "built-in profile \(reference)"
                )
            } catch {
                throw SandboxError(.invalidValue, field: field, "\(error)")
            }
        }
        let path = reference.hasPrefix("/") ? reference : base + "/" + reference
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SandboxError(
                .invalidValue, field: field,
                "cannot read the seccomp profile \(path)\(reference.hasPrefix("/") ? "" : " (relative to \(base))")")
        }
        do {
            return (try SeccompProfile.decode(Array(data), source: path), path)
        } catch {
            throw SandboxError(.invalidValue, field: field, "\(error)")
        }
    }

    /// The SandboxProfile `name` and the directory its relative paths start from.
    /// - Throws: `SandboxError` naming `field` when there is no such profile or it is invalid.
    public func sandboxProfile(_ name: String, field: String) throws(SandboxError) -> (SandboxProfile, base: String) {
        if let problem = Sandbox.dns1123LabelProblem(name) { throw SandboxError(.invalidValue, field: field, problem) }
        for ext in ["yaml", "yml", "json"] {
            let path = "\(directory)/\(name).\(ext)"
            guard FileManager.default.fileExists(atPath: path) else { continue }
            let profile: SandboxProfile
            do { profile = try SandboxProfile.load(path: path) } catch {
                throw SandboxError(error.issues.map { FieldIssue($0.kind, field: field, "\(path): \($0.description)") })
            }
            if let actual = profile.metadata.name, actual != name {
                throw SandboxError(
                    .invalidValue, field: field, "\(path) holds the SandboxProfile \(actual), not \(name)")
            }
            return (profile, directory)
        }
        if name == "python" || name == "node" {
            return (
                SandboxProfile(
                    metadata: ObjectMeta(name: name), spec: SandboxProfileSpec(language: name, seccompProfile: name)),
                directory
            )
        }
        throw SandboxError(
            .invalidValue, field: field, "no SandboxProfile \(name) (looked for \(directory)/\(name).yaml, .yml, .json)"
        )
    }
}
