/*
 * udpecho-load: the benchmark's load generator. A plain kernel-socket UDP
 * client that measures an echo service:
 *
 *   udpecho-load pingpong ADDR PORT SIZE COUNT SECONDS
 *       one datagram at a time (after 200 warm-up): RTT p50/p99/mean
 *   udpecho-load window ADDR PORT SIZE WINDOW SECONDS
 *       WINDOW datagrams kept in flight for SECONDS: verified echoes per second
 *   udpecho-load rate ADDR PORT SIZE PPS SECONDS
 *       a steady PPS datagrams per second for SECONDS (a soak): every echo
 *       accounted for as ok, lost (none within 1 s) or bad
 *
 * Every echo is checked byte for byte (run tag, sequence number, pattern).
 * A datagram unanswered for 50 ms (window) or 200 ms (pingpong) is lost.
 * Output: one line of key=value pairs. Loops are bounded in count and time.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SIZE 1472
#define BATCH 64
#define SLOTS 4096

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static uint32_t tag;

/* Payload: tag (4), sequence (8), then bytes derived from both. */
static void fill(uint8_t *p, size_t size, uint64_t seq) {
    memcpy(p, &tag, 4);
    memcpy(p + 4, &seq, 8);
    for (size_t i = 12; i < size; i++) p[i] = (uint8_t)(seq * 31 + i);
}

/* Returns the sequence number, or -1 if the datagram is not an intact echo. */
static int64_t verify(const uint8_t *p, ssize_t n, size_t size) {
    if (n != (ssize_t)size || memcmp(p, &tag, 4) != 0) return -1;
    uint64_t seq;
    memcpy(&seq, p + 4, 8);
    for (size_t i = 12; i < size; i++)
        if (p[i] != (uint8_t)(seq * 31 + i)) return -1;
    return (int64_t)seq;
}

static int compare(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int connect_to(const char *addr, int port) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) { perror("socket"); exit(1); }
    /* 4 MiB each way: a client stall of a few milliseconds must not drop echoes
     * in its own socket. Past net.core.rmem_max only root may ask (the FORCE
     * options); anyone else gets what the system allows. */
    int buf = 4 << 20;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof buf) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof buf) < 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) { fprintf(stderr, "bad address %s\n", addr); exit(2); }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) { perror("connect"); exit(1); }
    return fd;
}

static int pingpong(int fd, size_t size, long count, double seconds) {
    uint8_t out[MAX_SIZE], in[MAX_SIZE + 1];
    uint64_t *rtts = calloc((size_t)count, sizeof *rtts);
    long measured = 0, lost = 0, bad = 0;
    uint64_t deadline = now_ns() + (uint64_t)(seconds * 1e9);
    for (long i = -200; i < count && now_ns() < deadline; i++) {
        uint64_t seq = (uint64_t)(i + 200);
        fill(out, size, seq);
        uint64_t start = now_ns();
        if (send(fd, out, size, 0) < 0) { lost++; continue; }
        for (;;) {
            struct pollfd p = { .fd = fd, .events = POLLIN };
            int left = 200 - (int)((now_ns() - start) / 1000000);
            if (left <= 0 || poll(&p, 1, left) <= 0) { lost++; break; }
            ssize_t n = recv(fd, in, sizeof in, 0);
            if (n < 0) { lost++; break; }
            int64_t got = verify(in, n, size);
            if (got < 0) { bad++; continue; }
            if ((uint64_t)got != seq) continue; /* a late echo of an earlier one */
            if (i >= 0) rtts[measured++] = now_ns() - start;
            break;
        }
    }
    qsort(rtts, (size_t)measured, sizeof *rtts, compare);
    double sum = 0;
    for (long i = 0; i < measured; i++) sum += (double)rtts[i];
    printf("pingpong size=%zu measured=%ld lost=%ld bad=%ld p50_us=%.1f p99_us=%.1f mean_us=%.1f\n", size, measured,
           lost, bad, measured ? rtts[measured / 2] / 1e3 : 0, measured ? rtts[measured * 99 / 100] / 1e3 : 0,
           measured ? sum / measured / 1e3 : 0);
    free(rtts);
    return measured > 0 ? 0 : 1;
}

