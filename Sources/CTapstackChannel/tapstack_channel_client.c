#define _GNU_SOURCE
#include "channel_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <sys/un.h>
#include <unistd.h>

#include "tapstack_ring.h"

/* System calls made directly, so that the preload shim's wrappers of the
 * same names are never re-entered from here. */
static int sys_socket(int domain, int type, int protocol) { return (int)syscall(SYS_socket, domain, type, protocol); }
static int sys_connect(int fd, const struct sockaddr *address, socklen_t length) {
    return (int)syscall(SYS_connect, fd, address, length);
}
static ssize_t sys_sendmsg(int fd, const struct msghdr *message, int flags) {
    return syscall(SYS_sendmsg, fd, message, flags);
}
static ssize_t sys_recvmsg(int fd, struct msghdr *message, int flags) {
    return syscall(SYS_recvmsg, fd, message, flags);
}
static int sys_close(int fd) { return (int)syscall(SYS_close, fd); }

const char *tsc_socket_path(void) {
    const char *path = getenv(TSP_SOCKET_ENV);
    return path && *path ? path : TSP_DEFAULT_SOCKET_PATH;
}

/* The data channel is gone only when the service is: report it as a network
 * that went down rather than as an error of the program's own descriptor. */
static int channel_errno(int error) {
    return error == EPIPE || error == ECONNRESET || error == ENOTCONN ? ENETDOWN : error;
}

/* One request, one reply; `fd`, if not NULL, receives a passed descriptor.
 * The request carries the next number of `*sequence`; replies with another
 * number answer earlier requests that timed out, and are skipped. */
static int call(int control_fd, uint16_t *sequence, tsp_request *request, tsp_reply *reply, int *fd, int cloexec) {
    request->sequence = ++*sequence;
    struct iovec out = { (void *)request, sizeof *request };
    struct msghdr message = { .msg_iov = &out, .msg_iovlen = 1 };
    ssize_t n;
    do { n = sys_sendmsg(control_fd, &message, MSG_NOSIGNAL); } while (n < 0 && errno == EINTR);
    if (n < 0) { errno = channel_errno(errno); return -1; }

    int passed;
    for (;;) {
        union { struct cmsghdr align; char bytes[CMSG_SPACE(sizeof(int))]; } control;
        struct iovec in = { reply, sizeof *reply };
        struct msghdr answer = { .msg_iov = &in, .msg_iovlen = 1, .msg_control = control.bytes,
                                 .msg_controllen = sizeof control.bytes };
        do { n = sys_recvmsg(control_fd, &answer, cloexec ? MSG_CMSG_CLOEXEC : 0); } while (n < 0 && errno == EINTR);
        if (n < 0) { errno = errno == EAGAIN ? ETIMEDOUT : channel_errno(errno); return -1; }
        if (n == 0) { errno = ENETDOWN; return -1; }
        passed = -1;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&answer); c; c = CMSG_NXTHDR(&answer, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len == CMSG_LEN(sizeof(int))) {
                memcpy(&passed, CMSG_DATA(c), sizeof passed);
            }
        }
        if ((size_t)n != sizeof *reply) {
            if (passed >= 0) sys_close(passed);
            errno = EPROTO;
            return -1;
        }
        if (reply->sequence == request->sequence) break;
        if (passed >= 0) sys_close(passed);  /* a late reply to an abandoned request */
    }
    if (fd) {
        *fd = passed;
    } else if (passed >= 0) {
        sys_close(passed);
    }
    if (reply->error) { errno = reply->error; return -1; }
    return 0;
}

int tsc_call(tsc_socket *s, tsp_request *r, int *fd) {
    tsp_reply reply;
    return call(s->control_fd, &s->sequence, r, &reply, fd, 1);
}

static tsp_request request(uint16_t op) {
    tsp_request r;
    memset(&r, 0, sizeof r);
    r.version = TSP_VERSION;
    r.op = op;
    return r;
}

