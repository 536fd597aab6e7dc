import Glibc
import Testing

@testable import LinuxKernel

/// `ErrnoNames`: the one errno table (errno(3), asm-generic/errno-base.h and errno.h).
struct ErrnoNamesTests {
    @Test("names and numbers agree with the C library's constants")
    func glibcConstants() {
        let known: [(String, Int32)] = [
            ("EPERM", EPERM), ("ENOENT", ENOENT), ("EINTR", EINTR), ("EAGAIN", EAGAIN), ("ENOMEM", ENOMEM),
            ("EACCES", EACCES), ("EBUSY", EBUSY), ("EEXIST", EEXIST), ("EXDEV", EXDEV), ("ENOTDIR", ENOTDIR),
            ("EINVAL", EINVAL), ("ENOSPC", ENOSPC), ("EROFS", EROFS), ("EDEADLK", EDEADLK), ("ENOSYS", ENOSYS),
            ("ELOOP", ELOOP), ("ENOMSG", ENOMSG), ("EBFONT", EBFONT), ("EOVERFLOW", EOVERFLOW),
            ("EOPNOTSUPP", EOPNOTSUPP), ("EADDRINUSE", EADDRINUSE), ("ETIMEDOUT", ETIMEDOUT),
            ("ECONNREFUSED", ECONNREFUSED), ("ESTALE", ESTALE), ("EDQUOT", EDQUOT), ("ECANCELED", ECANCELED),
            ("EOWNERDEAD", EOWNERDEAD), ("ENOTRECOVERABLE", ENOTRECOVERABLE), ("ERFKILL", ERFKILL),
            ("EHWPOISON", EHWPOISON),
        ]
        for (name, code) in known {
            #expect(ErrnoNames.name(code) == name, "\(code)")
            #expect(ErrnoNames.number(name) == UInt32(code), "\(name)")
        }
    }

    @Test("aliases give the number of the name they stand for; name() gives the primary name")
    func aliases() {
        #expect(ErrnoNames.number("EWOULDBLOCK") == UInt32(EWOULDBLOCK))
        #expect(ErrnoNames.number("EDEADLOCK") == UInt32(EDEADLOCK))
        #expect(ErrnoNames.number("ENOTSUP") == UInt32(ENOTSUP))
        #expect(ErrnoNames.name(EWOULDBLOCK) == "EAGAIN")
        #expect(ErrnoNames.name(EDEADLOCK) == "EDEADLK")
        #expect(ErrnoNames.name(ENOTSUP) == "EOPNOTSUPP")
    }

    @Test("every number 1...133 but the unused 41 and 58 has a name that maps back to it")
    func roundTrip() {
        var unnamed: [Int32] = []
        for code: Int32 in 1...133 {
            guard let name = ErrnoNames.name(code) else {
                unnamed.append(code)
                continue
            }
            #expect(name.hasPrefix("E"))
            #expect(ErrnoNames.number(name) == UInt32(code), "\(name)")
        }
        #expect(unnamed == [41, 58])
    }

    @Test(
        "glibc's strerrorname_np(3) names every number the same way",
        .enabled(if: ErrnoNamesTests.strerrorname != nil, "glibc before 2.32"))
    func glibcNames() throws {
        let strerrorname = try #require(Self.strerrorname)
        for code: Int32 in 1...133 {
            let glibc = strerrorname(code).map { String(cString: $0) }
            #expect(ErrnoNames.name(code) == glibc, "\(code)")
        }
    }

    @Test("outside the table: nil")
    func unknown() {
        #expect(ErrnoNames.name(0) == nil)
        #expect(ErrnoNames.name(-1) == nil)
        #expect(ErrnoNames.name(134) == nil)
        #expect(ErrnoNames.name(4095) == nil)
        #expect(ErrnoNames.number("") == nil)
        #expect(ErrnoNames.number("EFOO") == nil)
        #expect(ErrnoNames.number("eperm") == nil)
    }

    private typealias StrerrorName = @convention(c) (Int32) -> UnsafePointer<CChar>?
    /// glibc's strerrorname_np (2.32+; a GNU extension Swift's Glibc module does not show).
    private static let strerrorname: StrerrorName? = {
        guard let sym = dlsym(nil, "strerrorname_np") else { return nil }
        return unsafeBitCast(sym, to: StrerrorName.self)
    }()
}
