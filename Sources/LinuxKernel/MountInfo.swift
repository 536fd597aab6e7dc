/// One line of /proc/PID/mountinfo (proc(5)): the one parser of that file.
///
/// `36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue`:
/// field 4 is `root`, 5 `mountPoint`; after the ` - ` separator, the file system type, the
/// source and the super block options. Paths are unescaped (`\040` is a space).
public struct MountInfo: Sendable, Equatable {
    public var root: String
    public var mountPoint: String
    public var fstype: String
    public var superOptions: Set<String>

    /// Every well-formed line of `text`; others are skipped.
    public static func parse(_ text: String) -> [MountInfo] {
        text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ").map(String.init)
            guard let dash = fields.firstIndex(of: "-"), dash >= 6, fields.count >= dash + 4 else { return nil }
            return MountInfo(
                root: unescape(fields[3]), mountPoint: unescape(fields[4]), fstype: fields[dash + 1],
                superOptions: Set(fields[dash + 3].split(separator: ",").map(String.init)))
        }
    }

    /// The mounts of this process's mount namespace (/proc/self/mountinfo).
    /// - Throws: `SysError` from open(2) or read(2).
    public static func read() throws -> [MountInfo] {
        parse(try Files.readString("/proc/self/mountinfo"))
    }

    /// Undoes mountinfo's octal escapes (`\040` for a space).
    public static func unescape(_ s: String) -> String {
        guard s.contains("\\") else { return s }
        var out: [UInt8] = []
        let bytes = Array(s.utf8)
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "\\"), i + 3 < bytes.count,
                let v = UInt8(String(decoding: bytes[(i + 1)...(i + 3)], as: UTF8.self), radix: 8)
            {
                out.append(v)
                i += 4
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
