import CSeccomp

/// The libseccomp this program runs with.
public enum Libseccomp {
    /// `major.minor.micro` from seccomp_version(3), e.g. `2.5.4` (what `runc --version` prints).
    public static var version: String {
        let v = seccomp_version().pointee
        return "\(v.major).\(v.minor).\(v.micro)"
    }
}