int tsc_hide_fd(int fd) {
    struct rlimit limit;
    long top = 1024;
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY && (long)limit.rlim_cur < top)
        top = (long)limit.rlim_cur;
    long base = top - 128;
    if (fd < 0 || base <= 3 || fd >= base) return fd;
    long flags = syscall(SYS_fcntl, fd, F_GETFD);
    /* The raw call: a preloaded fcntl must not see the library's own descriptors. */
    long high = syscall(SYS_fcntl, fd, flags >= 0 && (flags & FD_CLOEXEC) ? F_DUPFD_CLOEXEC : F_DUPFD, base);
    if (high < 0) return fd;
    sys_close(fd);
    return (int)high;
}

/* A control connection to the service at `path`, with the reply timeout set. */
static int connect_control(const char *path) {
    struct sockaddr_un address = { .sun_family = AF_UNIX };
    size_t length = strlen(path);
    if (length >= sizeof address.sun_path) { errno = ENAMETOOLONG; return -1; }
    memcpy(address.sun_path, path, length);
    int control = sys_socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (control < 0) return -1;
    /* A service that stopped answering (stuck, or out of descriptors with our
     * connection still in its backlog) must fail the call, not hang it. */
    struct timeval patience = { .tv_sec = TSP_REPLY_TIMEOUT_SECONDS };
    syscall(SYS_setsockopt, control, SOL_SOCKET, SO_RCVTIMEO, &patience, sizeof patience);
    int r;
    do { r = sys_connect(control, (struct sockaddr *)&address, sizeof address); } while (r < 0 && errno == EINTR);
    if (r < 0) { int e = errno; sys_close(control); errno = e; return -1; }
    return control;
}

int tsc_query(const char *path, int what, int *fd, size_t *length) {
    int control = connect_control(path);
    if (control < 0) return -1;
    tsp_request r = request(TSP_QUERY);
    r.option = what;
    tsp_reply reply;
    uint16_t sequence = 0;
    int answer = -1;
    int called = call(control, &sequence, &r, &reply, &answer, 1);
    int e = called < 0 ? errno : answer < 0 ? EPROTO : 0;
    sys_close(control);
    if (e) { if (answer >= 0) sys_close(answer); errno = e; return -1; }
    *fd = answer;
    *length = (size_t)(uint32_t)reply.value;
    return 0;
}

int tsc_open(tsc_socket *s, const char *path, int family, int data_flags) {
    memset(s, 0, sizeof *s);
    if (family != AF_INET && family != AF_INET6) { errno = EAFNOSUPPORT; return -1; }
    s->family = family;
    s->data_fd = s->control_fd = -1;
    int control = connect_control(path);
    if (control < 0) return -1;
    tsp_request open = request(TSP_OPEN);
    open.value = data_flags & SOCK_NONBLOCK ? 1 : 0;
    open.option = family;
    tsp_reply reply;
    int data = -1;
    int called = call(control, &s->sequence, &open, &reply, &data, data_flags & SOCK_CLOEXEC);
    if (called < 0 || data < 0) {
        int e = called < 0 ? errno : EPROTO;  /* a reply without the channel */
        sys_close(control);
        errno = e;
        return -1;
    }
    s->control_fd = tsc_hide_fd(control);
    s->data_fd = data;
    s->interface = reply.interface;
    s->busy_poll_us = tsc_busy_poll_default();
    return 0;
}

void tsc_close(tsc_socket *s) {
    if (s->data_fd >= 0) sys_close(s->data_fd);
    if (s->control_fd >= 0) sys_close(s->control_fd);
    s->data_fd = s->control_fd = -1;
}

int tsc_bind(tsc_socket *s, const tsp_address *address, uint16_t port) {
    tsp_request r = request(TSP_BIND);
    r.address = *address;
    r.port = port;
    tsp_reply reply;
    return call(s->control_fd, &s->sequence, &r, &reply, NULL, 0);
}

int tsc_connect(tsc_socket *s, const tsp_address *address, uint16_t port) {
    tsp_request r = request(TSP_CONNECT);
    r.address = *address;
    r.port = port;
    tsp_reply reply;
    if (call(s->control_fd, &s->sequence, &r, &reply, NULL, 0) < 0) return -1;
    s->connected = reply.connected;
    if (reply.connected) s->peer_address = reply.remote_address; else memset(&s->peer_address, 0, sizeof s->peer_address);
    s->peer_port = reply.connected ? reply.remote_port : 0;
    return 0;
}

