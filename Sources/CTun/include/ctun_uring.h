#ifndef TAPSTACK_CTUN_URING_H
#define TAPSTACK_CTUN_URING_H

#include <stdint.h>

/// A batch of TAP reads and writes submitted with one system call (io_uring).
/// Every operation is non-blocking (RWF_NOWAIT): a read with no frame waiting
/// completes at once with -EAGAIN, so a batch never waits for traffic.
/// Single-threaded: only the thread that opened it may use it.
typedef struct ctun_batch ctun_batch;

/// Sets up an io_uring for `fd` holding up to `capacity` operations per batch.
/// Returns NULL with `*err` (an errno) when the kernel refuses io_uring
/// (ENOSYS, EPERM under seccomp or kernel.io_uring_disabled, ENOMEM).
ctun_batch *ctun_batch_open(int fd, unsigned capacity, int *err);
void ctun_batch_close(ctun_batch *batch);

/// Queues a read of up to `length` bytes into `buffer`; its result goes to
/// index `tag` of the array given to `ctun_batch_run`. False when the batch is full.
int ctun_batch_read(ctun_batch *batch, void *buffer, unsigned length, unsigned tag);
/// Queues a write of `length` bytes from `buffer`, like `ctun_batch_read`.
int ctun_batch_write(ctun_batch *batch, const void *buffer, unsigned length, unsigned tag);

/// Submits what is queued and waits until all of it completed; `results[tag]`
/// receives each operation's result (bytes, or -errno). Returns 0, or -errno
/// when submitting failed (the queued operations are then dropped and their
/// results set to that error).
int ctun_batch_run(ctun_batch *batch, int32_t *results);

#endif
