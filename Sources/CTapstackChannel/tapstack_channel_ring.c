/* The client's side of a socket's shared region (TSP_RING; layout and trust
 * in tapstack_ring.h): datagrams in shared memory, the data channel kept for
 * what the rings cannot carry and for readiness.
 *
 * Readiness stays the data channel's, so a program's poll, select and epoll
 * (level or edge triggered) keep working on the descriptor it holds: the
 * service puts a doorbell message on the channel whenever the ring toward
 * the client goes from empty to not empty, and a receiver takes a doorbell
 * off only after it found that ring empty with the doorbell at the head of
 * the channel (then looks again). So whenever a datagram waits in the ring,
 * a doorbell waits in the channel; a doorbell may outlive its datagrams
 * (one spurious wake-up, then EAGAIN). The other way the service asks
 * for doorbells: it raises the ring's `consumer_sleeping` before it stops
 * looking (the stack's executor looks at the ring on every turn while it
 * is awake, and raises it before it sleeps), and a sender that finds it
 * raised lowers it and rings once; otherwise no system call is made.
 *
 * Order: a ring that is full (or a datagram too long for it) sends the
 * datagram on the channel, and the sender stays on the channel until the
 * other side has read everything there (its send queue is empty), so that
 * a reader that takes the ring before the channel sees datagrams in the
 * order they were sent. */
#define _GNU_SOURCE
#include "channel_internal.h"
#include "tapstack_ring.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <linux/sockios.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* A lock of the processes that hold the socket (fork). One killed while
 * holding it (a blocking send on a full channel holds the send lock) hands
 * it on: the rings' state is their indices, published last, so what the
 * dead holder half did is either not visible or complete. */
static void region_lock(tsr_region_lock *lock) {
    if (pthread_mutex_lock(&lock->mutex) == EOWNERDEAD) pthread_mutex_consistent(&lock->mutex);
}

static void region_unlock(tsr_region_lock *lock) { pthread_mutex_unlock(&lock->mutex); }

static tsr_region_header *header_of(tsc_socket *s) { return (tsr_region_header *)s->ring; }

/* Bytes this end wrote to the channel that the other end has not read yet. */
static int unread_on_channel(int fd) {
    int bytes = 0;
    return ioctl(fd, SIOCOUTQ, &bytes) == 0 ? bytes : 1;
}

static void ring_doorbell(int fd) {
    tsp_datagram_header bell = { .magic = TSP_MAGIC, .kind = TSP_DOORBELL };
    /* A full channel needs no doorbell: the reader is woken by what is in it
     * and looks at the ring before the channel. */
    (void)syscall(SYS_sendto, fd, &bell, sizeof bell, MSG_DONTWAIT | MSG_NOSIGNAL, NULL, 0);
}

/* The ring toward the service asked for a doorbell: its eventfd wakes the
 * stack's executor directly; without one (or if it fails), the channel's
 * doorbell wakes the service thread, which takes the datagrams. */
static void wake_service(tsc_socket *s) {
    uint64_t one = 1;
    if (s->ring_wake > 0 && (syscall(SYS_write, s->ring_wake - 1, &one, sizeof one) == sizeof one || errno == EAGAIN)) return;
    ring_doorbell(s->data_fd);
}

int tsc_busy_poll_default(void) {
    const char *text = getenv("TAPSTACK_BUSY_POLL");
    if (!text || !*text || strcmp(text, "auto") == 0) return TSC_BUSY_POLL_AUTO;
    char *end;
    long value = strtol(text, &end, 10);
    return *end == 0 && value >= 0 && value <= TSC_BUSY_POLL_MAX_US ? (int)value : TSC_BUSY_POLL_AUTO;
}

static int64_t monotonic_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);  /* the vDSO's: no system call */
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

static void spin_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* The kernel's sigaction, as rt_sigaction reads it out. */
struct kernel_sigaction {
    void *handler;
    unsigned long flags;
    void *restorer;
    uint64_t mask;
};

/* Whether one of the `pending` signals would interrupt a receive: one
 * caught by a handler installed without SA_RESTART. */
