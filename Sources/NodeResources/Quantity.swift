/// Kubernetes resource quantities (`"1"`, `"500m"`, `"1.5"`, `"1Gi"`, `"512Mi"`, `"1G"`), as
/// `spec.resources` writes them (k8s.io/apimachinery resource.Quantity, the forms people use).
///
/// Suffixes: binary `Ki Mi Gi Ti Pi Ei` (powers of 1024), decimal `k M G T P E` (powers of
/// 1000), `m` (1/1000). Exponents (`1e3`) and signs other than a leading `+` are refused.
public enum Quantity {
    static let binary: [String: Int] = ["Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60]
    static let decimal: [String: Int] = ["k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18]

    /// The value times 1000 (milli-units), rounded up, so `"500m"` is 500 and `"2"` is 2000.
    /// - Throws: `ResourceError` naming `field` for text that is not a non-negative quantity,
    ///   or one too large for 64 bits.
    public static func milli(_ text: String, field: String) throws(ResourceError) -> Int64 {
        let (digits, fraction, suffix) = try split(text, field: field)
        // value = (digits.fraction) * 10^d * 2^b * 1000 (for milli)
        var scale10 = 3
        var shift2 = 0
        if suffix == "m" {
            scale10 = 0
        } else if let e = decimal[suffix] {
            scale10 += e
        } else if let b = binary[suffix] {
            shift2 = b
        } else if !suffix.isEmpty {
            throw ResourceError(
                .invalidValue, field: field,
                "\(q(text)): unknown suffix \(q(suffix)); use m, k, M, G, T, Ki, Mi, Gi or Ti")
        }
        return try compose(
            digits: digits, fraction: fraction, scale10: scale10, shift2: shift2, text: text, field: field)
    }

    /// A byte count: `"1Gi"` is 1073741824, `"1G"` 1000000000, `"1.5Ki"` 1536; a fraction of a
    /// byte rounds up. `m` is refused (a thousandth of a byte means a typo).
    /// - Throws: `ResourceError` naming `field`.
    public static func bytes(_ text: String, field: String) throws(ResourceError) -> Int64 {
        let (digits, fraction, suffix) = try split(text, field: field)
        var scale10 = 0
        var shift2 = 0
        if let e = decimal[suffix] {
            scale10 = e
        } else if let b = binary[suffix] {
            shift2 = b
        } else if !suffix.isEmpty {
            throw ResourceError(
                .invalidValue, field: field,
                "\(q(text)): \(q(suffix)) is not a byte suffix; use Ki, Mi, Gi, Ti (or k, M, G, T)")
        }
        return try compose(
            digits: digits, fraction: fraction, scale10: scale10, shift2: shift2, text: text, field: field)
    }

    static func q(_ s: String) -> String { "\"\(s)\"" }

    static func split(_ text: String, field: String) throws(ResourceError) -> (String, String, String) {
        var s = Substring(text)
        if s.hasPrefix("+") { s = s.dropFirst() }
        let number = s.prefix { $0.isASCII && ($0.isNumber || $0 == ".") }
        let suffix = String(s.dropFirst(number.count))
        let parts = number.split(separator: ".", omittingEmptySubsequences: false)
        guard !number.isEmpty, parts.count <= 2, parts.allSatisfy({ !$0.isEmpty || parts.count == 2 }),
            !(parts.count == 2 && parts[0].isEmpty && parts[1].isEmpty)
        else {
            if text.hasPrefix("-") {
                throw ResourceError(.invalidValue, field: field, "\(q(text)) is negative")
            }
            throw ResourceError(
                .invalidValue, field: field,
                "\(q(text)) is not a quantity such as \"500m\", \"2\", \"512Mi\" or \"1Gi\"")
        }
        return (String(parts[0]), parts.count == 2 ? String(parts[1]) : "", suffix)
    }

    /// (digits.fraction) * 10^scale10 * 2^shift2, rounded up, checked for overflow.
    static func compose(digits: String, fraction: String, scale10: Int, shift2: Int, text: String, field: String)
        throws(ResourceError) -> Int64
    {
        let tooBig = ResourceError(.invalidValue, field: field, "\(q(text)) is too large")
        // Work in integers: mantissa = digits+fraction, then divide by 10^fraction.count.
        let mantissaText = (digits + fraction).drop { $0 == "0" }
        guard mantissaText.count <= 19 else { throw tooBig }
        var mantissa: Int64 = 0
        for ch in mantissaText {
            let (m1, o1) = mantissa.multipliedReportingOverflow(by: 10)
            let (m2, o2) = m1.addingReportingOverflow(Int64(ch.wholeNumberValue!))
            if o1 || o2 { throw tooBig }
            mantissa = m2
        }
        var exp10 = scale10 - fraction.count
        var v = mantissa
        while exp10 > 0 {
            let (m, o) = v.multipliedReportingOverflow(by: 10)
            if o { throw tooBig }
            v = m
            exp10 -= 1
        }
        if shift2 > 0 {
            guard v == 0 || v.leadingZeroBitCount > shift2 else { throw tooBig }
            v <<= shift2
        }
        if exp10 < 0 {
            var divisor: Int64 = 1
            for _ in 0..<(-exp10) { divisor *= 10 }
            v = v / divisor + (v % divisor == 0 ? 0 : 1)
        }
        return v
    }
}
