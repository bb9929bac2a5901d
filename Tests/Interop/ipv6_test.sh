#!/usr/bin/env bash
# IPv6 first steps (issue 17): the kernel pings the stack's link-local
# address (fe80:: from its MAC), learning its MAC through neighbour
# discovery; both show in the capture.
source "$(dirname "$0")/lib.sh"

start_stack --pcap "$WORK/run.pcap" || { echo "FAIL $TEST_NAME: stack did not start"; finish; exit 1; }
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
    [ "${na:-0}" -ge 1 ] && [ "${replies:-0}" -eq 3 ]
}
check "the stack counted the solicitation, its advertisement and three echo replies" counted

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
