#include "ctun_uring.h"

#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* IORING_OP_READ_MULTISHOT: kernel 6.7; Debian 12's liburing (2.3) predates it. */
#define CTUN_OP_READ_MULTISHOT 49
/* Fixed-file indexes. */
#define CTUN_FILE_DEVICE 0
#define CTUN_FILE_WAKE 1
#define CTUN_BUFFER_GROUP 0

struct ctun_ring {
    struct io_uring ring;
    struct io_uring_buf_ring *buffers_ring;
    char *buffers;
    unsigned buffer_count;
    unsigned buffer_size;
    /* The kernel flags pending task work in the SQ ring (IORING_SETUP_TASKRUN_FLAG). */
    int flags_task_work;
};

static struct io_uring_sqe *sqe_for(ctun_ring *ring, uint64_t tag) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring->ring);
    if (sqe) sqe->user_data = tag;
    return sqe;
}

/* A multishot poll of the (non-blocking) wake-up eventfd: each write to it
 * completes one CQE. It is never drained (its counter only grows), so the
 * poll fires on every write, without a read per wake-up or a worker thread
 * blocked in one. */
static int arm_wake(ctun_ring *ring) {
    struct io_uring_sqe *sqe = sqe_for(ring, CTUN_TAG_WAKE);
    if (!sqe) return 0;
    io_uring_prep_poll_multishot(sqe, CTUN_FILE_WAKE, POLLIN);
    sqe->flags |= IOSQE_FIXED_FILE;
    sqe->user_data = CTUN_TAG_WAKE;
    return 1;
}

int ctun_ring_arm_read(ctun_ring *ring) {
    struct io_uring_sqe *sqe = sqe_for(ring, CTUN_TAG_READ);
    if (!sqe) return 0;
    io_uring_prep_rw(CTUN_OP_READ_MULTISHOT, sqe, CTUN_FILE_DEVICE, NULL, 0, 0);
    sqe->flags |= IOSQE_FIXED_FILE | IOSQE_BUFFER_SELECT;
    sqe->buf_group = CTUN_BUFFER_GROUP;
    sqe->user_data = CTUN_TAG_READ;
    return 1;
}

static void fail(ctun_ring *ring, int *err, int *stage, int code, int where) {
    *err = code < 0 ? -code : code;
    *stage = where;
    if (ring->buffers_ring) {
        io_uring_unregister_buf_ring(&ring->ring, CTUN_BUFFER_GROUP);
        free(ring->buffers_ring);
    }
    io_uring_queue_exit(&ring->ring);
    free(ring);
}

