#ifndef TAPSTACK_RING_H
#define TAPSTACK_RING_H
#include "tapstack_poll_policy.h"
/*
 * A single-producer single-consumer ring of variable-length records in
 * memory two processes share (issue 18: the socket service's datagrams
 * without a system call each). One ring per direction of a socket.
 *
 * Trust: the two ends are different processes, and the client may be
 * hostile. Each end keeps its own index privately and only publishes it;
 * the other end's index is read once per call, checked (never more than
 * `capacity` bytes apart), and a record's length is read once and checked
 * before any byte is copied. A ring found inconsistent is reported
 * (EBADMSG) and never read again by the caller; nothing a peer writes can
 * make the reader touch memory outside the ring.
 *
 * Layout of one ring's shared part: the producer's tail and the consumer's
 * head (free-running byte counts, 32-bit, on separate cache lines), a flag
 * the consumer raises before it sleeps, then `capacity` bytes of records.
 * A record is a 32-bit length and that many bytes, padded to 8; one that
 * would not fit before the end is preceded by a wrap marker (length
 * TSR_WRAP) and starts at offset 0.
 */
#include <stddef.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#define TSR_WRAP 0xFFFFFFFFu
/// Bytes of a record's length field.
#define TSR_RECORD_HEADER 8u

/// The shared indices of one ring (first in its shared part).
typedef struct {
    uint32_t tail;              ///< written by the producer (release)
    uint8_t pad0[60];
    uint32_t head;              ///< written by the consumer (release)
    uint8_t pad1[60];
    uint32_t consumer_sleeping; ///< 1 while the consumer waits to be woken
    uint8_t pad2[60];
} tsr_shared;

/// One end of a ring, private to its process.
typedef struct {
    tsr_shared *shared;
    uint8_t *data;
    uint32_t capacity;  ///< a power of two, at least 64
    uint32_t index;     ///< this end's own index (tail for the producer, head for the consumer)
    int broken;         ///< set once the ring was found inconsistent
} tsr_end;

/// Bytes one ring of `capacity` takes in shared memory.
size_t tsr_ring_size(uint32_t capacity);
/// Sets up an end over `memory` (`tsr_ring_size(capacity)` bytes). `producer`
/// picks which index is this end's; it starts from the shared value (0 in a
/// fresh region). Returns 0, or -1 with EINVAL for a bad capacity.
int tsr_attach(tsr_end *end, void *memory, uint32_t capacity, int producer);

/// Producer: appends one record of the bytes in `iov`. Returns 0; -1 with
/// EAGAIN when it does not fit now, EMSGSIZE when it never would, EBADMSG
/// when the consumer's index is impossible. `*was_empty` tells whether the
/// consumer had taken everything before this record (so may need waking).
int tsr_push(tsr_end *end, const struct iovec *iov, int iovcnt, int *was_empty);
/// Producer: writes one record as `tsr_push` does (same results) without
/// publishing it: the consumer sees it, and every record written before it,
/// at the next `tsr_publish`. A batch written this way costs the consumer
/// one look, and the producer one fence.
int tsr_write(tsr_end *end, const struct iovec *iov, int iovcnt);
/// Producer: publishes every record written so far, then fences (look at
/// `tsr_take_wake_request` after it).
void tsr_publish(tsr_end *end);

/// Consumer: copies the oldest record into `out` (at most `size` bytes) and
/// removes it unless `peek`. Returns its full length (which may exceed
/// `size`: the rest is cut), 0 when the ring is empty (records are never
/// empty), or -1 with EBADMSG when the ring is inconsistent.
ssize_t tsr_pop(tsr_end *end, void *out, size_t size, int peek);

/// Consumer: as tsr_pop, scattering the record over `iov`.
ssize_t tsr_popv(tsr_end *end, const struct iovec *iov, int iovcnt, int peek);

/// Consumer: 1 when a record waits (the producer's index read once).
int tsr_has_record(tsr_end *end);

/// Consumer, before it stops looking (sleeps, or leaves the ring to a
/// consumer that sleeps): raises `consumer_sleeping`, asking the producer to
/// wake it, then looks again: 1 when a record waits (then keep looking).
int tsr_arm(tsr_end *end);
/// Consumer, awake and looking at the ring on every turn: lowers the flag,
/// so the producer rings no doorbell.
void tsr_disarm(tsr_end *end);
/// Producer, after `tsr_push`: 1 when the consumer asked to be woken (the
/// flag is lowered: one wake-up per request).
int tsr_take_wake_request(tsr_end *end);
/// Bytes in the ring as this end sees them (at most `capacity`).
uint32_t tsr_used(tsr_end *end, int producer);

