#ifndef TAPSTACK_CTAPSTACK_SYSTEM_H
#define TAPSTACK_CTAPSTACK_SYSTEM_H

/* System calls Swift cannot reach from Glibc: eventfd, thread names and
 * affinity. No library beyond libc, so client libraries can link it. */

#include <stdint.h>

/// eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); -1 with errno on failure.
int csys_eventfd(void);
/// Adds 1 to the eventfd counter; never blocks.
void csys_eventfd_signal(int fd);
/// Resets the eventfd counter to zero; never blocks.
void csys_eventfd_drain(int fd);

/// Names the calling thread (shown by top -H, gdb); at most 15 characters.
void csys_set_thread_name(const char *name);

/// Pins the calling thread to the CPUs listed (`count` numbers); 0 or an errno.
int csys_pin_thread(const int *cpus, int count);

/// The thread id of the caller (gettid), for telling threads apart.
long csys_thread_id(void);

/// Sets the calling thread's timer slack (PR_SET_TIMERSLACK) to `nanoseconds`
/// (at least 1): how late the kernel may end its timed sleeps to merge
/// wake-ups. 0 or an errno.
int csys_set_timer_slack(unsigned long nanoseconds);

/// How many times the scheduler has taken the CPU from the calling thread
/// (involuntary context switches, getrusage RUSAGE_THREAD); 0 on failure.
uint64_t csys_thread_preemptions(void);

/// The CPU the calling thread runs on (sched_getcpu, no system call with
/// rseq); -1 when unknown.
int csys_current_cpu(void);

/// A CPU hint for spin-wait loops (x86 PAUSE).
static inline void csys_spin_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

#endif
