import Glibc
import LinuxKernel

/// Resolves `path` inside `root` as if `root` were `/`: symlinks are followed but can never
/// lead outside `root`, and `..` stops at `root` (the rule of filepath-securejoin, which runc
/// uses against symlink-exchange attacks on mount destinations, CVE-2021-30465).
///
/// - Returns: an absolute host path below `root`; components that do not exist yet are kept.
/// - Throws: `RuntimeError` `.refused` after 255 symlinks (a loop).
func securePath(root: String, _ path: String) throws -> String {
    var resolved: [Substring] = []
    var pending: [Substring] = path.split(separator: "/").reversed()
    var links = 0
    while let part = pending.popLast() {
        if part == "." || part.isEmpty { continue }
        if part == ".." {
            _ = resolved.popLast()
            continue
        }
        let candidate = root + "/" + (resolved + [part]).joined(separator: "/")
        var st = stat()
        if lstat(candidate, &st) == 0 && (st.st_mode & S_IFMT) == S_IFLNK {
            links += 1
            if links > 255 {
                throw RuntimeError(.refused, "\(path): too many levels of symbolic links inside \(root)", errno: ELOOP)
            }
            var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            let n = readlink(candidate, &buf, Int(PATH_MAX))
            guard n >= 0 else { throw SysError("readlink", path: candidate) }
            let target = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if target.hasPrefix("/") { resolved = [] }
            pending.append(contentsOf: target.split(separator: "/").reversed())
            continue
        }
        resolved.append(part)
    }
    return root + (resolved.isEmpty ? "" : "/" + resolved.joined(separator: "/"))
}

/// Lexically cleans an absolute container path: `//a/./b/../c` → `/a/c`.
package func cleanPath(_ path: String) -> String {
    var out: [Substring] = []
    for part in path.split(separator: "/") {
        if part == "." { continue }
        if part == ".." {
            _ = out.popLast()
            continue
        }
        out.append(part)
    }
    return "/" + out.joined(separator: "/")
}
