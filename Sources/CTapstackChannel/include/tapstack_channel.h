#ifndef TAPSTACK_CHANNEL_H
#define TAPSTACK_CHANNEL_H
/*
 * The socket service's wire protocol and the client side of it, shared by
 * the service (Swift), the Swift client library and the LD_PRELOAD shim.
 *
 * A client opens one stack socket by connecting a SOCK_SEQPACKET socket to
 * the service (the *control* connection) and sending TSP_OPEN. The reply
 * carries, as SCM_RIGHTS, one end of a SOCK_SEQPACKET socket pair: the *data*
 * channel. Each datagram crosses it as one message, a tsp_datagram_header
 * followed by the payload, so the kernel gives backpressure and readiness
 * (poll, select and epoll work on the data descriptor unchanged). Control
 * requests (bind, connect, options, names) go over the control connection,
 * one request, one reply. The service releases the stack socket when either
 * connection is closed: closing the descriptor or dying is enough.
 *
 * All integers are in host byte order except addresses: a tsp_address is an
 * IPv6 address in network order, an IPv4 one written as ::ffff:a.b.c.d (RFC
 * 4291 2.5.5.2), as a dual-stack socket shows it; the interface's IPv4
 * fields are network order as in sockaddr_in. Both ends are on one machine.
 */
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "tapstack_ring.h"

#define TSP_VERSION 4
/// Opens every framed message on the data channel. A message without it is a
/// bare payload: what a program wrote with a raw system call the preload shim
/// cannot see (libuv's `syscall(__NR_sendmmsg)`), sent to the connected peer;
/// toward a connected socket the service sends bare payloads too (see
/// tsp_datagram_header), so such programs read what they expect.
#define TSP_MAGIC 0x31505354u
/// Where the service listens unless told otherwise; `tapstack run` uses
/// /run/tapstack/INTERFACE.sock, so this is the default interface's.
#define TSP_DEFAULT_SOCKET_PATH "/run/tapstack/tap0.sock"
/// The environment variable naming the service socket for the shim and the client.
#define TSP_SOCKET_ENV "TAPSTACK_SOCKET"
/// How long a client waits for the reply to a control request before the
/// call fails with ETIMEDOUT.
#define TSP_REPLY_TIMEOUT_SECONDS 5
/// The largest UDP payload over IPv4 (65535 - 20 - 8).
#define TSP_MAX_PAYLOAD 65507
/// The largest UDP payload over IPv6 without jumbograms (65535 - 8).
#define TSP_MAX_PAYLOAD6 65527

/// An address of either family (see the top of this file).
typedef struct {
    uint8_t bytes[16];
} tsp_address;

/// ::ffff:a.b.c.d for an IPv4 address in network order.
static inline tsp_address tsp_address_v4(uint32_t network_order) {
    tsp_address a = { { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF } };
    __builtin_memcpy(a.bytes + 12, &network_order, 4);
    return a;
}
/// 1 when `a` is an IPv4 address (v4-mapped).
static inline int tsp_address_is_v4(const tsp_address *a) {
    static const uint8_t prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF };
    return __builtin_memcmp(a->bytes, prefix, 12) == 0;
}
/// The IPv4 address (network order) of a v4-mapped address.
static inline uint32_t tsp_address_get_v4(const tsp_address *a) {
    uint32_t v;
    __builtin_memcpy(&v, a->bytes + 12, 4);
    return v;
}
/// 1 for :: and for 0.0.0.0 (v4-mapped): "any".
static inline int tsp_address_is_unspecified(const tsp_address *a) {
    static const uint8_t zero[16];
    return __builtin_memcmp(a->bytes, zero, 16) == 0 || (tsp_address_is_v4(a) && tsp_address_get_v4(a) == 0);
}

