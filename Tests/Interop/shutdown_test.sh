#!/usr/bin/env bash
# SIGTERM while the stack is flooded: it exits 0 promptly (its threads stop
# without draining the flood), and the capture file it was writing is
# complete and readable.
source "$(dirname "$0")/lib.sh"

start_stack --pcap "$WORK/flood.pcap" || { echo "FAIL $TEST_NAME: stack did not start"; finish; exit 1; }
in_ns python3 "$(dirname "$0")/flood.py" "$TAP" udp 60000 >/dev/null 2>&1 &
flood_pid=$!
# The flood is under way once the stack has taken a good part of it.
flooded() { [ "$(stack_counter udp.rx_datagrams)" -ge 5000 ]; }
wait_for flooded || echo "the flood never reached the stack"

term_under_load() {
    local start end
    kill -0 "$flood_pid" 2>/dev/null || { echo "the flood was over before SIGTERM"; return 1; }
    start=$(date +%s%N)
    kill -TERM "$STACK_PID"
    # Generous for a shared machine; a stack that drained the flood first,
    # or hung, would take far longer.
    for _ in $(seq 300); do kill -0 "$STACK_PID" 2>/dev/null || break; sleep 0.01; done
    end=$(date +%s%N)
    local ms=$(( (end - start) / 1000000 ))
    local flood_running=no
    kill -0 "$flood_pid" 2>/dev/null && flood_running=yes
    wait_for test -s "$WORK/status"
    echo "exited after ${ms} ms with status $(cat "$WORK/status" 2>/dev/null); flood still running then: $flood_running"
    [ "$ms" -lt 3000 ] && [ "$(cat "$WORK/status")" = 0 ] && [ "$flood_running" = yes ]
}
capture_complete() {
    local out
    out=$(tcpdump -n -r "$WORK/flood.pcap" 2>&1 >/dev/null)
    echo "tcpdump: ${out:-no complaint}; $(tcpdump -n -r "$WORK/flood.pcap" 2>/dev/null | wc -l) frames"
    ! grep -qi "truncated" <<<"$out"
}
check "SIGTERM under a flood exits 0 while the flood goes on" term_under_load
kill "$flood_pid" 2>/dev/null
wait "$flood_pid" 2>/dev/null
STACK_PID=""
check "the capture written during the flood is complete and readable" capture_complete
check "tshark reads it with no malformed frame" capture_is_clean "$WORK/flood.pcap"
finish