static int interrupts_calls(uint64_t pending) {
    for (int signal = 1; signal <= 64; signal++) {
        if (!(pending & (1ull << (signal - 1)))) continue;
        struct kernel_sigaction action;
        if (syscall(SYS_rt_sigaction, signal, NULL, &action, sizeof(uint64_t)) != 0) continue;
        if (action.handler != (void *)SIG_DFL && action.handler != (void *)SIG_IGN && !(action.flags & SA_RESTART)) return 1;
    }
    return 0;
}

/* Whether the stack's executor last ran on `cpu` (the caller's): a poll
 * there would keep it from running (Linux's busy poll stops when the
 * scheduler wants the CPU; user space cannot see that, so it looks at
 * where the executor was). */
static int is_executor_cpu(const tsr_region_header *h, int cpu) {
    uint32_t executor = __atomic_load_n(&h->executor_cpu, __ATOMIC_RELAXED);
    return executor != 0 && (int)executor - 1 == cpu;
}

/* An adaptive poll yields its CPU every this many looks at the ring (under a µs). */
#define YIELD_SPINS 32

/* Polls the ring until a record waits, or a message came on the channel
 * since the receiver last found it empty (1), or `deadline` passes, or the
 * thread finds itself on the executor's CPU (0); with `hold` (a signal set
 * that the caller blocked) also until one of those signals is pending (0),
 * looked for as often as the clock is; `adaptive` polls yield as they go. */
static int poll_ring(const tsr_region_header *h, const tsr_shared *ring, int64_t deadline, uint64_t hold, uint64_t *pending, int adaptive) {
    for (unsigned spins = 1;; spins++) {
        /* Only the two indices, read as they change: the service writes the
         * tail, the client the head. Unequal: a record waits (or the ring is
         * broken, which the receive that follows reports). */
        if (__atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE) != __atomic_load_n(&ring->head, __ATOMIC_RELAXED)) return 1;
        /* A datagram too large for the ring, one that found it full, an
         * error: on the channel, which the receive looks at next. */
        if (tsc_channel_moved(h)) return 1;
        spin_pause();
        /* Lets a thread waiting for this CPU run first (the peer that
         * sends what the poll waits for, if it shares the CPU): user space
         * cannot see that the scheduler wants the CPU, as the kernel's
         * busy poll does (need_resched). */
        if (adaptive && spins % YIELD_SPINS == 0) syscall(SYS_sched_yield);
        if (spins % 64 == 0) {
            if (hold && syscall(SYS_rt_sigpending, pending, sizeof *pending) == 0 && (*pending & hold)) return 0;
            int64_t now = monotonic_ns();
            if (now >= deadline || is_executor_cpu(h, sched_getcpu())) return 0;
        }
    }
}

/* Moves the calling thread by setting its affinity to `passing` for a
 * moment, then back to `mine`: the kernel moves a thread at once when its
 * CPU is taken out, and does not move it back when the CPU is let in
 * again. Only for a thread whose affinity (`mine`) holds `cpu` and another,
 * so a program that pinned its thread is never moved. */
static int pass_through(int cpu, const cpu_set_t *mine, const cpu_set_t *passing) {
    if (!CPU_ISSET(cpu, mine) || CPU_COUNT(mine) < 2) return 0;
    if (syscall(SYS_sched_setaffinity, 0, sizeof *passing, passing) != 0) return 0;
    syscall(SYS_sched_setaffinity, 0, sizeof *mine, mine);
    return 1;
}

/* Moves the calling thread off `cpu` (see pass_through), and returns the
 * CPU it is on then. A receiver about to poll on the stack executor's CPU
 * does this: polling there would keep the executor from running. */
static int leave_cpu(int cpu) {
    cpu_set_t mine, others;
    if (cpu < 0 || syscall(SYS_sched_getaffinity, 0, sizeof mine, &mine) <= 0) return cpu;
    others = mine;
    CPU_CLR(cpu, &others);
    return pass_through(cpu, &mine, &others) ? sched_getcpu() : cpu;
}

/* Moves the calling thread onto `cpu` (see pass_through). A receiver about
 * to sleep in a dense stream does this with the executor's CPU (see
 * tapstack_poll_policy.h). */
