import Glibc
import Testing

@testable import LinuxKernel

/// A fresh directory under /tmp for one test; `removeTree` it when done.
func scratchDirectory(_ name: String) throws -> String {
    let path = "/tmp/safespace-linuxkernel-\(name)-\(getpid())-\(UInt32.random(in: 0 ... .max))"
    try Files.makeDirectories(path)
    return path
}

/// The permission bits of `path` (lstat(2)).
func permissions(_ path: String) -> mode_t? {
    var st = stat()
    return lstat(path, &st) == 0 ? st.st_mode & 0o7777 : nil
}

/// `Files`: whole-file reads and writes with errno-carrying errors, directories, removal that
/// never follows a symlink nor crosses a mount; `FileLock`; `String.trimmed`.
struct FilesTests {
    @Test("writeAtomically then read returns the bytes, past one 64 KiB read; the file gets the mode, no .tmp is left")
    func roundTrip() throws {
        let dir = try scratchDirectory("files")
        defer { try? Files.removeTree(dir) }
        let bytes = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        try Files.writeAtomically(dir + "/f", bytes)
        #expect(try Files.read(dir + "/f") == bytes)
        #expect(permissions(dir + "/f") == 0o600)
        #expect(!Files.exists(dir + "/f.tmp"))
        try Files.writeAtomically(dir + "/f", Array("short\n".utf8), mode: 0o644)
        #expect(try Files.readString(dir + "/f") == "short\n")
        #expect(Files.entries(dir) == ["f"])
    }

    @Test("read of a missing file throws SysError(open, path, ENOENT)")
    func readMissing() throws {
        let path = "/nonexistent-safespace-\(getpid())/x"
        let error = #expect(throws: SysError.self) { try Files.read(path) }
        #expect(error?.operation == "open")
        #expect(error?.path == path)
        #expect(error?.errno == ENOENT)
    }

    @Test("write goes to an existing file without truncating or creating it (sysctl, cgroup files)")
    func writeExisting() throws {
        let dir = try scratchDirectory("write")
        defer { try? Files.removeTree(dir) }
        try Files.writeAtomically(dir + "/f", Array("xyz".utf8))
        try Files.write(dir + "/f", "ab")
        #expect(try Files.readString(dir + "/f") == "abz")
        let error = #expect(throws: SysError.self) { try Files.write(dir + "/missing", "1") }
        #expect(error?.errno == ENOENT)
        #expect(!Files.exists(dir + "/missing"))
    }

    @Test("readAll and writeAll move every byte through a pipe")
    func pipeRoundTrip() throws {
        var fds: [Int32] = [0, 0]
        try #require(pipe(&fds) == 0)
        let bytes = Array("through a pipe".utf8)
        try Files.writeAll(fd: fds[1], bytes)
        close(fds[1])
        defer { close(fds[0]) }
        #expect(try Files.readAll(fd: fds[0]) == bytes)
    }

    @Test("exists does not follow a symlink; isDirectory does")
    func existsAndIsDirectory() throws {
        let dir = try scratchDirectory("exists")
        defer { try? Files.removeTree(dir) }
        try #require(symlink(dir + "/nowhere", dir + "/dangling") == 0)
        try #require(symlink(dir, dir + "/self") == 0)
        try Files.writeAtomically(dir + "/file", [])
        #expect(Files.exists(dir + "/dangling"))
        #expect(!Files.isDirectory(dir + "/dangling"))
        #expect(Files.isDirectory(dir + "/self"))
        #expect(Files.isDirectory(dir))
        #expect(!Files.isDirectory(dir + "/file"))
        #expect(!Files.exists(dir + "/nowhere"))
    }

    @Test("makeDirectories is mkdir -p with the mode for what it creates; a file in the way is ENOTDIR")
    func makeDirectories() throws {
        let dir = try scratchDirectory("mkdir")
        defer { try? Files.removeTree(dir) }
        try Files.makeDirectories(dir + "/a/b/c", mode: 0o700)
        try Files.makeDirectories(dir + "/a/b/c", mode: 0o700)  // exists: no error
        #expect(Files.isDirectory(dir + "/a/b/c"))
        #expect(permissions(dir + "/a") == 0o700)
        #expect(permissions(dir + "/a/b/c") == 0o700)
        try Files.writeAtomically(dir + "/file", [])
        let error = #expect(throws: SysError.self) { try Files.makeDirectories(dir + "/file/sub") }
        #expect(error?.operation == "mkdir")
        #expect(error?.path == dir + "/file/sub")
        #expect(error?.errno == ENOTDIR)
    }

