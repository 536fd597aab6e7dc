/// Validation of a decoded `Sandbox`: every rule names the field it checks.

import OCI

extension Sandbox {
    /// Smallest and largest uid/gid a sandbox may run as. 0 (root) is refused: running as a
    /// non-root user is the product's promise. 65535 and above are left out so ids fit the
    /// 16-bit range every image and a later user-namespace mapping of 65536 ids can hold.
    public static let idRange: ClosedRange<Int64> = 1...65534

    /// Longest `spec.timeout`, in seconds (one day).
    public static let maxTimeout = 86_400

    /// Directories no writable path may be or lie under: the kernel's own filesystems,
    /// mounted by the policy itself.
    public static let reservedPaths = ["/proc", "/sys", "/dev"]

    /// At most this many `spec.filesystem.writablePaths`.
    public static let maxWritablePaths = 16

    /// Checks every field, including `resourceIssues()`, `securityLevelIssues()`, `seccompIssues()` and `notEnforceableYet()`.
    /// - Throws: `SandboxError` listing every issue found, each naming its field.
    public func validate() throws(SandboxError) {
        let issues =
            validationIssues() + resourceIssues() + securityLevelIssues() + seccompIssues() + notEnforceableYet()
        if !issues.isEmpty { throw SandboxError(issues) }
    }

    /// The issues of `validate()` other than the not-enforceable ones.
    public func validationIssues() -> [FieldIssue] {
        var issues: [FieldIssue] = []
        func invalid(_ field: String, _ message: String) {
            issues.append(FieldIssue(.invalidValue, field: field, message))
        }

        if apiVersion != Sandbox.apiVersion {
            invalid("apiVersion", "must be \(Sandbox.apiVersion), not \(quoted(apiVersion))")
        }
        if kind != Sandbox.kind {
            invalid("kind", "must be \(Sandbox.kind), not \(quoted(kind))")
        }

        if let name = metadata.name {
            if let problem = Sandbox.dns1123LabelProblem(name) { invalid("metadata.name", problem) }
        } else {
            issues.append(FieldIssue(.missingField, field: "metadata.name", "required"))
        }

        if let runtime = spec.runtime {
            if let problem = Sandbox.runtimeProblem(runtime) { invalid("spec.runtime", problem) }
        } else {
            issues.append(FieldIssue(.missingField, field: "spec.runtime", "required (e.g. \(Sandbox.defaultRuntime))"))
        }

        if let level = spec.securityLevel, !SecurityLevel.allCases.map(\.rawValue).contains(level) {
            let known = SecurityLevel.allCases.map(\.rawValue).joined(separator: ", ")
            invalid("spec.securityLevel", "\(quoted(level)) is not one of \(known)")
        }

        if let timeout = spec.timeout, !(1...Sandbox.maxTimeout).contains(timeout) {
            invalid("spec.timeout", "must be 1-\(Sandbox.maxTimeout) seconds, not \(timeout)")
        }

        if let context = spec.securityContext {
            for (field, id) in [("runAsUser", context.runAsUser), ("runAsGroup", context.runAsGroup)] {
                guard let id else { continue }
                let path = "spec.securityContext.\(field)"
                if id == 0 {
                    invalid(
                        path,
                        "0 is root; sandboxes run as a non-root id (\(Sandbox.idRange.lowerBound)-\(Sandbox.idRange.upperBound))"
                    )
                } else if !Sandbox.idRange.contains(id) {
                    invalid(path, "\(id) is out of range \(Sandbox.idRange.lowerBound)-\(Sandbox.idRange.upperBound)")
                }
            }
        }

        if let paths = spec.filesystem?.writablePaths {
            if paths.count > Sandbox.maxWritablePaths {
                invalid(
                    "spec.filesystem.writablePaths", "at most \(Sandbox.maxWritablePaths) paths, not \(paths.count)")
            }
            var seen = Set<String>()
            for (index, path) in paths.enumerated() {
                let field = "spec.filesystem.writablePaths[\(index)]"
                if let problem = Sandbox.writablePathProblem(path) {
                    invalid(field, problem)
                } else if !seen.insert(path).inserted {
                    invalid(field, "\(path) is listed twice")
                }
            }
        }

        for (index, rule) in (spec.networkAccess?.egress ?? []).enumerated() {
            let field = "spec.networkAccess.egress[\(index)]"
            switch (rule.domain, rule.cidr) {
            case (let domain?, nil):
                if let problem = Sandbox.domainProblem(domain) { invalid("\(field).domain", problem) }
            case (nil, let cidr?):
                if let problem = Sandbox.cidrProblem(cidr) { invalid("\(field).cidr", problem) }
            default:
                invalid(field, "give one of domain or cidr, not both")
            }
            for (portIndex, port) in (rule.ports ?? []).enumerated() {
                let portField = "\(field).ports[\(portIndex)]"
                if !(1...65535).contains(port.port) {
                    invalid("\(portField).port", "must be 1-65535, not \(port.port)")
                } else if rule.domain != nil, ![80, 443].contains(port.port) {
                    // A domain is reached through the egress filter's DNS and its HTTP/TLS proxy only.
                    invalid(
                        "\(portField).port",
                        "\(port.port): a domain is reached on ports 80 and 443 only (through the egress proxy); use a cidr rule for other ports"
                    )
                }
                if let proto = port.protocol, !["TCP", "UDP"].contains(proto) {
                    invalid("\(portField).protocol", "must be TCP or UDP, not \(quoted(proto))")
                } else if rule.domain != nil, port.protocol == "UDP" {
                    invalid("\(portField).protocol", "a domain is reached over TCP only (UDP other than DNS is denied)")
                }
            }
        }
        return issues
    }

