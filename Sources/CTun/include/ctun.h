#ifndef TAPSTACK_CTUN_H
#define TAPSTACK_CTUN_H

#include <stddef.h>
#include <stdint.h>

#include "ctun_uring.h"

/// Where opening a TAP device failed, so the caller can explain it.
typedef enum {
    CTUN_OK = 0,
    CTUN_STAGE_OPEN = 1,     ///< open("/dev/net/tun") failed
    CTUN_STAGE_SETIFF = 2,   ///< ioctl(TUNSETIFF) failed
    CTUN_STAGE_NAME = 3,     ///< the name is empty or too long
} ctun_stage;

/// Opens /dev/net/tun and attaches it to TAP device `name` with
/// IFF_TAP | IFF_NO_PI, creating the device when it does not exist.
/// The fd is non-blocking and close-on-exec.
/// Returns the fd, or -1 with `*stage` and `*err` (an errno) set.
/// `*persistent` tells whether the device is persistent (outlives the fd).
/// `actual_name` (at least 16 bytes) receives the kernel's name for it.
int ctun_open_tap(const char *name, char *actual_name, int *persistent,
                  int *stage, int *err);

/// The largest interface name the kernel accepts, including the NUL.
int ctun_ifnamsiz(void);

/// eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); -1 with errno on failure.
int ctun_eventfd(void);
/// Adds 1 to the eventfd counter; never blocks.
void ctun_eventfd_signal(int fd);
/// Resets the eventfd counter to zero; never blocks.
void ctun_eventfd_drain(int fd);

/// Names the calling thread (shown by top -H, gdb); at most 15 characters.
void ctun_set_thread_name(const char *name);

/// A CPU hint for spin-wait loops (x86 PAUSE), so a spinning thread yields
/// pipeline resources to its sibling.
static inline void ctun_spin_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

#endif
