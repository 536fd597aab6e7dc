import Glibc
import Testing

@testable import LinuxKernel

/// mount(8) option lists of OCI `mounts[].options` split into mount(2) flags, propagation,
/// file system data and mount_setattr(2) attributes; the mount(2) and mount_setattr(2) errors.
struct MountOptionsTests {
    @Test("flags, clearing flags, propagation and data are split as mount(8) does")
    func parse() {
        let o = MountOptions(["ro", "nosuid", "rbind", "rprivate", "size=64m", "mode=1777", "rw", "exec"])
        #expect(o.flags & UInt(MS_RDONLY) == 0)  // "rw" after "ro" clears it
        #expect(o.flags & UInt(MS_NOSUID) != 0)
        #expect(o.isBind && o.isRecursive)
        #expect(o.propagation == [UInt(MS_PRIVATE | MS_REC)])
        #expect(o.data == ["size=64m", "mode=1777"])
    }

    @Test("recursive mount options become mount_setattr(2) attributes, not file system data")
    func recursiveOptions() {
        let o = MountOptions(["rbind", "rro", "rnosuid", "rnoatime", "size=1m"])
        #expect(o.recursiveSet == UInt64(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOATIME))
        #expect(o.recursiveClear == UInt64(MOUNT_ATTR__ATIME))
        #expect(o.data == ["size=1m"])
        #expect(o.recursiveNames == ["rro", "rnosuid", "rnoatime"])
        let w = MountOptions(["rro", "rrw", "rexec"])
        #expect(w.recursiveSet == 0)
        #expect(w.recursiveClear == UInt64(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOEXEC))
        #expect(MountOptions(["rnorelatime"]).recursiveClear == 0)
        #expect(MountOptions.knownNames.contains("rro") && MountOptions.knownNames.contains("rnosymfollow"))
    }

    @Test("a clearing option after its flag unsets it and is recorded in cleared; defaults changes nothing")
    func clearing() {
        let o = MountOptions(["nosuid", "nodev", "suid", "defaults", "loud"])
        #expect(o.flags == UInt(MS_NODEV))
        #expect(o.cleared == UInt(MS_NOSUID | MS_SILENT))
        #expect(o.data.isEmpty && o.propagation.isEmpty)
        #expect(!o.isBind && !o.isRecursive && !o.hasRecursiveAttributes)
        #expect(MountOptions([]) == MountOptions(["defaults"]))
    }

    @Test("propagation options are kept in order for a second mount(2); propagation(named:) knows the eight")
    func propagation() {
        #expect(
            MountOptions(["shared", "rslave", "runbindable"]).propagation
                == [UInt(MS_SHARED), UInt(MS_SLAVE | MS_REC), UInt(MS_UNBINDABLE | MS_REC)])
        let names: [(String, UInt)] = [
            ("private", UInt(MS_PRIVATE)), ("rprivate", UInt(MS_PRIVATE | MS_REC)), ("shared", UInt(MS_SHARED)),
            ("rshared", UInt(MS_SHARED | MS_REC)), ("slave", UInt(MS_SLAVE)), ("rslave", UInt(MS_SLAVE | MS_REC)),
            ("unbindable", UInt(MS_UNBINDABLE)), ("runbindable", UInt(MS_UNBINDABLE | MS_REC)),
        ]
        for (name, flags) in names { #expect(MountOptions.propagation(named: name) == flags, "\(name)") }
        #expect(MountOptions.propagation(named: "rbind") == nil)
        #expect(MountOptions.propagation(named: "") == nil)
    }

    @Test("an atime mode replaces the one before it and always clears MOUNT_ATTR__ATIME (mount_setattr(2))")
    func atimeModes() {
        let atime = UInt64(MOUNT_ATTR__ATIME)
        let strict = MountOptions(["rnoatime", "rstrictatime"])
        #expect(strict.recursiveSet == UInt64(MOUNT_ATTR_STRICTATIME))
        #expect(strict.recursiveClear == atime)
        // ratime goes back to the kernel default (relatime): nothing set, the atime field cleared.
        let back = MountOptions(["rnoatime", "rro", "ratime"])
        #expect(back.recursiveSet == UInt64(MOUNT_ATTR_RDONLY))
        #expect(back.recursiveClear == atime)
        #expect(back.recursiveNames == ["rnoatime", "rro", "ratime"])
        // A flag set after being cleared leaves the clear mask.
        let again = MountOptions(["rsuid", "rnosuid"])
        #expect(again.recursiveSet == UInt64(MOUNT_ATTR_NOSUID) && again.recursiveClear == 0)
    }

    @Test(
        "every recursive option is an r-name with a MOUNT_ATTR_* bit (relatime's is 0); knownNames is sorted and unique"
    )
    func knownNames() {
        let names = MountOptions.knownNames
        #expect(names == names.sorted())
        #expect(Set(names).count == names.count)
        for known in [
            "ro", "rw", "bind", "rbind", "private", "rshared", "defaults", "rro", "rnosymfollow", "nostrictatime",
        ] {
            #expect(names.contains(known), "\(known)")
        }
        #expect(!names.contains("size=64m") && !names.contains("newinstance"))
        for (name, r) in MountOptions.recursive {
            #expect(name.hasPrefix("r"), "\(name)")
            // MOUNT_ATTR_RELATIME is 0: relatime is the kernel's default atime mode.
            #expect((r.attr == 0) == (name == "rrelatime" || name == "rnorelatime"), "\(name)")
        }
    }

    @Test("unknown options go to the file system as data, in order")
    func data() {
        let o = MountOptions(["newinstance", "ptmxmode=0666", "nosuid", "mode=620", "gid=5"])
        #expect(o.data == ["newinstance", "ptmxmode=0666", "mode=620", "gid=5"])
        #expect(o.flags == UInt(MS_NOSUID))
    }

    @Test("a failed mount(2) throws a SysError naming the type and the target")
    func mountError() {
        let target = "/nonexistent-safespace-\(getpid())"
        let error = #expect(throws: SysError.self) {
            try mount(source: "none", target: target, type: "nosuchfs", flags: 0)
        }
        #expect(error?.operation == "mount nosuchfs on")
        #expect(error?.path == target)
        #expect(error.map { $0.errno != 0 } == true)
    }

    @Test("a failed mount_setattr(2) names the field it was asked for")
    func setattrError() {
        let error = #expect(throws: (any Error).self) {
            try mountSetattrRecursive(
                "/nonexistent-safespace-\(getpid())", set: UInt64(MOUNT_ATTR_RDONLY), clear: 0,
                field: "mounts[3].options",
                options: ["rro"])
        }
        #expect("\(error.map { "\($0)" } ?? "")".hasPrefix("mounts[3].options: "))
    }
}
