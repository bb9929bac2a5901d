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
 * - A wait after more than TSC_POLL_STREAM_BATCH datagrams taken since the last is
 *   in a stream: they queued up while the receiver was busy, a poll would
 *   not bring the next sooner and would take the CPU its producers need.
 *   It sleeps, and so do the 7 waits after it (a stream's batches come
 *   small now and then too), and the window is kept for when the
 *   conversation resumes.
 * - A wait after TSC_POLL_JOIN_BATCH or more is in a dense stream: it
 *   sleeps on the stack executor's CPU (the poll moves there first, when
 *   its affinity allows). The executor's doorbell is then a switch on that
 *   CPU, taken when the executor waits, rather than an interrupt that
 *   wakes another, idle CPU: on a VM whose idle vCPU halts, an exit to the
 *   hypervisor for the executor and another for the receiver, once per
 *   batch (64 B echoes with 64 in flight, on 2 vCPUs shared with the load:
 *   0.52 µs of the receiver's CPU per datagram together, 0.7-1.0 apart).
 *   Not after smaller batches: at a lower rate the two together switch
 *   once per datagram or two, which costs more CPU than the interrupts (a
 *   threshold of 0 raised the CPU per echo at 50 000/s by a tenth).
 * - With no window, the wait after every 32 that did not poll polls the
 *   whole limit (a probe; a socket's first wait is one): a
 *   chain of processes that all sleep is slower than one that polls, so
 *   its gaps alone would never show that polling pays.
 *
 * The poll itself (tapstack_channel_ring.c) moves off the stack executor's
 * CPU before it begins, and yields its CPU every 32 looks at the ring (under
 * a µs), so that a thread waiting for that CPU (the peer, on one machine)
 * runs first: user space cannot see that the scheduler wants the CPU, as
 * the kernel's busy poll does. (A rule that stopped polling for a while
 * after a poll lost its CPU, as the executor's does, was tried and left
 * out: with the yields every poll that let a peer run counted as lost, and
 * the pauses it piled up left conversations asleep.)
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
    uint32_t probe_in;       ///< waits without a window before the next probe
    uint32_t taken;          ///< datagrams taken since the last wait began
    uint32_t stream_waits;   ///< waits left in a stream (no polling)
    uint32_t last_batch;     ///< datagrams taken between the last two waits
    int64_t idle_since;      ///< when the last wait began; 0: not learning from it
} tsc_poll_policy;

/// Datagrams taken between two waits above which the receiver is in a stream.
#define TSC_POLL_STREAM_BATCH 2
/// Waits a stream lasts after its last batch of more than TSC_POLL_STREAM_BATCH.
#define TSC_POLL_STREAM_WAITS 8
/// Datagrams taken between two waits from which the receiver sleeps on the executor's CPU.
#define TSC_POLL_JOIN_BATCH 16
/// Waits without a window between two probes.
#define TSC_POLL_PROBE_INTERVAL 32

/// Whether the wait that began last, which sleeps at once, sleeps on the
/// executor's CPU (it followed a batch of TSC_POLL_JOIN_BATCH or more).
int tsc_poll_policy_sleeps_with_executor(const tsc_poll_policy *policy);
/// A datagram was taken from the ring.
void tsc_poll_policy_took(tsc_poll_policy *policy);
/// A wait begins at `now`: the nanoseconds to poll before sleeping (0: sleep at once).
int64_t tsc_poll_policy_begin(tsc_poll_policy *policy, int64_t now, int64_t limit);
/// The poll of that wait caught a datagram (a probe's sets the window to `limit`).
void tsc_poll_policy_caught(tsc_poll_policy *policy, int64_t limit);
/// The wait's sleep ended at `now`; `wake_up` is what a wake-up costs here.
void tsc_poll_policy_slept(tsc_poll_policy *policy, int64_t now, int64_t limit, int64_t wake_up);

#endif
