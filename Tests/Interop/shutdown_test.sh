#!/usr/bin/env bash
# SIGTERM while the stack is flooded: it exits 0 within one second, and the
# capture file it was writing is complete and readable.
source "$(dirname "$0")/lib.sh"

start_stack --pcap "$WORK/flood.pcap" || { echo "FAIL $TEST_NAME: stack did not start"; finish; exit 1; }
in_ns python3 "$(dirname "$0")/flood.py" "$TAP" udp 60000 >/dev/null 2>&1 &
flood_pid=$!
sleep 1

term_under_load() {
    local start end
    start=$(date +%s%N)
    kill -TERM "$STACK_PID"
    for _ in $(seq 100); do kill -0 "$STACK_PID" 2>/dev/null || break; sleep 0.01; done
    end=$(date +%s%N)
    local ms=$(( (end - start) / 1000000 ))
    for _ in $(seq 50); do [ -s "$WORK/status" ] && break; sleep 0.02; done
    echo "exited after ${ms} ms with status $(cat "$WORK/status" 2>/dev/null)"
    [ "$ms" -lt 1000 ] && [ "$(cat "$WORK/status")" = 0 ]
}
capture_complete() {
    local out
    out=$(tcpdump -n -r "$WORK/flood.pcap" 2>&1 >/dev/null)
    echo "tcpdump: ${out:-no complaint}; $(tcpdump -n -r "$WORK/flood.pcap" 2>/dev/null | wc -l) frames"
    ! grep -qi "truncated" <<<"$out"
}
check "SIGTERM under a flood exits 0 within one second" term_under_load
kill "$flood_pid" 2>/dev/null
wait "$flood_pid" 2>/dev/null
STACK_PID=""
check "the capture written during the flood is complete and readable" capture_complete
check "tshark reads it with no malformed frame" capture_is_clean "$WORK/flood.pcap"
finish
