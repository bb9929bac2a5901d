/* The LD_PRELOAD shim: see include/tapstack_preload.h. */
#define _GNU_SOURCE
#include "tapstack_preload.h"
#include "tapstack_channel.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <linux/errqueue.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* One stack socket; shared by the descriptors dup() made of it. */
/* What recvmsg reports in control messages (flags of the socket). */
enum { WANT_PKTINFO = 1, WANT_TTL = 2, WANT_TOS = 4, WANT_TIMESTAMP = 8, WANT_TIMESTAMPNS = 16,
       WANT_PKTINFO6 = 32, WANT_HOPLIMIT = 64, WANT_TCLASS = 128 };

typedef struct shared_socket {
    tsc_socket socket;          /* control_fd and the flags; data_fd unused */
    int wants;                  /* WANT_* */
    int recverr;                /* IP_RECVERR as last set */
    int bound_to_device;        /* SO_BINDTODEVICE named the stack's interface */
    uint32_t multicast_if;      /* IP_MULTICAST_IF as last set (network order) */
    int multicast_if6;          /* IPV6_MULTICAST_IF as last set (an interface index) */
    int references;             /* descriptors naming it */
    pthread_mutex_t lock;       /* one control request at a time */
    struct shared_socket *next_free;
} shared_socket;

enum { MAX_FDS = 65536 };
static shared_socket *_Atomic sockets[MAX_FDS];
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
/* Released sockets are reused, never freed: a call racing a close never
 * touches freed memory, and memory stays bounded by the most sockets open. */
static shared_socket *free_list;

#define DECLARE_REAL(name) static __typeof__(name) *real_##name
DECLARE_REAL(socket); DECLARE_REAL(bind); DECLARE_REAL(connect); DECLARE_REAL(sendto);
DECLARE_REAL(sendmsg); DECLARE_REAL(sendmmsg); DECLARE_REAL(send); DECLARE_REAL(write);
DECLARE_REAL(writev); DECLARE_REAL(recvfrom); DECLARE_REAL(recvmsg); DECLARE_REAL(recvmmsg);
DECLARE_REAL(recv); DECLARE_REAL(read); DECLARE_REAL(readv); DECLARE_REAL(getsockname);
DECLARE_REAL(getpeername); DECLARE_REAL(setsockopt); DECLARE_REAL(getsockopt); DECLARE_REAL(fcntl);
DECLARE_REAL(ioctl); DECLARE_REAL(shutdown); DECLARE_REAL(close); DECLARE_REAL(dup);
DECLARE_REAL(dup2); DECLARE_REAL(dup3);
static int (*real_fcntl64)(int, int, ...);

#define RESOLVE(name) real_##name = (__typeof__(real_##name))dlsym(RTLD_NEXT, #name)

__attribute__((constructor)) static void resolve_all(void) {
    RESOLVE(socket); RESOLVE(bind); RESOLVE(connect); RESOLVE(sendto); RESOLVE(sendmsg);
    RESOLVE(sendmmsg); RESOLVE(send); RESOLVE(write); RESOLVE(writev); RESOLVE(recvfrom);
    RESOLVE(recvmsg); RESOLVE(recvmmsg); RESOLVE(recv); RESOLVE(read); RESOLVE(readv);
    RESOLVE(getsockname); RESOLVE(getpeername); RESOLVE(setsockopt); RESOLVE(getsockopt);
    RESOLVE(fcntl); RESOLVE(ioctl); RESOLVE(shutdown); RESOLVE(close); RESOLVE(dup);
    RESOLVE(dup2); RESOLVE(dup3);
    real_fcntl64 = (int (*)(int, int, ...))dlsym(RTLD_NEXT, "fcntl64");
}

/* Calls made before the constructor ran (another library's constructor) go
 * straight to the kernel-backed C library functions. */
#define REAL(name) (real_##name ? real_##name : (resolve_all(), real_##name))

static shared_socket *lookup(int fd) {
    if (fd < 0 || fd >= MAX_FDS) return NULL;
    return atomic_load_explicit(&sockets[fd], memory_order_acquire);
}

/* Adds descriptor `fd` as a name of `shared`. */
static void attach(int fd, shared_socket *shared) {
    pthread_mutex_lock(&table_lock);
    shared->references++;
    atomic_store_explicit(&sockets[fd], shared, memory_order_release);
    pthread_mutex_unlock(&table_lock);
}

/* Forgets descriptor `fd`; the last name closes the control connection,
 * and the service releases the stack socket. The caller closes `fd`. */
static void detach(int fd) {
    if (fd < 0 || fd >= MAX_FDS) return;
    pthread_mutex_lock(&table_lock);
    shared_socket *shared = atomic_exchange_explicit(&sockets[fd], NULL, memory_order_acq_rel);
    if (shared && --shared->references == 0) {
        syscall(SYS_close, shared->socket.control_fd);
        shared->socket.control_fd = -1;
        shared->next_free = free_list;
        free_list = shared;
    }
    pthread_mutex_unlock(&table_lock);
}

static shared_socket *make_shared(const tsc_socket *socket) {
    pthread_mutex_lock(&table_lock);
    shared_socket *shared = free_list;
    if (shared) free_list = shared->next_free;
    pthread_mutex_unlock(&table_lock);
    if (!shared) {
        shared = calloc(1, sizeof *shared);
        if (!shared) return NULL;
        pthread_mutex_init(&shared->lock, NULL);
    }
    tsc_unmap_ring(&shared->socket);  /* a released socket's region: no call uses it by now */
    shared->socket = *socket;
    shared->wants = 0;
    shared->recverr = 0;
    shared->bound_to_device = 0;
    shared->multicast_if = 0;
    shared->multicast_if6 = 0;
    shared->references = 0;
    shared->next_free = NULL;
    return shared;
}

/* The socket as seen through descriptor `fd` (a copy, for data calls). */
static tsc_socket view(shared_socket *shared, int fd) {
    pthread_mutex_lock(&shared->lock);
    tsc_socket copy = shared->socket;
    pthread_mutex_unlock(&shared->lock);
    copy.data_fd = fd;
    return copy;
}

