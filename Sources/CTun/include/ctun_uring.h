#ifndef TAPSTACK_CTUN_URING_H
#define TAPSTACK_CTUN_URING_H

#include <stdint.h>
#include <sys/uio.h>

/// The TAP device's I/O through one io_uring, used by one thread only (the
/// executor: the ring is SINGLE_ISSUER with DEFER_TASKRUN, COOP_TASKRUN
/// where the kernel refuses that, so completions are produced while that
/// thread is in `ctun_ring_enter`; under DEFER_TASKRUN only while it waits
/// there, so a chain of linked writes goes on only as far as the enter
/// waits for their completions):
///  - one multishot read (IORING_OP_READ_MULTISHOT, kernel >= 6.7) that
///    reads each frame into the next buffer of a provided-buffer ring, the
///    memory of the stack's RX FIFO;
///  - a multishot poll of a wake-up eventfd (non-blocking, never drained
///    here), so another thread can end a wait by writing to it, and one of
///    each descriptor the caller watches (`ctun_ring_watch`);
///  - the writes the caller queues, submitted with the next enter; each is
///    non-blocking (RWF_NOWAIT), and linked to the next so none overtakes
///    one the device put off.
typedef struct ctun_ring ctun_ring;

/// What `ctun_ring_open` could not do, so the caller can say why.
typedef enum {
    CTUN_RING_SETUP = 1,      ///< io_uring_setup refused (ENOSYS, EPERM: seccomp or io_uring_disabled)
    CTUN_RING_PROBE = 2,      ///< the kernel lacks IORING_OP_READ_MULTISHOT (before 6.7)
    CTUN_RING_REGISTER = 3,   ///< registering the files or the buffer ring failed
} ctun_ring_stage;

/// Tags of the completions the ring makes itself; write tags must be below `CTUN_TAG_UNWATCH`.
#define CTUN_TAG_READ (1ull << 63)
#define CTUN_TAG_WAKE (1ull << 62)
#define CTUN_TAG_WRITABLE (1ull << 61)
/// A watched descriptor's poll: this bit and the caller's number for it.
#define CTUN_TAG_WATCH (1ull << 60)
/// The removal of a watch (its completion carries nothing of interest).
#define CTUN_TAG_UNWATCH (1ull << 59)

/// IORING_CQE_F_MORE (the multishot operation stays armed) and where a
/// read's buffer id sits in the flags.
#define CTUN_CQE_MORE 2u
#define CTUN_CQE_BUFFER_SHIFT 16

/// One completion: the tag given with the operation, its result (bytes or
/// -errno) and the CQE flags (IORING_CQE_F_MORE, and for reads
/// IORING_CQE_F_BUFFER with the buffer id in the upper 16 bits).
typedef struct {
    uint64_t tag;
    int32_t res;
    uint32_t flags;
} ctun_completion;

/// Sets up the ring for `fd` and `wake_fd`, with `buffer_count` (a power of
/// two, at most 32768) buffers of `buffer_size` bytes at `buffers` as
/// provided buffers (none given to the kernel yet: `ctun_ring_provide`),
/// and arms the reads (submitted with the first enter).
/// `sq_entries` bounds the writes queued per enter.
/// Returns NULL with `*err` (an errno) and `*stage` when the kernel refuses.
ctun_ring *ctun_ring_open(int fd, int wake_fd, void *buffers, unsigned buffer_count, unsigned buffer_size,
                          unsigned sq_entries, int *err, int *stage);
/// Cancels what is in flight and frees the ring (the fds stay open).
void ctun_ring_close(ctun_ring *ring);

/// Arms the multishot read again (after a completion without IORING_CQE_F_MORE).
/// 1, or 0 when the submission queue is full.
int ctun_ring_arm_read(ctun_ring *ring);

/// Gives the kernel the `count` buffers `ids` (each below `buffer_count`),
/// which it fills in this order, after those given before.
void ctun_ring_provide(ctun_ring *ring, const uint16_t *ids, unsigned count);

/// Queues a write of `length` bytes; 1, or 0 when the submission queue is
/// full. A write the device cannot take at once completes with -EAGAIN.
/// With `linked`, the operation queued next runs only after this one
/// succeeded (else it completes with -ECANCELED): writes stay in order.
int ctun_ring_write(ctun_ring *ring, const void *buffer, unsigned length, uint64_t tag, int linked);
/// Queues a gathering write, like `ctun_ring_write`; the iovecs must stay
/// valid until it completes.
int ctun_ring_writev(ctun_ring *ring, const struct iovec *iov, unsigned count, uint64_t tag, int linked);
/// Queues a one-shot wait for the device to take writes again (POLLOUT),
/// completing with tag `CTUN_TAG_WRITABLE`.
int ctun_ring_poll_writable(ctun_ring *ring);

/// Queues a multishot poll (POLLIN) of `fd`, another wake-up eventfd (of
/// a process the stack serves), completing with `tag` on every write to it;
/// it is never drained here. 1, or 0 when the submission queue is full. A
/// completion without CTUN_CQE_MORE ended the poll (arm it again if still wanted).
int ctun_ring_watch(ctun_ring *ring, int fd, uint64_t tag);
/// Queues the removal of the poll queued with `tag` (it completes with
/// -ECANCELED). 1, or 0 when the submission queue is full.
int ctun_ring_unwatch(ctun_ring *ring, uint64_t tag);

/// Submits what is queued and, when `wait_for` > 0, waits until that many
/// completions are ready or `timeout_ns` passes (negative: no limit), in
/// one io_uring_enter. Copies up to `max` completions to `out` (the rest
/// stay for the next call) and returns their number, or -errno when the
/// enter failed. Wake-ups are reported as CTUN_TAG_WAKE (the poll is
/// re-armed here when the kernel ended it).
int ctun_ring_enter(ctun_ring *ring, unsigned wait_for, int64_t timeout_ns, ctun_completion *out, unsigned max);

/// Whether an enter that does not wait would do anything: requests queued
/// for the kernel, completions ready, or task work pending (a frame read or
/// a wake-up that completes at the next enter: IORING_SQ_TASKRUN). Reads
/// shared memory only, so a polling executor enters the kernel only when
/// there is something there for it.
int ctun_ring_has_pending(ctun_ring *ring);
/// 1 when the ring runs task work only in enters that wait (DEFER_TASKRUN).
int ctun_ring_defers_task_work(ctun_ring *ring);

#endif