static void join_cpu(int cpu) {
    cpu_set_t mine, only;
    if (cpu < 0 || sched_getcpu() == cpu || syscall(SYS_sched_getaffinity, 0, sizeof mine, &mine) <= 0) return;
    CPU_ZERO(&only);
    CPU_SET(cpu, &only);
    (void)pass_through(cpu, &mine, &only);
}

void tsc_store_if_changed(uint32_t *field, uint32_t value) {
    if (__atomic_load_n(field, __ATOMIC_RELAXED) != value) __atomic_store_n(field, value, __ATOMIC_RELEASE);
}

int tsc_channel_moved(const void *region) {
    const tsr_region_header *h = region;
    return __atomic_load_n(&h->channel_sends, __ATOMIC_ACQUIRE) != __atomic_load_n(&h->channel_seen, __ATOMIC_RELAXED);
}

/* Polls for `nanoseconds` as tsc_ring_wait_poll says; an `adaptive` poll
 * first moves off the executor's CPU, and yields as it goes. */
static int busy_poll(const tsc_socket *s, int64_t nanoseconds, int hold_signals, int adaptive) {
    if (nanoseconds <= 0 || s->ring_refused || !tsc_ring_settled(s, 1)) return 0;  /* refused: no region to poll */
    const tsr_region_header *h = s->ring;
    tsr_region_header *polling = (tsr_region_header *)h;
    int cpu = sched_getcpu();
    if (adaptive && is_executor_cpu(h, cpu)) cpu = leave_cpu(cpu);
    if (is_executor_cpu(h, cpu)) {
        /* Sleep at once: the executor's doorbell is a switch on this CPU. */
        __atomic_store_n(&polling->polling_cpu, 0, __ATOMIC_RELAXED);
        return 0;
    }
    const tsr_shared *ring = tsr_region_to_client(s->ring, TSR_REGION_CAPACITY);
    int64_t deadline = monotonic_ns() + nanoseconds;
    /* Says where and how long it polls: the service may then wait for the
     * answer to what it delivers without sleeping (the header is the
     * client's; see tsr_region_header). Said until a poll finds nothing
     * (the receiver sleeps then): between its datagrams a conversing
     * receiver is awake, and a datagram delivered then is taken as soon. */
    tsc_store_if_changed(&polling->polling_us, (uint32_t)(nanoseconds / 1000));
    tsc_store_if_changed(&polling->polling_cpu, cpu >= 0 ? (uint32_t)cpu + 1 : 0);
    if (!hold_signals) {
        uint64_t none = 0;
        int found = poll_ring(h, ring, deadline, 0, &none, adaptive);
        if (!found) __atomic_store_n(&polling->polling_cpu, 0, __ATOMIC_RELAXED);
        return found;
    }
    /* Signals are held while polling and looked for as the clock is: a
     * handler that ran in the middle of the poll would leave the receive
     * that follows asleep, where the kernel's receive is interrupted
     * (EINTR; a blocking Python recvfrom would miss its Ctrl-C). The C
     * library's own signals (32, 33: cancellation, setxid) are not held. */
    uint64_t hold = ~((1ull << 31) | (1ull << 32)), old = 0, pending = 0;
    if (syscall(SYS_rt_sigprocmask, SIG_BLOCK, &hold, &old, sizeof hold) != 0) return 0;
    hold &= ~old;  /* what the program blocked itself stays as it was */
    int found = poll_ring(h, ring, deadline, hold, &pending, adaptive);
    if (!found) __atomic_store_n(&polling->polling_cpu, 0, __ATOMIC_RELAXED);
    if (!found) syscall(SYS_rt_sigpending, &pending, sizeof pending);
    int interrupted = !found && (pending & hold) && interrupts_calls(pending & hold);
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &old, NULL, sizeof old);  /* the held signals are handled here */
    return found ? 1 : interrupted ? -1 : 0;
}

/* ---- The adaptive busy poll (TSC_BUSY_POLL_AUTO; rules in tapstack_poll_policy.c) ---- */

#define ADAPTIVE_WAKE_UPS 4
#define ADAPTIVE_LIMIT_MIN_NS 4000
#define ADAPTIVE_LIMIT_MAX_NS 200000
#define WAKE_UP_SAMPLES 7

