// Network namespaces and rtnetlink (rtnetlink(7), netlink(7)) for SandboxNetwork: the few
// kernel calls the topology of a sandbox needs, each returning 0 (or an fd) or -errno.
// Namespace work runs on a thread of its own (setns(2)/unshare(2) of CLONE_NEWNET change only
// the calling thread), so no thread of the caller ever changes its network namespace.
#ifndef CSANDBOXNETWORK_H
#define CSANDBOXNETWORK_H
#include <stdint.h>

/// Makes a new network namespace and bind-mounts its nsfs file (/proc/thread-self/ns/net) on
/// `path`, an existing empty file. 0 or -errno.
int ssn_netns_create(const char *path);

/// A NETLINK_ROUTE socket (close-on-exec) in the network namespace `nsfd` (-1: the caller's).
/// The socket stays in that namespace for its life. fd or -errno.
int ssn_rtnl_open(int nsfd);

/// RTM_NEWLINK of a veth pair: `host` in the socket's namespace, `peer` moved into `peer_nsfd`
/// (IFLA_NET_NS_FD). 0 or -errno (-EEXIST when a link of either name exists).
int ssn_veth_create(int rtnl, const char *host, const char *peer, int peer_nsfd);

/// RTM_DELLINK of link `name`. 0 or -errno (-ENODEV: no such link).
int ssn_link_delete(int rtnl, const char *name);

/// The ifindex of link `name` (RTM_GETLINK) or -errno (-ENODEV).
int ssn_link_index(int rtnl, const char *name);

/// Sets IFF_UP on link `name`. 0 or -errno.
int ssn_link_up(int rtnl, const char *name);

/// RTM_NEWADDR: IPv4 `addr` (network byte order) / `prefix` on link `name`, with `peer`
/// address semantics off (local == address). 0 or -errno.
int ssn_addr_add(int rtnl, const char *name, uint32_t addr, int prefix);

/// RTM_NEWROUTE: IPv4 default route via `gateway` (network byte order) on link `name`. 0 or -errno.
int ssn_route_default(int rtnl, const char *name, uint32_t gateway);

/// The IPv4 conntrack entries (ctnetlink, nfnetlink_conntrack) of this network namespace whose
/// original source or destination is `addr` (network byte order): counted, and with `delete`
/// deleted (IPCTNL_MSG_CT_DELETE of each one's original tuple). The number found, or -errno
/// (-EPROTONOSUPPORT when the kernel has no ctnetlink).
int ssn_conntrack_flush(uint32_t addr, int delete);

#endif