ctun_ring *ctun_ring_open(int fd, int wake_fd, void *buffers, unsigned buffer_count, unsigned buffer_size,
                          unsigned sq_entries, int *err, int *stage) {
    *err = 0;
    *stage = 0;
    if (buffer_count == 0 || (buffer_count & (buffer_count - 1)) || buffer_count > 32768) {
        *err = EINVAL;
        *stage = CTUN_RING_SETUP;
        return NULL;
    }
    ctun_ring *ring = calloc(1, sizeof *ring);
    if (!ring) { *err = ENOMEM; *stage = CTUN_RING_SETUP; return NULL; }
    /* DEFER_TASKRUN: completions' task work runs only while the executor
     * waits in an enter, not as an interruption of whatever it is doing;
     * a frame then wakes it straight, without a task-work notification
     * (a ping-pong's round trip 0.5 us shorter here). COOP_TASKRUN where
     * that is refused; no flags before 6.0, where the multishot read the
     * probe below asks for is missing anyway. Room for a completion per
     * buffer (reads) besides the writes. */
    const unsigned flag_sets[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
        0,
    };
    int r = -EINVAL;
    for (unsigned i = 0; i < sizeof flag_sets / sizeof flag_sets[0] && r == -EINVAL; i++) {
        struct io_uring_params params = { .flags = flag_sets[i] | IORING_SETUP_CQSIZE, .cq_entries = buffer_count + 4 * sq_entries };
        r = io_uring_queue_init_params(sq_entries, &ring->ring, &params);
    }
    if (r < 0) { *err = -r; *stage = CTUN_RING_SETUP; free(ring); return NULL; }
    ring->flags_task_work = (ring->ring.flags & IORING_SETUP_TASKRUN_FLAG) != 0;
    struct io_uring_probe *probe = io_uring_get_probe_ring(&ring->ring);
    int supported = probe && io_uring_opcode_supported(probe, CTUN_OP_READ_MULTISHOT);
    if (probe) io_uring_free_probe(probe);
    if (!supported) { fail(ring, err, stage, EOPNOTSUPP, CTUN_RING_PROBE); return NULL; }
    int files[2] = { fd, wake_fd };
    r = io_uring_register_files(&ring->ring, files, 2);
    if (r < 0) { fail(ring, err, stage, r, CTUN_RING_REGISTER); return NULL; }
    /* The ring fd itself registered: io_uring_enter skips its fd lookup. */
    (void)io_uring_register_ring_fd(&ring->ring);

    size_t bytes = buffer_count * sizeof(struct io_uring_buf);
    void *memory = NULL;
    if (posix_memalign(&memory, (size_t)sysconf(_SC_PAGESIZE), bytes) != 0) {
        fail(ring, err, stage, ENOMEM, CTUN_RING_REGISTER);
        return NULL;
    }
    memset(memory, 0, bytes);
    struct io_uring_buf_reg reg = { .ring_addr = (unsigned long)memory, .ring_entries = buffer_count, .bgid = CTUN_BUFFER_GROUP };
    r = io_uring_register_buf_ring(&ring->ring, &reg, 0);
    if (r < 0) { free(memory); fail(ring, err, stage, r, CTUN_RING_REGISTER); return NULL; }
    ring->buffers_ring = memory;
    ring->buffers = buffers;
    ring->buffer_count = buffer_count;
    ring->buffer_size = buffer_size;
    io_uring_buf_ring_init(ring->buffers_ring);
    if (!ctun_ring_arm_read(ring) || !arm_wake(ring)) { fail(ring, err, stage, EBUSY, CTUN_RING_SETUP); return NULL; }
    return ring;
}

void ctun_ring_close(ctun_ring *ring) {
    if (!ring) return;
    /* The ring's teardown is asynchronous in the kernel, and until it ends
     * its registered files keep the TAP fd open, and with it a device this
     * process created. Unregistering drops that reference now. */
    io_uring_unregister_files(&ring->ring);
    io_uring_unregister_buf_ring(&ring->ring, CTUN_BUFFER_GROUP);
    io_uring_queue_exit(&ring->ring);
    free(ring->buffers_ring);
    free(ring);
}

void ctun_ring_provide(ctun_ring *ring, const uint16_t *ids, unsigned count) {
    int mask = io_uring_buf_ring_mask(ring->buffer_count);
    for (unsigned i = 0; i < count; i++) {
        unsigned bid = ids[i] & (ring->buffer_count - 1);
        io_uring_buf_ring_add(ring->buffers_ring, ring->buffers + (size_t)bid * ring->buffer_size, ring->buffer_size,
                              (unsigned short)bid, mask, (int)i);
    }
    io_uring_buf_ring_advance(ring->buffers_ring, (int)count);
}

/* RWF_NOWAIT: a write the device cannot take at once completes with
 * -EAGAIN instead of going to a worker thread, so the caller decides about
 * retrying; IOSQE_IO_LINK: the writes after a failed one are cancelled
 * (-ECANCELED) rather than overtake it. */
