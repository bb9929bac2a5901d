#!/usr/bin/env bash
# Both ways the driver moves frames (--link-io io_uring and syscalls) carry
# ping, a burst of echoes and a large datagram over the real TAP device, and
# the counters show which one ran.
source "$(dirname "$0")/lib.sh"

burst_echoed() {
    # 2000 datagrams, 16 in flight; every one must come back byte for byte.
    in_ns timeout 30 python3 - <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.connect(("192.0.2.2", 7))
sent = {}
received = 0
for i in range(2000):
    payload = i.to_bytes(4, "big") * (1 + i % 300)
    sent[i] = payload
    s.send(payload)
    if i >= 15:
        data = s.recv(2048)
        key = int.from_bytes(data[:4], "big")
        if sent.pop(key, None) != data:
            sys.exit(f"echo {key} is wrong or repeated")
        received += 1
while sent:
    data = s.recv(2048)
    key = int.from_bytes(data[:4], "big")
    if sent.pop(key, None) != data:
        sys.exit(f"echo {key} is wrong or repeated")
    received += 1
print(f"{received} of 2000 echoed intact")
PY
}

ping_answers() { in_ns timeout 10 ping -c 3 -i 0.2 -W 2 192.0.2.2 | grep -q "3 received"; }

large_echoed() {
    head -c 1472 /dev/urandom >"$WORK/payload"
    in_ns timeout 10 nc -u -w1 192.0.2.2 7 <"$WORK/payload" >"$WORK/echoed"
    cmp "$WORK/payload" "$WORK/echoed"
}

mode_shown_by_counters() {  # MODE
    local enters
    enters=$(sed -n 's/^link.io_uring_enters //p' "$WORK/stack.err")
    echo "link.io_uring_enters $enters"
    case $1 in
        syscalls) [ "$enters" = 0 ] ;;
        # A kernel that refuses io_uring must be said so at start-up, and then
        # the fallback carried the traffic.
        io_uring) [ "${enters:-0}" -gt 0 ] || grep -q "io_uring unavailable" "$WORK/stack.err" ;;
    esac
}

for mode in io_uring syscalls; do
    start_stack --link-io "$mode" || { echo "FAIL $TEST_NAME: stack did not start ($mode)"; finish; exit 1; }
    check "$mode: ping gets 3 replies" ping_answers
    check "$mode: 2000 echoes with 16 in flight come back intact" burst_echoed
    check "$mode: a 1472-byte datagram is echoed byte for byte" large_echoed
    stop_stack TERM
    check "$mode: the counters show the mode that ran" mode_shown_by_counters "$mode"
    ip -n "$NS" link del "$TAP" 2>/dev/null
done
finish
