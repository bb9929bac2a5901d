#!/usr/bin/env bash
# Bounded floods of hostile input (malformed frames, ARP from thousands of
# senders, incomplete fragments, datagrams to a socket that is not read):
# the stack's memory stays bounded and ping and UDP echo still answer.
source "$(dirname "$0")/lib.sh"

start_stack || { echo "FAIL $TEST_NAME: stack did not start"; finish; exit 1; }
in_ns ping -c 1 -W 2 192.0.2.2 >/dev/null   # warm up: first ARP and echo

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$STACK_PID/status"; }

alive() {
    in_ns timeout 10 ping -c 2 -i 0.2 -W 2 192.0.2.2 | grep -q "2 received" || { echo "ping failed"; return 1; }
    local out
    out=$(echo alive | in_ns timeout 10 nc -u -w1 192.0.2.2 7)
    [ "$out" = alive ] || { echo "echo failed: '$out'"; return 1; }
}

BASE_RSS=$(rss_kib)
echo "flood: RSS before floods ${BASE_RSS} KiB"
# The stack has read everything the kernel queued for it (a debug build
# takes a while to work off a flood's backlog).
drained() { [ "$(stack_counter link.rx_frames)" = "$(stack_counter device.tx_packets)" ]; }
flood() {  # KIND COUNT
    in_ns timeout 120 python3 "$(dirname "$0")/flood.py" "$TAP" "$1" "$2" || return 1
    wait_for drained || echo "the stack did not work off the flood within 10 s"
    echo "flood: after $2 $1 frames RSS $(rss_kib) KiB; device.tx_dropped $(stack_counter device.tx_dropped)"
    alive
}
check "answers after 20000 malformed frames" flood malformed 20000
check "answers after ARP requests from 100000 senders" flood arp 100000
check "answers after 10000 incomplete fragment sets" flood fragments 10000
check "answers after 100000 datagrams poured at the echo service" flood udp 100000

rss_bounded() {
    local now
    now=$(rss_kib)
    echo "RSS ${BASE_RSS} KiB -> ${now} KiB"
    # Bounds: ARP cache 512 entries, reassembly 1 MiB, rings 2 x 1024 x 1514 B (allocated at start).
    [ $((now - BASE_RSS)) -lt 65536 ]
}
check "RSS grew by less than 64 MiB" rss_bounded

stack_counter link.rx_frames >/dev/null   # the stack prints its counters now
bounded_counters() {
    grep -E '^(arp.cache_evictions|ipv4.drop_reassembly_evicted|link.rx_buffers_exhausted|arp.drop_bad_sender) ' "$WORK/stack.err"
    grep -qE '^ipv4.drop_reassembly_evicted [1-9]' "$WORK/stack.err"
}
check "the reassembly bound evicted the oldest incomplete datagrams" bounded_counters
finish