static void warn_unreachable(const char *path, int error) {
    static atomic_int warned;
    if (atomic_exchange(&warned, 1)) return;
    char line[512];
    int n = snprintf(line, sizeof line, "tapstack-preload: cannot reach the tapstack socket service at %s: %s "
                     "(is 'tapstack run' serving it? set TAPSTACK_SOCKET or --socket)\n", path, strerror(error));
    if (n > 0) syscall(SYS_write, 2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

/* ---- socket, close, dup ---- */

int socket(int domain, int type, int protocol) {
    int kind = type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC);
    if ((domain != AF_INET && domain != AF_INET6) || kind != SOCK_DGRAM || (protocol != 0 && protocol != IPPROTO_UDP)) {
        return REAL(socket)(domain, type, protocol);
    }
    tsc_socket s;
    const char *path = tsc_socket_path();
    if (tsc_open(&s, path, domain, type & (SOCK_NONBLOCK | SOCK_CLOEXEC)) < 0) {
        int error = errno;
        if (error != EMFILE && error != ENFILE) warn_unreachable(path, error);  /* EMFILE speaks for itself */
        errno = error == EMFILE ? EMFILE : error == ENOENT || error == ECONNREFUSED ? ENETDOWN : error;
        return -1;
    }
    if (s.data_fd >= MAX_FDS) {
        tsc_close(&s);
        errno = EMFILE;
        return -1;
    }
    shared_socket *shared = make_shared(&s);
    if (!shared) {
        tsc_close(&s);
        errno = ENOMEM;
        return -1;
    }
    attach(s.data_fd, shared);
    return s.data_fd;
}

int close(int fd) {
    if (lookup(fd)) detach(fd);
    return REAL(close)(fd);
}

int dup(int fd) {
    shared_socket *shared = lookup(fd);
    int copy = REAL(dup)(fd);
    if (shared && copy >= 0) attach(copy, shared);
    return copy;
}

static int redirect(int fd, int target, int result) {
    /* The kernel closed `target` silently: forget what it named. */
    shared_socket *shared = lookup(fd);
    if (result >= 0 && target != fd) {
        if (lookup(target)) detach(target);
        if (shared) attach(target, shared);
    }
    return result;
}

int dup2(int fd, int target) {
    if (fd == target) return REAL(dup2)(fd, target);
    return redirect(fd, target, REAL(dup2)(fd, target));
}

int dup3(int fd, int target, int flags) { return redirect(fd, target, REAL(dup3)(fd, target, flags)); }

static int fcntl_common(int (*real)(int, int, ...), int fd, int cmd, va_list ap) {
    void *arg = va_arg(ap, void *);
    int result = real(fd, cmd, arg);
    if ((cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) && result >= 0) {
        shared_socket *shared = lookup(fd);
        if (shared) attach(result, shared);
    }
    return result;
}

int fcntl(int fd, int cmd, ...) {
    va_list ap;
    va_start(ap, cmd);
    int result = fcntl_common(REAL(fcntl), fd, cmd, ap);
    va_end(ap);
    return result;
}

int fcntl64(int fd, int cmd, ...) {
    va_list ap;
    va_start(ap, cmd);
    int result = fcntl_common(real_fcntl64 ? real_fcntl64 : REAL(fcntl), fd, cmd, ap);
    va_end(ap);
    return result;
}

int ioctl(int fd, unsigned long request, ...) {
    va_list ap;
    va_start(ap, request);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    shared_socket *shared = lookup(fd);
    if (shared && request == FIONREAD) {
        tsc_socket s = view(shared, fd);
        *(int *)arg = tsc_pending_bytes(&s);
        return 0;
    }
    return REAL(ioctl)(fd, request, arg);
}

/* ---- addresses ---- */

/* A sockaddr of the socket's family as the protocol's address: an AF_INET
 * socket takes sockaddr_in; an AF_INET6 one sockaddr_in6 (IPv4 as
 * ::ffff:a.b.c.d) and, as Linux allows, sockaddr_in. */
static int inet_address(const tsc_socket *s, const struct sockaddr *address, socklen_t length, tsp_address *ip, uint16_t *port) {
    if (!address || length < (socklen_t)sizeof(sa_family_t)) { errno = EINVAL; return -1; }
    if (address->sa_family == AF_INET6 && s->family == AF_INET6) {
        if (length < (socklen_t)sizeof(struct sockaddr_in6)) { errno = EINVAL; return -1; }
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)address;
        memcpy(ip->bytes, &in6->sin6_addr, 16);
        *port = ntohs(in6->sin6_port);
        return 0;
    }
    if (address->sa_family != AF_INET) { errno = EAFNOSUPPORT; return -1; }
    if (length < (socklen_t)sizeof(struct sockaddr_in)) { errno = EINVAL; return -1; }
    const struct sockaddr_in *in = (const struct sockaddr_in *)address;
    *ip = tsp_address_v4(in->sin_addr.s_addr);
    *port = ntohs(in->sin_port);
    return 0;
}

/* The protocol's address as the socket's family shows it. */
static void fill_address(const tsc_socket *s, struct sockaddr *address, socklen_t *length, const tsp_address *ip, uint16_t port) {
    if (!address || !length) return;
    if (s->family == AF_INET6) {
        struct sockaddr_in6 in6 = { .sin6_family = AF_INET6, .sin6_port = htons(port) };
        memcpy(&in6.sin6_addr, ip->bytes, 16);
        /* A link-local peer's scope is the stack's interface. */
        if (ip->bytes[0] == 0xFE && (ip->bytes[1] & 0xC0) == 0x80) in6.sin6_scope_id = (uint32_t)s->interface.index;
        memcpy(address, &in6, *length < sizeof in6 ? *length : sizeof in6);
        *length = sizeof in6;
        return;
    }
    struct sockaddr_in in = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = tsp_address_get_v4(ip) };
    memcpy(address, &in, *length < sizeof in ? *length : sizeof in);
    *length = sizeof in;
}