int tsc_names(tsc_socket *s, tsp_address *local_address, uint16_t *local_port,
              int *connected, tsp_address *remote_address, uint16_t *remote_port) {
    tsp_request r = request(TSP_NAMES);
    tsp_reply reply;
    if (call(s->control_fd, &s->sequence, &r, &reply, NULL, 0) < 0) return -1;
    *local_address = reply.local_address;
    *local_port = reply.local_port;
    *connected = reply.connected;
    *remote_address = reply.remote_address;
    *remote_port = reply.remote_port;
    return 0;
}

int tsc_setopt(tsc_socket *s, int option, int value) {
    tsp_request r = request(TSP_SETOPT);
    r.option = option;
    r.value = value;
    tsp_reply reply;
    if (call(s->control_fd, &s->sequence, &r, &reply, NULL, 0) < 0) return -1;
    if (option == TSP_OPT_BROADCAST) s->broadcast = value != 0;
    if (option == TSP_OPT_DONTFRAG) s->dont_fragment = value != 0;
    if (option == TSP_OPT_WANT_INFO) s->want_info = value != 0;
    return 0;
}

int tsc_errqueue(tsc_socket *s, tsp_queued_error *queued, int *error, tsp_address *address, uint16_t *port) {
    tsp_request r = request(TSP_ERRQUEUE);
    tsp_reply reply;
    if (call(s->control_fd, &s->sequence, &r, &reply, NULL, 0) < 0) return -1;
    *queued = reply.queued;
    if (queued->length > sizeof queued->data) queued->length = sizeof queued->data;
    *error = reply.value;
    *address = reply.remote_address;
    *port = reply.remote_port;
    /* Reading the queue clears the pending error it set (Linux): drop the
     * error message the service put at the head of the channel for it. */
    tsp_datagram_header header;
    struct iovec part = { &header, sizeof header };
    struct msghdr peek = { .msg_iov = &part, .msg_iovlen = 1 };
    ssize_t n = sys_recvmsg(s->data_fd, &peek, MSG_PEEK | MSG_DONTWAIT);
    if (n == (ssize_t)sizeof header && header.magic == TSP_MAGIC && header.kind == TSP_ERROR && header.error == *error) {
        struct msghdr take = { .msg_iov = &part, .msg_iovlen = 1 };
        (void)sys_recvmsg(s->data_fd, &take, MSG_DONTWAIT);
    }
    return 0;
}

int tsc_membership(tsc_socket *s, int option, const tsp_address *group, const tsp_address *source) {
    tsp_request r = request(TSP_SETOPT);
    r.option = option;
    r.address = *group;
    if (source) r.source = *source;
    tsp_reply reply;
    return call(s->control_fd, &s->sequence, &r, &reply, NULL, 0);
}

int tsc_getopt(tsc_socket *s, int option, int *value) {
    tsp_request r = request(TSP_GETOPT);
    r.option = option;
    tsp_reply reply;
    if (call(s->control_fd, &s->sequence, &r, &reply, NULL, 0) < 0) return -1;
    *value = reply.value;
    return 0;
}

int tsc_check_destination(const tsc_socket *s, const tsp_address *address, uint16_t port, size_t length) {
    if (!tsp_address_is_v4(address)) {
        /* IPv6: only an AF_INET6 socket; the stack knows its routes (an error comes back as ENETUNREACH). */
        if (s->family != AF_INET6) return EAFNOSUPPORT;
        if (port == 0 || tsp_address_is_unspecified(address)) return EINVAL;
        return length > TSP_MAX_PAYLOAD6 ? EMSGSIZE : 0;
    }
    if (length > TSP_MAX_PAYLOAD) return EMSGSIZE;
    if (s->dont_fragment && length + 28 > s->interface.mtu) return EMSGSIZE;
    uint32_t host = ntohl(tsp_address_get_v4(address)), ours = ntohl(s->interface.address), mask = ntohl(s->interface.netmask);
    if (port == 0 || host == 0) return EINVAL;
    int broadcast = host == 0xFFFFFFFFu || (mask < 0xFFFFFFFEu && host == ((ours & mask) | ~mask));
    if (broadcast) return s->broadcast ? 0 : EACCES;
    uint8_t first = (uint8_t)(host >> 24);
    if (first >= 224 && first < 240) return 0;             /* multicast: onto the link */
    if (first == 127 || first >= 240) return ENETUNREACH;  /* loopback, reserved */
    if ((host & mask) == (ours & mask)) return 0;
    return s->interface.gateway ? 0 : ENETUNREACH;
}

