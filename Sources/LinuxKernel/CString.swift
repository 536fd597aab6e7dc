extension String {
    /// The text of a NUL-terminated C buffer a syscall filled (`getcwd(3)`, `ptsname_r(3)`):
    /// the bytes up to the first NUL (all of them if there is none), as UTF-8.
    public init(nulTerminated buffer: [CChar]) {
        self.init(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