int bind(int fd, const struct sockaddr *address, socklen_t length) {
    shared_socket *shared = lookup(fd);
    if (!shared) return REAL(bind)(fd, address, length);
    tsp_address ip;
    uint16_t port;
    if (inet_address(&shared->socket, address, length, &ip, &port) < 0) return -1;
    pthread_mutex_lock(&shared->lock);
    int result = tsc_bind(&shared->socket, &ip, port);
    int error = errno;
    pthread_mutex_unlock(&shared->lock);
    errno = error;
    return result;
}

int connect(int fd, const struct sockaddr *address, socklen_t length) {
    shared_socket *shared = lookup(fd);
    if (!shared) return REAL(connect)(fd, address, length);
    tsp_address ip = { { 0 } };
    uint16_t port = 0;
    if (!(address && length >= (socklen_t)sizeof(sa_family_t) && address->sa_family == AF_UNSPEC)) {
        if (inet_address(&shared->socket, address, length, &ip, &port) < 0) return -1;
        if (tsp_address_is_unspecified(&ip) && port == 0) { errno = EINVAL; return -1; }
    }
    pthread_mutex_lock(&shared->lock);
    int result = tsc_connect(&shared->socket, &ip, port);
    int error = errno;
    pthread_mutex_unlock(&shared->lock);
    errno = error;
    return result;
}

static int names(shared_socket *shared, tsp_address *local_ip, uint16_t *local_port, int *connected,
                 tsp_address *remote_ip, uint16_t *remote_port) {
    pthread_mutex_lock(&shared->lock);
    int result = tsc_names(&shared->socket, local_ip, local_port, connected, remote_ip, remote_port);
    int error = errno;
    pthread_mutex_unlock(&shared->lock);
    errno = error;
    return result;
}

int getsockname(int fd, struct sockaddr *address, socklen_t *length) {
    shared_socket *shared = lookup(fd);
    if (!shared) return REAL(getsockname)(fd, address, length);
    tsp_address local_ip, remote_ip;
    uint16_t local_port, remote_port;
    int connected;
    if (names(shared, &local_ip, &local_port, &connected, &remote_ip, &remote_port) < 0) return -1;
    fill_address(&shared->socket, address, length, &local_ip, local_port);
    return 0;
}

int getpeername(int fd, struct sockaddr *address, socklen_t *length) {
    shared_socket *shared = lookup(fd);
    if (!shared) return REAL(getpeername)(fd, address, length);
    tsp_address local_ip, remote_ip;
    uint16_t local_port, remote_port;
    int connected;
    if (names(shared, &local_ip, &local_port, &connected, &remote_ip, &remote_port) < 0) return -1;
    if (!connected) { errno = ENOTCONN; return -1; }
    fill_address(&shared->socket, address, length, &remote_ip, remote_port);
    return 0;
}

int shutdown(int fd, int how) {
    shared_socket *shared = lookup(fd);
    if (!shared) return REAL(shutdown)(fd, how);
    /* The data channel must stay open (the service would release the
     * socket), so a UDP shutdown only checks, as Linux does, for a peer. */
    pthread_mutex_lock(&shared->lock);
    int connected = shared->socket.connected;
    pthread_mutex_unlock(&shared->lock);
    if (!connected) { errno = ENOTCONN; return -1; }
    return 0;
}

/* ---- options ---- */

static int option_for(int level, int name) {
    if (level == SOL_SOCKET) {
        switch (name) {
        case SO_BROADCAST: return TSP_OPT_BROADCAST;
        case SO_REUSEADDR: case SO_REUSEPORT: return TSP_OPT_REUSEADDR;
        case SO_RCVBUF: case SO_RCVBUFFORCE: return TSP_OPT_RCVBUF;
        case SO_ERROR: return TSP_OPT_ERROR;
        }
    }
    if (level == IPPROTO_IP) {
        switch (name) {
        case IP_MTU_DISCOVER: return TSP_OPT_DONTFRAG;
        case IP_TTL: return TSP_OPT_TTL;
        case IP_TOS: return TSP_OPT_TOS;
        case IP_MULTICAST_TTL: return TSP_OPT_MULTICAST_TTL;
        case IP_MULTICAST_LOOP: return TSP_OPT_MULTICAST_LOOP;
        case IP_FREEBIND: return TSP_OPT_FREEBIND;
        }
    }
    if (level == IPPROTO_IPV6) {
        /* The IPv6 names of the same settings (hop limit is the TTL, traffic class the TOS). */
        switch (name) {
        case IPV6_V6ONLY: return TSP_OPT_V6ONLY;
        case IPV6_UNICAST_HOPS: return TSP_OPT_TTL;
        case IPV6_TCLASS: return TSP_OPT_TOS;
        case IPV6_MULTICAST_HOPS: return TSP_OPT_MULTICAST_TTL;
        case IPV6_MULTICAST_LOOP: return TSP_OPT_MULTICAST_LOOP;
        case IPV6_FREEBIND: return TSP_OPT_FREEBIND;
        case IPV6_RECVERR: return TSP_OPT_RECVERR;
        }
    }
    return 0;
}

/* The WANT_* flag an option sets, or 0. */
static int want_for(int level, int name) {
    if (level == IPPROTO_IP) {
        if (name == IP_PKTINFO) return WANT_PKTINFO;
        if (name == IP_RECVTTL) return WANT_TTL;
        if (name == IP_RECVTOS) return WANT_TOS;
    }
    if (level == IPPROTO_IPV6) {
        if (name == IPV6_RECVPKTINFO) return WANT_PKTINFO6;
        if (name == IPV6_RECVHOPLIMIT) return WANT_HOPLIMIT;
        if (name == IPV6_RECVTCLASS) return WANT_TCLASS;
    }
    if (level == SOL_SOCKET) {
        if (name == SO_TIMESTAMP) return WANT_TIMESTAMP;
        if (name == SO_TIMESTAMPNS) return WANT_TIMESTAMPNS;
    }
    return 0;
}

/* Options the data channel's own kernel socket implements as a UDP socket would. */
static int kernel_option(int level, int name) {
    return level == SOL_SOCKET && (name == SO_SNDBUF || name == SO_SNDBUFFORCE || name == SO_RCVTIMEO ||
                                   name == SO_SNDTIMEO || name == SO_RCVLOWAT);
}

