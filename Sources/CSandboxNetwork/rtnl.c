#define _GNU_SOURCE
#include "CSandboxNetwork.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

// MARK: namespaces, each on a thread of its own

struct ns_job {
    const char *path;
    int nsfd;
    int result;
};

static void *netns_create_thread(void *arg) {
    struct ns_job *job = arg;
    if (unshare(CLONE_NEWNET) != 0) {
        job->result = -errno;
        return NULL;
    }
    if (mount("/proc/thread-self/ns/net", job->path, NULL, MS_BIND, NULL) != 0) {
        job->result = -errno;
        return NULL;
    }
    job->result = 0;
    return NULL;
}

static void *rtnl_open_thread(void *arg) {
    struct ns_job *job = arg;
    if (job->nsfd >= 0 && setns(job->nsfd, CLONE_NEWNET) != 0) {
        job->result = -errno;
        return NULL;
    }
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0) {
        job->result = -errno;
        return NULL;
    }
    struct sockaddr_nl local = {.nl_family = AF_NETLINK};
    if (bind(fd, (struct sockaddr *)&local, sizeof local) != 0) {
        job->result = -errno;
        close(fd);
        return NULL;
    }
    job->result = fd;
    return NULL;
}

static int on_thread(void *(*body)(void *), struct ns_job *job) {
    pthread_t thread;
    int rc = pthread_create(&thread, NULL, body, job);
    if (rc != 0) return -rc;
    pthread_join(thread, NULL);
    return job->result;
}

int ssn_netns_create(const char *path) {
    struct ns_job job = {.path = path, .nsfd = -1, .result = -EINVAL};
    return on_thread(netns_create_thread, &job);
}

int ssn_rtnl_open(int nsfd) {
    struct ns_job job = {.path = NULL, .nsfd = nsfd, .result = -EINVAL};
    return on_thread(rtnl_open_thread, &job);
}

// MARK: messages

struct request {
    struct nlmsghdr header;
    char payload[1024];
};

static struct rtattr *attr_add(struct nlmsghdr *n, unsigned short type, const void *data, size_t len) {
    struct rtattr *rta = (struct rtattr *)((char *)n + NLMSG_ALIGN(n->nlmsg_len));
    rta->rta_type = type;
    rta->rta_len = RTA_LENGTH(len);
    if (len) memcpy(RTA_DATA(rta), data, len);
    n->nlmsg_len = NLMSG_ALIGN(n->nlmsg_len) + RTA_ALIGN(rta->rta_len);
    return rta;
}

static struct rtattr *nest_begin(struct nlmsghdr *n, unsigned short type) { return attr_add(n, type, NULL, 0); }

static void nest_end(struct nlmsghdr *n, struct rtattr *nest) {
    nest->rta_len = (unsigned short)((char *)n + NLMSG_ALIGN(n->nlmsg_len) - (char *)nest);
}

static unsigned int sequence = 1;

// Sends `n` (NLM_F_ACK added) and reads until its ACK/error. With `reply`, the first message of
// type `reply_type` is copied there (up to `reply_len` bytes). 0 or -errno.
static int transact(int fd, struct nlmsghdr *n, uint16_t reply_type, void *reply, size_t reply_len) {
    n->nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
    n->nlmsg_seq = __atomic_add_fetch(&sequence, 1, __ATOMIC_RELAXED);
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    ssize_t sent;
    do {
        sent = sendto(fd, n, n->nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof kernel);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0) return -errno;
    char buffer[16384] __attribute__((aligned(NLMSG_ALIGNTO)));
    for (;;) {
        ssize_t got;
        do {
            got = recv(fd, buffer, sizeof buffer, 0);
        } while (got < 0 && errno == EINTR);
        if (got < 0) return -errno;
        for (struct nlmsghdr *h = (struct nlmsghdr *)buffer; NLMSG_OK(h, (unsigned int)got); h = NLMSG_NEXT(h, got)) {
            if (h->nlmsg_seq != n->nlmsg_seq) continue;
            if (h->nlmsg_type == NLMSG_ERROR) {
                struct nlmsgerr *e = NLMSG_DATA(h);
                return e->error;  // 0 is the ACK
            }
            if (reply && h->nlmsg_type == reply_type) {
                size_t len = h->nlmsg_len < reply_len ? h->nlmsg_len : reply_len;
                memcpy(reply, h, len);
            }
            if (h->nlmsg_type == NLMSG_DONE) return 0;
        }
    }
}

static void link_request(struct request *r, uint16_t type, uint16_t flags) {
    memset(r, 0, sizeof *r);
    r->header.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
    r->header.nlmsg_type = type;
    r->header.nlmsg_flags = flags;
    struct ifinfomsg *ifi = NLMSG_DATA(&r->header);
    ifi->ifi_family = AF_UNSPEC;
}

static int name_ok(const char *name) { return name && strlen(name) > 0 && strlen(name) < IFNAMSIZ; }

