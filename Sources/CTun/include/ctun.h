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

/// Asks for a virtio-net header before every frame (IFF_VNET_HDR).
#define CTUN_VNET_HDR 1
/// Opens a TUN device (IFF_TUN: IP packets, no Ethernet) instead of a TAP one.
#define CTUN_MODE_TUN 2

/// Opens /dev/net/tun and attaches it to TAP device `name` with
/// IFF_TAP | IFF_NO_PI (and IFF_VNET_HDR when `options` has CTUN_VNET_HDR),
/// creating the device when it does not exist. The fd is non-blocking and
/// close-on-exec. Returns the fd, or -1 with `*stage` and `*err` (an errno)
/// set. `*persistent` tells whether the device is persistent (outlives the
/// fd). `actual_name` (at least 16 bytes) receives the kernel's name for it.
int ctun_open_tap(const char *name, int options, char *actual_name, int *persistent,
                  int *stage, int *err);

/// The largest interface name the kernel accepts, including the NUL.
int ctun_ifnamsiz(void);

/// TUNSETOFFLOAD flags: what the device may hand us with a virtio-net
/// header (checksums left partial; UDP segmentation, kernel 6.2, only with
/// both families and CSUM).
#define CTUN_OFFLOAD_CSUM 0x01
#define CTUN_OFFLOAD_USO4 0x20
#define CTUN_OFFLOAD_USO6 0x40

/// TUNSETOFFLOAD: 0, or the errno (EINVAL: the kernel does not know a flag).
int ctun_set_offload(int fd, unsigned flags);

/// 1 when interface `name` is administratively up (IFF_UP), 0 when down,
/// -errno when it cannot be asked. `sock` is any AF_INET datagram socket.
int ctun_interface_is_up(int sock, const char *name);

/// What kind of device interface `name` is, from /sys/class/net/NAME/tun_flags:
/// CTUN_KIND_TAP, CTUN_KIND_TUN, CTUN_KIND_OTHER (exists, not TUN/TAP) or
/// CTUN_KIND_NONE (no such interface).
typedef enum { CTUN_KIND_NONE = 0, CTUN_KIND_TAP = 1, CTUN_KIND_TUN = 2, CTUN_KIND_OTHER = 3 } ctun_kind;
int ctun_interface_kind(const char *name);

#endif