/* An int option's value; Linux takes a single byte too for IP options. */
static int read_value(const void *value, socklen_t length, int *out) {
    if (!value) { errno = EFAULT; return -1; }
    if (length >= (socklen_t)sizeof(int)) { memcpy(out, value, sizeof(int)); return 0; }
    if (length >= 1) { *out = *(const unsigned char *)value; return 0; }
    errno = EINVAL;
    return -1;
}

/* 1 when `address` (network order) or `index` names the stack's interface (0 for either: any). */
static int is_our_interface(const tsc_socket *s, uint32_t address, int index) {
    return (address == 0 || address == s->interface.address) && (index == 0 || index == s->interface.index);
}

static int locked_setopt(shared_socket *shared, int option, int value) {
    pthread_mutex_lock(&shared->lock);
    int result = tsc_setopt(&shared->socket, option, value);
    int error = errno;
    pthread_mutex_unlock(&shared->lock);
    errno = error;
    return result;
}

/* IP_ADD_MEMBERSHIP and friends: ip_mreq, ip_mreqn or ip_mreq_source. */
static int membership(shared_socket *shared, int name, const void *value, socklen_t length) {
    uint32_t group, interface = 0, source = 0;
    int index = 0, option;
    if (!value) { errno = EFAULT; return -1; }
    if (name == IP_ADD_SOURCE_MEMBERSHIP || name == IP_DROP_SOURCE_MEMBERSHIP) {
        if (length < (socklen_t)sizeof(struct ip_mreq_source)) { errno = EINVAL; return -1; }
        struct ip_mreq_source request;
        memcpy(&request, value, sizeof request);
        group = request.imr_multiaddr.s_addr;
        interface = request.imr_interface.s_addr;
        source = request.imr_sourceaddr.s_addr;
        option = name == IP_ADD_SOURCE_MEMBERSHIP ? TSP_OPT_ADD_SOURCE_MEMBERSHIP : TSP_OPT_DROP_SOURCE_MEMBERSHIP;
    } else {
        if (length < (socklen_t)sizeof(struct ip_mreq)) { errno = EINVAL; return -1; }
        if (length >= (socklen_t)sizeof(struct ip_mreqn)) {
            struct ip_mreqn request;
            memcpy(&request, value, sizeof request);
            group = request.imr_multiaddr.s_addr;
            interface = request.imr_address.s_addr;
            index = request.imr_ifindex;
        } else {
            struct ip_mreq request;
            memcpy(&request, value, sizeof request);
            group = request.imr_multiaddr.s_addr;
            interface = request.imr_interface.s_addr;
        }
        option = name == IP_ADD_MEMBERSHIP ? TSP_OPT_ADD_MEMBERSHIP : TSP_OPT_DROP_MEMBERSHIP;
    }
    if (!is_our_interface(&shared->socket, interface, index)) { errno = ENODEV; return -1; }
    tsp_address group_address = tsp_address_v4(group), source_address = tsp_address_v4(source);
    pthread_mutex_lock(&shared->lock);
    int result = tsc_membership(&shared->socket, option, &group_address,
                                option == TSP_OPT_ADD_SOURCE_MEMBERSHIP || option == TSP_OPT_DROP_SOURCE_MEMBERSHIP ? &source_address : NULL);
    int error = errno;
    pthread_mutex_unlock(&shared->lock);
    errno = error;
    return result;
}

/* IPV6_JOIN_GROUP / IPV6_LEAVE_GROUP: an ipv6_mreq on the stack's interface (index 0: any). */
static int membership6(shared_socket *shared, int name, const void *value, socklen_t length) {
    if (!value) { errno = EFAULT; return -1; }
    if (length < (socklen_t)sizeof(struct ipv6_mreq)) { errno = EINVAL; return -1; }
    struct ipv6_mreq request;
    memcpy(&request, value, sizeof request);
    if (request.ipv6mr_interface != 0 && (int)request.ipv6mr_interface != shared->socket.interface.index) { errno = ENODEV; return -1; }
    tsp_address group;
    memcpy(group.bytes, &request.ipv6mr_multiaddr, 16);
    int option = name == IPV6_JOIN_GROUP ? TSP_OPT_ADD_MEMBERSHIP : TSP_OPT_DROP_MEMBERSHIP;
    pthread_mutex_lock(&shared->lock);
    int result = tsc_membership(&shared->socket, option, &group, NULL);
    int error = errno;
    pthread_mutex_unlock(&shared->lock);
    errno = error;
    return result;
}