static int64_t wake_up_cost_ns;  /* measured once per process; 0: not yet */

/* What a wake-up costs here: the median lateness of short timed sleeps
 * with the thread's timer slack at 1 ns (then put back), as the stack's
 * executor measures it. On a VM whose idle vCPU halts, it is the exit to
 * the hypervisor and back. */
static int64_t wake_up_cost(void) {
    int64_t cost = __atomic_load_n(&wake_up_cost_ns, __ATOMIC_RELAXED);
    if (cost > 0) return cost;
    long slack = syscall(SYS_prctl, PR_GET_TIMERSLACK, 0, 0, 0, 0);
    syscall(SYS_prctl, PR_SET_TIMERSLACK, 1, 0, 0, 0);
    int64_t samples[WAKE_UP_SAMPLES];
    for (int i = 0; i < WAKE_UP_SAMPLES; i++) {
        struct timespec pause = { .tv_sec = 0, .tv_nsec = 1000 };
        int64_t start = monotonic_ns();
        syscall(SYS_nanosleep, &pause, NULL);
        int64_t late = monotonic_ns() - start - pause.tv_nsec;
        int j = i;
        for (; j > 0 && samples[j - 1] > late; j--) samples[j] = samples[j - 1];
        samples[j] = late;
    }
    if (slack > 0) syscall(SYS_prctl, PR_SET_TIMERSLACK, slack, 0, 0, 0);
    cost = samples[WAKE_UP_SAMPLES / 2] > 1 ? samples[WAKE_UP_SAMPLES / 2] : 1;
    __atomic_store_n(&wake_up_cost_ns, cost, __ATOMIC_RELAXED);
    return cost;
}

int64_t tsc_adaptive_poll_limit(void) {
    int64_t limit = wake_up_cost() * ADAPTIVE_WAKE_UPS;
    return limit < ADAPTIVE_LIMIT_MIN_NS ? ADAPTIVE_LIMIT_MIN_NS : limit > ADAPTIVE_LIMIT_MAX_NS ? ADAPTIVE_LIMIT_MAX_NS : limit;
}

/* The socket's adaptive policy, or NULL when it does not poll adaptively
 * or has no region to poll. */
static tsc_poll_policy *adaptive_policy(const tsc_socket *s) {
    if (s->busy_poll_us != TSC_BUSY_POLL_AUTO || s->ring_refused || !tsc_ring_settled(s, 1)) return NULL;
    return &((tsr_region_header *)s->ring)->poll_policy;
}

int tsc_ring_wait_poll(const tsc_socket *s, int64_t longest, int hold_signals) {
    if (s->busy_poll_us != TSC_BUSY_POLL_AUTO) {
        int64_t us = s->busy_poll_us < TSC_BUSY_POLL_MAX_US ? s->busy_poll_us : TSC_BUSY_POLL_MAX_US;
        int64_t ns = us * 1000 < longest ? us * 1000 : longest;
        return ns > 0 ? busy_poll(s, ns, hold_signals, 0) : 0;
    }
    tsc_poll_policy *policy = adaptive_policy(s);
    if (!policy) return 0;
    int64_t limit = tsc_adaptive_poll_limit();  /* measured before the idle period begins */
    int64_t now = monotonic_ns();
    int64_t window = tsc_poll_policy_begin(policy, now, limit);
    if (window > longest) window = longest;
    if (window <= 0) {
        /* It sleeps: the stack must not wait for its answer (busy_poll
         * left the hint up after a poll that caught a datagram). */
        tsr_region_header *h = (tsr_region_header *)s->ring;
        tsc_store_if_changed(&h->polling_cpu, 0);
        uint32_t executor = __atomic_load_n(&h->executor_cpu, __ATOMIC_RELAXED);
        if (executor != 0 && tsc_poll_policy_sleeps_with_executor(policy)) join_cpu((int)executor - 1);
        return 0;
    }
    int outcome = busy_poll(s, window, hold_signals, 1);
    if (outcome > 0) tsc_poll_policy_caught(policy, limit);
    return outcome;
}

