#!/usr/bin/env bash
# IPv6 (issue 17): the kernel pings the stack's link-local address (fe80::
# from its MAC) and a configured global one at sizes 0 to 4000 (fragmented
# both ways), learning its MAC through neighbour discovery; nc -6 -u talks to
# the echo service; a closed port answers port unreachable; an address the
# kernel side already holds is refused by duplicate address detection; a
# router advertisement from the kernel side gives the stack an address
# (SLAAC); ipv6_blackbox.py checks RFC 8200/4443/4861 rules with raw frames,
# each with the counter it must move.
source "$(dirname "$0")/lib.sh"

# The kernel side holds 2001:db8::1 and, to provoke a conflict, 2001:db8::99:
# added (nodad: at once) before the link comes up, so that the stack's probe,
# sent when it does, finds 2001:db8::99 taken.
launch ip netns exec "$NS" "$BIN" run --interface "$TAP" --address 192.0.2.2/24 --mac 02:00:00:00:00:02 \
    --pcap "$WORK/run.pcap" --address6 2001:db8::2/64 --address6 2001:db8::99/64 --address6 auto --log-level notice \
    --socket "$WORK/tapstack.sock"
wait_for_tap || { echo "FAIL $TEST_NAME: stack did not start"; cat "$WORK/stack.err"; finish; exit 1; }
in_ns ip -6 addr add 2001:db8::1/64 dev "$TAP" nodad
in_ns ip -6 addr add 2001:db8::99/64 dev "$TAP" nodad
in_ns ip -6 addr add 2001:db8:1::1/64 dev "$TAP" nodad
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

ping6_sizes() {
    local size out ok=0 target
    for target in 2001:db8::2 "fe80::ff:fe00:2%$TAP"; do
        for size in 0 56 1452 4000; do
            out=$(in_ns ping -6 -c 2 -i 0.2 -W 2 -s "$size" "$target" 2>&1)
            echo "$target size $size: $(grep -E 'received' <<<"$out")"
            grep -q "2 received" <<<"$out" && ok=$((ok + 1))
        done
    done
    [ "$ok" = 8 ]
}
check "ping -6 -s 0, 56, 1452 and 4000 to 2001:db8::2 and fe80::ff:fe00:2%tap0: every one answered" ping6_sizes

nc6_echo() {
    local out
    out=$(printf 'hello over six\n' | in_ns timeout 5 nc -6 -u -w 1 2001:db8::2 7)
    echo "nc -6 -u got: $out"
    [ "$out" = "hello over six" ]
}
check "nc -6 -u 2001:db8::2 7: the echo service answers over IPv6" nc6_echo

nc4_echo_still() {
    local out
    out=$(printf 'hello over four\n' | in_ns timeout 5 nc -u -w 1 192.0.2.2 7)
    echo "nc -u got: $out"
    [ "$out" = "hello over four" ]
}
check "nc -u 192.0.2.2 7: the same (dual-stack) echo socket answers IPv4" nc4_echo_still

uso6_echoed() {
    # The kernel's UDP segmentation offload over IPv6: one sendmsg with
    # UDP_SEGMENT 64 reaches the tap as one GSO frame (USO6 granted), which
    # the link cuts into its 4 datagrams; the echo answers each.
    local before out
    before=$(stack_counter link.rx_segmented_frames)
    out=$(in_ns timeout 10 python3 -c '
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_UDP, 103, 64)  # UDP_SEGMENT
s.settimeout(3)
s.connect(("2001:db8::2", 7))
s.send(b"a" * 64 + b"b" * 64 + b"c" * 64 + b"d" * 20)
print(sorted(s.recv(100) for _ in range(4)))' 2>&1)
    echo "$out; link.rx_segmented_frames $before -> $(stack_counter link.rx_segmented_frames)"
    [ "$out" = "[b'$(printf 'a%.0s' {1..64})', b'$(printf 'b%.0s' {1..64})', b'$(printf 'c%.0s' {1..64})', b'dddddddddddddddddddd']" ] &&
        [ "$(stack_counter link.rx_segmented_frames)" -gt "${before:-0}" ]
}
check "a UDP_SEGMENT send over IPv6 arrives as one GSO frame, is cut into its 4 datagrams and each is echoed" uso6_echoed