    /// Why `name` is not a DNS-1123 label (RFC 1123: 1-63 of `[a-z0-9-]`, alphanumeric at
    /// both ends), or nil if it is one. The name is also the container id and hostname.
    public static func dns1123LabelProblem(_ name: String) -> String? {
        if name.isEmpty { return "must not be empty" }
        if name.utf8.count > 63 { return "\(quoted(name)) is longer than 63 characters" }
        let allowed = name.utf8.allSatisfy { isLowerAlnum($0) || $0 == UInt8(ascii: "-") }
        if !allowed || !isLowerAlnum(name.utf8.first!) || !isLowerAlnum(name.utf8.last!) {
            return
                "\(quoted(name)) is not a DNS-1123 label (lower-case letters, digits and '-', starting and ending with a letter or digit)"
        }
        return nil
    }

    /// Why `runtime` is not a `name:version` runtime reference (`python:3.11`), or nil.
    public static func runtimeProblem(_ runtime: String) -> String? {
        let parts = runtime.split(separator: ":", omittingEmptySubsequences: false)
        let nameOK =
            parts.first.map { part in
                !part.isEmpty && isLowerAlnum(part.utf8.first!)
                    && part.utf8.allSatisfy { isLowerAlnum($0) || "._-".utf8.contains($0) }
            } ?? false
        let versionOK =
            parts.count == 1
            || (parts.count == 2 && !parts[1].isEmpty
                && parts[1].utf8.allSatisfy { isLowerAlnum($0) || isUpper($0) || "._-".utf8.contains($0) })
        if !nameOK || !versionOK || runtime.utf8.count > 128 {
            return "\(quoted(runtime)) is not a runtime reference like python:3.11"
        }
        return nil
    }

    /// Why `path` cannot be a writable path, or nil: it must be absolute, normalized (no `.`,
    /// `..`, `//` or trailing `/`), not `/`, and not under `/proc`, `/sys` or `/dev`.
    public static func writablePathProblem(_ path: String) -> String? {
        guard path.hasPrefix("/") else { return "\(quoted(path)) is not an absolute path" }
        if path == "/" { return "/ cannot be a writable path; use spec.filesystem.readOnlyRoot: false" }
        if path.utf8.contains(where: { $0 < 0x20 || $0 == 0x7f }) {
            return "\(quoted(path)) contains control characters"
        }
        if path.utf8.count > 1024 { return "path is longer than 1024 bytes" }
        let components = path.dropFirst().split(separator: "/", omittingEmptySubsequences: false)
        if components.contains("..") { return "\(quoted(path)) contains '..'" }
        if components.contains(where: { $0.isEmpty || $0 == "." }) {
            return "\(quoted(path)) is not normalized (use \(quoted(normalized(path))))"
        }
        for reserved in reservedPaths where path == reserved || path.hasPrefix(reserved + "/") {
            return "\(path) is under \(reserved), which the sandbox mounts itself"
        }
        return nil
    }

    /// Why `domain` is not a host name pattern (`pypi.org`, `*.pythonhosted.org`), or nil.
    /// Why `cidr` is not an IPv4 prefix in CIDR notation (RFC 4632: four decimal octets
    /// without leading zeros, `/0`-`/32`, no host bits set), or nil.
    static func cidrProblem(_ cidr: String) -> String? {
        let parts = cidr.split(separator: "/", omittingEmptySubsequences: false)
        let octets = parts.first.map { $0.split(separator: ".", omittingEmptySubsequences: false) } ?? []
        let values = octets.compactMap { octet -> UInt32? in
            guard !octet.isEmpty, octet.count <= 3, octet.utf8.allSatisfy({ (48...57).contains($0) }),
                octet == "0" || !octet.hasPrefix("0"), let v = UInt32(octet), v <= 255
            else { return nil }
            return v
        }
        guard parts.count == 2, octets.count == 4, values.count == 4, !parts[1].isEmpty, parts[1].count <= 2,
            parts[1].utf8.allSatisfy({ (48...57).contains($0) }), let length = Int(parts[1]), length <= 32
        else { return "\(quoted(cidr)) is not an IPv4 CIDR prefix like 198.18.0.0/15" }
        let address = values.reduce(0) { $0 << 8 | $1 }
        let mask: UInt32 = length == 0 ? 0 : UInt32.max << UInt32(32 - length)
        if address & ~mask != 0 {
            let network = address & mask
            return
                "\(quoted(cidr)) has host bits set; the prefix is \(network >> 24).\(network >> 16 & 255).\(network >> 8 & 255).\(network & 255)/\(length)"
        }
        return nil
    }

    static func domainProblem(_ domain: String) -> String? {
        var name = Substring(domain)
        if name.hasPrefix("*.") { name = name.dropFirst(2) }
        let labels = name.split(separator: ".", omittingEmptySubsequences: false)
        let ok =
            !name.isEmpty && domain.utf8.count <= 253
            && labels.allSatisfy { label in
                !label.isEmpty && label.utf8.count <= 63 && label.first != "-" && label.last != "-"
                    && label.utf8.allSatisfy { isLowerAlnum($0) || isUpper($0) || $0 == UInt8(ascii: "-") }
            }
        return ok ? nil : "\(quoted(domain)) is not a domain name"
    }

    private static func normalized(_ path: String) -> String {
        var out: [Substring] = []
        for part in path.split(separator: "/") where part != "." {
            if part == ".." { _ = out.popLast() } else { out.append(part) }
        }
        return "/" + out.joined(separator: "/")
    }
}

private func isLowerAlnum(_ c: UInt8) -> Bool {
    (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(c) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c)
}

private func isUpper(_ c: UInt8) -> Bool { (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(c) }

func quoted(_ s: String) -> String { "\"\(s)\"" }