int setsockopt(int fd, int level, int name, const void *value, socklen_t length) {
    shared_socket *shared = lookup(fd);
    if (!shared || kernel_option(level, name)) return REAL(setsockopt)(fd, level, name, value, length);
    int want = want_for(level, name);
    if (want) {
        int on;
        if (read_value(value, length, &on) < 0) return -1;
        pthread_mutex_lock(&shared->lock);
        int wants = on ? shared->wants | want : shared->wants & ~want;
        if (want == WANT_TIMESTAMP && on) wants &= ~WANT_TIMESTAMPNS;  /* the last one set wins, as on Linux */
        if (want == WANT_TIMESTAMPNS && on) wants &= ~WANT_TIMESTAMP;
        int result = 0;
        if ((wants != 0) != (shared->socket.want_info != 0)) result = tsc_setopt(&shared->socket, TSP_OPT_WANT_INFO, wants != 0);
        int error = errno;
        if (result == 0) shared->wants = wants;
        pthread_mutex_unlock(&shared->lock);
        errno = error;
        return result;
    }
    if (level == IPPROTO_IP) {
        switch (name) {
        case IP_ADD_MEMBERSHIP: case IP_DROP_MEMBERSHIP:
        case IP_ADD_SOURCE_MEMBERSHIP: case IP_DROP_SOURCE_MEMBERSHIP:
            return membership(shared, name, value, length);
        case IP_MULTICAST_IF: {
            /* in_addr, ip_mreq or ip_mreqn: only the stack's interface exists. */
            uint32_t address = 0;
            int index = 0;
            if (!value || length < (socklen_t)sizeof(struct in_addr)) { errno = EINVAL; return -1; }
            if (length >= (socklen_t)sizeof(struct ip_mreqn)) {
                struct ip_mreqn request;
                memcpy(&request, value, sizeof request);
                address = request.imr_address.s_addr;
                index = request.imr_ifindex;
            } else {
                memcpy(&address, (length >= (socklen_t)sizeof(struct ip_mreq)) ? (const char *)value + 4 : value, 4);
            }
            if (!is_our_interface(&shared->socket, address, index)) { errno = EADDRNOTAVAIL; return -1; }
            shared->multicast_if = address;
            return 0;
        }
        case IP_RECVERR: {
            int on;
            if (read_value(value, length, &on) < 0) return -1;
            if (locked_setopt(shared, TSP_OPT_RECVERR, on != 0) < 0) return -1;
            shared->recverr = on != 0;
            return 0;
        }
        }
    }
    if (level == IPPROTO_IPV6 && shared->socket.family == AF_INET6) {
        switch (name) {
        case IPV6_JOIN_GROUP: case IPV6_LEAVE_GROUP:
            return membership6(shared, name, value, length);
        case IPV6_MULTICAST_IF: {
            /* An interface index: only the stack's exists (0: the default). */
            int index;
            if (read_value(value, length, &index) < 0) return -1;
            if (index != 0 && index != shared->socket.interface.index) { errno = ENODEV; return -1; }
            shared->multicast_if6 = index;
            return 0;
        }
        }
    }
    if (level == SOL_SOCKET && name == SO_BINDTODEVICE) {
        /* Only the stack's own interface exists for its sockets; "" unbinds. */
        char wanted[IFNAMSIZ] = { 0 };
        if (length > 0 && !value) { errno = EFAULT; return -1; }
        memcpy(wanted, value, length < IFNAMSIZ - 1 ? length : IFNAMSIZ - 1);
        if (wanted[0] && strncmp(wanted, shared->socket.interface.name, IFNAMSIZ) != 0) { errno = ENODEV; return -1; }
        shared->bound_to_device = wanted[0] != 0;
        return 0;
    }
    if (level == SOL_SOCKET && name == SO_BUSY_POLL) {
        /* Microseconds a blocking receive polls the socket's ring before it
         * sleeps, as Linux's busy poll of a device queue. It spins only the
         * caller's own CPU, so raising it needs no CAP_NET_ADMIN here. */
        int us;
        if (!value || length < (socklen_t)sizeof us) { errno = EINVAL; return -1; }
        memcpy(&us, value, sizeof us);
        if (us < 0) { errno = EINVAL; return -1; }
        pthread_mutex_lock(&shared->lock);
        shared->socket.busy_poll_us = us;
        pthread_mutex_unlock(&shared->lock);
        return 0;
    }
    int option = option_for(level, name);
    if (!option || option == TSP_OPT_ERROR) { errno = ENOPROTOOPT; return -1; }
    int v;
    if (option == TSP_OPT_DONTFRAG || option == TSP_OPT_BROADCAST || option == TSP_OPT_REUSEADDR || option == TSP_OPT_RCVBUF) {
        if (!value || length < (socklen_t)sizeof(int)) { errno = EINVAL; return -1; }
        memcpy(&v, value, sizeof v);
    } else if (read_value(value, length, &v) < 0) {
        return -1;
    }
    if (option == TSP_OPT_DONTFRAG) v = v == IP_PMTUDISC_DO;
    return locked_setopt(shared, option, v);
}

int getsockopt(int fd, int level, int name, void *value, socklen_t *length) {
    shared_socket *shared = lookup(fd);
    if (!shared || kernel_option(level, name)) return REAL(getsockopt)(fd, level, name, value, length);
    if (level == SOL_SOCKET && name == SO_BINDTODEVICE) {
        if (!value || !length) { errno = EFAULT; return -1; }
        const char *device = shared->bound_to_device ? shared->socket.interface.name : "";
        size_t size = strlen(device) + (shared->bound_to_device ? 1 : 0);
        if (*length < size) { errno = EINVAL; return -1; }
        memcpy(value, device, size);
        *length = (socklen_t)size;
        return 0;
    }
    if (!value || !length || *length < 1) { errno = EINVAL; return -1; }
    int v;
    int want = want_for(level, name);
    if (want) {
        v = (shared->wants & want) != 0;
    } else if (level == IPPROTO_IP && name == IP_RECVERR) {
        v = shared->recverr;
    } else if (level == IPPROTO_IPV6 && name == IPV6_MULTICAST_IF && shared->socket.family == AF_INET6) {
        v = shared->multicast_if6;
    } else if (level == IPPROTO_IP && name == IP_MULTICAST_IF) {
        if (*length < (socklen_t)sizeof(struct in_addr)) { errno = EINVAL; return -1; }
        memcpy(value, &shared->multicast_if, sizeof shared->multicast_if);
        *length = sizeof shared->multicast_if;
        return 0;
    } else if (level == SOL_SOCKET && name == SO_BUSY_POLL) {
        pthread_mutex_lock(&shared->lock);
        v = shared->socket.busy_poll_us > 0 ? shared->socket.busy_poll_us : 0;  /* adaptive: no fixed time */
        pthread_mutex_unlock(&shared->lock);
    } else if (level == SOL_SOCKET && name == SO_TYPE) {
        v = SOCK_DGRAM;
    } else if (level == SOL_SOCKET && name == SO_DOMAIN) {
        v = shared->socket.family;
    } else if (level == SOL_SOCKET && name == SO_PROTOCOL) {
        v = IPPROTO_UDP;
    } else if (level == SOL_SOCKET && name == SO_ACCEPTCONN) {
        v = 0;
    } else {
        int option = option_for(level, name);
        if (!option) { errno = ENOPROTOOPT; return -1; }
        pthread_mutex_lock(&shared->lock);
        int result = tsc_getopt(&shared->socket, option, &v);
        int error = errno;
        pthread_mutex_unlock(&shared->lock);
        if (result < 0) { errno = error; return -1; }
        if (option == TSP_OPT_DONTFRAG) v = v ? IP_PMTUDISC_DO : IP_PMTUDISC_DONT;
    }
    if (*length < (socklen_t)sizeof v) {
        /* Linux gives byte-sized IP options to a one-byte buffer. */
        if (level != IPPROTO_IP) { errno = EINVAL; return -1; }
        *(unsigned char *)value = (unsigned char)v;
        *length = 1;
        return 0;
    }
    memcpy(value, &v, sizeof v);
    *length = sizeof v;
    return 0;
}

