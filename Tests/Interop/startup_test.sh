#!/usr/bin/env bash
# Starting as a user would: a clean start shows no error counter (the
# stack announces itself once the kernel side is up), a restart right after
# kill -9 attaches to the device (it is busy for a few milliseconds), and an
# interface that is no TAP device is named for what it is.
source "$(dirname "$0")/lib.sh"

counter() { sed -n "s/^$1 //p" "$WORK/stack.err" | tail -n 1; }

# The kernel side comes up a while after the stack opened the device.
launch ip netns exec "$NS" "$BIN" run --interface "$TAP" --pcap "$WORK/start.pcap"
wait_for_tap || { echo "FAIL $TEST_NAME: stack did not create $TAP"; finish; exit 1; }
# The stack is up (its executor turning) while the kernel side is still
# down: a frame written now would fail with EIO. That is the scenario.
wait_for grep -q "tapstack up on $TAP" "$WORK/stack.err" || { echo "FAIL $TEST_NAME: stack did not come up"; cat "$WORK/stack.err"; finish; exit 1; }
check "the stack runs while the kernel side of $TAP is still down" bash -c "! ip -n '$NS' link show '$TAP' | grep -q ',UP'"
# The kernel enters a neighbour from a gratuitous ARP only with arp_accept,
# and only for a sender in a subnet it has a route to.
in_ns sysctl -qw "net.ipv4.conf.$TAP.arp_accept=1"
ip -n "$NS" addr add 192.0.2.1/24 dev "$TAP"
ip -n "$NS" link set "$TAP" up
announced_after_up() {
    # The kernel learns the stack's MAC from its gratuitous ARP, without asking.
    for _ in $(seq 100); do
        ip -n "$NS" neigh show 192.0.2.2 dev "$TAP" | grep -q "02:00:00:00:00:02" && return 0
        sleep 0.05
    done
    ip -n "$NS" neigh show dev "$TAP"
    return 1
}
check "the kernel learns the stack's MAC from its announcement, sent once the link is up" announced_after_up
check "ping answers" bash -c "ip netns exec $NS ping -c 2 -i 0.2 -W 2 192.0.2.2 | grep -q '2 received'"
stop_stack TERM
clean_counters() {
    echo "link.tx_errors $(counter link.tx_errors), link.tx_drop_down $(counter link.tx_drop_down), link.rx_errors $(counter link.rx_errors)"
    [ "$(counter link.tx_errors)" = 0 ] && [ "$(counter link.tx_drop_down)" = 0 ] && [ "$(counter link.rx_errors)" = 0 ]
}
check "a clean start and stop counts no link error" clean_counters
check "the announcement is in the capture" bash -c "tcpdump -n -r '$WORK/start.pcap' 2>/dev/null | grep -q 'ARP, Request who-has 192.0.2.2 tell 192.0.2.2'"

# kill -9, then start again at once on the same (persistent) device.
ip -n "$NS" tuntap add "$TAP" mode tap 2>/dev/null
ip -n "$NS" link set "$TAP" up
start_stack --socket "$WORK/a.sock" || { echo "FAIL $TEST_NAME: stack did not start"; finish; exit 1; }
in_ns ping -c 1 -W 2 192.0.2.2 >/dev/null
kill -KILL "$STACK_PID"
launch ip netns exec "$NS" "$BIN" run --interface "$TAP" --socket "$WORK/b.sock"
restart_at_once() {
    for _ in $(seq 20); do
        in_ns ping -c 1 -W 1 192.0.2.2 >/dev/null 2>&1 && return 0
        kill -0 "$STACK_PID" 2>/dev/null || { cat "$WORK/stack.err"; return 1; }
    done
    cat "$WORK/stack.err"
    return 1
}
check "a restart right after kill -9 attaches to the device and answers" restart_at_once
stop_stack TERM

# Two stacks on one device: the second says the device is busy, after its retry.
start_stack --socket "$WORK/c.sock" || { echo "FAIL $TEST_NAME: stack did not start"; finish; exit 1; }
first=$STACK_PID
# The device is persistent, so it exists before this stack holds it: wait
# for its socket, which it serves only once attached (else the second stack
# below could win the device).
wait_for test -S "$WORK/c.sock"
busy_is_named() {
    local out
    out=$(in_ns timeout 10 "$BIN" run --interface "$TAP" --no-socket 2>&1)
    echo "$out" | tail -n 1
    grep -q "cannot attach to '$TAP': another process has it open" <<<"$out"
}
check "a second stack on a device in use says another process has it open" busy_is_named
STACK_PID=$first
stop_stack TERM
ip -n "$NS" tuntap del "$TAP" mode tap 2>/dev/null

# Interfaces that are not TAP devices.
ip -n "$NS" tuntap add tun7 mode tun
ip -n "$NS" link add veth7 type veth peer name veth8
named_kind() {  # DEVICE TEXT
    local out
    out=$(in_ns timeout 10 "$BIN" run --interface "$1" --no-socket 2>&1)
    echo "$out" | tail -n 1
    grep -q "cannot attach to '$1': it is $2, not a TAP device" <<<"$out"
}
check "a TUN device is named as such" named_kind tun7 "a TUN device"
check "a veth is named as not a TUN/TAP device" named_kind veth7 "not a TUN/TAP device"
finish