    @Test("entries lists names without . and ..; nil for a directory that cannot be opened")
    func entries() throws {
        let dir = try scratchDirectory("entries")
        defer { try? Files.removeTree(dir) }
        #expect(Files.entries(dir) == [])
        for name in ["one", "two words", ".hidden"] { try Files.writeAtomically(dir + "/" + name, []) }
        try Files.makeDirectories(dir + "/sub")
        #expect(Set(try #require(Files.entries(dir))) == ["one", "two words", ".hidden", "sub"])
        #expect(Files.entries(dir + "/one") == nil)
        #expect(Files.entries(dir + "/missing") == nil)
    }

    @Test("removeTree removes a tree but not what its symlinks point to; a missing path is no error")
    func removeTree() throws {
        let dir = try scratchDirectory("rm")
        defer { try? Files.removeTree(dir) }
        try Files.makeDirectories(dir + "/outside")
        try Files.writeAtomically(dir + "/outside/keep", Array("kept".utf8))
        try Files.makeDirectories(dir + "/tree/a/b")
        try Files.writeAtomically(dir + "/tree/a/b/f", [1, 2, 3])
        try #require(symlink(dir + "/outside", dir + "/tree/a/link") == 0)
        try Files.removeTree(dir + "/tree")
        #expect(!Files.exists(dir + "/tree"))
        #expect(try Files.readString(dir + "/outside/keep") == "kept")
        try Files.removeTree(dir + "/tree")
        try Files.writeAtomically(dir + "/plain", [])
        try Files.removeTree(dir + "/plain")
        #expect(!Files.exists(dir + "/plain"))
    }

    @Test(
        "removeTree refuses to descend into a mount point and leaves the mount's files",
        .enabled(if: getuid() == 0, "needs root to mount"))
    func removeTreeStopsAtMount() throws {
        let dir = try scratchDirectory("rm-mount")
        defer { try? Files.removeTree(dir) }
        try Files.makeDirectories(dir + "/tree/m")
        try mount(source: "tmpfs", target: dir + "/tree/m", type: "tmpfs", flags: 0, data: "size=1m")
        defer { umount2(dir + "/tree/m", Int32(MNT_DETACH)) }
        try Files.writeAtomically(dir + "/tree/m/f", Array("on tmpfs".utf8))
        let error = #expect(throws: SysError.self) { try Files.removeTree(dir + "/tree") }
        #expect(error?.code == .refused)
        #expect(error?.path == dir + "/tree/m")
        #expect(error?.description == "refusing to remove \(dir)/tree/m: a mount point")
        #expect(try Files.readString(dir + "/tree/m/f") == "on tmpfs")
    }

    @Test("FileLock holds flock(2) on the file until release; another open description cannot take it meanwhile")
    func fileLock() throws {
        let dir = try scratchDirectory("lock")
        defer { try? Files.removeTree(dir) }
        let lock = try FileLock(path: dir + "/lock")
        #expect(permissions(dir + "/lock") == 0o600)
        let other = open(dir + "/lock", O_RDWR | O_CLOEXEC)
        try #require(other >= 0)
        defer { close(other) }
        #expect(flock(other, LOCK_EX | LOCK_NB) == -1 && errno == EWOULDBLOCK)
        lock.release()
        lock.release()  // idempotent
        #expect(flock(other, LOCK_EX | LOCK_NB) == 0)
        #expect(flock(other, LOCK_UN) == 0)
    }

    @Test("trimmed drops leading and trailing spaces, tabs and newlines only")
    func trimmed() {
        #expect(" \t 42\n\r".trimmed == "42")
        #expect("a b\tc".trimmed == "a b\tc")
        #expect(" \n\t".trimmed == "")
        #expect("".trimmed == "")
        #expect("\u{a0}x".trimmed == "\u{a0}x")
    }
}
