import Glibc
import Testing

@testable import LinuxKernel

/// `MountInfo`: the one parser of /proc/PID/mountinfo (proc(5)).
struct MountInfoTests {
    @Test("proc(5)'s example line: root, mount point, file system type, super options")
    func manPageExample() {
        let mounts = MountInfo.parse(
            "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n")
        #expect(
            mounts == [
                MountInfo(
                    root: "/mnt1", mountPoint: "/mnt/parent", fstype: "ext3", superOptions: ["rw", "errors=continue"])
            ])
    }

    @Test("zero or several optional fields before the separator")
    func optionalFields() {
        let text = """
            25 30 0:23 / /sys rw,nosuid - sysfs sysfs rw
            30 1 8:1 / / rw,relatime shared:1 master:2 propagate_from:3 - ext4 /dev/sda1 rw,errors=remount-ro
            """
        let mounts = MountInfo.parse(text)
        #expect(mounts.map(\.mountPoint) == ["/sys", "/"])
        #expect(mounts.map(\.fstype) == ["sysfs", "ext4"])
        #expect(mounts[1].superOptions == ["rw", "errors=remount-ro"])
    }

    @Test("octal escapes in paths are undone: space, tab, newline, backslash")
    func escapedPaths() {
        let mounts = MountInfo.parse(
            #"40 30 0:50 /a\040b /run/with\040space\011tab\012nl\134bs rw - tmpfs tmpfs rw,size=1024k"#)
        #expect(mounts.count == 1)
        #expect(mounts.first?.root == "/a b")
        #expect(mounts.first?.mountPoint == "/run/with space\ttab\nnl\\bs")
        #expect(mounts.first?.superOptions == ["rw", "size=1024k"])
    }

    @Test("malformed lines are skipped, the rest kept")
    func malformed() {
        let text = """
            garbage

            1 2 3:4 / /x rw - ext4
            1 2 / /y - ext4 /dev/x rw
            26 30 0:5 / /dev rw,nosuid - devtmpfs udev rw,mode=755
            """
        #expect(MountInfo.parse(text).map(\.mountPoint) == ["/dev"])
        #expect(MountInfo.parse("").isEmpty)
    }

    @Test("unescape keeps what is not a three-digit octal byte")
    func unescape() {
        #expect(MountInfo.unescape("/plain") == "/plain")
        #expect(MountInfo.unescape("/a\\040b") == "/a b")
        #expect(MountInfo.unescape("/trailing\\") == "/trailing\\")
        #expect(MountInfo.unescape("/short\\04") == "/short\\04")
        #expect(MountInfo.unescape("/not\\xyzoctal") == "/not\\xyzoctal")
        #expect(MountInfo.unescape("/big\\777") == "/big\\777")
    }

    @Test("read: this mount namespace has a root mount")
    func readOwn() throws {
        let mounts = try MountInfo.read()
        #expect(mounts.contains { $0.mountPoint == "/" })
        #expect(mounts.contains { $0.mountPoint == "/proc" && $0.fstype == "proc" })
    }

    @Test(
        "read: a tmpfs mounted on a path with a space shows with that path, its type and options",
        .enabled(if: getuid() == 0, "needs root to mount"))
    func readMounted() throws {
        let dir = try scratchDirectory("mountinfo")
        defer { try? Files.removeTree(dir) }
        let point = dir + "/with space"
        try Files.makeDirectories(point)
        try mount(source: "safespace-test", target: point, type: "tmpfs", flags: UInt(MS_NOSUID), data: "size=1m")
        defer { umount2(point, Int32(MNT_DETACH)) }
        let entry = try #require(try MountInfo.read().last { $0.mountPoint == point })
        #expect(entry.fstype == "tmpfs")
        #expect(entry.root == "/")
        #expect(entry.superOptions.contains("size=1024k"))
    }
}