enum tsp_op {
    TSP_OPEN = 1,       ///< open a socket (option: AF_INET, AF_INET6, or 0 for AF_INET); reply carries the data channel
    TSP_BIND = 2,       ///< address, port
    TSP_CONNECT = 3,    ///< address, port; address 0 and port 0 disconnect
    TSP_SETOPT = 4,     ///< option, value
    TSP_GETOPT = 5,     ///< option; reply value
    TSP_NAMES = 6,      ///< reply: local and remote addresses
    TSP_QUERY = 7,      ///< option: enum tsp_query; needs no TSP_OPEN. The reply
                        ///< passes a memfd holding the answer as JSON, `value` bytes
    TSP_ERRQUEUE = 8,   ///< take the oldest queued ICMP error (IP_RECVERR): reply `value`
                        ///< its errno, remote_* the failed datagram's destination, `queued`
                        ///< the rest; error EAGAIN when none is queued
    TSP_RING = 9,       ///< share memory for datagrams (tapstack_ring.h): the reply passes
                        ///< the region's memfd. `value` 1: received datagrams go in it too;
                        ///< `value` 2 (once the region exists): the reply passes instead an
                        ///< eventfd to write when the ring toward the service asks for a
                        ///< doorbell (it wakes the stack's executor itself); error
                        ///< EOPNOTSUPP when there is none (then doorbells go on the channel)
};

/// What TSP_QUERY asks of a running stack (`tapstack ss`, `tapstack stats`).
enum tsp_query {
    TSP_QUERY_SOCKETS = 1,   ///< every bound socket: addresses, queues, drops, owner
    TSP_QUERY_COUNTERS = 2,  ///< every counter: name and value
};

enum tsp_option {
    TSP_OPT_BROADCAST = 1,  ///< SO_BROADCAST
    TSP_OPT_REUSEADDR = 2,  ///< SO_REUSEADDR (and SO_REUSEPORT)
    TSP_OPT_RCVBUF = 3,     ///< SO_RCVBUF: bytes the stack queues for the socket
    TSP_OPT_ERROR = 4,      ///< SO_ERROR (get only; clears it)
    TSP_OPT_DONTFRAG = 5,   ///< IP_MTU_DISCOVER = IP_PMTUDISC_DO
    TSP_OPT_TTL = 6,        ///< IP_TTL
    TSP_OPT_TOS = 7,        ///< IP_TOS
    TSP_OPT_MULTICAST_TTL = 8,  ///< IP_MULTICAST_TTL
    TSP_OPT_MULTICAST_LOOP = 9, ///< IP_MULTICAST_LOOP
    TSP_OPT_FREEBIND = 10,  ///< IP_FREEBIND
    TSP_OPT_ADD_MEMBERSHIP = 11,         ///< IP_ADD_MEMBERSHIP or IPV6_JOIN_GROUP: `address` the group (set only)
    TSP_OPT_DROP_MEMBERSHIP = 12,        ///< IP_DROP_MEMBERSHIP
    TSP_OPT_ADD_SOURCE_MEMBERSHIP = 13,  ///< IP_ADD_SOURCE_MEMBERSHIP: `address` the group, `source` the source
    TSP_OPT_DROP_SOURCE_MEMBERSHIP = 14, ///< IP_DROP_SOURCE_MEMBERSHIP
    TSP_OPT_WANT_INFO = 15, ///< 1: frame every datagram to the client, with its tsp_datagram_header facts
                            ///< (set while IP_PKTINFO, IP_RECVTTL, IP_RECVTOS or a timestamp option is on)
    TSP_OPT_RECVERR = 16,   ///< IP_RECVERR: queue ICMP errors for TSP_ERRQUEUE
    TSP_OPT_V6ONLY = 17,    ///< IPV6_V6ONLY: an AF_INET6 socket takes IPv6 only (before bind)
};

/// A control request, client to service.
typedef struct {
    uint16_t version;   ///< TSP_VERSION
    uint16_t op;        ///< enum tsp_op
    int32_t option;     ///< enum tsp_option
    int32_t value;      ///< TSP_SETOPT's value
    tsp_address address; ///< TSP_BIND / TSP_CONNECT; the group of TSP_OPT_*_MEMBERSHIP
    uint16_t port;      ///< TSP_BIND / TSP_CONNECT
    uint16_t sequence;  ///< echoed in the reply: a late reply to a request
                        ///< that timed out is never taken for a later one's
    tsp_address source; ///< TSP_OPT_*_SOURCE_MEMBERSHIP: the source
} tsp_request;