int ssn_veth_create(int rtnl, const char *host, const char *peer, int peer_nsfd) {
    if (!name_ok(host) || !name_ok(peer)) return -EINVAL;
    struct request r;
    link_request(&r, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
    attr_add(&r.header, IFLA_IFNAME, host, strlen(host) + 1);
    struct rtattr *linkinfo = nest_begin(&r.header, IFLA_LINKINFO);
    attr_add(&r.header, IFLA_INFO_KIND, "veth", 4);
    struct rtattr *data = nest_begin(&r.header, IFLA_INFO_DATA);
    struct rtattr *peer_info = nest_begin(&r.header, VETH_INFO_PEER);
    struct ifinfomsg peer_ifi = {.ifi_family = AF_UNSPEC};
    // VETH_INFO_PEER carries a struct ifinfomsg, then the peer's attributes.
    memcpy((char *)&r.header + NLMSG_ALIGN(r.header.nlmsg_len), &peer_ifi, sizeof peer_ifi);
    r.header.nlmsg_len = NLMSG_ALIGN(r.header.nlmsg_len) + NLMSG_ALIGN(sizeof peer_ifi);
    attr_add(&r.header, IFLA_IFNAME, peer, strlen(peer) + 1);
    if (peer_nsfd >= 0) {
        uint32_t fd = (uint32_t)peer_nsfd;
        attr_add(&r.header, IFLA_NET_NS_FD, &fd, sizeof fd);
    }
    nest_end(&r.header, peer_info);
    nest_end(&r.header, data);
    nest_end(&r.header, linkinfo);
    return transact(rtnl, &r.header, 0, NULL, 0);
}

int ssn_link_delete(int rtnl, const char *name) {
    if (!name_ok(name)) return -EINVAL;
    struct request r;
    link_request(&r, RTM_DELLINK, 0);
    attr_add(&r.header, IFLA_IFNAME, name, strlen(name) + 1);
    return transact(rtnl, &r.header, 0, NULL, 0);
}

int ssn_link_index(int rtnl, const char *name) {
    if (!name_ok(name)) return -EINVAL;
    struct request r;
    link_request(&r, RTM_GETLINK, 0);
    attr_add(&r.header, IFLA_IFNAME, name, strlen(name) + 1);
    char reply[NLMSG_LENGTH(sizeof(struct ifinfomsg))] __attribute__((aligned(NLMSG_ALIGNTO)));
    memset(reply, 0, sizeof reply);
    int rc = transact(rtnl, &r.header, RTM_NEWLINK, reply, sizeof reply);
    if (rc < 0) return rc;
    struct ifinfomsg *ifi = NLMSG_DATA((struct nlmsghdr *)reply);
    return ifi->ifi_index > 0 ? ifi->ifi_index : -ENODEV;
}

int ssn_link_up(int rtnl, const char *name) {
    if (!name_ok(name)) return -EINVAL;
    struct request r;
    link_request(&r, RTM_NEWLINK, 0);
    struct ifinfomsg *ifi = NLMSG_DATA(&r.header);
    ifi->ifi_flags = IFF_UP;
    ifi->ifi_change = IFF_UP;
    attr_add(&r.header, IFLA_IFNAME, name, strlen(name) + 1);
    return transact(rtnl, &r.header, 0, NULL, 0);
}

int ssn_addr_add(int rtnl, const char *name, uint32_t addr, int prefix) {
    int index = ssn_link_index(rtnl, name);
    if (index < 0) return index;
    if (prefix < 0 || prefix > 32) return -EINVAL;
    struct request r;
    memset(&r, 0, sizeof r);
    r.header.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifaddrmsg));
    r.header.nlmsg_type = RTM_NEWADDR;
    r.header.nlmsg_flags = NLM_F_CREATE | NLM_F_EXCL;
    struct ifaddrmsg *ifa = NLMSG_DATA(&r.header);
    ifa->ifa_family = AF_INET;
    ifa->ifa_prefixlen = (unsigned char)prefix;
    ifa->ifa_index = (unsigned int)index;
    ifa->ifa_scope = RT_SCOPE_UNIVERSE;
    attr_add(&r.header, IFA_LOCAL, &addr, sizeof addr);
    attr_add(&r.header, IFA_ADDRESS, &addr, sizeof addr);
    return transact(rtnl, &r.header, 0, NULL, 0);
}

int ssn_route_default(int rtnl, const char *name, uint32_t gateway) {
    int index = ssn_link_index(rtnl, name);
    if (index < 0) return index;
    struct request r;
    memset(&r, 0, sizeof r);
    r.header.nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg));
    r.header.nlmsg_type = RTM_NEWROUTE;
    r.header.nlmsg_flags = NLM_F_CREATE | NLM_F_EXCL;
    struct rtmsg *rtm = NLMSG_DATA(&r.header);
    rtm->rtm_family = AF_INET;
    rtm->rtm_table = RT_TABLE_MAIN;
    rtm->rtm_protocol = RTPROT_STATIC;
    rtm->rtm_scope = RT_SCOPE_UNIVERSE;
    rtm->rtm_type = RTN_UNICAST;
    rtm->rtm_dst_len = 0;
    attr_add(&r.header, RTA_GATEWAY, &gateway, sizeof gateway);
    uint32_t oif = (uint32_t)index;
    attr_add(&r.header, RTA_OIF, &oif, sizeof oif);
    return transact(rtnl, &r.header, 0, NULL, 0);
}
