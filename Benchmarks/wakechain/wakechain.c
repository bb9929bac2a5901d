/* wakechain: what a round trip between processes costs on this machine
 * when it does no work at all: the scheduling floor of `make bench`'s
 * ping-pong figures.
 *
 *   wakechain 2 COUNT   A -> B -> A: two wake-ups per round trip, as the
 *                       load client and an in-process stack;
 *   wakechain 4 COUNT   A -> B -> C -> B -> A: four, as the load client,
 *                       the stack and a program through its socket service.
 *
 * Each hop is an eventfd write that wakes a process blocked in read(); no
 * packet is sent. Prints `p50_us=... p99_us=... count=...`. */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static void take(int fd) {
    uint64_t value;
    if (read(fd, &value, sizeof value) != sizeof value) _exit(1);
}

static void give(int fd) {
    uint64_t one = 1;
    if (write(fd, &one, sizeof one) != sizeof one) _exit(1);
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* A child that dies with its parent, so no chain outlives the benchmark. */
static pid_t child(void) {
    pid_t pid = fork();
    if (pid == 0) prctl(PR_SET_PDEATHSIG, SIGKILL);
    return pid;
}

int main(int argc, char **argv) {
    int hops = argc > 1 ? atoi(argv[1]) : 0;
    long count = argc > 2 ? atol(argv[2]) : 0;
    if ((hops != 2 && hops != 4) || count < 1 || count > 10000000) {
        fprintf(stderr, "usage: wakechain 2|4 COUNT (1-10000000)\n");
        return 2;
    }
    int ab = eventfd(0, 0), ba = eventfd(0, 0), bc = eventfd(0, 0), cb = eventfd(0, 0);
    double *rtt = malloc(sizeof *rtt * (size_t)count);
    if (ab < 0 || ba < 0 || bc < 0 || cb < 0 || !rtt) { perror("wakechain"); return 1; }
    pid_t b = child();
    if (b < 0) { perror("fork"); return 1; }
    if (b == 0) {
        for (;;) {
            take(ab);
            if (hops == 4) { give(bc); take(cb); }
            give(ba);
        }
    }
    pid_t c = -1;
    if (hops == 4) {
        c = child();
        if (c < 0) { perror("fork"); kill(b, SIGKILL); return 1; }
        if (c == 0) for (;;) { take(bc); give(cb); }
    }
    for (long i = 0; i < count; i++) {
        double start = now_us();
        give(ab);
        take(ba);
        rtt[i] = now_us() - start;
    }
    kill(b, SIGKILL);
    if (c > 0) kill(c, SIGKILL);
    while (wait(NULL) > 0) {}
    qsort(rtt, (size_t)count, sizeof *rtt, by_value);
    printf("p50_us=%.1f p99_us=%.1f count=%ld\n", rtt[count / 2], rtt[count * 99 / 100], count);
    return 0;
}