/* ---- sending ---- */

/* Moves the socket's datagrams to shared memory on its first send (and its
 * received ones on its first receive): only datagrams that pass through
 * here, since a program that reads or writes its descriptor with raw system
 * calls (libuv's recvmmsg) must keep finding them on the channel. */
static void use_ring(shared_socket *shared, int receive) {
    if (tsc_ring_settled(&shared->socket, receive)) return;
    pthread_mutex_lock(&shared->lock);
    tsc_use_ring(&shared->socket, receive);
    pthread_mutex_unlock(&shared->lock);
}

static ssize_t send_on(shared_socket *shared, int fd, const struct iovec *iov, int iovcnt,
                       const struct sockaddr *to, socklen_t to_length, int flags, const tsc_message_info *info) {
    use_ring(shared, 0);
    tsc_socket s = view(shared, fd);
    if (!to) return tsc_sendv_info(&s, iov, iovcnt, NULL, 0, flags, info);
    tsp_address ip;
    uint16_t port;
    if (inet_address(&s, to, to_length, &ip, &port) < 0) return -1;
    return tsc_sendv_info(&s, iov, iovcnt, &ip, port, flags, info);
}

/* sendmsg's control messages: IP_PKTINFO (source address), IP_TTL, IP_TOS,
 * and IPv6's IPV6_PKTINFO, IPV6_HOPLIMIT, IPV6_TCLASS. Others are refused
 * with EINVAL, as Linux refuses unknown ones. */
static int send_info(shared_socket *shared, const struct msghdr *message, tsc_message_info *info) {
    memset(info, 0, sizeof *info);
    if (!message->msg_control || message->msg_controllen == 0) return 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR((struct msghdr *)message); c; c = CMSG_NXTHDR((struct msghdr *)message, c)) {
        size_t data = c->cmsg_len - CMSG_LEN(0);
        if (c->cmsg_level == IPPROTO_IPV6 && shared->socket.family == AF_INET6) {
            int v = 0;
            if (c->cmsg_type == IPV6_PKTINFO && data >= sizeof(struct in6_pktinfo)) {
                struct in6_pktinfo pktinfo;
                memcpy(&pktinfo, CMSG_DATA(c), sizeof pktinfo);
                if (pktinfo.ipi6_ifindex != 0 && (int)pktinfo.ipi6_ifindex != shared->socket.interface.index) { errno = ENODEV; return -1; }
                memcpy(info->source.bytes, &pktinfo.ipi6_addr, 16);
            } else if ((c->cmsg_type == IPV6_HOPLIMIT || c->cmsg_type == IPV6_TCLASS) && data >= sizeof(int)) {
                memcpy(&v, CMSG_DATA(c), sizeof v);
                if (v < -1 || v > 255) { errno = EINVAL; return -1; }
                if (v >= 0 && c->cmsg_type == IPV6_HOPLIMIT) { info->ttl = (uint8_t)v; info->flags |= TSP_SEND_TTL; }
                if (v >= 0 && c->cmsg_type == IPV6_TCLASS) { info->tos = (uint8_t)v; info->flags |= TSP_SEND_TOS; }
            } else {
                errno = EINVAL;
                return -1;
            }
            continue;
        }
        if (c->cmsg_level != IPPROTO_IP) { errno = EINVAL; return -1; }
        if (c->cmsg_type == IP_PKTINFO && data >= sizeof(struct in_pktinfo)) {
            struct in_pktinfo pktinfo;
            memcpy(&pktinfo, CMSG_DATA(c), sizeof pktinfo);
            if (pktinfo.ipi_ifindex != 0 && pktinfo.ipi_ifindex != shared->socket.interface.index) { errno = ENODEV; return -1; }
            info->source = tsp_address_v4(pktinfo.ipi_spec_dst.s_addr);
        } else if (c->cmsg_type == IP_TTL && data >= sizeof(int)) {
            int ttl;
            memcpy(&ttl, CMSG_DATA(c), sizeof ttl);
            if (ttl < 1 || ttl > 255) { errno = EINVAL; return -1; }
            info->ttl = (uint8_t)ttl;
            info->flags |= TSP_SEND_TTL;
        } else if (c->cmsg_type == IP_TOS && data >= 1) {
            int tos = 0;
            if (data >= sizeof(int)) memcpy(&tos, CMSG_DATA(c), sizeof tos); else tos = *CMSG_DATA(c);
            info->tos = (uint8_t)tos;
            info->flags |= TSP_SEND_TOS;
        } else {
            errno = EINVAL;
            return -1;
        }
    }
    return 0;
}

ssize_t sendto(int fd, const void *buffer, size_t length, int flags, const struct sockaddr *to, socklen_t to_length) {
    shared_socket *shared = lookup(fd);
    if (!shared) return REAL(sendto)(fd, buffer, length, flags, to, to_length);
    struct iovec part = { (void *)buffer, length };
    return send_on(shared, fd, &part, 1, to, to_length, flags, NULL);
}

ssize_t send(int fd, const void *buffer, size_t length, int flags) {
    shared_socket *shared = lookup(fd);
    if (!shared) return REAL(send)(fd, buffer, length, flags);
    struct iovec part = { (void *)buffer, length };
    return send_on(shared, fd, &part, 1, NULL, 0, flags, NULL);
}

ssize_t write(int fd, const void *buffer, size_t length) {
    shared_socket *shared = lookup(fd);
    if (!shared) return REAL(write)(fd, buffer, length);
    struct iovec part = { (void *)buffer, length };
    return send_on(shared, fd, &part, 1, NULL, 0, 0, NULL);
}

ssize_t writev(int fd, const struct iovec *iov, int iovcnt) {
    shared_socket *shared = lookup(fd);
    if (!shared) return REAL(writev)(fd, iov, iovcnt);
    return send_on(shared, fd, iov, iovcnt, NULL, 0, 0, NULL);
}