ssize_t tsc_sendv(tsc_socket *s, const struct iovec *iov, int iovcnt,
                  const tsp_address *address, uint16_t port, int flags) {
    return tsc_sendv_info(s, iov, iovcnt, address, port, flags, NULL);
}

static ssize_t send_framed(tsc_socket *s, tsc_send_batch *batch, const struct iovec *iov, int iovcnt,
                           const tsp_address *address, uint16_t port, int flags, const tsc_message_info *info);

ssize_t tsc_sendv_info(tsc_socket *s, const struct iovec *iov, int iovcnt,
                       const tsp_address *address, uint16_t port, int flags, const tsc_message_info *info) {
    return send_framed(s, NULL, iov, iovcnt, address, port, flags, info);
}

void tsc_send_batch_begin(tsc_socket *s, tsc_send_batch *batch) {
    memset(batch, 0, sizeof *batch);
    if (s->ring) tsc_ring_send_begin(s, batch);
}

ssize_t tsc_send_batch_add(tsc_socket *s, tsc_send_batch *batch, const struct iovec *iov, int iovcnt,
                           const tsp_address *address, uint16_t port, const tsc_message_info *info) {
    return send_framed(s, batch, iov, iovcnt, address, port, MSG_DONTWAIT, info);
}

void tsc_send_batch_end(tsc_socket *s, tsc_send_batch *batch) {
    if (batch->locked) tsc_ring_send_end(s, batch);
}

/* One datagram, framed, through the ring (within `batch` if it holds it) or on the channel. */
static ssize_t send_framed(tsc_socket *s, tsc_send_batch *batch, const struct iovec *iov, int iovcnt,
                           const tsp_address *address, uint16_t port, int flags, const tsc_message_info *info) {
    if (iovcnt < 0 || iovcnt >= 1024) { errno = EMSGSIZE; return -1; }
    size_t length = 0;
    for (int i = 0; i < iovcnt; i++) length += iov[i].iov_len;
    tsp_datagram_header header = { .magic = TSP_MAGIC, .kind = TSP_DATAGRAM };
    if (info) {
        /* Only the stack's own address can be a source (Linux: EINVAL); the stack checks an IPv6 one. */
        if (tsp_address_is_v4(&info->source) && !tsp_address_is_unspecified(&info->source)
            && tsp_address_get_v4(&info->source) != s->interface.address) { errno = EINVAL; return -1; }
        header.local_address = info->source;
        header.ttl = info->ttl;
        header.tos = info->tos;
        header.flags = info->flags & (TSP_SEND_TTL | TSP_SEND_TOS);
    }
    if (address) {
        int error = tsc_check_destination(s, address, port, length);
        if (error) { errno = error; return -1; }
        header.address = *address;
        header.port = port;
    } else if (!s->connected) {
        errno = EDESTADDRREQ;
        return -1;
    } else if (length > (tsp_address_is_v4(&s->peer_address) ? TSP_MAX_PAYLOAD : TSP_MAX_PAYLOAD6)
               || (s->dont_fragment && length + 28 > s->interface.mtu)) {
        errno = EMSGSIZE;
        return -1;
    }
    struct iovec parts[iovcnt + 1];
    parts[0].iov_base = &header;
    parts[0].iov_len = sizeof header;
    if (iovcnt > 0) memcpy(parts + 1, iov, (size_t)iovcnt * sizeof *iov);
    struct msghdr message = { .msg_iov = parts, .msg_iovlen = (size_t)iovcnt + 1 };
    ssize_t n = batch && batch->locked ? tsc_ring_send_in(s, batch, parts, iovcnt + 1, flags)
              : s->ring ? tsc_ring_send(s, parts, iovcnt + 1, flags)
              : sys_sendmsg(s->data_fd, &message, (flags & MSG_DONTWAIT) | MSG_NOSIGNAL);
    if (n < 0) { errno = channel_errno(errno); return -1; }
    return n - (ssize_t)sizeof header;
}