/* The batches window and rate send with sendmmsg() and receive with recvmmsg(). */
static uint8_t outbuf[BATCH][MAX_SIZE], inbuf[BATCH][MAX_SIZE + 1];
static struct mmsghdr out[BATCH], in[BATCH];
static struct iovec outv[BATCH], inv[BATCH];

static void prepare_batches(size_t size) {
    for (int i = 0; i < BATCH; i++) {
        outv[i] = (struct iovec){ outbuf[i], size };
        inv[i] = (struct iovec){ inbuf[i], sizeof inbuf[i] };
        memset(&out[i], 0, sizeof out[i]);
        memset(&in[i], 0, sizeof in[i]);
        out[i].msg_hdr.msg_iov = &outv[i]; out[i].msg_hdr.msg_iovlen = 1;
        in[i].msg_hdr.msg_iov = &inv[i]; in[i].msg_hdr.msg_iovlen = 1;
    }
}

static int window(int fd, size_t size, int width, double seconds) {
    static uint64_t sent_at[SLOTS]; /* 0: slot free */
    prepare_batches(size);
    uint64_t next = 0, ok = 0, lost = 0, bad = 0, late = 0;
    int inflight = 0;
    uint64_t start = now_ns(), end = start + (uint64_t)(seconds * 1e9), last_scan = start;
    while (now_ns() < end) {
        int want = width - inflight;
        if (want > BATCH) want = BATCH;
        if (want > 0) {
            for (int i = 0; i < want; i++) fill(outbuf[i], size, next + (uint64_t)i);
            int n = sendmmsg(fd, out, (unsigned)want, 0);
            uint64_t t = now_ns();
            for (int i = 0; i < (n > 0 ? n : 0); i++) sent_at[(next + (uint64_t)i) % SLOTS] = t;
            if (n > 0) { next += (uint64_t)n; inflight += n; }
        }
        int n = recvmmsg(fd, in, BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0) {
            struct pollfd p = { .fd = fd, .events = POLLIN };
            poll(&p, 1, 1);
        }
        for (int i = 0; i < (n > 0 ? n : 0); i++) {
            int64_t seq = verify(inbuf[i], in[i].msg_len, size);
            if (seq < 0) { bad++; continue; }
            uint64_t slot = (uint64_t)seq % SLOTS;
            if ((uint64_t)seq >= next || next - (uint64_t)seq > SLOTS || sent_at[slot] == 0) { late++; continue; }
            sent_at[slot] = 0;
            ok++;
            inflight--;
        }
        uint64_t t = now_ns();
        if (t - last_scan > 10000000) { /* every 10 ms: give up on echoes older than 50 ms */
            last_scan = t;
            uint64_t first = next > SLOTS ? next - SLOTS : 0;
            for (uint64_t s = first; s < next; s++) {
                uint64_t *at = &sent_at[s % SLOTS];
                if (*at && t - *at > 50000000) { *at = 0; lost++; inflight--; }
            }
        }
    }
    double secs = (now_ns() - start) / 1e9;
    printf("window size=%zu W=%d secs=%.2f sent=%llu ok=%llu lost=%llu bad=%llu late=%llu pps=%.0f\n", size, width, secs,
           (unsigned long long)next, (unsigned long long)ok, (unsigned long long)lost, (unsigned long long)bad,
           (unsigned long long)late, ok / secs);
    return ok > 0 ? 0 : 1;
}

/* Open loop: datagrams go out when due, whatever comes back. The datagrams due
 * since the last look go out in one sendmmsg() and echoes come in by
 * recvmmsg(), so the client spends few system calls per datagram and the load
 * it offers is what the stack sees, not what the client can afford. */