ssize_t sendmsg(int fd, const struct msghdr *message, int flags) {
    shared_socket *shared = lookup(fd);
    if (!shared) return REAL(sendmsg)(fd, message, flags);
    tsc_message_info info;
    if (send_info(shared, message, &info) < 0) return -1;
    return send_on(shared, fd, message->msg_iov, (int)message->msg_iovlen, message->msg_name,
                   message->msg_namelen, flags, &info);
}

int sendmmsg(int fd, struct mmsghdr *messages, unsigned int count, int flags) {
    shared_socket *shared = lookup(fd);
    if (!shared) return REAL(sendmmsg)(fd, messages, count, flags);
    if (count == 0) return 0;
    /* The first as sendmsg sends it (it may wait); the rest without
     * waiting, as one batch that the stack sees at one look. Stops at the
     * first refused, as Linux does once one was sent. */
    ssize_t n = sendmsg(fd, &messages[0].msg_hdr, flags);
    if (n < 0) return -1;
    messages[0].msg_len = (unsigned)n;
    use_ring(shared, 0);
    tsc_socket s = view(shared, fd);
    tsc_send_batch batch;
    tsc_send_batch_begin(&s, &batch);
    unsigned sent = 1;
    for (; sent < count; sent++) {
        const struct msghdr *message = &messages[sent].msg_hdr;
        tsc_message_info info;
        tsp_address ip;
        uint16_t port = 0;
        if (send_info(shared, message, &info) < 0) break;
        if (message->msg_name && inet_address(&s, message->msg_name, message->msg_namelen, &ip, &port) < 0) break;
        n = tsc_send_batch_add(&s, &batch, message->msg_iov, (int)message->msg_iovlen,
                               message->msg_name ? &ip : NULL, port, &info);
        if (n < 0) break;
        messages[sent].msg_len = (unsigned)n;
    }
    tsc_send_batch_end(&s, &batch);
    return (int)sent;
}

/* ---- receiving ---- */

static ssize_t receive_error(shared_socket *shared, int fd, struct msghdr *message);

static ssize_t receive_on(shared_socket *shared, int fd, const struct iovec *iov, int iovcnt,
                          struct sockaddr *from, socklen_t *from_length, int flags, int *truncated,
                          tsc_message_info *info) {
    use_ring(shared, 1);
    tsc_socket s = view(shared, fd);
    tsp_address ip = { { 0 } };
    uint16_t port = 0;
    int cut = 0;
    ssize_t n = tsc_recvv_info(&s, iov, iovcnt, &ip, &port, flags, &cut, info);
    if (n < 0) return -1;
    fill_address(&s, from, from_length, &ip, port);
    if (truncated) *truncated = cut;
    return n;
}

ssize_t recvfrom(int fd, void *buffer, size_t length, int flags, struct sockaddr *from, socklen_t *from_length) {
    shared_socket *shared = lookup(fd);
    if (!shared) return REAL(recvfrom)(fd, buffer, length, flags, from, from_length);
    struct iovec part = { buffer, length };
    if (flags & MSG_ERRQUEUE) {
        struct msghdr message = { .msg_name = from, .msg_namelen = from_length ? *from_length : 0, .msg_iov = &part, .msg_iovlen = 1 };
        ssize_t n = receive_error(shared, fd, &message);
        if (n >= 0 && from_length) *from_length = message.msg_namelen;
        return n;
    }
    return receive_on(shared, fd, &part, 1, from, from_length, flags, NULL, NULL);
}

ssize_t recv(int fd, void *buffer, size_t length, int flags) {
    shared_socket *shared = lookup(fd);
    if (!shared) return REAL(recv)(fd, buffer, length, flags);
    if (flags & MSG_ERRQUEUE) return recvfrom(fd, buffer, length, flags, NULL, NULL);
    struct iovec part = { buffer, length };
    return receive_on(shared, fd, &part, 1, NULL, NULL, flags, NULL, NULL);
}

ssize_t read(int fd, void *buffer, size_t length) {
    shared_socket *shared = lookup(fd);
    if (!shared) return REAL(read)(fd, buffer, length);
    struct iovec part = { buffer, length };
    return receive_on(shared, fd, &part, 1, NULL, NULL, 0, NULL, NULL);
}

ssize_t readv(int fd, const struct iovec *iov, int iovcnt) {
    shared_socket *shared = lookup(fd);
    if (!shared) return REAL(readv)(fd, iov, iovcnt);
    return receive_on(shared, fd, iov, iovcnt, NULL, NULL, 0, NULL, NULL);
}

/* Appends one control message; sets MSG_CTRUNC when it does not fit. */
static void put_control(struct msghdr *message, size_t *used, int level, int type, const void *data, size_t length) {
    if (!message->msg_control || *used + CMSG_SPACE(length) > message->msg_controllen) {
        message->msg_flags |= MSG_CTRUNC;
        return;
    }
    struct cmsghdr *c = (struct cmsghdr *)((char *)message->msg_control + *used);
    memset(c, 0, CMSG_SPACE(length));
    c->cmsg_level = level;
    c->cmsg_type = type;
    c->cmsg_len = CMSG_LEN(length);
    memcpy(CMSG_DATA(c), data, length);
    *used += CMSG_SPACE(length);
}

/* recvmsg with MSG_ERRQUEUE: the oldest ICMP error, as Linux gives it: the
 * failed datagram's payload, its destination as the name, and an IP_RECVERR
 * control message holding a sock_extended_err and the offender's address.
 * Never waits: an empty queue is EAGAIN. */
