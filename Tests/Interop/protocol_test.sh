#!/usr/bin/env bash
# The kernel's own tools against the protocol core: ping of every size class
# (4000 bytes fragments both ways), nc to a closed port, a 3000-byte datagram
# reassembled and echoed back in fragments.
source "$(dirname "$0")/lib.sh"

start_stack --pcap "$WORK/run.pcap" || { echo "FAIL $TEST_NAME: stack did not start"; finish; exit 1; }

ping_size() {
    local out
    out=$(in_ns timeout 15 ping -c 3 -i 0.2 -W 2 -s "$1" 192.0.2.2) || { echo "$out"; return 1; }
    grep -q "3 packets transmitted, 3 received" <<<"$out" || { echo "$out"; return 1; }
}

closed_port_refused_by_nc() {
    # nc's third probe write fails with ECONNREFUSED (the ICMP port
    # unreachable arrived), so it exits 1; to port 7 it succeeds.
    if echo x | in_ns timeout 10 nc -v -u -w1 192.0.2.2 9999 >/dev/null 2>&1; then
        echo "nc did not see the refusal"
        return 1
    fi
    echo x | in_ns timeout 10 nc -v -u -w1 192.0.2.2 7 >/dev/null 2>&1
}

closed_port_refused_to_python() {
    in_ns timeout 10 python3 - <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect(("192.0.2.2", 9999))
s.send(b"anyone?")
try:
    s.recv(100)
except ConnectionRefusedError:
    sys.exit(0)
print("no ECONNREFUSED")
sys.exit(1)
PY
}

big_datagram_echoed() {
    head -c 3000 /dev/urandom >"$WORK/payload"
    in_ns timeout 10 nc -u -w1 192.0.2.2 7 <"$WORK/payload" >"$WORK/echoed"
    cmp "$WORK/payload" "$WORK/echoed"
}

fragments_seen_both_ways() {
    local out
    out=$(tcpdump -n -v -r "$WORK/run.pcap" 2>/dev/null)
    # The kernel's 3000-byte datagram and the stack's echo both went as fragments.
    grep -qE "192.0.2.1 > 192.0.2.2: ip-proto-17|192.0.2.1.[0-9]+ > 192.0.2.2.7: UDP, length 3000" <<<"$out" &&
        grep -q "offset 1480, flags \[+\]" <<<"$out" &&
        grep -qE "192.0.2.2.7 > 192.0.2.1.[0-9]+: UDP, length 3000" <<<"$out" || { echo "$out" | tail -20; return 1; }
}

check "ping -s 0 gets 3 replies" ping_size 0
check "ping -s 56 gets 3 replies" ping_size 56
check "ping -s 1472 (a full frame) gets 3 replies" ping_size 1472
check "ping -s 4000 (fragmented both ways) gets 3 replies" ping_size 4000
check "nc -u to a closed port sees the refusal" closed_port_refused_by_nc
check "a connected Python socket gets ECONNREFUSED from a closed port" closed_port_refused_to_python
check "a 3000-byte datagram is reassembled and echoed byte for byte" big_datagram_echoed
stop_stack TERM
check "the capture shows the datagram and its echo fragmented" fragments_seen_both_ways
check "tcpdump and tshark read the capture with no malformed frame" capture_is_clean "$WORK/run.pcap"
finish
