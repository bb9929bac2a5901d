#define _GNU_SOURCE
#include "tapstack_channel_service.h"

#include <errno.h>
#include <sys/eventfd.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <linux/sockios.h>

#include "tapstack_ring.h"

int tsv_listen(const char *path, unsigned mode) {
    struct sockaddr_un address = { .sun_family = AF_UNIX };
    size_t length = strlen(path);
    if (length >= sizeof address.sun_path) { errno = ENAMETOOLONG; return -1; }
    memcpy(address.sun_path, path, length);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (bind(fd, (struct sockaddr *)&address, sizeof address) < 0 || chmod(path, mode) < 0 || listen(fd, 128) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

int tsv_peer_credentials(int fd, int32_t *pid, uint32_t *uid) {
    struct ucred credentials;
    socklen_t length = sizeof credentials;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) < 0) return -1;
    *pid = credentials.pid;
    *uid = credentials.uid;
    return 0;
}

int tsv_memfd_with(const char *name, const void *bytes, size_t length) {
    int fd = memfd_create(name, MFD_CLOEXEC);
    if (fd < 0) return -1;
    const char *next = bytes;
    size_t left = length;
    while (left > 0) {
        ssize_t n = write(fd, next, left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) { int e = n < 0 ? errno : EIO; close(fd); errno = e; return -1; }
        next += n;
        left -= (size_t)n;
    }
    lseek(fd, 0, SEEK_SET);
    return fd;
}

int tsv_accept(int listen_fd) { return accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC); }

int tsv_socketpair(int fds[2], int client_nonblocking) {
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) < 0) return -1;
    if (!client_nonblocking) {
        int flags = fcntl(fds[1], F_GETFL);
        fcntl(fds[1], F_SETFL, flags & ~O_NONBLOCK);
    }
    return 0;
}

int tsv_send_reply(int control_fd, const tsp_reply *reply, int pass_fd) {
    struct iovec part = { (void *)reply, sizeof *reply };
    union { struct cmsghdr align; char bytes[CMSG_SPACE(sizeof(int))]; } control;
    struct msghdr message = { .msg_iov = &part, .msg_iovlen = 1 };
    if (pass_fd >= 0) {
        memset(&control, 0, sizeof control);
        message.msg_control = control.bytes;
        message.msg_controllen = sizeof control.bytes;
        struct cmsghdr *c = CMSG_FIRSTHDR(&message);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &pass_fd, sizeof pass_fd);
    }
    ssize_t n;
    do { n = sendmsg(control_fd, &message, MSG_DONTWAIT | MSG_NOSIGNAL); } while (n < 0 && errno == EINTR);
    return n < 0 ? -1 : 0;
}

ssize_t tsv_receive_request(int control_fd, tsp_request *request) {
    ssize_t n;
    do { n = recv(control_fd, request, sizeof *request, MSG_DONTWAIT); } while (n < 0 && errno == EINTR);
    return n;
}

int tsv_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int tsv_epoll_set(int epoll_fd, int op, int fd, unsigned interest, uint64_t tag) {
    struct epoll_event event = { .events = EPOLLRDHUP, .data.u64 = tag };
    if (interest & TSV_IN) event.events |= EPOLLIN;
    if (interest & TSV_OUT) event.events |= EPOLLOUT;
    int ops[] = { 0, EPOLL_CTL_ADD, EPOLL_CTL_MOD, EPOLL_CTL_DEL };
    if (op < 1 || op > 3) { errno = EINVAL; return -1; }
    return epoll_ctl(epoll_fd, ops[op], fd, &event);
}

int tsv_epoll_wait(int epoll_fd, uint64_t *tags, unsigned *events, int max, int timeout_ms) {
    struct epoll_event ready[64];
    if (max > 64) max = 64;
    int n = epoll_wait(epoll_fd, ready, max, timeout_ms);
    for (int i = 0; i < n; i++) {
        tags[i] = ready[i].data.u64;
        unsigned e = 0;
        if (ready[i].events & EPOLLIN) e |= TSV_IN;
        if (ready[i].events & EPOLLOUT) e |= TSV_OUT;
        if (ready[i].events & (EPOLLHUP | EPOLLRDHUP | EPOLLERR)) e |= TSV_HUP;
        events[i] = e;
    }
    return n;
}

struct tsv_batch {
    unsigned count, slot_size;
    char *storage;
    struct iovec *parts;
    struct mmsghdr *messages;
};