port_unreachable6() {
    local out
    out=$(in_ns timeout 5 python3 -c '
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.settimeout(2)
s.connect(("2001:db8::2", 9))
s.send(b"anyone?")
try:
    s.recv(100)
    print("answered")
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("timeout")
' 2>&1)
    echo "$out"
    [ "$out" = refused ]
}
check "UDP to a closed port over IPv6: the kernel's socket gets ECONNREFUSED (port unreachable)" port_unreachable6

EXEC=("$BIN" exec --socket "$WORK/tapstack.sock" --)

python_inet6_under_exec() {
    # A dual-stack AF_INET6 program under exec: bound to [::]:9600, it echoes
    # one datagram from each family and reports what the socket API showed
    # it, then echoes the largest IPv6 datagram (65 527 bytes) as it came.
    in_ns timeout 20 "${EXEC[@]}" python3 -c '
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
print("v6only", s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY), flush=True)
s.bind(("::", 9600))
print("bound", s.getsockname()[:2], flush=True)
s.settimeout(10)
for _ in range(2):
    data, peer = s.recvfrom(100)
    print("from", peer[:2], data, flush=True)
    s.sendto(b"echo:" + data, peer)
data, peer = s.recvfrom(65535)
print("largest", len(data), flush=True)
s.sendto(data, peer)
' >"$WORK/inet6.out" 2>&1 &
    local program=$!
    wait_for grep -q bound "$WORK/inet6.out"
    local six four
    six=$(in_ns timeout 5 python3 -c '
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.settimeout(3)
s.sendto(b"six", ("2001:db8::2", 9600)); print(s.recvfrom(100)[0].decode())')
    four=$(in_ns timeout 5 python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
s.sendto(b"four", ("192.0.2.2", 9600)); print(s.recvfrom(100)[0].decode())')
    largest=$(in_ns timeout 5 python3 -c '
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.settimeout(3)
sent = bytes(range(256)) * 255 + bytes(range(247))
s.sendto(sent, ("2001:db8::2", 9600)); print("intact" if s.recvfrom(65535)[0] == sent else "changed")')
    wait "$program"
    cat "$WORK/inet6.out"; echo "kernel side got: '$six' '$four' '$largest'"
    [ "$six" = "echo:six" ] && [ "$four" = "echo:four" ] && [ "$largest" = intact ] && grep -qx "largest 65527" "$WORK/inet6.out" &&
        grep -q "^v6only 0" "$WORK/inet6.out" && grep -q "^bound ('::', 9600)" "$WORK/inet6.out" &&
        grep -qE "^from \('2001:db8::[0-9a-f]+', [0-9]+\) b'six'" "$WORK/inet6.out" &&
        grep -qE "^from \('::ffff:192.0.2.1', [0-9]+\) b'four'" "$WORK/inet6.out"
}
check "python AF_INET6 under tapstack exec: bound to [::]:9600, echoes IPv6 and (v4-mapped) IPv4 from the kernel side, and the largest IPv6 datagram byte for byte" python_inet6_under_exec

nc6_under_exec() {
    in_ns timeout 10 nc -6 -n -u -l 2001:db8::1 9700 >"$WORK/listener6.out" 2>&1 &
    local listener=$!
    wait_for bash -c "ip netns exec $NS ss -u -l -n | grep -q '\[2001:db8::1\]:9700'"
    echo "hello over six from exec" | in_ns timeout 10 "${EXEC[@]}" nc -6 -u -w1 2001:db8::1 9700
    wait_for grep -q "hello over six from exec" "$WORK/listener6.out"
    kill "$listener" 2>/dev/null; wait "$listener" 2>/dev/null
    echo "listener got '$(cat "$WORK/listener6.out")'"
    [ "$(cat "$WORK/listener6.out")" = "hello over six from exec" ]
}
check "nc -6 -u under tapstack exec reaches a kernel listener at [2001:db8::1]:9700" nc6_under_exec

recverr6_under_exec() {
    # IPV6_RECVERR: the kernel side's port unreachable for a datagram the
    # program sent, read with MSG_ERRQUEUE as Linux gives it.
    local out
    out=$(in_ns timeout 10 "${EXEC[@]}" python3 -c '
import socket, struct, select
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, 25, 1)  # IPV6_RECVERR
s.sendto(b"anyone?", ("2001:db8::1", 9))
for _ in range(50):
    try:
        data, ancillary, flags, name = s.recvmsg(100, 512, socket.MSG_ERRQUEUE)
        break
    except BlockingIOError:
        select.select([s], [], [], 0.1)
level, kind, blob = ancillary[0]
errno, origin, icmp_type, code = struct.unpack("=IBBB", blob[:7])
offender = socket.inet_ntop(socket.AF_INET6, blob[16 + 8:16 + 24])
print(level == socket.IPPROTO_IPV6, kind == 25, errno, origin, icmp_type, code, offender, name[0], name[1], data)
' 2>&1)
    echo "$out"
    [ "$out" = "True True 111 3 1 4 2001:db8::1 2001:db8::1 9 b'anyone?'" ]
}
check "IPV6_RECVERR under exec: the kernel's port unreachable comes back on MSG_ERRQUEUE (ECONNREFUSED, origin ICMP6, type 1 code 4, offender)" recverr6_under_exec

multicast6_under_exec() {
    # An AF_INET6 program under exec joins ff12::1234 (IPV6_JOIN_GROUP); the kernel side sends to the group.
    in_ns timeout 20 "${EXEC[@]}" python3 -c '
import socket, struct
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("::", 9800))
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, socket.inet_pton(socket.AF_INET6, "ff12::1234") + struct.pack("@I", 0))
print("joined", flush=True)
s.settimeout(10)
data, peer = s.recvfrom(100)
print("got", data, peer[0], flush=True)
' >"$WORK/mcast6.out" 2>&1 &
    local program=$!
    wait_for grep -q joined "$WORK/mcast6.out"
    in_ns python3 -c '
import socket, struct, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, socket.if_nametoindex(sys.argv[1]))
s.sendto(b"to the group", ("ff12::1234", 9800))' "$TAP"
    wait "$program"
    cat "$WORK/mcast6.out"
    # The join's MLDv2 report is checked in the capture once the stack has stopped (and flushed it).
    grep -qE "^got b'to the group' (fe80|2001:db8)" "$WORK/mcast6.out"
}
check "an AF_INET6 program under exec joins ff12::1234 (IPV6_JOIN_GROUP, MLDv2 report) and receives the kernel side's datagram to it" multicast6_under_exec

