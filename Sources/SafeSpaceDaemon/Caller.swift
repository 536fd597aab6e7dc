/// Who is calling: the peer credentials of the unix socket connection (SO_PEERCRED, unix(7)),
/// and whether they may call at all: root and members of the daemon's group.
import CDaemon
import Foundation
import Glibc
import NIOCore

/// The calling process as the kernel saw it when it connected.
public struct Caller: Sendable, Equatable {
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32

    public var isRoot: Bool { uid == 0 }

    /// SO_PEERCRED of the connection `channel`.
    /// - Throws: `APIError` 403 when the channel is not a unix socket or the kernel says nothing.
    static func of(channel: any Channel) async throws -> Caller {
        guard let provider = channel as? any SocketOptionProvider else {
            throw APIError(.forbidden, "forbidden", "the caller's credentials cannot be read on this transport")
        }
        let cred: sd_ucred = try await provider.unsafeGetSocketOption(
            level: SocketOptionLevel(SD_SOL_SOCKET), name: SocketOptionName(SD_SO_PEERCRED)
        ).get()
        return Caller(pid: cred.pid, uid: cred.uid, gid: cred.gid)
    }
}

/// Who may call: uid 0, or a user whose primary group (of the connection) or supplementary
/// groups (the user database, getgrouplist(3)) include `group`.
struct AccessPolicy: Sendable {
    let groupName: String
    let groupID: UInt32?

    /// Looks `group` up (getgrnam(3)); nil id when it does not exist (then only root may call).
    init(group: String) {
        groupName = group
        groupID = getgrnam(group).map { $0.pointee.gr_gid }
    }

    /// nil when `caller` may call; else why not.
    func refusal(for caller: Caller) -> String? {
        if caller.isRoot { return nil }
        guard let gid = groupID else {
            return "uid \(caller.uid) may not call safespaced: only root may while group \(groupName) does not exist"
        }
        if caller.gid == gid { return nil }
        if let passwd = getpwuid(caller.uid) {
            let name = passwd.pointee.pw_name!
            var count: Int32 = 64
            var groups = [gid_t](repeating: 0, count: Int(count))
            if getgrouplist(name, passwd.pointee.pw_gid, &groups, &count) < 0, count > 64 {
                groups = [gid_t](repeating: 0, count: Int(count))
                _ = getgrouplist(name, passwd.pointee.pw_gid, &groups, &count)
            }
            if groups.prefix(Int(max(count, 0))).contains(gid) { return nil }
        }
        return "uid \(caller.uid) is neither root nor a member of group \(groupName)"
    }
}
