#!/usr/bin/env bash
# IPv4 multicast and IGMP under tapstack exec: a python program joins
# 239.1.2.3 and receives what the kernel sends to the group; the stack's
# multicast leaves with TTL 1 for a kernel-side member; the capture shows
# the membership report; then a raw-frame querier checks the answers to v2
# and v3 queries and the leaves (igmp_blackbox.py).
source "$(dirname "$0")/lib.sh"

SOCK=$WORK/tapstack.sock
start_stack --socket "$SOCK" --pcap "$WORK/run.pcap" || { echo "FAIL $TEST_NAME: stack did not start"; finish; exit 1; }
wait_for test -S "$SOCK"
EXEC=("$BIN" exec --socket "$SOCK" --)
mkfifo "$WORK/commands"

# The member: joins three groups (224.0.0.1 too, which is never reported),
# prints what arrives, sends one datagram to 239.1.2.4, then obeys
# "drop GROUP" lines from the FIFO.
in_ns timeout 60 "${EXEC[@]}" python3 -u - "$WORK/commands" >"$WORK/member.out" 2>&1 <<'PY' &
import select, socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5000))
for group in ("239.1.2.3", "239.1.2.5", "224.0.0.1"):
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, struct.pack("4s4s", socket.inet_aton(group), b"\0\0\0\0"))
print("joined", flush=True)
data, peer = s.recvfrom(2048)
print("received", data, "from", peer, flush=True)
s.sendto(b"to the group", ("239.1.2.4", 5001))
print("sent", flush=True)
while True:  # each command opens the FIFO anew: read until its writer closes, then wait for the next
    for line in open(sys.argv[1]):
        verb, group = line.split()
        s.setsockopt(socket.IPPROTO_IP, socket.IP_DROP_MEMBERSHIP, struct.pack("4s4s", socket.inet_aton(group), b"\0\0\0\0"))
        print("dropped", group, flush=True)
PY
MEMBER=$!

member_receives_the_group() {
    wait_for grep -q joined "$WORK/member.out" || { cat "$WORK/member.out"; return 1; }
    # The kernel side: a member of 239.1.2.4 (for the stack's send), and a sender to 239.1.2.3.
    in_ns timeout 10 python3 - >"$WORK/kernel.out" 2>&1 <<'PY'
import socket, struct
listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
listener.bind(("0.0.0.0", 5001))
listener.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                    struct.pack("4s4s", socket.inet_aton("239.1.2.4"), socket.inet_aton("192.0.2.1")))
listener.setsockopt(socket.IPPROTO_IP, 12, 1)  # IP_RECVTTL
listener.settimeout(8)
sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
# A fixed source port no tshark dissector claims: an ephemeral one may be
# (47000 is HCrt's), and tshark then flags "hello group" as malformed HCrt.
sender.bind(("192.0.2.1", 40001))
sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("192.0.2.1"))
sender.sendto(b"hello group", ("239.1.2.3", 5000))
data, ancillary, flags, peer = listener.recvmsg(2048, 64)
print("kernel got", data, "from", peer, "ttl", [struct.unpack("i", v)[0] for l, k, v in ancillary])
PY
    cat "$WORK/member.out" "$WORK/kernel.out"
    grep -q "received b'hello group' from ('192.0.2.1', " "$WORK/member.out" &&
        grep -q "kernel got b'to the group' from ('192.0.2.2', " "$WORK/kernel.out" && grep -q "ttl \[1\]" "$WORK/kernel.out"
}
check "a program under exec joins 239.1.2.3 and receives the kernel's datagram; its send to 239.1.2.4 arrives with TTL 1" member_receives_the_group

ss_shows_memberships() {
    local out
    out=$(in_ns "$BIN" ss --socket "$SOCK")
    echo "$out"
    grep -E "0\.0\.0\.0:5000 .*join=224\.0\.0\.1,join=239\.1\.2\.3,join=239\.1\.2\.5" <<<"$out"
}
check "tapstack ss lists the member's groups" ss_shows_memberships

report_in_capture() {
    local out
    wait_for bash -c "tcpdump -n -r '$WORK/run.pcap' igmp 2>/dev/null | grep -q 239.1.2.3"
    out=$(tcpdump -n -v -r "$WORK/run.pcap" igmp 2>/dev/null)
    echo "$out"
    grep -q "192.0.2.2 > 224.0.0.22: igmp v3 report" <<<"$out" && grep -q "gaddr 239.1.2.3 to_ex, 0 source" <<<"$out" &&
        ! grep -q "gaddr 224.0.0.1" <<<"$out"
}
check "the capture shows the IGMPv3 membership report for 239.1.2.3 (and none for 224.0.0.1)" report_in_capture

blackbox() {
    in_ns env PYTHONPATH="$ROOT/Tests/Interop" timeout 60 python3 "$ROOT/Tests/Interop/igmp_blackbox.py" "$TAP" "$WORK/commands"
}
check "IGMP black-box: v2 and v3 queries answered in time, leaves, no report for 224.0.0.1" blackbox

counters_moved() {
    local queries reports leaves
    queries=$(stack_counter igmp.rx_queries); reports=$(stack_counter igmp.tx_reports); leaves=$(stack_counter igmp.tx_leaves)
    echo "igmp.rx_queries $queries igmp.tx_reports $reports igmp.tx_leaves $leaves"
    grep -E "^(igmp|ipv4\.drop|ethernet\.drop|link)" "$WORK/stack.err" | grep -v " 0$" | sort -u
    # six queries sent; the one for 239.9.9.9 is filtered at the Ethernet layer (a group not joined)
    [ "${queries:-0}" -ge 5 ] && [ "${reports:-0}" -ge 6 ] && [ "${leaves:-0}" -ge 1 ]
}
check "the stack counted the queries, reports and leave" counters_moved

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$STACK_PID/status"; }
join_flood_is_bounded() {
    local before after
    before=$(rss_kib)
    in_ns timeout 30 "${EXEC[@]}" python3 - <<'PY' || return 1
import errno, socket, struct
joined = refused = 0
sockets = []
for n in range(40):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sockets.append(s)
    for i in range(25):
        request = struct.pack("4s4s", bytes([239, 200, n, i + 1]), b"\0\0\0\0")
        try:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, request)
            joined += 1
        except OSError as error:
            assert error.errno == errno.ENOBUFS, error
            refused += 1
print("joined", joined, "refused", refused)
# 256 groups in all; the member above still holds 224.0.0.1
assert joined == 256 - 1 and refused == 1000 - joined, (joined, refused)
PY
    after=$(rss_kib)
    echo "stack RSS $before -> $after KiB; igmp.drop_group_limit $(stack_counter igmp.drop_group_limit)"
    [ $((after - before)) -lt 8192 ]
}
check "a flood of 1000 joins: 256 groups at most (ENOBUFS beyond, counted), memory bounded" join_flood_is_bounded

kill "$MEMBER" 2>/dev/null; wait "$MEMBER" 2>/dev/null
stop_stack TERM
check "the capture is clean" capture_is_clean "$WORK/run.pcap"
finish
