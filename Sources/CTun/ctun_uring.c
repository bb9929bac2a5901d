#include "ctun_uring.h"

#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <sys/uio.h>

struct ctun_batch {
    struct io_uring ring;
    unsigned capacity;
    unsigned queued;
};

ctun_batch *ctun_batch_open(int fd, unsigned capacity, int *err) {
    ctun_batch *batch = calloc(1, sizeof *batch);
    if (!batch) { *err = ENOMEM; return NULL; }
    /* One issuer, completions only reaped when it asks: the cheapest mode
     * (kernel 6.1); older kernels refuse the flags, so retry without. */
    struct io_uring_params params = { .flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN };
    int r = io_uring_queue_init_params(capacity, &batch->ring, &params);
    if (r == -EINVAL) r = io_uring_queue_init(capacity, &batch->ring, 0);
    if (r < 0) { free(batch); *err = -r; return NULL; }
    /* A registered file skips the per-operation descriptor lookup. */
    r = io_uring_register_files(&batch->ring, &fd, 1);
    if (r < 0) { io_uring_queue_exit(&batch->ring); free(batch); *err = -r; return NULL; }
    batch->capacity = capacity;
    return batch;
}

void ctun_batch_close(ctun_batch *batch) {
    if (!batch) return;
    /* The ring's teardown is asynchronous in the kernel, and until it ends
     * its registered file keeps the TAP fd open, and with it a device this
     * process created. Unregistering drops that reference now. */
    io_uring_unregister_files(&batch->ring);
    io_uring_queue_exit(&batch->ring);
    free(batch);
}

static struct io_uring_sqe *next_sqe(ctun_batch *batch, unsigned tag) {
    if (batch->queued >= batch->capacity) return NULL;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&batch->ring);
    if (!sqe) return NULL;
    batch->queued++;
    sqe->user_data = tag;
    return sqe;
}

int ctun_batch_read(ctun_batch *batch, void *buffer, unsigned length, unsigned tag) {
    struct io_uring_sqe *sqe = next_sqe(batch, tag);
    if (!sqe) return 0;
    io_uring_prep_read(sqe, 0, buffer, length, 0);
    sqe->flags |= IOSQE_FIXED_FILE;
    sqe->rw_flags = RWF_NOWAIT;
    return 1;
}

int ctun_batch_write(ctun_batch *batch, const void *buffer, unsigned length, unsigned tag) {
    struct io_uring_sqe *sqe = next_sqe(batch, tag);
    if (!sqe) return 0;
    io_uring_prep_write(sqe, 0, buffer, length, 0);
    sqe->flags |= IOSQE_FIXED_FILE;
    sqe->rw_flags = RWF_NOWAIT;
    return 1;
}

int ctun_batch_run(ctun_batch *batch, int32_t *results) {
    unsigned expected = batch->queued;
    batch->queued = 0;
    for (unsigned i = 0; i < expected; i++) results[i] = -ECANCELED;
    if (expected == 0) return 0;
    int r;
    do { r = io_uring_submit_and_wait(&batch->ring, expected); } while (r == -EINTR);
    /* Every operation is non-blocking, so all complete during the submit;
     * a short submit means the kernel is out of resources: report it and
     * let the caller stop using the ring (the rest are never submitted). */
    int status = r < 0 ? r : (unsigned)r < expected ? -EIO : 0;
    unsigned submitted = r < 0 ? 0 : (unsigned)r;
    unsigned seen = 0;
    while (seen < submitted) {
        struct io_uring_cqe *cqe;
        unsigned head, count = 0;
        io_uring_for_each_cqe(&batch->ring, head, cqe) {
            if (cqe->user_data < expected) results[cqe->user_data] = cqe->res;
            count++;
        }
        io_uring_cq_advance(&batch->ring, count);
        seen += count;
        if (seen < submitted) {
            do { r = io_uring_wait_cqe_nr(&batch->ring, &cqe, submitted - seen); } while (r == -EINTR);
            if (r < 0) return r;
        }
    }
    return status;
}
