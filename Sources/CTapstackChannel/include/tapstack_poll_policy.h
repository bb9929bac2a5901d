#ifndef TAPSTACK_POLL_POLICY_H
#define TAPSTACK_POLL_POLICY_H
/*
 * The adaptive busy poll of a client socket's receives (TAPSTACK_BUSY_POLL
 * unset or `auto`): spin, then block, as the stack's executor does with
 * --busy-poll auto (Sources/Host/IdlePolling.swift, the rule of Linux's
 * cpuidle-haltpoll governor), with the rules a receiver on the far side of
 * the socket service needs besides.
 *
 * - The window (how long a wait polls the ring before it sleeps) follows
 *   the gaps between datagrams: a wait that slept and ended within the
 *   limit grows it (from a quarter of the limit, doubling); one that ended
 *   later halves it, and below a quarter of the limit it is none.
 * - The limit is four wake-ups of this host (the caller measures them): the
 *   answer to what a receiver sent comes after the executor woke for it,
 *   the peer woke, and the executor woke again. A wait that slept is
 *   counted less the two wake-ups a poll would have saved: the receiver's
 *   own, and the executor's for the answer (it waits for the answer of a
 *   receiver that polls).
 * - A poll that lost its CPU (25 µs between two of its looks at the clock:
 *   the poller yields each time it looks, so another thread on its CPU ran
 *   that long) stops polling for 8 waits, doubling while it keeps
 *   happening, up to 1024, back to 8 once a poll catches a datagram.
 * - A wait after more than TSC_POLL_STREAM_BATCH datagrams taken since the last is
 *   in a stream: they queued up while the receiver was busy, a poll would
 *   not bring the next sooner and would take the CPU its producers need.
 *   It sleeps, and the window is kept for when the conversation resumes.
 * - With no window, every 32nd wait polls the whole limit (a probe): a
 *   chain of processes that all sleep is slower than one that polls, so
 *   its gaps alone would never show that polling pays.
 *
 * The poll itself (tapstack_channel_ring.c) moves off the stack executor's
 * CPU before it begins, and yields its CPU each time it looks at the clock,
 * so that a peer sharing that CPU is not held up by it.
 *
 * The state lives in the socket's shared region, so every thread and
 * process holding the socket shares it; fields are read and written with
 * relaxed atomics, and racing receivers may lose an update (a heuristic).
 * Times are monotonic nanoseconds; the caller passes the clock, so the
 * rules are plain functions of their inputs.
 */
#include <stdint.h>

typedef struct {
    uint32_t window_ns;      ///< how long the next wait polls
    uint32_t hold_off;       ///< waits left without polling
    uint32_t next_hold_off;  ///< the pause after the next poll that fails so
    uint32_t probe_in;       ///< waits without a window before the next probe
    uint32_t taken;          ///< datagrams taken since the last wait began
    uint32_t reserved;       ///< (alignment)
    int64_t idle_since;      ///< when the last wait began; 0: not learning from it
} tsc_poll_policy;

/// Datagrams taken between two waits above which the receiver is in a stream.
#define TSC_POLL_STREAM_BATCH 2
/// Waits without a window between two probes.
#define TSC_POLL_PROBE_INTERVAL 32
#define TSC_POLL_HOLD_OFF_FIRST 8
#define TSC_POLL_HOLD_OFF_MOST 1024

/// A datagram was taken from the ring.
void tsc_poll_policy_took(tsc_poll_policy *policy);
/// A wait begins at `now`: the nanoseconds to poll before sleeping (0: sleep at once).
int64_t tsc_poll_policy_begin(tsc_poll_policy *policy, int64_t now, int64_t limit);
/// The poll of that wait caught a datagram (a probe's sets the window to `limit`).
void tsc_poll_policy_caught(tsc_poll_policy *policy, int64_t limit);
/// The poll of that wait lost its CPU.
void tsc_poll_policy_lost_cpu(tsc_poll_policy *policy);
/// The wait's sleep ended at `now`; `wake_up` is what a wake-up costs here.
void tsc_poll_policy_slept(tsc_poll_policy *policy, int64_t now, int64_t limit, int64_t wake_up);

#endif