tsv_batch *tsv_batch_create(unsigned count, unsigned slot_size) {
    tsv_batch *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->count = count;
    b->slot_size = slot_size;
    b->storage = malloc((size_t)count * slot_size);
    b->parts = calloc(count, sizeof *b->parts);
    b->messages = calloc(count, sizeof *b->messages);
    if (!b->storage || !b->parts || !b->messages) { tsv_batch_destroy(b); return NULL; }
    for (unsigned i = 0; i < count; i++) {
        b->parts[i].iov_base = b->storage + (size_t)i * slot_size;
        b->parts[i].iov_len = slot_size;
        b->messages[i].msg_hdr.msg_iov = &b->parts[i];
        b->messages[i].msg_hdr.msg_iovlen = 1;
    }
    return b;
}

void tsv_batch_destroy(tsv_batch *b) {
    if (!b) return;
    free(b->storage);
    free(b->parts);
    free(b->messages);
    free(b);
}

void *tsv_batch_slot(tsv_batch *b, unsigned index) { return b->storage + (size_t)index * b->slot_size; }
unsigned tsv_batch_length(const tsv_batch *b, unsigned index) { return b->messages[index].msg_len; }
int tsv_batch_truncated(const tsv_batch *b, unsigned index) { return (b->messages[index].msg_hdr.msg_flags & MSG_TRUNC) != 0; }
void tsv_batch_set_length(tsv_batch *b, unsigned index, unsigned length) { b->messages[index].msg_len = length; b->parts[index].iov_len = length; }

int tsv_batch_receive(int fd, tsv_batch *b, unsigned max) {
    if (max > b->count) max = b->count;
    for (unsigned i = 0; i < max; i++) {
        b->parts[i].iov_len = b->slot_size;
        b->messages[i].msg_hdr.msg_flags = 0;
    }
    int n;
    do { n = recvmmsg(fd, b->messages, max, MSG_DONTWAIT, NULL); } while (n < 0 && errno == EINTR);
    return n;
}

int tsv_batch_send(int fd, tsv_batch *b, unsigned first, unsigned count) {
    int n;
    do { n = sendmmsg(fd, b->messages + first, count, MSG_DONTWAIT | MSG_NOSIGNAL); } while (n < 0 && errno == EINTR);
    return n;
}

/* ---- Shared regions ---- */

struct tsv_region {
    void *memory;
    size_t size;
    tsr_end from_client;  /* consumer */
    tsr_end to_client;    /* producer */
    uint32_t doorbells;   /* rung toward the client */
    uint32_t channel_sends;
};

/* Process-shared and robust: the client's processes share it, and one
 * that dies holding it must not lock the others out. */
static int init_region_lock(tsr_region_lock *lock) {
    pthread_mutexattr_t attributes;
    int r = pthread_mutexattr_init(&attributes);
    if (r == 0) r = pthread_mutexattr_setpshared(&attributes, PTHREAD_PROCESS_SHARED);
    if (r == 0) r = pthread_mutexattr_setrobust(&attributes, PTHREAD_MUTEX_ROBUST);
    if (r == 0) r = pthread_mutex_init(&lock->mutex, &attributes);
    pthread_mutexattr_destroy(&attributes);
    if (r != 0) errno = r;
    return r;
}