/// The stack's interface, sent with TSP_OPEN's reply so that the client can
/// report the errors POSIX reports on the call itself (no route, message too
/// long, broadcast not allowed) without a round trip per datagram.
typedef struct {
    uint32_t address;   ///< network order
    uint32_t netmask;   ///< network order
    uint32_t gateway;   ///< network order; 0 when there is none
    uint32_t mtu;       ///< IP MTU of the link
    int32_t index;      ///< the device's interface index as the kernel numbers it (IP_PKTINFO), 0 if unknown
    char name[16];      ///< the device's name (SO_BINDTODEVICE), NUL-terminated
} tsp_interface;

/// An ICMP error as TSP_ERRQUEUE returns it (Linux's sock_extended_err, origin ICMP).
typedef struct {
    uint8_t type;
    uint8_t code;
    uint8_t length;     ///< bytes of the failed datagram's payload in `data`
    uint8_t reserved;
    uint32_t info;      ///< ee_info: the next-hop MTU of "fragmentation needed"
    tsp_address offender; ///< who sent the ICMP error
    uint8_t data[64];
} tsp_queued_error;

/// The reply to every request.
typedef struct {
    int32_t error;          ///< 0, or an errno
    int32_t value;          ///< TSP_GETOPT's value
    tsp_address local_address; ///< TSP_NAMES, TSP_BIND, TSP_CONNECT
    uint16_t local_port;    ///< 0 when unbound
    uint16_t connected;     ///< 1 when the socket has a peer
    tsp_address remote_address;
    uint16_t remote_port;
    uint16_t sequence;       ///< the request's
    tsp_interface interface; ///< TSP_OPEN
    tsp_queued_error queued; ///< TSP_ERRQUEUE
} tsp_reply;

enum tsp_kind {
    TSP_DATAGRAM = 0,   ///< a datagram; its payload follows the header
    TSP_ERROR = 1,      ///< service to client: an asynchronous error (`error`), no payload
    TSP_DOORBELL = 2,   ///< either way, no payload: the sender's ring in the socket's
                        ///< region went from empty to not empty (see tsc_sendv_info)
};

/// Precedes a datagram on the data channel. To the service, the destination
/// (address 0: the connected peer); from it, the source. Toward a connected
/// socket the service leaves it out (the source is the peer) unless the
/// payload itself begins with TSP_MAGIC or the client asked for the
/// datagram's facts (TSP_OPT_WANT_INFO), so that a message is framed exactly
/// when it begins with TSP_MAGIC.
typedef struct {
    uint32_t magic;     ///< TSP_MAGIC
    tsp_address address;
    uint16_t port;
    uint8_t kind;       ///< enum tsp_kind
    uint8_t error;      ///< TSP_ERROR's errno
    /// From the service: the address the datagram was sent to (IP_PKTINFO's
    /// ipi_addr). To it: the source to send from (IP_PKTINFO's
    /// ipi_spec_dst), unspecified to let the stack choose.
    tsp_address local_address;
    uint8_t ttl;        ///< from: the TTL received; to: with TSP_SEND_TTL, the TTL to send with
    uint8_t tos;        ///< from: the TOS received; to: with TSP_SEND_TOS, the TOS to send with
    uint8_t flags;      ///< to the service: TSP_SEND_*
    uint8_t reserved;
    /// From the service: when the frame was read, CLOCK_REALTIME nanoseconds (SO_TIMESTAMP).
    uint64_t timestamp_ns;
} tsp_datagram_header;