void tsc_ring_wait_ended(const tsc_socket *s) {
    tsc_poll_policy *policy = adaptive_policy(s);
    if (policy) tsc_poll_policy_slept(policy, monotonic_ns(), tsc_adaptive_poll_limit(), wake_up_cost());
}

/* Whether a receive on `fd` may sleep (not O_NONBLOCK): only then does it busy-poll. */
static int descriptor_blocks(int fd) {
    long status = syscall(SYS_fcntl, fd, F_GETFL);
    return status >= 0 && !(status & O_NONBLOCK);
}

int tsc_ring_settled(const tsc_socket *s, int receive) {
    if (__atomic_load_n(&s->ring_refused, __ATOMIC_RELAXED)) return 1;
    tsr_region_header *h = __atomic_load_n((tsr_region_header **)&s->ring, __ATOMIC_ACQUIRE);
    return h && (!receive || __atomic_load_n(&h->receiving, __ATOMIC_ACQUIRE));
}

int tsc_use_ring(tsc_socket *s, int receive) {
    if (s->ring_refused) return -1;
    if (tsc_ring_settled(s, receive)) return 0;
    const char *wanted = getenv("TAPSTACK_RINGS");
    if (wanted && strcmp(wanted, "0") == 0) { s->ring_refused = 1; return -1; }
    /* An adaptive receiver measures this host's wake-ups here, once per
     * process, rather than in its first blocking wait (a signal there must
     * end the wait, not a timed sleep). */
    if (receive && s->busy_poll_us == TSC_BUSY_POLL_AUTO) (void)tsc_adaptive_poll_limit();
    tsp_request r;
    memset(&r, 0, sizeof r);
    r.version = TSP_VERSION;
    r.op = TSP_RING;
    r.value = receive ? 1 : 0;
    int fd = -1;
    if (tsc_call(s, &r, &fd) < 0 || (!s->ring && fd < 0)) {
        if (fd >= 0) close(fd);
        s->ring_refused = 1;  /* an older service, or no memory for it: the channel serves */
        return -1;
    }
    if (!s->ring) {
        size_t size = tsr_region_size(TSR_REGION_CAPACITY);
        struct stat status;
        void *region = MAP_FAILED;
        if (fstat(fd, &status) == 0 && (size_t)status.st_size == size) {
            region = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        }
        if (region == MAP_FAILED || ((tsr_region_header *)region)->magic != TSR_REGION_MAGIC
            || ((tsr_region_header *)region)->capacity != TSR_REGION_CAPACITY) {
            if (region != MAP_FAILED) munmap(region, size);
            close(fd);
            s->ring_refused = 1;
            return -1;
        }
        /* The region's doorbell toward the stack, if the service has one
         * (else doorbells go on the channel); before the region is in use. */
        memset(&r, 0, sizeof r);
        r.version = TSP_VERSION;
        r.op = TSP_RING;
        r.value = 2;
        int wake = -1;
        if (tsc_call(s, &r, &wake) == 0 && wake >= 0) s->ring_wake = tsc_hide_fd(wake) + 1;
        else if (wake >= 0) close(wake);
        __atomic_store_n(&s->ring, region, __ATOMIC_RELEASE);
    }
    if (fd >= 0) close(fd);
    if (receive) __atomic_store_n(&header_of(s)->receiving, 1, __ATOMIC_RELEASE);
    return 0;
}

void tsc_unmap_ring(tsc_socket *s) {
    if (s->ring) munmap(s->ring, tsr_region_size(TSR_REGION_CAPACITY));
    s->ring = NULL;
    if (s->ring_wake > 0) close(s->ring_wake - 1);
    s->ring_wake = 0;
}

int tsc_unsent_bytes(tsc_socket *s) {
    int bytes = unread_on_channel(s->data_fd);
    if (s->ring) {
        tsr_end end;
        if (tsr_attach(&end, tsr_region_to_service(s->ring, TSR_REGION_CAPACITY), TSR_REGION_CAPACITY, 1) == 0) {
            bytes += (int)tsr_used(&end, 1);
        }
    }
    return bytes;
}

