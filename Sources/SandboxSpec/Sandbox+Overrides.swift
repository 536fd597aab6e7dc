/// Defaults and command-line overrides of a `Sandbox`.

/// Values given on a command line; each one that is set replaces the file's field.
public struct SandboxOverrides: Sendable, Equatable {
    /// `--name`: `metadata.name`.
    public var name: String?
    /// `--runtime`: `spec.runtime`.
    public var runtime: String?
    /// `--timeout`: `spec.timeout`, seconds.
    public var timeout: Int?

    public init(name: String? = nil, runtime: String? = nil, timeout: Int? = nil) {
        self.name = name
        self.runtime = runtime
        self.timeout = timeout
    }
}

extension Sandbox {
    /// The runtime of a sandbox that names none.
    public static let defaultRuntime = "python:3.11"

    /// `sandbox-` and 8 random hex digits.
    public static func generatedName() -> String {
        let hex = String(UInt32.random(in: .min ... .max), radix: 16)
        return "sandbox-" + String(repeating: "0", count: 8 - hex.count) + hex
    }

    /// This sandbox with `overrides` applied, then defaults for what is still unset: a
    /// generated `metadata.name` and `spec.runtime` `defaultRuntime`. Not validated.
    public func applying(
        _ overrides: SandboxOverrides, generateName: () -> String = Sandbox.generatedName
    ) -> Sandbox {
        var result = self
        if let name = overrides.name { result.metadata.name = name }
        if let runtime = overrides.runtime { result.spec.runtime = runtime }
        if let timeout = overrides.timeout { result.spec.timeout = timeout }
        if result.metadata.name == nil { result.metadata.name = generateName() }
        if result.spec.runtime == nil { result.spec.runtime = Sandbox.defaultRuntime }
        return result
    }
}