enum tsp_send_flags {
    TSP_SEND_TTL = 1,   ///< `ttl` overrides the socket's (IP_TTL control message)
    TSP_SEND_TOS = 2,   ///< `tos` overrides the socket's (IP_TOS control message)
    /// A datagram the client's ring could not take: `timestamp_ns` holds the
    /// ring's tail when it was sent, so the service sends what the ring
    /// held up to there first (order; see tapstack_channel_ring.c).
    TSP_SEND_AFTER_RING = 4,
};

/// What the client wants to know of a received datagram beyond its source,
/// and what a send overrides: the control messages of recvmsg and sendmsg.
typedef struct {
    tsp_address destination; ///< receive: the address it was sent to
    uint8_t ttl;
    uint8_t tos;
    uint8_t flags;          ///< send: TSP_SEND_*
    uint64_t timestamp_ns;  ///< receive: CLOCK_REALTIME nanoseconds; 0 when unknown (a bare payload)
    tsp_address source;     ///< send: the source address, unspecified (all zero) for the stack's choice
} tsc_message_info;

/* ---- The client side, used by TapstackClient and the preload shim. ----
 * Every call returns 0 (or a count) on success and -1 with errno set, like
 * the system calls they stand for. They make system calls directly
 * (syscall(2)), never through the C library's wrappers, so the shim's
 * interposed wrappers cannot recurse into themselves. */

/// One stack socket, as the client holds it.
typedef struct {
    int data_fd;         ///< the data channel; what the program polls
    int control_fd;      ///< the control connection
    tsp_interface interface;
    int broadcast;       ///< SO_BROADCAST as last set
    int dont_fragment;   ///< IP_PMTUDISC_DO as last set
    int connected;       ///< 1 when connected (sends without address go to the peer)
    int family;          ///< AF_INET or AF_INET6, as opened
    tsp_address peer_address; ///< the connected peer: the source of bare payloads
    uint16_t peer_port;
    uint16_t sequence;   ///< the last control request's
    int want_info;       ///< TSP_OPT_WANT_INFO as last set
    void *ring;          ///< the socket's shared region (TSP_RING), NULL until asked for
    int ring_refused;    ///< 1 once the service refused a region (or TAPSTACK_RINGS=0)
    int ring_wake;       ///< the region's doorbell eventfd plus one (0: none, doorbells go on the channel)
    int busy_poll_us;    ///< SO_BUSY_POLL: microseconds a blocking receive polls the ring before it sleeps; TSC_BUSY_POLL_AUTO: adaptively
} tsc_socket;

/// `busy_poll_us` of a socket that polls adaptively (the default, or
/// $TAPSTACK_BUSY_POLL=auto): the rules are in tapstack_poll_policy.h.
#define TSC_BUSY_POLL_AUTO (-1)

/// The longest a receive busy-polls, in microseconds (one second): a larger SO_BUSY_POLL is kept as set and polls this long.
#define TSC_BUSY_POLL_MAX_US 1000000

/// The busy-poll time sockets start with: $TAPSTACK_BUSY_POLL microseconds
/// (as Linux's net.core.busy_read sysctl for its sockets; 0: sleep at
/// once), else TSC_BUSY_POLL_AUTO (unset, `auto`, or not a number from 0
/// to TSC_BUSY_POLL_MAX_US).
int tsc_busy_poll_default(void);

/// The service socket's path: $TAPSTACK_SOCKET, else TSP_DEFAULT_SOCKET_PATH.
const char *tsc_socket_path(void);

/// Opens a stack socket of `family` (AF_INET, or AF_INET6: dual-stack unless
/// TSP_OPT_V6ONLY) through the service at `path`. `data_flags` may hold
/// SOCK_NONBLOCK and SOCK_CLOEXEC for the data descriptor.
int tsc_open(tsc_socket *socket, const char *path, int family, int data_flags);
/// Closes both descriptors (the service then releases the socket).
void tsc_close(tsc_socket *socket);

