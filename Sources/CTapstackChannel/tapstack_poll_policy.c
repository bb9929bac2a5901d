/* The adaptive busy poll's rules (see tapstack_poll_policy.h). */
#include "tapstack_poll_policy.h"

#define LOAD(field) __atomic_load_n(&policy->field, __ATOMIC_RELAXED)
#define STORE(field, value) __atomic_store_n(&policy->field, (value), __ATOMIC_RELAXED)

int tsc_poll_policy_sleeps_with_executor(const tsc_poll_policy *policy) {
    return LOAD(last_batch) >= TSC_POLL_JOIN_BATCH;
}

void tsc_poll_policy_took(tsc_poll_policy *policy) { STORE(taken, LOAD(taken) + 1); }

int64_t tsc_poll_policy_begin(tsc_poll_policy *policy, int64_t now, int64_t limit) {
    uint32_t taken = __atomic_exchange_n(&policy->taken, 0, __ATOMIC_RELAXED);
    STORE(last_batch, taken);
    uint32_t streaming = LOAD(stream_waits);
    if (taken > TSC_POLL_STREAM_BATCH) streaming = TSC_POLL_STREAM_WAITS;
    else if (streaming > 0) streaming--;
    STORE(stream_waits, streaming);
    if (streaming > 0) {
        STORE(idle_since, 0);  /* a stream's gaps say nothing of a conversation's */
        return 0;
    }
    STORE(idle_since, now);
    int64_t window = LOAD(window_ns);
    if (window > limit) window = limit;
    if (window > 0) return window;
    uint32_t left = LOAD(probe_in);
    if (left > TSC_POLL_PROBE_INTERVAL) left = TSC_POLL_PROBE_INTERVAL;
    STORE(probe_in, left == 0 ? TSC_POLL_PROBE_INTERVAL : left - 1);
    return left == 0 ? limit : 0;
}

void tsc_poll_policy_caught(tsc_poll_policy *policy, int64_t limit) {
    STORE(idle_since, 0);
    if (LOAD(window_ns) == 0) STORE(window_ns, (uint32_t)limit);  /* a probe caught it */
}

void tsc_poll_policy_slept(tsc_poll_policy *policy, int64_t now, int64_t limit, int64_t wake_up) {
    int64_t since = __atomic_exchange_n(&policy->idle_since, 0, __ATOMIC_RELAXED);
    if (since <= 0) return;
    int64_t idle = now - since - 2 * wake_up;
    int64_t window = LOAD(window_ns);
    if (window > limit) window = limit;
    if (idle <= limit) {
        /* Polling longer would have caught it: grow. */
        int64_t grown = window * 2 > limit / 4 ? window * 2 : limit / 4;
        STORE(window_ns, (uint32_t)(grown < limit ? grown : limit));
        return;
    }
    /* It came later than polling pays: halve, and below a quarter of the limit stop. */
    window /= 2;
    STORE(window_ns, (uint32_t)(window < limit / 4 ? 0 : window));
}
