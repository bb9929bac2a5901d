#!/usr/bin/env bash
# IPv6 first steps (issue 17): the kernel pings the stack's link-local
# address (fe80:: from its MAC) and a configured global one, learning its
# MAC through neighbour discovery; both show in the capture. An address the
# kernel side already holds is refused by duplicate address detection.
source "$(dirname "$0")/lib.sh"

# The kernel side holds 2001:db8::1 and, to provoke a conflict, 2001:db8::99:
# added (nodad: at once) before the link comes up, so that the stack's probe,
# sent when it does, finds 2001:db8::99 taken.
launch ip netns exec "$NS" "$BIN" run --interface "$TAP" --address 192.0.2.2/24 --mac 02:00:00:00:00:02 \
    --pcap "$WORK/run.pcap" --address6 2001:db8::2/64 --address6 2001:db8::99/64 --log-level notice
wait_for_tap || { echo "FAIL $TEST_NAME: stack did not start"; cat "$WORK/stack.err"; finish; exit 1; }
in_ns ip -6 addr add 2001:db8::1/64 dev "$TAP" nodad
in_ns ip -6 addr add 2001:db8::99/64 dev "$TAP" nodad
in_ns ip link set "$TAP" up
in_ns ip addr add 192.0.2.1/24 dev "$TAP"
# The kernel's own link-local address must finish its duplicate address detection first.
kernel_link_local_ready() { in_ns ip -6 addr show dev "$TAP" scope link | grep -q "inet6 fe80" &&
    ! in_ns ip -6 addr show dev "$TAP" scope link | grep -q tentative; }
wait_for kernel_link_local_ready

ping6_link_local() {
    local out
    out=$(in_ns ping -6 -c 3 -i 0.2 -W 2 "fe80::ff:fe00:2%$TAP" 2>&1)
    echo "$out"
    grep -q "3 received" <<<"$out"
}
check "ping -6 fe80::ff:fe00:2%tap0 (the link-local address from the MAC): 3 of 3" ping6_link_local

ping6_global() {
    local out
    # Its probe runs for a second after the link came up: wait until it answers.
    wait_for bash -c "ip netns exec $NS ping -6 -c 1 -W 1 2001:db8::2 >/dev/null 2>&1"
    out=$(in_ns ping -6 -c 3 -i 0.2 -W 2 2001:db8::2 2>&1)
    echo "$out"
    grep -q "3 received" <<<"$out"
}
check "ping -6 2001:db8::2 (--address6): 3 of 3" ping6_global

duplicate_refused() {
    local conflicts
    conflicts=$(stack_counter ipv6.dad_conflicts)
    echo "ipv6.dad_conflicts $conflicts"; grep -i "in use" "$WORK/stack.err"
    [ "$conflicts" = 1 ] && grep -q "IPv6 address 2001:db8::99 is in use on the link (duplicate address detection): not using it" "$WORK/stack.err"
}
check "2001:db8::99, held by the kernel side, is refused with a log line and a counter" duplicate_refused

neighbour_learned() {
    local out
    out=$(in_ns ip -6 neigh show dev "$TAP")
    echo "$out"
    grep -qE "^fe80::ff:fe00:2 lladdr 02:00:00:00:00:02 .*(REACHABLE|STALE|DELAY|PROBE)" <<<"$out"
}
check "the kernel's neighbour table learned the stack's MAC from its advertisement" neighbour_learned

counted() {
    local ns na replies
    ns=$(stack_counter icmpv6.rx_neighbor_solicitations); na=$(stack_counter icmpv6.tx_neighbor_advertisements)
    replies=$(stack_counter icmpv6.tx_echo_replies)
    echo "icmpv6.rx_neighbor_solicitations $ns icmpv6.tx_neighbor_advertisements $na icmpv6.tx_echo_replies $replies"
    [ "${na:-0}" -ge 1 ] && [ "${replies:-0}" -ge 6 ]
}
check "the stack counted the solicitations, its advertisements and the echo replies" counted

stop_stack TERM
capture_shows_it() {
    local out
    out=$(tcpdump -n -r "$WORK/run.pcap" ip6 2>/dev/null)
    echo "$out" | head -n 12
    grep -qE "fe80::ff:fe00:2 > fe80::[0-9a-f:]+: ICMP6, neighbor advertisement, tgt is fe80::ff:fe00:2" <<<"$out" &&
        grep -qE "fe80::ff:fe00:2 > fe80::[0-9a-f:]+: ICMP6, echo reply" <<<"$out"
}
check "the capture shows the advertisement and the echo replies" capture_shows_it
check "the capture is clean" capture_is_clean "$WORK/run.pcap"
finish