int tsc_bind(tsc_socket *socket, const tsp_address *address, uint16_t port);
/// Connects; an unspecified address with port 0 disconnects.
int tsc_connect(tsc_socket *socket, const tsp_address *address, uint16_t port);
/// Local and remote address; `*connected` 0 when there is no peer.
int tsc_names(tsc_socket *socket, tsp_address *local_address, uint16_t *local_port,
              int *connected, tsp_address *remote_address, uint16_t *remote_port);
int tsc_setopt(tsc_socket *socket, int option, int value);
/// Takes the oldest queued ICMP error: its errno in `*error`, the failed
/// datagram's destination in `*address`:`*port`. -1 with EAGAIN when none.
int tsc_errqueue(tsc_socket *socket, tsp_queued_error *queued, int *error, tsp_address *address, uint16_t *port);
/// Joins or leaves (`option` TSP_OPT_*_MEMBERSHIP) `group` (for `source`
/// with the source-specific ones, IPv4 only; NULL otherwise).
int tsc_membership(tsc_socket *socket, int option, const tsp_address *group, const tsp_address *source);
int tsc_getopt(tsc_socket *socket, int option, int *value);

/// Sends one datagram of the bytes in `iov` to `address`:`port` (NULL
/// `address` sends to the peer). `flags` as send(2) (MSG_DONTWAIT).
/// Returns the payload length sent.
ssize_t tsc_sendv(tsc_socket *socket, const struct iovec *iov, int iovcnt,
                  const tsp_address *address, uint16_t port, int flags);
/// As tsc_sendv, with `info` (may be NULL) giving the source, TTL and TOS of this datagram.
ssize_t tsc_sendv_info(tsc_socket *socket, const struct iovec *iov, int iovcnt,
                       const tsp_address *address, uint16_t port, int flags, const tsc_message_info *info);
/// Sends made together (tsc_send_batch_begin): the datagrams that go into
/// the socket's ring are published at once, at the end, so the stack looks
/// once and the sender fences and looks for a doorbell request once. Private fields.
typedef struct {
    tsr_end end;
    int locked;       ///< holds the ring's send lock
    int attached;     ///< `end` is usable
    int unpublished;  ///< records written and not yet visible
    int wake;         ///< the stack asked to be woken
} tsc_send_batch;

/// Begins a batch of sends on `socket`. Between begin and end the batch
/// holds the socket's send lock (other threads' and processes' sends on it
/// wait): make no other call on the socket meanwhile.
void tsc_send_batch_begin(tsc_socket *socket, tsc_send_batch *batch);
/// Sends one datagram as tsc_sendv_info with MSG_DONTWAIT, within `batch`.
ssize_t tsc_send_batch_add(tsc_socket *socket, tsc_send_batch *batch, const struct iovec *iov, int iovcnt,
                           const tsp_address *address, uint16_t port, const tsc_message_info *info);
/// Ends the batch: publishes what it wrote, wakes the stack if it asked.
void tsc_send_batch_end(tsc_socket *socket, tsc_send_batch *batch);
/// Receives one datagram into `iov`; fills the source. `flags` as recv(2)
/// (MSG_DONTWAIT, MSG_PEEK, MSG_TRUNC). Returns the payload length (the
/// full length with MSG_TRUNC); `*truncated` is set when it did not fit.
ssize_t tsc_recvv(tsc_socket *socket, const struct iovec *iov, int iovcnt,
                  tsp_address *address, uint16_t *port, int flags, int *truncated);
/// As tsc_recvv, filling `info` (may be NULL) with the datagram's facts.
ssize_t tsc_recvv_info(tsc_socket *socket, const struct iovec *iov, int iovcnt,
                       tsp_address *address, uint16_t *port, int flags, int *truncated, tsc_message_info *info);