void tsc_ring_send_begin(tsc_socket *s, tsc_send_batch *batch) {
    memset(batch, 0, sizeof *batch);
    tsr_region_header *h = header_of(s);
    region_lock(&h->send_lock);
    batch->locked = 1;
    batch->attached = tsr_attach(&batch->end, tsr_region_to_service(s->ring, TSR_REGION_CAPACITY), TSR_REGION_CAPACITY, 1) == 0;
}

/* Makes what the batch wrote visible to the service; notes whether it asked to be woken. */
static void publish(tsc_send_batch *batch) {
    if (!batch->unpublished) return;
    tsr_publish(&batch->end);
    batch->unpublished = 0;
    if (tsr_take_wake_request(&batch->end)) batch->wake = 1;
}

void tsc_ring_send_end(tsc_socket *s, tsc_send_batch *batch) {
    if (!batch->locked) return;
    publish(batch);
    batch->locked = 0;
    region_unlock(&header_of(s)->send_lock);
    if (batch->wake) wake_service(s);
    batch->wake = 0;
}

ssize_t tsc_ring_send_in(tsc_socket *s, tsc_send_batch *batch, const struct iovec *parts, int count, int flags) {
    tsr_region_header *h = header_of(s);
    if (h->send_fallback && unread_on_channel(s->data_fd) == 0) h->send_fallback = 0;
    if (!h->send_fallback) {
        if (batch->attached && tsr_write(&batch->end, parts, count) == 0) {
            batch->unpublished = 1;
            size_t length = 0;
            for (int i = 0; i < count; i++) length += parts[i].iov_len;
            return (ssize_t)length;
        }
        h->send_fallback = 1;  /* full, or too long for it: the channel, until the service read it all */
    }
    /* What the ring holds goes first: published now, and the service reads this stamp. */
    publish(batch);
    if (batch->wake) wake_service(s);
    batch->wake = 0;
    tsp_datagram_header *header = parts[0].iov_base;
    header->flags |= TSP_SEND_AFTER_RING;
    header->timestamp_ns = __atomic_load_n(&((tsr_shared *)tsr_region_to_service(s->ring, TSR_REGION_CAPACITY))->tail, __ATOMIC_RELAXED);
    struct msghdr message = { .msg_iov = (struct iovec *)parts, .msg_iovlen = (size_t)count };
    return syscall(SYS_sendmsg, s->data_fd, &message, (flags & MSG_DONTWAIT) | MSG_NOSIGNAL);
}

ssize_t tsc_ring_send(tsc_socket *s, const struct iovec *parts, int count, int flags) {
    tsc_send_batch batch;
    tsc_ring_send_begin(s, &batch);
    ssize_t n = tsc_ring_send_in(s, &batch, parts, count, flags);
    int error = errno;
    tsc_ring_send_end(s, &batch);
    errno = error;
    return n;
}

static int is_doorbell(const tsp_datagram_header *head, ssize_t length) {
    return length == (ssize_t)sizeof *head && head->magic == TSP_MAGIC && head->kind == TSP_DOORBELL;
}

static void take_doorbell(tsc_socket *s) {
    tsp_datagram_header head;
    (void)syscall(SYS_recvfrom, s->data_fd, &head, sizeof head, MSG_DONTWAIT, NULL, NULL);
    __atomic_add_fetch(&header_of(s)->doorbells_taken, 1, __ATOMIC_RELEASE);
}

/* With the ring empty: takes the doorbells rung for datagrams already
 * taken, waiting briefly for one the service counted but has not put on
 * the channel yet, so that no doorbell is left to make a poll report
 * readable with nothing to read (a program with a blocking descriptor
 * would then block in its read). Stops at any other message: that one
 * makes the descriptor readable rightly. Holding the receive lock. */