static ssize_t receive_error(shared_socket *shared, int fd, struct msghdr *message) {
    tsp_queued_error queued;
    int error;
    tsp_address address;
    uint16_t port;
    tsc_socket s = view(shared, fd);
    if (tsc_errqueue(&s, &queued, &error, &address, &port) < 0) return -1;
    size_t copied = 0;
    for (size_t i = 0; i < message->msg_iovlen && copied < queued.length; i++) {
        size_t take = message->msg_iov[i].iov_len < queued.length - copied ? message->msg_iov[i].iov_len : queued.length - copied;
        memcpy(message->msg_iov[i].iov_base, queued.data + copied, take);
        copied += take;
    }
    if (message->msg_name) {
        socklen_t name_length = message->msg_namelen;
        fill_address(&s, message->msg_name, &name_length, &address, port);
        message->msg_namelen = name_length;
    }
    message->msg_flags = MSG_ERRQUEUE | (copied < queued.length ? MSG_TRUNC : 0);
    /* ICMP errors come as IP_RECVERR with an IPv4 offender, ICMPv6 ones as
     * IPV6_RECVERR with an IPv6 one, as Linux gives them. */
    int v6 = !tsp_address_is_v4(&queued.offender);
    struct {
        struct sock_extended_err extended;
        union { struct sockaddr_in v4; struct sockaddr_in6 v6; } offender;
    } report;
    memset(&report, 0, sizeof report);
    report.extended.ee_errno = (uint32_t)error;
    report.extended.ee_origin = v6 ? SO_EE_ORIGIN_ICMP6 : SO_EE_ORIGIN_ICMP;
    report.extended.ee_type = queued.type;
    report.extended.ee_code = queued.code;
    report.extended.ee_info = queued.info;
    if (v6) {
        report.offender.v6.sin6_family = AF_INET6;
        memcpy(&report.offender.v6.sin6_addr, queued.offender.bytes, 16);
    } else {
        report.offender.v4.sin_family = AF_INET;
        report.offender.v4.sin_addr.s_addr = tsp_address_get_v4(&queued.offender);
    }
    size_t used = 0;
    size_t length = sizeof report.extended + (v6 ? sizeof report.offender.v6 : sizeof report.offender.v4);
    put_control(message, &used, v6 ? IPPROTO_IPV6 : IPPROTO_IP, v6 ? IPV6_RECVERR : IP_RECVERR, &report, length);
    message->msg_controllen = used;
    return (ssize_t)copied;
}

ssize_t recvmsg(int fd, struct msghdr *message, int flags) {
    shared_socket *shared = lookup(fd);
    if (!shared) return REAL(recvmsg)(fd, message, flags);
    if (flags & MSG_ERRQUEUE) return receive_error(shared, fd, message);
    int truncated = 0;
    socklen_t name_length = message->msg_namelen;
    int wants = __atomic_load_n(&shared->wants, __ATOMIC_RELAXED);
    tsc_message_info info;
    ssize_t n = receive_on(shared, fd, message->msg_iov, (int)message->msg_iovlen, message->msg_name,
                           message->msg_name ? &name_length : NULL, flags, &truncated, wants ? &info : NULL);
    if (n < 0) return -1;
    if (message->msg_name) message->msg_namelen = name_length;
    message->msg_flags = truncated ? MSG_TRUNC : 0;
    size_t used = 0;
    /* In the order Linux puts them: timestamps (socket level), then IP's. */
    if (wants & WANT_TIMESTAMP) {
        struct timeval stamp = { .tv_sec = (time_t)(info.timestamp_ns / 1000000000u),
                                 .tv_usec = (suseconds_t)(info.timestamp_ns % 1000000000u / 1000u) };
        put_control(message, &used, SOL_SOCKET, SCM_TIMESTAMP, &stamp, sizeof stamp);
    }
    if (wants & WANT_TIMESTAMPNS) {
        struct timespec stamp = { .tv_sec = (time_t)(info.timestamp_ns / 1000000000u),
                                  .tv_nsec = (long)(info.timestamp_ns % 1000000000u) };
        put_control(message, &used, SOL_SOCKET, SCM_TIMESTAMPNS, &stamp, sizeof stamp);
    }
    if (wants & WANT_PKTINFO) {
        tsc_socket s = view(shared, fd);
        struct in_pktinfo pktinfo = { .ipi_ifindex = s.interface.index };
        pktinfo.ipi_spec_dst.s_addr = s.interface.address;
        pktinfo.ipi_addr.s_addr = tsp_address_get_v4(&info.destination);
        put_control(message, &used, IPPROTO_IP, IP_PKTINFO, &pktinfo, sizeof pktinfo);
    }
    if (wants & WANT_PKTINFO6) {
        struct in6_pktinfo pktinfo = { .ipi6_ifindex = (unsigned)view(shared, fd).interface.index };
        memcpy(&pktinfo.ipi6_addr, info.destination.bytes, 16);
        put_control(message, &used, IPPROTO_IPV6, IPV6_PKTINFO, &pktinfo, sizeof pktinfo);
    }
    if (wants & WANT_HOPLIMIT) {
        int hops = info.ttl;
        put_control(message, &used, IPPROTO_IPV6, IPV6_HOPLIMIT, &hops, sizeof hops);
    }
    if (wants & WANT_TCLASS) {
        int tclass = info.tos;
        put_control(message, &used, IPPROTO_IPV6, IPV6_TCLASS, &tclass, sizeof tclass);
    }
    if (wants & WANT_TTL) {
        int ttl = info.ttl;
        put_control(message, &used, IPPROTO_IP, IP_TTL, &ttl, sizeof ttl);
    }
    if (wants & WANT_TOS) {
        unsigned char tos = info.tos;
        put_control(message, &used, IPPROTO_IP, IP_TOS, &tos, sizeof tos);
    }
    message->msg_controllen = used;
    return n;
}

int recvmmsg(int fd, struct mmsghdr *messages, unsigned int count, int flags, struct timespec *timeout) {
    shared_socket *shared = lookup(fd);
    if (!shared) return REAL(recvmmsg)(fd, messages, count, flags, timeout);
    /* The first receive waits as the flags say; the rest take only what is
     * already there (as MSG_WAITFORONE asks; `timeout` is not supported). */
    (void)timeout;
    unsigned received = 0;
    for (; received < count; received++) {
        int each = (flags & ~MSG_WAITFORONE) | (received ? MSG_DONTWAIT : 0);
        /* After a datagram, only another datagram: an error stays for the
         * next call to report, as the kernel keeps it. */
        if (received) {
            tsc_socket s = view(shared, fd);
            if (!tsc_datagram_next(&s)) break;
        }
        ssize_t n = recvmsg(fd, &messages[received].msg_hdr, each);
        if (n < 0) return received ? (int)received : -1;
        messages[received].msg_len = (unsigned)n;
    }
    return (int)received;
}