/// 1 when the next receive would return a datagram now (not an error, and
/// not nothing): one waits in the socket's ring, or heads its channel. A
/// socket with a ring looks at its channel (a system call) only when the
/// service counted something sent there since a receive found it empty.
int tsc_datagram_next(tsc_socket *socket);
/// After a receive that returned a datagram, for a batch: the next one as
/// tsc_recvv with MSG_DONTWAIT | MSG_TRUNC returns it, only if a datagram
/// comes next. -1 with EAGAIN when none does: an error is left on the
/// channel for the next receive to report (unless another thread's receive
/// took the datagram in between: then this returns the error).
ssize_t tsc_recv_next(tsc_socket *socket, const struct iovec *iov, int iovcnt,
                      tsp_address *address, uint16_t *port, int *truncated);
/// Bytes of the next datagram's payload (FIONREAD), 0 when none.
int tsc_pending_bytes(tsc_socket *socket);

/// Moves this socket's datagrams to shared memory (TSP_RING): sends at
/// once, received ones too when `receive`. Does nothing when already done
/// or refused before; returns 0 when the region is in use, -1 otherwise
/// (the channel keeps working either way). TAPSTACK_RINGS=0 in the
/// environment keeps every socket on the channel.
int tsc_use_ring(tsc_socket *socket, int receive);
/// 1 when tsc_use_ring(socket, receive) has nothing left to do.
int tsc_ring_settled(const tsc_socket *socket, int receive);
/// A receive found nothing and is about to sleep: polls the ring toward
/// the client first (the receive side of SO_BUSY_POLL), without a lock, as
/// the socket's `busy_poll_us` says, for at most `longest` ns. Adaptive
/// (TSC_BUSY_POLL_AUTO): for the window of the region's policy
/// (tapstack_poll_policy.h), within tsc_adaptive_poll_limit(), yielding
/// the CPU every 32 looks at the ring. Returns 1 as soon as a datagram
/// waits in the ring, or the service sent something on the channel since a
/// receive last found it empty (region `channel_sends`); 0 when the time
/// ran out, or received datagrams do not come through a ring (then only
/// the channel can tell). An adaptive poll that would begin on the stack
/// executor's CPU first moves the thread off it (its affinity set without
/// that CPU, then put back), if its affinity allows another; a fixed one,
/// or one that could not move, sleeps at once there. An adaptive wait in a
/// dense stream (tapstack_poll_policy.h), which sleeps at once, first moves
/// onto that CPU the same way, if its affinity allows it. With `hold_signals`
/// (a receive that stands for the kernel's, as the preload's) signals are
/// held meanwhile and end the poll: 0 for one that restarts calls, -1 for
/// one whose handler interrupts them (it has run by the return: EINTR).
/// Without, the only system calls are the clock's (the vDSO's) and an
/// adaptive poll's yields; a signal then runs its handler and the poll
/// goes on.
int tsc_ring_wait_poll(const tsc_socket *socket, int64_t longest, int hold_signals);
/// The sleep that followed tsc_ring_wait_poll ended (something came, or the
/// wait timed out or was interrupted): an adaptive window learns from how
/// long the socket was idle, less the wake-up the sleep added.
void tsc_ring_wait_ended(const tsc_socket *socket);
/// The adaptive poll's limit in ns: four wake-ups as measured here, within
/// 4-200 µs. A wake-up is the median lateness of seven 1 µs timed sleeps,
/// measured on the first call of the process (about 0.1 ms; tsc_use_ring
/// makes that call for an adaptive receiver).
int64_t tsc_adaptive_poll_limit(void);
/// Unmaps the region (after tsc_close, once no call can be using it).
void tsc_unmap_ring(tsc_socket *socket);
/// Bytes sent but not yet taken by the service (ring and channel).
int tsc_unsent_bytes(tsc_socket *socket);

/// Asks the service at `path` a TSP_QUERY (`what`: enum tsp_query). On
/// success `*fd` is a descriptor to read the JSON answer from (the caller
/// closes it) and `*length` its size in bytes.
int tsc_query(const char *path, int what, int *fd, size_t *length);

/// The checks POSIX makes on the call (no route, too long, broadcast):
/// 0 or an errno. Exposed for tests.
int tsc_check_destination(const tsc_socket *socket, const tsp_address *address, uint16_t port, size_t length);

#endif