int ctun_ring_write(ctun_ring *ring, const void *buffer, unsigned length, uint64_t tag, int linked) {
    struct io_uring_sqe *sqe = sqe_for(ring, tag);
    if (!sqe) return 0;
    io_uring_prep_write(sqe, CTUN_FILE_DEVICE, buffer, length, 0);
    sqe->flags |= IOSQE_FIXED_FILE | (linked ? IOSQE_IO_LINK : 0);
    sqe->rw_flags = RWF_NOWAIT;
    sqe->user_data = tag;
    return 1;
}

int ctun_ring_writev(ctun_ring *ring, const struct iovec *iov, unsigned count, uint64_t tag, int linked) {
    struct io_uring_sqe *sqe = sqe_for(ring, tag);
    if (!sqe) return 0;
    io_uring_prep_writev(sqe, CTUN_FILE_DEVICE, iov, count, 0);
    sqe->flags |= IOSQE_FIXED_FILE | (linked ? IOSQE_IO_LINK : 0);
    sqe->rw_flags = RWF_NOWAIT;
    sqe->user_data = tag;
    return 1;
}

int ctun_ring_poll_writable(ctun_ring *ring) {
    struct io_uring_sqe *sqe = sqe_for(ring, CTUN_TAG_WRITABLE);
    if (!sqe) return 0;
    io_uring_prep_poll_add(sqe, CTUN_FILE_DEVICE, POLLOUT);
    sqe->flags |= IOSQE_FIXED_FILE;
    sqe->user_data = CTUN_TAG_WRITABLE;
    return 1;
}

int ctun_ring_watch(ctun_ring *ring, int fd, uint64_t tag) {
    struct io_uring_sqe *sqe = sqe_for(ring, tag);
    if (!sqe) return 0;
    io_uring_prep_poll_multishot(sqe, fd, POLLIN);
    sqe->user_data = tag;
    return 1;
}

int ctun_ring_unwatch(ctun_ring *ring, uint64_t tag) {
    struct io_uring_sqe *sqe = sqe_for(ring, CTUN_TAG_UNWATCH);
    if (!sqe) return 0;
    io_uring_prep_poll_remove(sqe, tag);
    sqe->user_data = CTUN_TAG_UNWATCH;
    return 1;
}

int ctun_ring_enter(ctun_ring *ring, unsigned wait_for, int64_t timeout_ns, ctun_completion *out, unsigned max) {
    int r;
    if (wait_for == 0) {
        r = io_uring_submit_and_get_events(&ring->ring);
    } else {
        struct io_uring_cqe *cqe;
        struct __kernel_timespec ts = { .tv_sec = timeout_ns / 1000000000, .tv_nsec = timeout_ns % 1000000000 };
        r = io_uring_submit_and_wait_timeout(&ring->ring, &cqe, wait_for, timeout_ns >= 0 ? &ts : NULL, NULL);
    }
    if (r < 0 && r != -ETIME && r != -EINTR && r != -EAGAIN && r != -EBUSY) return r;
    unsigned head, count = 0;
    struct io_uring_cqe *cqe;
    io_uring_for_each_cqe(&ring->ring, head, cqe) {
        if (count == max) break;
        out[count].tag = cqe->user_data;
        out[count].res = cqe->res;
        out[count].flags = cqe->flags;
        count++;
        if (cqe->user_data == CTUN_TAG_WAKE && !(cqe->flags & IORING_CQE_F_MORE)) arm_wake(ring);
    }
    io_uring_cq_advance(&ring->ring, count);
    return (int)count;
}

int ctun_ring_defers_task_work(ctun_ring *ring) { return (ring->ring.flags & IORING_SETUP_DEFER_TASKRUN) != 0; }

int ctun_ring_has_pending(ctun_ring *ring) {
    /* Without the flag, task work is invisible from here: always enter. */
    return !ring->flags_task_work || io_uring_sq_ready(&ring->ring) > 0 || io_uring_cq_ready(&ring->ring) > 0
        || (IO_URING_READ_ONCE(*ring->ring.sq.kflags) & IORING_SQ_TASKRUN) != 0;
}