tsv_region *tsv_region_create(int *fd) {
    size_t size = tsr_region_size(TSR_REGION_CAPACITY);
    tsv_region *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    int memfd = memfd_create("tapstack-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (memfd < 0) { free(r); return NULL; }
    /* Sealed at its size: a client that shrank it would make the service fault. */
    if (ftruncate(memfd, (off_t)size) < 0
        || fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) goto fail;
    r->memory = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    if (r->memory == MAP_FAILED) goto fail;
    r->size = size;
    tsr_region_header *h = r->memory;
    h->magic = TSR_REGION_MAGIC;
    h->capacity = TSR_REGION_CAPACITY;
    if (init_region_lock(&h->send_lock) != 0 || init_region_lock(&h->receive_lock) != 0) {
        munmap(r->memory, size);
        goto fail;
    }
    /* The client starts on the channel: what it sent there before comes first. */
    h->send_fallback = 1;
    tsr_attach(&r->from_client, tsr_region_to_service(r->memory, TSR_REGION_CAPACITY), TSR_REGION_CAPACITY, 0);
    /* Nobody looks at the ring yet: the first datagram rings. */
    tsr_arm(&r->from_client);
    tsr_attach(&r->to_client, tsr_region_to_client(r->memory, TSR_REGION_CAPACITY), TSR_REGION_CAPACITY, 1);
    *fd = memfd;
    return r;
fail:
    {
        int e = errno;
        close(memfd);
        free(r);
        errno = e;
        return NULL;
    }
}

void tsv_region_destroy(tsv_region *r) {
    if (!r) return;
    munmap(r->memory, r->size);
    free(r);
}

void *tsv_region_memory(tsv_region *r) { return r->memory; }

int tsv_region_take(tsv_region *r, tsv_batch *b, unsigned max) {
    if (max > b->count) max = b->count;
    unsigned n = 0;
    for (; n < max; n++) {
        ssize_t length = tsr_pop(&r->from_client, b->storage + (size_t)n * b->slot_size, b->slot_size, 0);
        if (length < 0) return -1;
        if (length == 0) break;
        /* Never longer than a slot: a record is at most half the ring. */
        b->messages[n].msg_len = (unsigned)length;
        b->messages[n].msg_hdr.msg_flags = (size_t)length > b->slot_size ? MSG_TRUNC : 0;
        b->parts[n].iov_len = b->slot_size;
    }
    return (int)n;
}

int tsv_region_has_datagram(tsv_region *r) { return tsr_has_record(&r->from_client); }

int tsv_region_arm(tsv_region *r) { return tsr_arm(&r->from_client); }

void tsv_region_disarm(tsv_region *r) { tsr_disarm(&r->from_client); }

int tsv_region_peek(tsv_region *r) {
    tsr_shared *shared = r->from_client.shared;
    return __atomic_load_n(&shared->tail, __ATOMIC_ACQUIRE) != __atomic_load_n(&shared->head, __ATOMIC_RELAXED);
}

unsigned tsv_region_client_polling(tsv_region *r, unsigned limit, unsigned *microseconds) {
    tsr_region_header *h = r->memory;
    unsigned cpu = __atomic_load_n(&h->polling_cpu, __ATOMIC_RELAXED);
    unsigned us = __atomic_load_n(&h->polling_us, __ATOMIC_RELAXED);
    *microseconds = us < limit ? us : limit;
    return cpu;
}

void tsv_region_note_executor_cpu(tsv_region *r) {
    tsr_region_header *h = r->memory;
    int cpu = sched_getcpu();
    uint32_t value = cpu >= 0 ? (uint32_t)cpu + 1 : 0;
    if (__atomic_load_n(&h->executor_cpu, __ATOMIC_RELAXED) != value) __atomic_store_n(&h->executor_cpu, value, __ATOMIC_RELAXED);
}

int tsv_region_arm_quick(tsv_region *r) {
    tsr_shared *shared = r->from_client.shared;
    /* Still raised since the last time: a sender after it sees it and rings,
     * so the indices need no fence; raised now: the full fence, as tsr_arm. */
    if (__atomic_load_n(&shared->consumer_sleeping, __ATOMIC_RELAXED) != 1) {
        __atomic_store_n(&shared->consumer_sleeping, 1, __ATOMIC_SEQ_CST);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
    }
    return tsv_region_peek(r);
}

int tsv_region_precedes(tsv_region *r, uint32_t position) {
    uint32_t ahead = position - r->from_client.index;
    return ahead != 0 && ahead <= r->from_client.capacity;
}

int tsv_region_to_client_holds(tsv_region *r) { return tsr_used(&r->to_client, 1) != 0; }

int tsv_region_put(tsv_region *r, tsv_batch *b, unsigned first, unsigned count, int *rang) {
    *rang = 0;
    unsigned n = 0;
    for (; n < count; n++) {
        struct iovec part = { b->storage + (size_t)(first + n) * b->slot_size, b->messages[first + n].msg_len };
        int was_empty = 0;
        if (tsr_push(&r->to_client, &part, 1, &was_empty) < 0) {
            if (errno == EBADMSG) return -1;
            break;  /* full, or too long for the ring */
        }
        if (was_empty) *rang = 1;
    }
    return (int)n;
}

int tsv_unread(int fd) {
    int bytes = 0;
    return ioctl(fd, SIOCOUTQ, &bytes) == 0 ? bytes : 1;
}

int tsv_doorbell(int fd) {
    tsp_datagram_header bell = { .magic = TSP_MAGIC, .kind = TSP_DOORBELL };
    return send(fd, &bell, sizeof bell, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 ? -1 : 0;
}

int tsv_wake_create(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

void tsv_region_note_channel(tsv_region *r) {
    tsr_region_header *h = r->memory;
    __atomic_store_n(&h->channel_sends, ++r->channel_sends, __ATOMIC_RELEASE);
}

int tsv_region_ring(tsv_region *r, int fd) {
    tsr_region_header *h = r->memory;
    /* Counted first: a receiver that finds the ring empty waits for it. */
    r->doorbells++;
    __atomic_store_n(&h->doorbells, r->doorbells, __ATOMIC_SEQ_CST);
    return tsv_doorbell(fd);
}
