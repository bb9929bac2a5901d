#include "ctun.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

int ctun_ifnamsiz(void) { return IFNAMSIZ; }

int ctun_open_tap(const char *name, int options, char *actual_name, int *persistent,
                  int *stage, int *err) {
    *stage = CTUN_OK;
    *err = 0;
    *persistent = 0;
    size_t len = strlen(name);
    if (len == 0 || len >= IFNAMSIZ) {
        *stage = CTUN_STAGE_NAME;
        *err = EINVAL;
        return -1;
    }
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        *stage = CTUN_STAGE_OPEN;
        *err = errno;
        return -1;
    }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = ((options & CTUN_MODE_TUN) ? IFF_TUN : IFF_TAP) | IFF_NO_PI | ((options & CTUN_VNET_HDR) ? IFF_VNET_HDR : 0);
    memcpy(ifr.ifr_name, name, len);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        *stage = CTUN_STAGE_SETIFF;
        *err = errno;
        close(fd);
        return -1;
    }
    memcpy(actual_name, ifr.ifr_name, IFNAMSIZ);
    actual_name[IFNAMSIZ - 1] = 0;
    struct ifreq got;
    memset(&got, 0, sizeof got);
    if (ioctl(fd, TUNGETIFF, &got) == 0) {
        *persistent = (got.ifr_flags & IFF_PERSIST) != 0;
    }
    return fd;
}

int ctun_set_offload(int fd, unsigned flags) {
    return ioctl(fd, TUNSETOFFLOAD, (unsigned long)flags) == 0 ? 0 : errno;
}

int ctun_interface_is_up(int sock, const char *name) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(sock, SIOCGIFFLAGS, &ifr) < 0) return -errno;
    return (ifr.ifr_flags & IFF_UP) ? 1 : 0;
}

int ctun_interface_kind(const char *name) {
    char path[128];
    snprintf(path, sizeof path, "/sys/class/net/%s", name);
    if (access(path, F_OK) != 0) return CTUN_KIND_NONE;
    snprintf(path, sizeof path, "/sys/class/net/%s/tun_flags", name);
    FILE *f = fopen(path, "r");
    if (!f) return CTUN_KIND_OTHER;
    unsigned flags = 0;
    int n = fscanf(f, "%x", &flags);
    fclose(f);
    if (n != 1) return CTUN_KIND_OTHER;
    return (flags & IFF_TAP) ? CTUN_KIND_TAP : CTUN_KIND_TUN;
}
