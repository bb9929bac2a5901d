#include "tapstack_ring.h"

#include <errno.h>
#include <string.h>

static uint32_t load_acquire(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static void store_release(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static uint32_t padded(uint32_t length) { return (TSR_RECORD_HEADER + length + 7u) & ~7u; }

size_t tsr_ring_size(uint32_t capacity) { return sizeof(tsr_shared) + capacity; }

int tsr_attach(tsr_end *end, void *memory, uint32_t capacity, int producer) {
    if (capacity < 64 || (capacity & (capacity - 1)) != 0) { errno = EINVAL; return -1; }
    end->shared = (tsr_shared *)memory;
    end->data = (uint8_t *)memory + sizeof(tsr_shared);
    end->capacity = capacity;
    end->index = load_acquire(producer ? &end->shared->tail : &end->shared->head);
    if (end->index & 7u) { errno = EINVAL; return -1; }
    end->broken = 0;
    return 0;
}

int tsr_push(tsr_end *end, const struct iovec *iov, int iovcnt, int *was_empty) {
    uint32_t start = end->index;  /* its own, never the shared copy a client could write */
    if (tsr_write(end, iov, iovcnt) < 0) return -1;
    tsr_publish(end);
    if (was_empty) *was_empty = load_acquire(&end->shared->head) == start;
    return 0;
}

int tsr_write(tsr_end *end, const struct iovec *iov, int iovcnt) {
    if (end->broken) { errno = EBADMSG; return -1; }
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++) total += iov[i].iov_len;
    if (total == 0 || total > end->capacity / 2 - TSR_RECORD_HEADER) { errno = EMSGSIZE; return -1; }
    uint32_t length = (uint32_t)total, need = padded(length);
    uint32_t tail = end->index;
    uint32_t head = load_acquire(&end->shared->head);
    uint32_t used = tail - head;
    if (used > end->capacity || (used & 7u) != 0) { end->broken = 1; errno = EBADMSG; return -1; }
    uint32_t offset = tail & (end->capacity - 1);
    uint32_t to_end = end->capacity - offset;
    uint32_t wrap = need > to_end ? to_end : 0;  /* skipped to the start behind a marker */
    if (used + wrap + need > end->capacity) { errno = EAGAIN; return -1; }
    if (wrap) {
        uint32_t marker = TSR_WRAP;
        memcpy(end->data + offset, &marker, sizeof marker);
        tail += wrap;
        offset = 0;
    }
    memcpy(end->data + offset, &length, sizeof length);
    uint32_t at = offset + TSR_RECORD_HEADER;
    for (int i = 0; i < iovcnt; i++) {
        memcpy(end->data + at, iov[i].iov_base, iov[i].iov_len);
        at += (uint32_t)iov[i].iov_len;
    }
    end->index = tail + need;
    return 0;
}

void tsr_publish(tsr_end *end) {
    store_release(&end->shared->tail, end->index);
    /* Publish, then look at the consumer (a full fence: it may be deciding to sleep). */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* The consumer's view of the next record: its offset, length and the bytes
 * it takes, or 0 when none, -1 when the ring is inconsistent. */
static int next_record(tsr_end *end, uint32_t *offset, uint32_t *length, uint32_t *advance) {
    uint32_t head = end->index;
    /* Our last published head before the producer's tail (a full fence): a
     * producer that publishes after this load sees that head and so knows
     * the ring was empty (its wake-up rule depends on it). */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    uint32_t tail = load_acquire(&end->shared->tail);
    uint32_t available = tail - head;
    if (available == 0) return 0;
    if (available > end->capacity || (available & 7u) != 0 || available < TSR_RECORD_HEADER) return -1;
    uint32_t at = head & (end->capacity - 1);
    uint32_t skipped = 0;
    uint32_t value;
    memcpy(&value, end->data + at, sizeof value);
    if (value == TSR_WRAP) {
        skipped = end->capacity - at;
        if (skipped >= available) return -1;  /* a marker with nothing after it */
        at = 0;
        memcpy(&value, end->data, sizeof value);
    }
    /* The length, read once: within what was published and before the end. */
    if (value == 0 || value > end->capacity / 2 - TSR_RECORD_HEADER  /* no producer writes longer */
        || padded(value) > available - skipped || at + padded(value) > end->capacity) return -1;
    *offset = at;
    *length = value;
    *advance = skipped + padded(value);
    return 1;
}

ssize_t tsr_pop(tsr_end *end, void *out, size_t size, int peek) {
    struct iovec part = { out, size };
    return tsr_popv(end, &part, 1, peek);
}

ssize_t tsr_popv(tsr_end *end, const struct iovec *iov, int iovcnt, int peek) {
    if (end->broken) { errno = EBADMSG; return -1; }
    uint32_t offset, length, advance;
    int found = next_record(end, &offset, &length, &advance);
    if (found < 0) { end->broken = 1; errno = EBADMSG; return -1; }
    if (found == 0) return 0;
    const uint8_t *from = end->data + offset + TSR_RECORD_HEADER;
    uint32_t left = length;
    for (int i = 0; i < iovcnt && left > 0; i++) {
        uint32_t take = iov[i].iov_len < left ? (uint32_t)iov[i].iov_len : left;
        memcpy(iov[i].iov_base, from, take);
        from += take;
        left -= take;
    }
    if (!peek) {
        end->index += advance;
        store_release(&end->shared->head, end->index);
    }
    return (ssize_t)length;
}

int tsr_has_record(tsr_end *end) {
    __atomic_thread_fence(__ATOMIC_SEQ_CST);  /* as in next_record */
    return !end->broken && load_acquire(&end->shared->tail) != end->index;
}

int tsr_arm(tsr_end *end) {
    __atomic_store_n(&end->shared->consumer_sleeping, 1, __ATOMIC_SEQ_CST);
    return tsr_has_record(end);
}

void tsr_disarm(tsr_end *end) {
    /* Written only when set: an awake consumer looks every turn and must not
     * pull the producer's cache line for nothing. */
    if (__atomic_load_n(&end->shared->consumer_sleeping, __ATOMIC_RELAXED)) {
        __atomic_store_n(&end->shared->consumer_sleeping, 0, __ATOMIC_RELAXED);
    }
}

int tsr_take_wake_request(tsr_end *end) {
    __atomic_thread_fence(__ATOMIC_SEQ_CST);  /* after the tail's store (tsr_push fenced already; cheap again) */
    if (!__atomic_load_n(&end->shared->consumer_sleeping, __ATOMIC_RELAXED)) return 0;
    return __atomic_exchange_n(&end->shared->consumer_sleeping, 0, __ATOMIC_SEQ_CST) != 0;
}

uint32_t tsr_used(tsr_end *end, int producer) {
    uint32_t other = load_acquire(producer ? &end->shared->head : &end->shared->tail);
    uint32_t used = producer ? end->index - other : other - end->index;
    return used > end->capacity ? end->capacity : used;
}

size_t tsr_region_size(uint32_t capacity) { return sizeof(tsr_region_header) + 2 * tsr_ring_size(capacity); }
void *tsr_region_to_service(void *region, uint32_t capacity) {
    (void)capacity;
    return (uint8_t *)region + sizeof(tsr_region_header);
}
void *tsr_region_to_client(void *region, uint32_t capacity) {
    return (uint8_t *)region + sizeof(tsr_region_header) + tsr_ring_size(capacity);
}
