#!/usr/bin/env bash
# The socket shim against the kernel's netcat, both ways: kernel nc -u →
# `tapstack recv`, and `tapstack send` → kernel nc -u -l. Also: a blocked
# receiver uses no CPU, and an unreachable destination is reported.
source "$(dirname "$0")/lib.sh"

bring_up_kernel_side() {
    for _ in $(seq 100); do ip -n "$NS" link show "$TAP" >/dev/null 2>&1 && break; sleep 0.05; done
    ip -n "$NS" link set "$TAP" up
    ip -n "$NS" addr add 192.0.2.1/24 dev "$TAP"
}

stack_cpu_ticks() {  # utime + stime of the stack process, in clock ticks
    awk '{print $14 + $15}' "/proc/$STACK_PID/stat"
}

# --- kernel nc -u → tapstack recv -------------------------------------------
launch ip netns exec "$NS" "$BIN" recv 9001 --count 3 --show-source --interface "$TAP"
bring_up_kernel_side || { echo "FAIL $TEST_NAME: recv did not start"; cat "$WORK/stack.err"; finish; exit 1; }
wait_for grep -q "receiving on 192.0.2.2:9001" "$WORK/stack.err"   # bound

idle_receiver_uses_no_cpu() {
    local before after
    before=$(stack_cpu_ticks)
    sleep 3
    after=$(stack_cpu_ticks)
    echo "CPU ticks while blocked in receive for 3 s: $((after - before)) (1 tick = 10 ms)"
    [ $((after - before)) -le 2 ]
}

nc_to_recv() {
    for word in alpha beta gamma; do
        echo "$word" | in_ns timeout 5 nc -u -w0 -p 45000 192.0.2.2 9001
    done
    for _ in $(seq 50); do [ -s "$WORK/status" ] && break; sleep 0.1; done
    local expected="192.0.2.1:45000 alpha
192.0.2.1:45000 beta
192.0.2.1:45000 gamma"
    [ "$(cat "$WORK/stack.out")" = "$expected" ] || { echo "got:"; cat "$WORK/stack.out"; return 1; }
    [ "$(cat "$WORK/status")" = 0 ] || { echo "recv exit status $(cat "$WORK/status")"; return 1; }
}

check "a receiver blocked on its readiness event uses no CPU" idle_receiver_uses_no_cpu
check "kernel nc -u → tapstack recv: every line arrives, with its source" nc_to_recv
STACK_PID=""
for _ in $(seq 50); do ip -n "$NS" link show "$TAP" >/dev/null 2>&1 || break; sleep 0.1; done

# --- tapstack send → kernel nc -u -l ----------------------------------------
send_to_nc() {
    in_ns timeout 10 nc -u -l 9002 >"$WORK/nc.out" &
    local nc_pid=$!
    printf 'one\ntwo\nthree\n' | ip netns exec "$NS" "$BIN" send 192.0.2.1 9002 --source-port 45001 --interface "$TAP" \
        2>"$WORK/send.err" &
    local pid=$!
    bring_up_kernel_side || return 1
    local status=0
    wait "$pid" || status=$?
    wait_for grep -q three "$WORK/nc.out"
    kill "$nc_pid" 2>/dev/null
    wait "$nc_pid" 2>/dev/null
    [ "$status" = 0 ] || { echo "send exit status $status"; cat "$WORK/send.err"; return 1; }
    [ "$(cat "$WORK/nc.out")" = "$(printf 'one\ntwo\nthree')" ] || { echo "nc got:"; cat "$WORK/nc.out"; return 1; }
}

send_to_unreachable_fails() {
    for _ in $(seq 50); do ip -n "$NS" link show "$TAP" >/dev/null 2>&1 || break; sleep 0.1; done
    echo x | ip netns exec "$NS" "$BIN" send 192.0.2.99 9 --interface "$TAP" 2>"$WORK/send.err" &
    local pid=$!
    bring_up_kernel_side || return 1
    local status=0
    wait "$pid" || status=$?
    echo "exit status $status: $(tail -n 1 "$WORK/send.err")"
    [ "$status" = 1 ] && grep -q "no route to host" "$WORK/send.err"
}

check "tapstack send → kernel nc -u -l: every line arrives" send_to_nc
check "tapstack send to a host that never answers ARP fails with 'no route to host'" send_to_unreachable_fails
finish
