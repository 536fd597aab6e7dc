import Foundation

/// A Python package version as PEP 440 defines it ("Version Identification and Dependency
/// Specification", https://peps.python.org/pep-0440/), parsed with the spec's normalizations
/// and ordered by its rules: the form `[N!]N(.N)*[{a|b|rc}N][.postN][.devN][+local]`.
///
/// Normalization (PEP 440 "Normalization"): case-insensitive; a leading `v` is dropped;
/// `alpha`/`beta`/`c`/`pre`/`preview` are `a`/`b`/`rc`; `rev`/`r` are `post`; `-`, `_` and
/// `.` separators are optional before a pre, post or dev segment; a missing number is 0; an
/// implicit post release `1.0-1` is `1.0.post1`; local segments split on `.`, `-`, `_`.
///
/// Ordering (PEP 440 "Summary of permitted suffixes and relative ordering"): epoch, then
/// the release (trailing zeros ignored: `1.0 == 1.0.0`), then `X.devN < X.aN < X.bN < X.rcN
/// < X < X.postN`, with a dev release of a pre or post release before it (`1.0a1.dev1 <
/// 1.0a1`, `1.0.post1.dev1 < 1.0.post1`), then a local version after the same public one,
/// numeric local segments after alphanumeric ones (the order of the `packaging` library).
public struct PEP440Version: Comparable, Hashable, Sendable, CustomStringConvertible {
    public var epoch: Int
    public var release: [Int]
    /// `a`, `b` or `rc`, and its number.
    public var pre: (letter: String, number: Int)?
    public var post: Int?
    public var dev: Int?
    /// Local segments, lowercased (`+ubuntu.1` is `["ubuntu", "1"]`).
    public var local: [String]

    /// Parses `text`; nil when it is not a PEP 440 version.
    public init?(_ text: String) {
        var s = Substring(text.lowercased().trimmingCharacters(in: .whitespaces))
        if s.hasPrefix("v") { s = s.dropFirst() }
        epoch = 0
        release = []
        local = []
        // Local version.
        if let plus = s.firstIndex(of: "+") {
            let segments = s[s.index(after: plus)...].split(
                omittingEmptySubsequences: false, whereSeparator: { ".-_".contains($0) })
            guard !segments.isEmpty,
                segments.allSatisfy({ !$0.isEmpty && $0.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber) } })
            else { return nil }
            local = segments.map(String.init)
            s = s[..<plus]
        }
        // Epoch.
        if let bang = s.firstIndex(of: "!") {
            guard let e = Int(s[..<bang]), e >= 0 else { return nil }
            epoch = e
            s = s[s.index(after: bang)...]
        }
        // Release: digits separated by dots.
        func digits() -> Int? {
            let run = s.prefix { $0.isASCII && $0.isNumber }
            guard !run.isEmpty, let n = Int(run) else { return nil }
            s = s.dropFirst(run.count)
            return n
        }
        guard let first = digits() else { return nil }
        release = [first]
        while s.first == ".", s.dropFirst().first?.isNumber == true {
            s = s.dropFirst()
            guard let n = digits() else { return nil }
            release.append(n)
        }
        func separator() { if let c = s.first, ".-_".contains(c) { s = s.dropFirst() } }
        /// One of `words` at the front (after an optional separator), with its optional number.
        func segment(_ words: [(String, String)]) -> (String, Int)? {
            let saved = s
            separator()
            for (word, canonical) in words where s.hasPrefix(word) {
                s = s.dropFirst(word.count)
                let beforeNumber = s
                separator()
                if let n = digits() { return (canonical, n) }
                s = beforeNumber
                return (canonical, 0)
            }
            s = saved
            return nil
        }
        // Longer spellings first: "preview" before "pre", "rc" before "c".
        if let (letter, n) = segment([
            ("alpha", "a"), ("beta", "b"), ("preview", "rc"), ("pre", "rc"), ("rc", "rc"), ("a", "a"), ("b", "b"),
            ("c", "rc"),
        ]) {
            pre = (letter, n)
        }
        if let (_, n) = segment([("post", "post"), ("rev", "post"), ("r", "post")]) {
            post = n
        } else if s.first == "-", s.dropFirst().first?.isNumber == true {
            s = s.dropFirst()
            post = digits()
        }
        if let (_, n) = segment([("dev", "dev")]) { dev = n }
        guard s.isEmpty else { return nil }
    }

    /// The normalized form (`1.0a1.post2.dev3+local.1`).
    public var description: String {
        var out = epoch == 0 ? "" : "\(epoch)!"
        out += release.map(String.init).joined(separator: ".")
        if let pre { out += "\(pre.letter)\(pre.number)" }
        if let post { out += ".post\(post)" }
        if let dev { out += ".dev\(dev)" }
        if !local.isEmpty { out += "+" + local.joined(separator: ".") }
        return out
    }

    /// The release without trailing zeros (`1.0.0` orders and equals as `1`).
    private var trimmedRelease: [Int] {
        var r = release
        while r.count > 1, r.last == 0 { r.removeLast() }
        return r
    }

    /// The sort key of the `packaging` library (`_cmpkey`): each optional part mapped so that
    /// its absence orders as PEP 440 says.
    private var key: Key {
        let preKey: Bound
        if pre == nil, post == nil, dev != nil {
            preKey = .below  // 1.0.dev0 sorts before 1.0a0
        } else if let pre {
            preKey = .value(["a": 0, "b": 1, "rc": 2][pre.letter, default: 2], pre.number)
        } else {
            preKey = .above
        }
        return Key(
            epoch: epoch, release: trimmedRelease, pre: preKey, post: post.map { .value(0, $0) } ?? .below,
            dev: dev.map { .value(0, $0) } ?? .above, local: local)
    }

    private enum Bound: Comparable {
        case below
        case value(Int, Int)
        case above
    }

    private struct Key: Equatable {
        var epoch: Int
        var release: [Int]
        var pre: Bound
        var post: Bound
        var dev: Bound
        var local: [String]
    }

    public static func == (a: PEP440Version, b: PEP440Version) -> Bool { a.key == b.key }

    public func hash(into hasher: inout Hasher) {
        let k = key
        hasher.combine(k.epoch)
        hasher.combine(k.release)
        hasher.combine(k.local)
    }

    public static func < (a: PEP440Version, b: PEP440Version) -> Bool {
        let x = a.key
        let y = b.key
        if x.epoch != y.epoch { return x.epoch < y.epoch }
        if x.release != y.release { return x.release.lexicographicallyPrecedes(y.release) }
        if x.pre != y.pre { return x.pre < y.pre }
        if x.post != y.post { return x.post < y.post }
        if x.dev != y.dev { return x.dev < y.dev }
        return localPrecedes(x.local, y.local)
    }

    /// PEP 440 "Local version identifiers": no local sorts first; segments compare one by
    /// one, numbers numerically and after any alphanumeric segment, strings
    /// lexicographically; a longer local version with an equal prefix sorts after.
    private static func localPrecedes(_ a: [String], _ b: [String]) -> Bool {
        for (x, y) in zip(a, b) where x != y {
            switch (Int(x), Int(y)) {
            case let (m?, n?): if m != n { return m < n }
            case (nil, _?): return true
            case (_?, nil): return false
            case (nil, nil): return x < y
            }
        }
        return a.count < b.count
    }
}
