#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// A seccomp profile in the Docker/Podman format (moby's profiles/seccomp, containers/common's
/// pkg/seccomp), which `safespace run --seccomp`, SandboxProfiles and the files in `seccomp/`
/// use. OCI `linux.seccomp` is the subset without `archMap`, `includes`/`excludes`, `name`,
/// `comment` and the errno names, so an OCI seccomp object is a profile too.
///
/// Decoding is strict: a key this type does not declare is an error naming its path
/// (`syscalls[4].actoin: unknown field`), since a typo in a security policy must not pass.
/// `resolved(for:)` turns the profile into OCI `linux.seccomp` for one sandbox.
public struct SeccompProfile: Decodable, Sendable, Equatable {
    public var defaultAction: String
    public var defaultErrnoRet: UInt32?
    /// Podman: the name of `defaultErrnoRet` (`ENOSYS`).
    public var defaultErrno: String?
    /// Either this or `archMap`.
    public var architectures: [String]?
    /// Sub-architectures per native architecture: the entry of the native one applies.
    public var archMap: [ArchMap]?
    public var syscalls: [Syscall]?
    public var flags: [String]?
    public var listenerPath: String?
    public var listenerMetadata: String?

    public struct ArchMap: Decodable, Sendable, Equatable {
        public var architecture: String
        public var subArchitectures: [String]?
    }

    public struct Syscall: Decodable, Sendable, Equatable {
        /// Docker's older single-name form; either this or `names`.
        public var name: String?
        public var names: [String]?
        public var action: String
        public var errnoRet: UInt32?
        /// Podman: the name of `errnoRet` (`EPERM`).
        public var errno: String?
        public var args: [Arg]?
        public var comment: String?
        /// The entry applies only if all of these hold.
        public var includes: Filter?
        /// The entry applies only if none of these holds.
        public var excludes: Filter?
    }

    /// `includes` / `excludes`: capabilities of the process's bounding set, native
    /// architecture names in Docker's spelling (`amd64`, `arm64`, `x86`), and a kernel version.
    public struct Filter: Decodable, Sendable, Equatable {
        public var caps: [String]?
        public var arches: [String]?
        public var minKernel: String?
    }

    /// For SCMP_CMP_MASKED_EQ `value` is the mask and `valueTwo` the datum.
    public struct Arg: Decodable, Sendable, Equatable {
        public var index: UInt32
        public var value: UInt64
        public var valueTwo: UInt64?
        public var op: String
    }

    /// Decodes a profile from JSON.
    /// - Parameter source: named in errors (a path, or `--seccomp`).
    /// - Throws: `SeccompError` naming `source` and the JSON path at fault.
    public static func decode(_ bytes: [UInt8], source: String) throws -> SeccompProfile {
        do {
            return try JSONDecoder().decode(SeccompProfile.self, from: Data(bytes))
        } catch let error as DecodingError {
            throw SeccompError(.invalidProfile, describe(error), field: source, operation: "decode")
        } catch let error as SeccompError {
            throw SeccompError(
                error.code, error.description, field: source, operation: error.operation, errno: error.errno)
        } catch {
            throw SeccompError(.invalidProfile, "\(error)", field: source, operation: "decode")
        }
    }

    static func describe(_ error: DecodingError) -> String {
        func path(_ ctx: DecodingError.Context) -> String {
            ctx.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined().drop { $0 == "." }
                .description
        }
        switch error {
        case .typeMismatch(let type, let ctx): return "\(path(ctx)): expected \(type)"
        case .valueNotFound(_, let ctx): return "\(path(ctx)): missing value"
        case .keyNotFound(let key, let ctx):
            let p = path(ctx)
            return "\(p.isEmpty ? "" : p + ".")\(key.stringValue): missing"
        case .dataCorrupted(let ctx):
            return path(ctx).isEmpty ? "not JSON: \(ctx.debugDescription)" : "\(path(ctx)): \(ctx.debugDescription)"
        @unknown default: return "\(error)"
        }
    }
}

// MARK: strict decoding

struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

extension Decoder {
    /// Fails with `dataCorrupted` at the unknown key's path when the object has a key not in `known`.
    func rejectUnknownKeys(_ known: Set<String>) throws {
        let c = try container(keyedBy: AnyKey.self)
        for key in c.allKeys where !known.contains(key.stringValue) {
            throw DecodingError.dataCorrupted(.init(codingPath: codingPath + [key], debugDescription: "unknown field"))
        }
    }
}

extension KeyedDecodingContainer {
    /// An integer field that fits `T`. Foundation reports a negative or too large number as
    /// "not valid JSON" without a path; this names the field and the range instead.
    func decodeInteger<T: FixedWidthInteger & Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
        guard contains(key), try !decodeNil(forKey: key) else { return nil }
        if let value = try? decode(T.self, forKey: key) { return value }
        let shown: String
        if let i = try? decode(Int64.self, forKey: key) {
            shown = String(i)
        } else if let d = try? decode(Double.self, forKey: key) {
            shown = String(d)
        } else {
            throw DecodingError.typeMismatch(
                T.self, .init(codingPath: codingPath + [key], debugDescription: "expected an integer"))
        }
        throw DecodingError.dataCorrupted(
            .init(
                codingPath: codingPath + [key], debugDescription: "\(shown) is not an integer from \(T.min) to \(T.max)"
            ))
    }
}

