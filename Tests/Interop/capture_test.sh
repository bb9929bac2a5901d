#!/usr/bin/env bash
# Capture for debugging: a filter, a snap length, a live stream read by
# tcpdump while pinging, a stalled reader that must not slow the stack, and
# the trace/debug logs and stats that explain a lost datagram.
source "$(dirname "$0")/lib.sh"

kernel_side() {
    for _ in $(seq 100); do ip -n "$NS" link show "$TAP" >/dev/null 2>&1 && break; sleep 0.05; done
    ip -n "$NS" link set "$TAP" up
    ip -n "$NS" addr add 192.0.2.1/24 dev "$TAP"
}

traffic() {
    in_ns timeout 10 ping -c 2 -i 0.2 -W 2 192.0.2.2 >/dev/null
    echo hello | in_ns timeout 5 nc -u -w1 192.0.2.2 7 >/dev/null
    echo lost | in_ns timeout 5 nc -u -w1 192.0.2.2 9999 >/dev/null
}

# --- --pcap-filter icmp, --snaplen, --log-level debug, --stats-interval -----
start_stack --pcap "$WORK/icmp.pcap" --pcap-filter icmp --log-level trace --stats-interval 1 \
    || { echo "FAIL $TEST_NAME: stack did not start"; finish; exit 1; }
traffic
# --stats-interval 1 has printed since the traffic (its changes include it).
wait_for grep -q "^udp.drop_no_port 1 (+1)" "$WORK/stack.err"
stop_stack TERM

filter_keeps_only_icmp() {
    local out
    out=$(tcpdump -n -r "$WORK/icmp.pcap" 2>/dev/null)
    echo "$out"
    [ -n "$out" ] && ! grep -v "ICMP" <<<"$out" | grep -q . && grep -q "echo reply" <<<"$out" && grep -q "port 9999 unreachable" <<<"$out"
}
trace_logs_every_frame() {
    grep -E "trace .*in  IP 192.0.2.1 > 192.0.2.2: ICMP echo request" "$WORK/stack.err" &&
        grep -E "trace .*out IP 192.0.2.2.7 > 192.0.2.1.[0-9]+: UDP, length 6" "$WORK/stack.err"
}
drop_logged_with_reason() {
    grep -E "debug .*drop udp.drop_no_port: IP 192.0.2.1.[0-9]+ > 192.0.2.2.9999: UDP, length 5" "$WORK/stack.err"
}
stats_interval_prints_changes() {
    grep -A30 "^stats:" "$WORK/stack.err" | grep -E "^udp.drop_no_port 1 \(\+1\)|^icmp.tx_echo_replies [0-9]+ \(\+[0-9]+\)" | head -3 | grep -q .
}
check "--pcap-filter icmp keeps only ICMP frames" filter_keeps_only_icmp
check "the filtered capture is clean for tcpdump and tshark" capture_is_clean "$WORK/icmp.pcap"
check "--log-level trace logs each frame in and out like tcpdump -n" trace_logs_every_frame
check "--log-level debug logs the drop with its reason and the frame" drop_logged_with_reason
check "--stats-interval prints the counters that changed" stats_interval_prints_changes

# --- --snaplen -----------------------------------------------------------------
start_stack --pcap "$WORK/snap.pcap" --snaplen 64 || { echo "FAIL $TEST_NAME: stack did not start"; finish; exit 1; }
in_ns timeout 10 ping -c 2 -i 0.2 -s 1000 -W 2 192.0.2.2 >/dev/null
stop_stack TERM
snaplen_cuts_frames() {
    local lengths
    lengths=$(tshark -n -r "$WORK/snap.pcap" -T fields -e frame.cap_len -e frame.len -Y icmp 2>/dev/null | sort -u)
    echo "$lengths"
    grep -qE "^64\s1042$" <<<"$lengths"
}
check "--snaplen 64 keeps 64 bytes and the true length" snaplen_cuts_frames

# --- --pcap - read live by tcpdump -r - -------------------------------------------
live_stream() {
    ip netns exec "$NS" "$BIN" run --interface "$TAP" --pcap - 2>"$WORK/live.err" | tcpdump -l -n -r - >"$WORK/live.txt" 2>/dev/null &
    kernel_side || return 1
    in_ns timeout 10 ping -c 3 -i 0.2 -W 2 192.0.2.2 >/dev/null
    three_replies_seen() { [ "$(grep -c "ICMP echo reply" "$WORK/live.txt")" -ge 3 ]; }
    wait_for three_replies_seen
    # Seen while the stack still runs: frames are flushed one by one.
    local seen
    seen=$(grep -c "ICMP echo reply" "$WORK/live.txt")
    pkill -TERM -f "$BIN run --interface $TAP --pcap -" 2>/dev/null
    wait
    echo "echo replies seen live: $seen"
    [ "$seen" = 3 ]
}
check "--pcap - streams to tcpdump -r - frame by frame while pinging" live_stream

# --- a reader that stops reading must not slow the stack ----------------------
stalled_reader() {
    ip netns exec "$NS" "$BIN" run --interface "$TAP" --pcap - 2>"$WORK/stall.err" | sleep 30 &
    kernel_side || return 1
    local pid
    pid=$(pgrep -f "$BIN run --interface $TAP --pcap -" | head -n 1)
    in_ns timeout 30 ping -f -c 3000 -s 1400 -W 1 192.0.2.2 >/dev/null
    local out
    out=$(in_ns timeout 10 ping -c 3 -i 0.2 -W 2 192.0.2.2)
    kill -USR1 "$pid"
    wait_for grep -q "^capture.drop_writer_behind" "$WORK/stall.err"
    local start=$SECONDS
    kill -TERM "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    local alive=0
    kill -0 "$pid" 2>/dev/null && alive=1
    echo "stopped after $((SECONDS - start)) s; $(grep -E '^capture.drop_writer_behind' "$WORK/stall.err" | head -n 1)"
    grep -q "3 received" <<<"$out" || { echo "ping failed while the capture was stalled"; return 1; }
    grep -qE '^capture.drop_writer_behind [1-9]' "$WORK/stall.err" || return 1
    [ "$alive" = 0 ]
}
check "a stalled capture reader drops capture frames (counted), never stack frames, and does not block shutdown" stalled_reader
finish