/* ---- A socket's region: both rings of one client socket ----
 *
 * The service makes it (a sealed memfd of fixed size) when the client asks
 * (TSP_RING) and passes it on the control connection. Layout: this header,
 * then the client-to-service ring, then the service-to-client ring, each
 * `tsr_ring_size(capacity)` bytes. The service writes `magic` and
 * `capacity` once, before passing it, then only its two counts
 * (`doorbells`, `channel_sends`) and `executor_cpu`, and reads nothing of
 * the header but the busy-poll hint (`polling_cpu`, `polling_us`: bounded,
 * never trusted further); the rest of the header belongs to the client's
 * processes (a socket may be shared by fork), which is why their ring ends
 * keep no private state: they take a lock and use the indices in the
 * region. */
#define TSR_REGION_MAGIC 0x41505355u  /* 'USPA': the header holds the adaptive poll's line (before: the busy-poll hint, 'UPPQ'; robust locks, 'URPS') */
/// Each ring's data bytes: a datagram of 64 KiB does not fit (it goes on
/// the channel), a window of 64 datagrams of 1400 bytes does.
#define TSR_REGION_CAPACITY (128u * 1024u)

/// A lock of the client's processes, a cache line of its own.
typedef union {
    pthread_mutex_t mutex;
    uint8_t line[64];
} tsr_region_lock;

typedef struct {
    uint32_t magic;             ///< TSR_REGION_MAGIC (service, at creation)
    uint32_t capacity;          ///< of each ring (service, at creation)
    /// Doorbells the service rang for the ring toward the client (service;
    /// counted before each is sent, so a receiver that emptied the ring
    /// knows one is on its way and takes it: none is left to wake a poll
    /// for nothing).
    uint32_t doorbells;
    /// Messages the service sent on the channel (datagrams too large for
    /// the ring or that found it full, errors; service, counted after each
    /// is sent), so a receiver polling the ring sees one come.
    uint32_t channel_sends;
    /// The CPU the stack's executor last put datagrams in the ring from,
    /// plus one (service; 0: not yet): a receive there does not busy-poll,
    /// since polling would keep the executor from running.
    uint32_t executor_cpu;
    uint8_t pad0[44];
    /// Client: one sender at a time, and one receiver (process-shared
    /// robust mutexes the service initialises at creation: a process killed
    /// while holding one leaves it to the next, not locked forever).
    tsr_region_lock send_lock;
    tsr_region_lock receive_lock;
    uint32_t receiving;         ///< client: the service puts received datagrams in the ring
    uint32_t send_fallback;     ///< client: sends go on the channel until the service read it all
    uint32_t doorbells_taken;   ///< client: doorbells taken off the channel
    /// Client: `channel_sends` as read before a look that found the channel
    /// empty; while it is still `channel_sends`, nothing came on the channel since.
    uint32_t channel_seen;
    /// Client: while a receive busy-polls the ring, the CPU it polls on
    /// plus one (0: none polls), and its busy-poll time in microseconds:
    /// the service, having just put a datagram there, may poll a while for
    /// the answer instead of sleeping (a hint; the service bounds both).
    uint32_t polling_cpu;
    uint32_t polling_us;
    /// Client: 1 once a receive found the channel empty (`channel_seen`
    /// holds then). Until then, what waits on the channel (sent before the
    /// region, uncounted) is only known by looking.
    uint32_t channel_looked;
    uint8_t pad1[36];
    /// Client: the adaptive busy poll's state (see tapstack_poll_policy.h),
    /// a cache line of its own: a receiver counts each datagram there, and
    /// the line above is one the executor reads on each delivery.
    tsc_poll_policy poll_policy;
    uint8_t pad2[64 - sizeof(tsc_poll_policy)];
} tsr_region_header;
_Static_assert(sizeof(tsr_region_header) == 320, "the region's header is five cache lines");

/// Bytes of a region whose rings hold `capacity` each.
size_t tsr_region_size(uint32_t capacity);
/// The client-to-service ring's shared part in `region`.
void *tsr_region_to_service(void *region, uint32_t capacity);
/// The service-to-client ring's shared part in `region`.
void *tsr_region_to_client(void *region, uint32_t capacity);

#endif
