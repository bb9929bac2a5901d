#!/usr/bin/env bash
# Black-box protocol checks from the kernel side of the tap (blackbox.py),
# then the drop counters those hostile inputs must have moved.
source "$(dirname "$0")/lib.sh"

start_stack --reassembly-timeout 2 || { echo "FAIL $TEST_NAME: stack did not start"; finish; exit 1; }
wait_for in_ns ping -c 1 -W 1 192.0.2.2 >/dev/null
in_ns timeout 240 python3 "$(dirname "$0")/blackbox.py" "$TAP" 2 >"$WORK/blackbox.out" 2>&1
grep -v -E '^[0-9]+ passed, [0-9]+ failed$' "$WORK/blackbox.out"
summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$WORK/blackbox.out" | tail -n 1)
PASSED=$((PASSED + ${summary%% *}))
bb_failed=$(echo "$summary" | awk '{print $3}')
FAILED=$((FAILED + ${bb_failed:-1}))

stack_counter link.rx_frames >/dev/null   # the stack prints its counters now

counter_moved() {  # NAME: the counter printed on SIGUSR1 is above zero
    grep -E "^$1 [1-9][0-9]*$" "$WORK/stack.err" || { echo "$1 did not move"; grep "^$1 " "$WORK/stack.err"; return 1; }
}
for counter in arp.drop_unsupported arp.drop_bad_sender ipv4.drop_bad_checksum ipv4.drop_bad_version \
               ipv4.drop_bad_header_length ipv4.drop_truncated ipv4.drop_bad_length ipv4.drop_not_for_us \
               ipv4.drop_bad_source ipv4.drop_reassembly_overlap ipv4.drop_reassembly_oversize \
               ipv4.drop_reassembly_timeout icmp.drop_bad_checksum icmp.drop_broadcast_echo \
               icmp.tx_errors_suppressed icmp.tx_errors_rate_limited icmp.tx_time_exceeded \
               udp.drop_bad_checksum udp.drop_truncated udp.drop_bad_length udp.drop_no_port; do
    check "counter $counter moved" counter_moved "$counter"
done
finish