slaac() {
    local out
    # A router advertisement from the kernel side: prefix 2001:db8:1::/64, on-link and autonomous.
    in_ns python3 - "$TAP" <<'PY'
import socket, struct, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
prefix = struct.pack("!BBBBIII", 3, 4, 64, 0xC0, 3600, 1800, 0) + socket.inet_pton(socket.AF_INET6, "2001:db8:1::")
ra = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 0, 0, 0) + prefix  # router lifetime 0: not a default router
s.sendto(ra, ("ff02::1", 0, 0, socket.if_nametoindex(sys.argv[1])))
PY
    # The address is checked unique (a second) before it answers.
    wait_for bash -c "ip netns exec $NS ping -6 -c 1 -W 1 2001:db8:1::ff:fe00:2 >/dev/null 2>&1" || return 1
    out=$(in_ns ping -6 -c 2 -i 0.2 -W 2 2001:db8:1::ff:fe00:2 2>&1)
    echo "$out" | tail -n 2
    echo "ipv6.addresses_autoconfigured $(stack_counter ipv6.addresses_autoconfigured)"
    grep -q "2 received" <<<"$out" && [ "$(stack_counter ipv6.addresses_autoconfigured)" = 1 ]
}
check "SLAAC: a router advertisement for 2001:db8:1::/64 gives the stack 2001:db8:1::ff:fe00:2, which answers ping" slaac

router_solicited() {
    local sent
    sent=$(stack_counter icmpv6.tx_router_solicitations)
    echo "icmpv6.tx_router_solicitations $sent"
    [ "${sent:-0}" -ge 1 ]
}
check "--address6 auto solicits routers at start" router_solicited

blackbox6() {
    in_ns timeout 180 python3 "$(dirname "$0")/ipv6_blackbox.py" "$TAP" "$STACK_PID" "$WORK/stack.err" >"$WORK/blackbox6.out" 2>&1
    local status=$?
    cat "$WORK/blackbox6.out"
    [ "$status" = 0 ]
}
check "ipv6_blackbox.py: RFC 8200, 4443, 4861 and 4862 checks from raw frames, each moving its counter" blackbox6