static int rate(int fd, size_t size, long pps, double seconds) {
    static uint64_t sent_at[1 << 20];
    prepare_batches(size);
    const uint64_t slots = 1 << 20, interval = 1000000000ull / (uint64_t)pps;
    uint64_t next = 0, ok = 0, lost = 0, bad = 0, late = 0, send_failed = 0;
    uint64_t start = now_ns(), end = start + (uint64_t)(seconds * 1e9), due = start, last_scan = start;
    for (;;) {
        uint64_t t = now_ns();
        if (t >= end + 1000000000ull) break; /* one more second for the last echoes */
        while (t < end && due <= t) {
            int k = 0;
            for (; k < BATCH && due <= t; k++, due += interval) fill(outbuf[k], size, next + (uint64_t)k);
            int n = sendmmsg(fd, out, (unsigned)k, MSG_DONTWAIT);
            uint64_t stamp = now_ns();
            for (int i = 0; i < k; i++) {
                if (i < n) sent_at[(next + (uint64_t)i) % slots] = stamp;
                else sent_at[(next + (uint64_t)i) % slots] = 0, lost++, send_failed++;
            }
            next += (uint64_t)k;
        }
        /* Sleep until the next datagram is due (at most 1 ms) unless echoes are waiting. */
        uint64_t wait_ns = t < end ? (due > t ? due - t : 0) : 1000000;
        if (wait_ns > 1000000) wait_ns = 1000000;
        struct pollfd p = { .fd = fd, .events = POLLIN };
        struct timespec timeout = { 0, (long)wait_ns };
        if (ppoll(&p, 1, &timeout, NULL) > 0) {
            int n;
            while ((n = recvmmsg(fd, in, BATCH, MSG_DONTWAIT, NULL)) > 0) {
                for (int i = 0; i < n; i++) {
                    int64_t seq = verify(inbuf[i], in[i].msg_len, size);
                    if (seq < 0) { bad++; continue; }
                    uint64_t *at = &sent_at[(uint64_t)seq % slots];
                    if ((uint64_t)seq >= next || *at == 0) { late++; continue; }
                    *at = 0;
                    ok++;
                }
                if (n < BATCH) break;
            }
        }
        if (t - last_scan > 100000000) { /* every 100 ms: echoes older than 1 s are lost */
            last_scan = t;
            /* Not t: datagrams sent since t carry later stamps than t. */
            uint64_t scan_at = now_ns(), first = next > slots ? next - slots : 0;
            for (uint64_t s = first; s < next; s++) {
                uint64_t *at = &sent_at[s % slots];
                if (*at && scan_at - *at > 1000000000ull) { *at = 0; lost++; }
            }
        }
    }
    for (uint64_t s = next > slots ? next - slots : 0; s < next; s++)
        if (sent_at[s % slots]) { sent_at[s % slots] = 0; lost++; }
    printf("rate size=%zu pps_target=%ld secs=%.0f sent=%llu ok=%llu lost=%llu bad=%llu late=%llu send_failed=%llu\n", size,
           pps, seconds, (unsigned long long)next, (unsigned long long)ok, (unsigned long long)lost,
           (unsigned long long)bad, (unsigned long long)late, (unsigned long long)send_failed);
    return bad == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s pingpong ADDR PORT SIZE COUNT SECONDS\n       %s window ADDR PORT SIZE WINDOW SECONDS\n"
                        "       %s rate ADDR PORT SIZE PPS SECONDS\n", argv[0], argv[0], argv[0]);
        return 2;
    }
    size_t size = (size_t)atol(argv[4]);
    if (size < 12 || size > MAX_SIZE) { fprintf(stderr, "size must be 12..%d\n", MAX_SIZE); return 2; }
    tag = (uint32_t)(now_ns() ^ (uint64_t)getpid());
    int fd = connect_to(argv[2], atoi(argv[3]));
    if (strcmp(argv[1], "pingpong") == 0) return pingpong(fd, size, atol(argv[5]), atof(argv[6]));
    if (strcmp(argv[1], "window") == 0) {
        int w = atoi(argv[5]);
        if (w < 1 || w > SLOTS / 4) { fprintf(stderr, "window must be 1..%d\n", SLOTS / 4); return 2; }
        return window(fd, size, w, atof(argv[6]));
    }
    if (strcmp(argv[1], "rate") == 0) {
        long pps = atol(argv[5]);
        if (pps < 1 || pps > 10000000) { fprintf(stderr, "pps must be 1..10000000\n"); return 2; }
        return rate(fd, size, pps, atof(argv[6]));
    }
    fprintf(stderr, "unknown mode %s\n", argv[1]);
    return 2;
}
