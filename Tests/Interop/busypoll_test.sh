#!/usr/bin/env bash
# --busy-poll: the executor polls before it sleeps (a fixed time, or 'auto':
# a window that follows the traffic, bounded by two wake-ups as the stack
# measured them at start). The echoes are the same as a sleeping stack's,
# a fixed window's turns poll without a system call, and once the
# traffic stops the stack goes back to sleep (an idle stack spends no CPU).
source "$(dirname "$0")/lib.sh"

# 2000 ping-pong round trips, one datagram in flight, each echoed byte for byte.
pingpong_echoed() {
    in_ns timeout 30 python3 - <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.connect(("192.0.2.2", 7))
rtts = []
for i in range(2000):
    payload = i.to_bytes(4, "big") * (1 + i % 100)
    start = time.perf_counter()
    s.send(payload)
    if s.recv(2048) != payload:
        sys.exit(f"echo {i} is wrong")
    rtts.append(time.perf_counter() - start)
rtts.sort()
print(f"2000 echoed intact, p50 {rtts[1000] * 1e6:.1f} us")
PY
}

polled_without_system_calls() {
    local polls
    polls=$(stack_counter link.polls) || return 1
    echo "link.polls $polls"
    [ "${polls:-0}" -gt 0 ]
}

# The stack sleeps again after the traffic: its sleep count grows while
# nothing comes (a poller that never stopped would not sleep at all).
sleeps_after_traffic() {
    local before
    before=$(stack_counter link.sleeps) || return 1
    wait_for bash -c "kill -USR1 $STACK_PID; [ \$(sed -n 's/^link.sleeps //p' '$WORK/stack.err' | tail -n 1) -gt $before ]"
    echo "link.sleeps $before, then $(sed -n 's/^link.sleeps //p' "$WORK/stack.err" | tail -n 1)"
}

bound_is_shown() {
    grep -E "busy-polls adaptively, at most [0-9]+ us \(two wake-ups, as measured here\)" "$WORK/stack.err"
}

for poll in auto 100; do
    start_stack --echo-port 7 --busy-poll "$poll" || { echo "FAIL $TEST_NAME: stack did not start (--busy-poll $poll)"; finish; exit 1; }
    check "--busy-poll $poll: 2000 ping-pong echoes come back intact" pingpong_echoed
    # Whether 'auto' polls depends on the host (where waking is cheap it
    # hardly does); a fixed window polls after every echo.
    [ "$poll" = 100 ] && check "--busy-poll $poll: turns polled without entering the kernel" polled_without_system_calls
    check "--busy-poll $poll: the stack sleeps again once the traffic stops" sleeps_after_traffic
    [ "$poll" = auto ] && check "--busy-poll auto: the start-up line gives the measured bound" bound_is_shown
    stop_stack TERM
    ip -n "$NS" link del "$TAP" 2>/dev/null
done
finish