extension SeccompProfile {
    enum CodingKeys: String, CodingKey, CaseIterable {
        case defaultAction, defaultErrnoRet, defaultErrno, architectures, archMap, syscalls, flags, listenerPath,
            listenerMetadata
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(Set(CodingKeys.allCases.map(\.rawValue)))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        defaultAction = try c.decode(String.self, forKey: .defaultAction)
        defaultErrnoRet = try c.decodeInteger(UInt32.self, forKey: .defaultErrnoRet)
        defaultErrno = try c.decodeIfPresent(String.self, forKey: .defaultErrno)
        architectures = try c.decodeIfPresent([String].self, forKey: .architectures)
        archMap = try c.decodeIfPresent([ArchMap].self, forKey: .archMap)
        syscalls = try c.decodeIfPresent([Syscall].self, forKey: .syscalls)
        flags = try c.decodeIfPresent([String].self, forKey: .flags)
        listenerPath = try c.decodeIfPresent(String.self, forKey: .listenerPath)
        listenerMetadata = try c.decodeIfPresent(String.self, forKey: .listenerMetadata)
    }

    /// A profile in code (tests, conversions).
    public init(
        defaultAction: String, defaultErrnoRet: UInt32? = nil, architectures: [String]? = nil,
        syscalls: [Syscall]? = nil
    ) {
        self.defaultAction = defaultAction
        self.defaultErrnoRet = defaultErrnoRet
        self.architectures = architectures
        self.syscalls = syscalls
    }
}

extension SeccompProfile.ArchMap {
    enum CodingKeys: String, CodingKey, CaseIterable { case architecture, subArchitectures }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(Set(CodingKeys.allCases.map(\.rawValue)))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        architecture = try c.decode(String.self, forKey: .architecture)
        subArchitectures = try c.decodeIfPresent([String].self, forKey: .subArchitectures)
    }
}

extension SeccompProfile.Syscall {
    enum CodingKeys: String, CodingKey, CaseIterable {
        case name, names, action, errnoRet, errno, args, comment, includes, excludes
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(Set(CodingKeys.allCases.map(\.rawValue)))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decodeIfPresent(String.self, forKey: .name)
        names = try c.decodeIfPresent([String].self, forKey: .names)
        action = try c.decode(String.self, forKey: .action)
        errnoRet = try c.decodeInteger(UInt32.self, forKey: .errnoRet)
        errno = try c.decodeIfPresent(String.self, forKey: .errno)
        args = try c.decodeIfPresent([SeccompProfile.Arg].self, forKey: .args)
        comment = try c.decodeIfPresent(String.self, forKey: .comment)
        includes = try c.decodeIfPresent(SeccompProfile.Filter.self, forKey: .includes)
        excludes = try c.decodeIfPresent(SeccompProfile.Filter.self, forKey: .excludes)
    }

    public init(
        names: [String], action: String, errnoRet: UInt32? = nil, args: [SeccompProfile.Arg]? = nil,
        includes: SeccompProfile.Filter? = nil, excludes: SeccompProfile.Filter? = nil
    ) {
        self.names = names
        self.action = action
        self.errnoRet = errnoRet
        self.args = args
        self.includes = includes
        self.excludes = excludes
    }
}

extension SeccompProfile.Filter {
    enum CodingKeys: String, CodingKey, CaseIterable { case caps, arches, minKernel }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(Set(CodingKeys.allCases.map(\.rawValue)))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        caps = try c.decodeIfPresent([String].self, forKey: .caps)
        arches = try c.decodeIfPresent([String].self, forKey: .arches)
        minKernel = try c.decodeIfPresent(String.self, forKey: .minKernel)
    }
}

extension SeccompProfile.Arg {
    enum CodingKeys: String, CodingKey, CaseIterable { case index, value, valueTwo, op }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(Set(CodingKeys.allCases.map(\.rawValue)))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        guard let index = try c.decodeInteger(UInt32.self, forKey: .index) else {
            throw DecodingError.keyNotFound(
                CodingKeys.index, .init(codingPath: c.codingPath, debugDescription: "missing"))
        }
        guard let value = try c.decodeInteger(UInt64.self, forKey: .value) else {
            throw DecodingError.keyNotFound(
                CodingKeys.value, .init(codingPath: c.codingPath, debugDescription: "missing"))
        }
        self.index = index
        self.value = value
        valueTwo = try c.decodeInteger(UInt64.self, forKey: .valueTwo)
        op = try c.decode(String.self, forKey: .op)
    }
}
