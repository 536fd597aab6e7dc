#define _GNU_SOURCE
#include "CSandboxNetwork.h"

#include <errno.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/netlink.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

// One entry to delete: its CTA_TUPLE_ORIG (and CTA_ZONE) attributes, copied as received.
struct entry {
    char attrs[512];
    size_t len;
};

static const struct nlattr *attr_find(const char *data, size_t len, unsigned short type) {
    size_t off = 0;
    while (off + NLA_HDRLEN <= len) {
        const struct nlattr *a = (const struct nlattr *)(data + off);
        if (a->nla_len < NLA_HDRLEN || off + a->nla_len > len) return NULL;
        if ((a->nla_type & NLA_TYPE_MASK) == type) return a;
        off += NLA_ALIGN(a->nla_len);
    }
    return NULL;
}

// The IPv4 address `which` (CTA_IP_V4_SRC/DST) of tuple attribute `tuple`; 0 when absent.
static uint32_t tuple_address(const struct nlattr *tuple, unsigned short which) {
    if (!tuple) return 0;
    const struct nlattr *ip = attr_find((const char *)tuple + NLA_HDRLEN, tuple->nla_len - NLA_HDRLEN, CTA_TUPLE_IP);
    if (!ip) return 0;
    const struct nlattr *a = attr_find((const char *)ip + NLA_HDRLEN, ip->nla_len - NLA_HDRLEN, which);
    if (!a || a->nla_len < NLA_HDRLEN + 4) return 0;
    uint32_t v;
    memcpy(&v, (const char *)a + NLA_HDRLEN, 4);
    return v;
}

static int send_request(int fd, uint16_t type, uint16_t flags, uint32_t seq, const void *attrs, size_t len) {
    char buffer[NLMSG_SPACE(sizeof(struct nfgenmsg)) + 512] __attribute__((aligned(NLMSG_ALIGNTO)));
    if (len > 512) return -EINVAL;
    memset(buffer, 0, sizeof buffer);
    struct nlmsghdr *n = (struct nlmsghdr *)buffer;
    n->nlmsg_len = NLMSG_LENGTH(sizeof(struct nfgenmsg)) + (uint32_t)len;
    n->nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | type;
    n->nlmsg_flags = NLM_F_REQUEST | flags;
    n->nlmsg_seq = seq;
    struct nfgenmsg *g = NLMSG_DATA(n);
    g->nfgen_family = AF_INET;
    g->version = NFNETLINK_V0;
    if (len) memcpy((char *)g + NLMSG_ALIGN(sizeof *g), attrs, len);
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    ssize_t sent;
    do {
        sent = sendto(fd, buffer, n->nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof kernel);
    } while (sent < 0 && errno == EINTR);
    return sent < 0 ? -errno : 0;
}

int ssn_conntrack_flush(uint32_t addr, int delete) {
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
    if (fd < 0) return -errno;
    struct sockaddr_nl local = {.nl_family = AF_NETLINK};
    if (bind(fd, (struct sockaddr *)&local, sizeof local) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    int rc = send_request(fd, IPCTNL_MSG_CT_GET, NLM_F_DUMP, 1, NULL, 0);
    struct entry *entries = NULL;
    size_t count = 0, capacity = 0;
    char buffer[32768] __attribute__((aligned(NLMSG_ALIGNTO)));
    int done = rc < 0;
    while (!done) {
        ssize_t got;
        do {
            got = recv(fd, buffer, sizeof buffer, 0);
        } while (got < 0 && errno == EINTR);
        if (got < 0) {
            rc = -errno;
            break;
        }
        for (struct nlmsghdr *h = (struct nlmsghdr *)buffer; NLMSG_OK(h, (unsigned int)got); h = NLMSG_NEXT(h, got)) {
            if (h->nlmsg_type == NLMSG_DONE) {
                done = 1;
                break;
            }
            if (h->nlmsg_type == NLMSG_ERROR) {
                struct nlmsgerr *e = NLMSG_DATA(h);
                rc = e->error;
                done = 1;
                break;
            }
            if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct nfgenmsg))) continue;
            const char *attrs = (const char *)NLMSG_DATA(h) + NLMSG_ALIGN(sizeof(struct nfgenmsg));
            size_t len = h->nlmsg_len - NLMSG_LENGTH(sizeof(struct nfgenmsg));
            const struct nlattr *orig = attr_find(attrs, len, CTA_TUPLE_ORIG);
            if (!orig || (tuple_address(orig, CTA_IP_V4_SRC) != addr && tuple_address(orig, CTA_IP_V4_DST) != addr))
                continue;
            if (count == capacity) {
                size_t next = capacity ? capacity * 2 : 16;
                struct entry *grown = realloc(entries, next * sizeof *grown);
                if (!grown) {
                    rc = -ENOMEM;
                    done = 1;
                    break;
                }
                entries = grown;
                capacity = next;
            }
            struct entry *entry = &entries[count];
            entry->len = 0;
            const struct nlattr *zone = attr_find(attrs, len, CTA_ZONE);
            if ((size_t)NLA_ALIGN(orig->nla_len) + (zone ? (size_t)NLA_ALIGN(zone->nla_len) : 0) > sizeof entry->attrs)
                continue;
            memcpy(entry->attrs, orig, orig->nla_len);
            entry->len = NLA_ALIGN(orig->nla_len);
            if (zone) {
                memcpy(entry->attrs + entry->len, zone, zone->nla_len);
                entry->len += NLA_ALIGN(zone->nla_len);
            }
            count++;
        }
    }
    if (rc >= 0 && delete) {
        for (size_t i = 0; i < count; i++) {
            uint32_t seq = (uint32_t)(i + 2);
            int sent = send_request(fd, IPCTNL_MSG_CT_DELETE, NLM_F_ACK, seq, entries[i].attrs, entries[i].len);
            if (sent < 0) {
                rc = sent;
                break;
            }
            // The ACK (or -ENOENT: gone meanwhile).
            ssize_t got;
            do {
                got = recv(fd, buffer, sizeof buffer, 0);
            } while (got < 0 && errno == EINTR);
            if (got < 0) {
                rc = -errno;
                break;
            }
            struct nlmsghdr *h = (struct nlmsghdr *)buffer;
            if (NLMSG_OK(h, (unsigned int)got) && h->nlmsg_type == NLMSG_ERROR) {
                struct nlmsgerr *e = NLMSG_DATA(h);
                if (e->error != 0 && e->error != -ENOENT) {
                    rc = e->error;
                    break;
                }
            }
        }
    }
    free(entries);
    close(fd);
    return rc < 0 ? rc : (int)count;
}