static void take_spent_doorbells(tsc_socket *s, tsr_end *end) {
    tsr_region_header *h = header_of(s);
    uint32_t rung = __atomic_load_n(&h->doorbells, __ATOMIC_ACQUIRE);
    if (rung == __atomic_load_n(&h->doorbells_taken, __ATOMIC_RELAXED)) return;
    /* Rung before the ring was found empty: every one of them is spent. */
    if (tsr_has_record(end)) return;
    for (int patience = 0; (int32_t)(rung - __atomic_load_n(&h->doorbells_taken, __ATOMIC_RELAXED)) > 0;) {
        tsp_datagram_header head;
        ssize_t m = syscall(SYS_recvfrom, s->data_fd, &head, sizeof head, MSG_PEEK | MSG_DONTWAIT, NULL, NULL);
        if (is_doorbell(&head, m)) {
            take_doorbell(s);
        } else if (m < 0 && errno == EAGAIN && patience++ < 1000) {
            struct pollfd wait = { .fd = s->data_fd, .events = POLLIN };
            /* On its way: the service sends it right after counting it, or,
             * when the channel was full, as soon as there is room. */
            (void)syscall(SYS_poll, &wait, 1, 1);
        } else {
            return;
        }
    }
}

ssize_t tsc_ring_receive(tsc_socket *s, const struct iovec *parts, int count, int flags, int *cut) {
    tsr_region_header *h = header_of(s);
    size_t capacity = 0;
    for (int i = 0; i < count; i++) capacity += parts[i].iov_len;
    int peeking = (flags & MSG_PEEK) != 0;
    region_lock(&h->receive_lock);
    for (;;) {
        tsr_end end;
        if (tsr_attach(&end, tsr_region_to_client(s->ring, TSR_REGION_CAPACITY), TSR_REGION_CAPACITY, 0) < 0) break;
        ssize_t n = tsr_popv(&end, parts, count, peeking);
        if (n > 0 && !peeking) {
            take_spent_doorbells(s, &end);
            tsc_poll_policy_took(&h->poll_policy);
        }
        if (n != 0) {
            region_unlock(&h->receive_lock);
            if (n < 0) { errno = EIO; return -1; }
            *cut = (size_t)n > capacity;
            return (flags & MSG_TRUNC) || (size_t)n <= capacity ? n : (ssize_t)capacity;
        }
        take_spent_doorbells(s, &end);
        /* Empty: what heads the channel? (What the service sent on it
         * before this look, this look sees; what it sends after, a
         * polling receive sees in `channel_sends`.) */
        uint32_t channel_sends = __atomic_load_n(&h->channel_sends, __ATOMIC_ACQUIRE);
        tsp_datagram_header head;
        ssize_t m = syscall(SYS_recvfrom, s->data_fd, &head, sizeof head, MSG_PEEK | MSG_DONTWAIT, NULL, NULL);
        if (m < 0 && errno == EAGAIN) {
            tsc_store_if_changed(&h->channel_seen, channel_sends);
            tsc_store_if_changed(&h->channel_looked, 1);
        }
        if (m < 0 && errno == EAGAIN && !(flags & MSG_DONTWAIT)) {
            /* Wait for a message as the descriptor waits (O_NONBLOCK,
             * SO_RCVTIMEO, signals), without holding the lock; with
             * SO_BUSY_POLL, a blocking one first polls the ring that long. */
            region_unlock(&h->receive_lock);
            int polled = s->busy_poll_us != 0 && descriptor_blocks(s->data_fd) ? tsc_ring_wait_poll(s, INT64_MAX, 1) : 0;
            if (polled < 0) { errno = EINTR; return -1; }  /* as the kernel's wait would be */
            if (polled > 0) {
                region_lock(&h->receive_lock);
                continue;
            }
            unsigned char byte;
            m = syscall(SYS_recvfrom, s->data_fd, &byte, 1, MSG_PEEK, NULL, NULL);
            int error = errno;
            tsc_ring_wait_ended(s);
            errno = error;
            if (m < 0) return -1;
            region_lock(&h->receive_lock);
            continue;
        }
        if (m < 0) {
            int error = errno;
            region_unlock(&h->receive_lock);
            errno = error;
            return -1;
        }
        if (is_doorbell(&head, m)) {
            /* Rung for a datagram now in the ring (popped next turn), or
             * one the counts do not explain: take it rather than spin. */
            if (!tsr_has_record(&end)) take_doorbell(s);
            continue;
        }
        break;  /* a datagram, an error or the end: the channel's */
    }
    region_unlock(&h->receive_lock);
    return -2;
}
