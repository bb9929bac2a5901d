#ifndef TAPSTACK_CHANNEL_SERVICE_H
#define TAPSTACK_CHANNEL_SERVICE_H
/* The service side's system calls (epoll, SCM_RIGHTS, recvmmsg/sendmmsg),
 * which Swift cannot reach through Glibc. Each returns -1 with errno set on
 * failure. */
#include <stdint.h>
#include "tapstack_channel.h"
#include "tapstack_ring.h"

/// A bound, listening SOCK_SEQPACKET socket at `path` with mode `mode`,
/// non-blocking and close-on-exec.
int tsv_listen(const char *path, unsigned mode);
/// Accepts a connection, non-blocking and close-on-exec; -1 with EAGAIN when none waits.
int tsv_accept(int listen_fd);
/// A SOCK_SEQPACKET pair: `fds[0]` non-blocking for the service, `fds[1]`
/// for the client, non-blocking only when `client_nonblocking`.
int tsv_socketpair(int fds[2], int client_nonblocking);
/// Sends `reply`, passing `pass_fd` along when it is not -1.
int tsv_send_reply(int control_fd, const tsp_reply *reply, int pass_fd);
/// The process id and user id of the peer of a connected Unix socket (SO_PEERCRED).
int tsv_peer_credentials(int fd, int32_t *pid, uint32_t *uid);
/// A memfd holding `length` bytes of `bytes`, positioned at its
/// start: how an answer of any size is passed without blocking the service.
int tsv_memfd_with(const char *name, const void *bytes, size_t length);
/// Receives one request without waiting; returns its length, 0 at end of file.
ssize_t tsv_receive_request(int control_fd, tsp_request *request);

enum { TSV_IN = 1, TSV_OUT = 2, TSV_HUP = 4 };
int tsv_epoll_create(void);
/// Adds (`op` 1), changes (2) or removes (3) `fd` with TSV_IN/TSV_OUT interest.
int tsv_epoll_set(int epoll_fd, int op, int fd, unsigned interest, uint64_t tag);
/// Waits up to `timeout_ms`; fills tags and TSV_* events; returns how many.
int tsv_epoll_wait(int epoll_fd, uint64_t *tags, unsigned *events, int max, int timeout_ms);

/// Message buffers for recvmmsg/sendmmsg: `count` slots of `slot_size` bytes.
typedef struct tsv_batch tsv_batch;
tsv_batch *tsv_batch_create(unsigned count, unsigned slot_size);
void tsv_batch_destroy(tsv_batch *batch);
void *tsv_batch_slot(tsv_batch *batch, unsigned index);
unsigned tsv_batch_length(const tsv_batch *batch, unsigned index);
/// 1 when the message in slot `index` did not fit its slot.
int tsv_batch_truncated(const tsv_batch *batch, unsigned index);
void tsv_batch_set_length(tsv_batch *batch, unsigned index, unsigned length);
/// Receives up to `max` messages without waiting; returns how many. At end
/// of file the first message has length 0.
int tsv_batch_receive(int fd, tsv_batch *batch, unsigned max);
/// Sends slots first..<first+count without waiting; returns how many went.
int tsv_batch_send(int fd, tsv_batch *batch, unsigned first, unsigned count);


/* ---- A client socket's shared region (tapstack_ring.h), service side ----
 * The service keeps its ends' indices privately and trusts nothing the
 * client writes: a ring found inconsistent fails every later call with
 * EBADMSG (the service then releases the socket). */
typedef struct tsv_region tsv_region;
/// Makes a region (a memfd of fixed size, sealed against resizing) and maps
/// it; `*fd` is the descriptor to pass to the client (the caller closes it).
tsv_region *tsv_region_create(int *fd);
void tsv_region_destroy(tsv_region *region);
/// The region's memory (what the client maps too): for tests and fuzzing.
void *tsv_region_memory(tsv_region *region);
/// Takes up to `max` datagrams from the client's ring into `batch`'s slots
/// (as tsv_batch_receive would); returns how many, -1 with EBADMSG.
int tsv_region_take(tsv_region *region, tsv_batch *batch, unsigned max);
/// 1 when the client's ring holds a datagram.
int tsv_region_has_datagram(tsv_region *region);
/// Before the service stops looking at the client's ring: asks the client
/// to ring a doorbell for its next datagram, then looks again (1: one waits).
int tsv_region_arm(tsv_region *region);
/// The service looks at the ring on every turn (the stack's executor is
/// awake): the client need not ring.
void tsv_region_disarm(tsv_region *region);
/// Without the service's lock (the stack's executor, on every turn): 1 when
/// the client's ring may hold a datagram, from the published indices only
/// (a hint: a client may write anything there; take under the lock).
int tsv_region_peek(tsv_region *region);
/// Without the service's lock, before the executor sleeps: as
/// tsv_region_arm, by the published indices (a hint, as tsv_region_peek).
/// Costs no store or fence while the request is still raised.
int tsv_region_arm_quick(tsv_region *region);
/// 1 when the service has not yet taken everything the client's ring held
/// up to `position` (a tail the client stamped on a datagram it sent on the
/// channel instead: TSP_SEND_AFTER_RING); 0 too for a position that cannot be.
int tsv_region_precedes(tsv_region *region, uint32_t position);
/// Puts slots first..<first+count of `batch` in the ring toward the client;
/// returns how many went (stopping at the first that does not fit), -1 with
/// EBADMSG. `*rang` is set when the ring had been empty (send a doorbell).
int tsv_region_put(tsv_region *region, tsv_batch *batch, unsigned first, unsigned count, int *rang);
/// 1 when the ring toward the client holds datagrams it has not taken.
int tsv_region_to_client_holds(tsv_region *region);
/// Bytes the service wrote on `fd` that the client has not read yet (SIOCOUTQ).
int tsv_unread(int fd);
/// Whether a receive of the client busy-polls its ring now (a hint the
/// client writes): the CPU it polls on plus one (0: none), and in
/// `*microseconds` its busy-poll time, at most `limit`.
unsigned tsv_region_client_polling(tsv_region *region, unsigned limit, unsigned *microseconds);
/// On the stack's executor, having put datagrams in the ring toward the
/// client: notes the CPU it runs on (a receive there does not busy-poll).
void tsv_region_note_executor_cpu(tsv_region *region);
/// Counts a message just sent on the client's channel in the region, where
/// a receiver polling the ring sees it (call after each send of datagrams or errors).
void tsv_region_note_channel(tsv_region *region);
/// Counts a doorbell in the region, then puts it (TSP_DOORBELL) on the
/// channel `fd`: after tsv_region_put said the ring had been empty. -1
/// when it could not be sent (a full channel: EAGAIN): it is owed, and
/// must be sent (tsv_doorbell) once the channel has room, since the
/// client waits for every doorbell counted.
int tsv_region_ring(tsv_region *region, int fd);
/// Sends an owed doorbell; 0, or -1 with errno.
int tsv_doorbell(int fd);
/// A non-blocking eventfd for a client's doorbells toward the stack; -1 with errno.
int tsv_wake_create(void);

#endif