ssize_t tsc_recvv(tsc_socket *s, const struct iovec *iov, int iovcnt,
                  tsp_address *address, uint16_t *port, int flags, int *truncated) {
    return tsc_recvv_info(s, iov, iovcnt, address, port, flags, truncated, NULL);
}

ssize_t tsc_recvv_info(tsc_socket *s, const struct iovec *iov, int iovcnt,
                       tsp_address *address, uint16_t *port, int flags, int *truncated, tsc_message_info *info) {
    if (info) memset(info, 0, sizeof *info);
    if (iovcnt < 0 || iovcnt >= 1024) { errno = EINVAL; return -1; }
    tsp_datagram_header header;
    struct iovec parts[iovcnt + 1];
    parts[0].iov_base = &header;
    parts[0].iov_len = sizeof header;
    if (iovcnt > 0) memcpy(parts + 1, iov, (size_t)iovcnt * sizeof *iov);
    struct msghdr message = { .msg_iov = parts, .msg_iovlen = (size_t)iovcnt + 1 };
    ssize_t n = -2;
    for (;;) {
        if (s->ring && __atomic_load_n(&((tsr_region_header *)s->ring)->receiving, __ATOMIC_ACQUIRE)) {
            int cut = 0;
            n = tsc_ring_receive(s, parts, iovcnt + 1, flags, &cut);
            message.msg_flags = cut ? MSG_TRUNC : 0;
        }
        if (n == -2) n = sys_recvmsg(s->data_fd, &message, flags & (MSG_DONTWAIT | MSG_PEEK | MSG_TRUNC | MSG_WAITALL));
        /* A doorbell taken here (another thread emptied the ring first): look again. */
        if (n == (ssize_t)sizeof header && header.magic == TSP_MAGIC && header.kind == TSP_DOORBELL && !(flags & MSG_PEEK)) {
            if (s->ring) __atomic_add_fetch(&((tsr_region_header *)s->ring)->doorbells_taken, 1, __ATOMIC_RELEASE);
            n = -2;
            continue;
        }
        break;
    }
    if (n < 0) { errno = channel_errno(errno); return -1; }
    if (n == 0) { errno = ENETDOWN; return -1; }  /* the service closed the channel */
    if (n == (ssize_t)sizeof header && header.magic == TSP_MAGIC && header.kind == TSP_DOORBELL) { errno = EAGAIN; return -1; }
    if ((size_t)n < sizeof header || header.magic != TSP_MAGIC) {
        /* A bare payload from the connected peer: its first bytes landed in
         * `header`; put them in front of the rest, as far as `iov` holds. */
        if (!s->connected) { errno = EPROTO; return -1; }
        size_t capacity = 0;
        for (int i = 0; i < iovcnt; i++) capacity += iov[i].iov_len;
        size_t head = (size_t)n < sizeof header ? (size_t)n : sizeof header;
        size_t full = (size_t)n;  /* the whole length when MSG_TRUNC was asked */
        size_t landed = 0;        /* bytes of the payload's rest that reached `iov` */
        if (full > sizeof header) {
            size_t after = full - sizeof header;
            landed = after < capacity ? after : capacity;
        }
        size_t kept = head + landed < capacity ? head + landed : capacity;
        unsigned char *whole = malloc(head + landed + 1);
        if (!whole) { errno = ENOMEM; return -1; }
        memcpy(whole, &header, head);
        size_t at = head;
        for (int i = 0; i < iovcnt && at < head + landed; i++) {
            size_t take = iov[i].iov_len < head + landed - at ? iov[i].iov_len : head + landed - at;
            memcpy(whole + at, iov[i].iov_base, take);
            at += take;
        }
        at = 0;
        for (int i = 0; i < iovcnt && at < kept; i++) {
            size_t put = iov[i].iov_len < kept - at ? iov[i].iov_len : kept - at;
            memcpy(iov[i].iov_base, whole + at, put);
            at += put;
        }
        free(whole);
        int cut = (message.msg_flags & MSG_TRUNC) || head + landed > capacity;
        if (address) *address = s->peer_address;
        if (port) *port = s->peer_port;
        if (truncated) *truncated = cut;
        if (info) {
            /* Sent before the client asked for facts: what is known. */
            struct timespec now;
            clock_gettime(CLOCK_REALTIME, &now);
            info->destination = tsp_address_v4(s->interface.address);
            info->ttl = 64;
            info->timestamp_ns = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
        }
        return flags & MSG_TRUNC ? (ssize_t)full : (ssize_t)kept;
    }
    if (header.kind == TSP_ERROR) {
        if (flags & MSG_PEEK) {
            /* An error is reported once: take it off the channel. */
            struct iovec part = { &header, sizeof header };
            struct msghdr take = { .msg_iov = &part, .msg_iovlen = 1 };
            (void)sys_recvmsg(s->data_fd, &take, MSG_DONTWAIT);
        }
        errno = header.error ? header.error : EIO;
        return -1;
    }
    if (address) *address = header.address;
    if (port) *port = header.port;
    if (truncated) *truncated = (message.msg_flags & MSG_TRUNC) != 0;
    if (info) {
        info->destination = header.local_address;
        info->ttl = header.ttl;
        info->tos = header.tos;
        info->timestamp_ns = header.timestamp_ns;
    }
    return n - (ssize_t)sizeof header;
}

