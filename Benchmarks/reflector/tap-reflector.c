/*
 * tap-reflector: the benchmark's physical-limit baseline. One blocking
 * read() and one write() per frame on a TAP device, and nothing else a stack
 * does: it answers ARP for its address, turns ICMP echo requests into
 * replies, and sends UDP datagrams for port 7 back with addresses and ports
 * swapped (which keeps both checksums valid). No validation, no queues.
 *
 *   tap-reflector [--spin] TAPNAME [IPV4 [MAC]]   (default 192.0.2.2, 02:00:00:00:00:02)
 *
 * --spin busy-polls a non-blocking fd instead of sleeping in read(): the
 * latency floor without wake-ups, at the price of a whole CPU.
 * Runs until SIGINT or SIGTERM.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_signal(int s) { (void)s; stop = 1; }

static void swap(uint8_t *a, uint8_t *b, size_t n) {
    uint8_t t[16];
    memcpy(t, a, n); memcpy(a, b, n); memcpy(b, t, n);
}

int main(int argc, char **argv) {
    int spin = argc > 1 && strcmp(argv[1], "--spin") == 0;
    if (spin) { argv++; argc--; }
    if (argc < 2) { fprintf(stderr, "usage: %s [--spin] TAPNAME [IPV4 [MAC]]\n", argv[0]); return 2; }
    uint8_t ip[4], mac[6] = { 2, 0, 0, 0, 0, 2 };
    if (inet_pton(AF_INET, argc > 2 ? argv[2] : "192.0.2.2", ip) != 1) { fprintf(stderr, "bad address\n"); return 2; }
    if (argc > 3 && sscanf(argv[3], "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &mac[0], &mac[1], &mac[2], &mac[3], &mac[4], &mac[5]) != 6) {
        fprintf(stderr, "bad MAC\n"); return 2;
    }
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | (spin ? O_NONBLOCK : 0));
    if (fd < 0) { perror("open /dev/net/tun"); return 1; }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
    strncpy(ifr.ifr_name, argv[1], IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) { perror("TUNSETIFF"); return 1; }
    struct sigaction sa = { .sa_handler = on_signal }; /* no SA_RESTART: read() returns on a signal */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    uint8_t f[2048];
    while (!stop) {
        ssize_t n = read(fd, f, sizeof f);
        if (n < 0 && spin && errno == EAGAIN) continue;
        if (n < 14) continue;
        uint16_t type = (uint16_t)(f[12] << 8 | f[13]);
        if (type == 0x0806 && n >= 42 && f[21] == 1 && memcmp(f + 38, ip, 4) == 0) {
            /* ARP request for us: reply in place. */
            memcpy(f, f + 6, 6);
            memcpy(f + 6, mac, 6);
            f[21] = 2;
            memcpy(f + 32, f + 22, 10);       /* target = the asker */
            memcpy(f + 22, mac, 6);           /* sender = us */
            memcpy(f + 28, ip, 4);
            if (write(fd, f, 42) < 0) continue;
            continue;
        }
        if (type != 0x0800 || n < 34 || memcmp(f + 30, ip, 4) != 0) continue;
        size_t ihl = (size_t)(f[14] & 15) * 4;
        uint8_t *l4 = f + 14 + ihl;
        if (f[23] == 1 && n >= (ssize_t)(14 + ihl + 8) && l4[0] == 8) {
            /* ICMP echo request: type 8 -> 0, checksum adjusted by +0x0800 (RFC 1624). */
            l4[0] = 0;
            uint32_t sum = (uint32_t)(l4[2] << 8 | l4[3]) + 0x0800;
            sum = (sum & 0xFFFF) + (sum >> 16);
            l4[2] = (uint8_t)(sum >> 8); l4[3] = (uint8_t)sum;
        } else if (f[23] == 17 && n >= (ssize_t)(14 + ihl + 8) && l4[2] == 0 && l4[3] == 7) {
            swap(l4, l4 + 2, 2); /* ports */
        } else {
            continue;
        }
        swap(f, f + 6, 6);       /* MACs */
        swap(f + 26, f + 30, 4); /* IPs */
        if (write(fd, f, (size_t)n) < 0) continue;
    }
    close(fd);
    return 0;
}
