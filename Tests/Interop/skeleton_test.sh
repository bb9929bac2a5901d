#!/usr/bin/env bash
# The walking skeleton end to end: ARP, ping, UDP echo with nc, the kernel's
# neighbour table, the pcap file, and a clean SIGINT.
source "$(dirname "$0")/lib.sh"

start_stack --pcap "$WORK/run.pcap" || { echo "FAIL $TEST_NAME: stack did not start"; finish; exit 1; }

ping_five() {
    local out
    out=$(in_ns timeout 20 ping -c 5 -i 0.2 -W 2 192.0.2.2) || { echo "$out"; return 1; }
    echo "$out"
    grep -q "5 packets transmitted, 5 received" <<<"$out"
}

nc_echo() {
    local out
    out=$(echo hello | in_ns timeout 10 nc -u -w1 192.0.2.2 7)
    [ "$out" = "hello" ] || { echo "expected 'hello', got '$out'"; return 1; }
}

nc_echo_binary() {
    # 1400 bytes of every byte value must come back unchanged.
    head -c 1400 /dev/urandom >"$WORK/payload"
    in_ns timeout 10 nc -u -w1 192.0.2.2 7 <"$WORK/payload" >"$WORK/echoed"
    cmp "$WORK/payload" "$WORK/echoed"
}

neighbour_learned() {
    local out
    out=$(ip -n "$NS" neigh show 192.0.2.2 dev "$TAP")
    echo "$out"
    grep -q "lladdr 02:00:00:00:00:02" <<<"$out"
}

sigint_exits_zero() {
    stop_stack INT
    [ "$STACK_STATUS" = 0 ] || { echo "exit status $STACK_STATUS"; cat "$WORK/stack.err"; return 1; }
}

device_removed() {
    # The stack created tap0, so its exit must remove it.
    ! ip -n "$NS" link show "$TAP" >/dev/null 2>&1
}

counters_printed_at_exit() {
    grep -E '^icmp.tx_echo_replies [0-9]+$' "$WORK/stack.err" && grep -E '^udp.rx_delivered [0-9]+$' "$WORK/stack.err"
}

pcap_has_every_protocol() {
    local out
    out=$(tcpdump -n -r "$WORK/run.pcap" 2>&1) || { echo "$out"; return 1; }
    echo "$out"
    grep -q "ARP, Request who-has 192.0.2.2 tell 192.0.2.1" <<<"$out" &&
        grep -q "ARP, Reply 192.0.2.2 is-at 02:00:00:00:00:02" <<<"$out" &&
        grep -q "192.0.2.1 > 192.0.2.2: ICMP echo request" <<<"$out" &&
        grep -q "192.0.2.2 > 192.0.2.1: ICMP echo reply" <<<"$out" &&
        grep -qE "192.0.2.1.[0-9]+ > 192.0.2.2.7: UDP, length 6" <<<"$out" &&
        grep -qE "192.0.2.2.7 > 192.0.2.1.[0-9]+: UDP, length 6" <<<"$out"
}

check "kernel ping -c 5 192.0.2.2 gets 5 replies" ping_five
check "nc -u sends hello to port 7 and gets it back" nc_echo
check "a 1400-byte binary datagram is echoed byte for byte" nc_echo_binary
check "the kernel's neighbour table learns 02:00:00:00:00:02" neighbour_learned
check "SIGINT stops the stack with exit status 0" sigint_exits_zero
check "the stack's own device is removed at exit" device_removed
check "counters are printed at exit" counters_printed_at_exit
check "tcpdump -r reads the pcap with the ARP, ICMP and UDP frames" pcap_has_every_protocol
check "tcpdump and tshark read the capture with no malformed frame" capture_is_clean "$WORK/run.pcap"
finish