blackbox_counters() {
    local name value ok=0
    for name in ipv6.drop_unsupported_next_header ipv6.drop_unknown_option ipv6.drop_bad_extension_header \
            ipv6.drop_routing_header ipv6.drop_fragment_bad_length ipv6.drop_reassembly_oversize \
            ipv6.drop_reassembly_overlap ipv6.reassembled ipv6.tx_fragmented udp.drop_zero_checksum \
            icmpv6.tx_parameter_problems icmpv6.tx_destination_unreachable icmpv6.tx_errors_suppressed \
            udp.drop_multicast_no_member icmpv6.rx_mld_queries icmpv6.tx_mld_reports \
            icmpv6.drop_invalid_neighbor_discovery; do
        value=$(stack_counter "$name")
        echo "$name ${value:-0}"
        [ "${value:-0}" -ge 1 ] || ok=1
    done
    return $ok
}
check "each black-box check moved its counter" blackbox_counters

ns_flood() {
    local before after entries
    before=$(awk '/^VmRSS/ {print $2}' "/proc/$STACK_PID/status")
    # 5000 solicitations from 5000 sources, each with its MAC, and 5000 first fragments never completed.
    in_ns timeout 60 python3 "$(dirname "$0")/ipv6_flood.py" "$TAP" 5000
    drained() { [ "$(stack_counter link.rx_frames)" = "$(stack_counter device.tx_packets)" ]; }
    wait_for drained || echo "the stack did not work off the flood within 10 s"
    after=$(awk '/^VmRSS/ {print $2}' "/proc/$STACK_PID/status")
    entries=$(stack_counter icmpv6.neighbor_cache_evictions)
    echo "RSS $before → $after KiB; icmpv6.neighbor_cache_evictions $entries; ipv6.drop_reassembly_evicted $(stack_counter ipv6.drop_reassembly_evicted); device.tx_dropped $(stack_counter device.tx_dropped)"
    # Bounds: 256 neighbours, reassembly 64 datagrams and 1 MiB; the IPv4 flood test allows 64 MiB for all of its floods.
    [ "${entries:-0}" -ge 1000 ] && [ "$(stack_counter ipv6.drop_reassembly_evicted)" -ge 1000 ] && [ $((after - before)) -lt 65536 ]
}
check "a flood of solicitations from 5000 sources and 5000 incomplete fragment sets: caches evict at their bounds, RSS within the IPv4 flood bound" ns_flood

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
    echo "$out" | grep -E "frag \(0\||UDP|router solicitation|listener report" | head -n 10
    grep -qE "fe80::ff:fe00:2 > fe80::[0-9a-f:]+: ICMP6, neighbor advertisement, tgt is fe80::ff:fe00:2" <<<"$out" &&
        grep -qE "fe80::ff:fe00:2 > fe80::[0-9a-f:]+: ICMP6, echo reply" <<<"$out" &&
        grep -qE "2001:db8::[0-9a-f]+ > 2001:db8::2: frag \(0\|" <<<"$out" &&
        grep -qE "2001:db8::2 > 2001:db8::[0-9a-f]+: frag \(0\|" <<<"$out" &&
        grep -qE "2001:db8::2\.7 > 2001:db8::[0-9a-f]+\.[0-9]+: UDP" <<<"$out" &&
        grep -qE "ICMP6, router solicitation" <<<"$out" &&
        grep -qE ":: > ff02::16: HBH .*ICMP6, multicast listener report v2, 1 group record\(s\)" <<<"$out" &&
        grep -qE "gaddr ff12::1234 to_ex" <<<"$(tcpdump -n -v -r "$WORK/run.pcap" ip6 2>/dev/null)"  # not a pipe into grep -q: SIGPIPE under pipefail
}
check "the capture shows the advertisement, echo replies, fragments both ways, the UDP echo, the router solicitation and the MLDv2 reports (solicited-node, and ff12::1234 joined under exec)" capture_shows_it
# The black-box frames are malformed on purpose, and so are the quotes of
# them in the errors they earn: what the stack sent to anyone else is judged.
tcpdump -n -r "$WORK/run.pcap" -w "$WORK/sent.pcap" "ether src 02:00:00:00:00:02 and not ip6 dst 2001:db8::77" 2>/dev/null
check "what the stack sent is clean (tcpdump and tshark find nothing malformed)" capture_is_clean "$WORK/sent.pcap"
finish
