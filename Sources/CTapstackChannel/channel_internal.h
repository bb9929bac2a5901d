/* Between the client's files of this target; not part of the API. */
#ifndef TAPSTACK_CHANNEL_INTERNAL_H
#define TAPSTACK_CHANNEL_INTERNAL_H
#include "tapstack_channel.h"

/// Moves `fd`, a descriptor the program does not know about, to a number
/// near the top of the first 1024 (keeping its close-on-exec flag) and
/// returns the new one, or `fd` when there is no room. A program that closes
/// descriptors it did not open (closefrom and the like) and opens files
/// again gets low numbers: the library's writes to the closed one then fail
/// instead of landing in one of the program's files.
int tsc_hide_fd(int fd);
/// One control request on `s`'s connection; `fd`, if not NULL, receives a passed descriptor.
int tsc_call(tsc_socket *s, tsp_request *request, int *fd);
/// Sends the datagram in `parts` (header first) through the region, or on
/// the channel when the ring cannot take it. As sendmsg.
ssize_t tsc_ring_send(tsc_socket *s, const struct iovec *parts, int count, int flags);
/// The pieces of tsc_ring_send, for a batch: begin takes the send lock,
/// each send writes into the ring without publishing (or, when the ring
/// cannot take it, publishes what was written and sends on the channel),
/// end publishes, unlocks and wakes the stack if it asked.
void tsc_ring_send_begin(tsc_socket *s, tsc_send_batch *batch);
ssize_t tsc_ring_send_in(tsc_socket *s, tsc_send_batch *batch, const struct iovec *parts, int count, int flags);
void tsc_ring_send_end(tsc_socket *s, tsc_send_batch *batch);
/// Takes the oldest datagram from the region into `parts` (header first);
/// returns its length (as recvmsg with `flags`), -1 with errno, or -2 when
/// the next message is on the channel (take it there). `*cut` is set when
/// it did not fit.
ssize_t tsc_ring_receive(tsc_socket *s, const struct iovec *parts, int count, int flags, int *cut);
/// Whether the service counted something sent on the channel since a
/// receive last found it empty (region `channel_sends` against
/// `channel_seen`; before any receive looked, `channel_looked` is 0 and
/// what was sent before the region is not counted).
int tsc_channel_moved(const void *region);
/// Stores `value` in a field of the region's header only when it differs:
/// the executor reads the hint's line on every delivery, and a store would
/// take the line from its cache each time.
void tsc_store_if_changed(uint32_t *field, uint32_t value);
#endif