int tsc_datagram_next(tsc_socket *s) {
    if (s->ring && __atomic_load_n(&((tsr_region_header *)s->ring)->receiving, __ATOMIC_ACQUIRE)) {
        tsr_end end;
        if (tsr_attach(&end, tsr_region_to_client(s->ring, TSR_REGION_CAPACITY), TSR_REGION_CAPACITY, 0) == 0
            && tsr_has_record(&end)) return 1;  /* the service puts only datagrams in the ring */
        /* Nothing sent on the channel since a receive found it empty: no
         * system call to look (one per datagram of a batch, and between a
         * conversation's receive and its answer). */
        const tsr_region_header *h = s->ring;
        if (__atomic_load_n(&h->channel_looked, __ATOMIC_ACQUIRE) && !tsc_channel_moved(h)) return 0;
    }
    tsp_datagram_header head;
    struct iovec part = { &head, sizeof head };
    struct msghdr peek = { .msg_iov = &part, .msg_iovlen = 1 };
    ssize_t m = sys_recvmsg(s->data_fd, &peek, MSG_PEEK | MSG_DONTWAIT);
    if (m <= 0) return 0;
    return (size_t)m >= sizeof head && head.magic == TSP_MAGIC ? head.kind == TSP_DATAGRAM : s->connected;  /* else bare, from the peer */
}

ssize_t tsc_recv_next(tsc_socket *s, const struct iovec *iov, int iovcnt,
                      tsp_address *address, uint16_t *port, int *truncated) {
    if (!tsc_datagram_next(s)) { errno = EAGAIN; return -1; }
    /* (Another thread may take it first; then this takes what follows, as a receive would.) */
    return tsc_recvv(s, iov, iovcnt, address, port, MSG_DONTWAIT | MSG_TRUNC, truncated);
}

int tsc_pending_bytes(tsc_socket *s) {
    tsp_datagram_header header;
    struct iovec part = { &header, sizeof header };
    struct msghdr message = { .msg_iov = &part, .msg_iovlen = 1 };
    ssize_t n = -2;
    if (s->ring && __atomic_load_n(&((tsr_region_header *)s->ring)->receiving, __ATOMIC_ACQUIRE)) {
        int cut = 0;
        n = tsc_ring_receive(s, &part, 1, MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT, &cut);
        if (n < 0 && n != -2) return 0;
    }
    if (n == -2) n = sys_recvmsg(s->data_fd, &message, MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT);
    if (n <= 0) return 0;
    if ((size_t)n < sizeof header || header.magic != TSP_MAGIC) return (int)n;  /* a bare payload */
    if (header.kind != TSP_DATAGRAM) return 0;
    return (int)(n - (ssize_t)sizeof header);
}
