#!/usr/bin/env bash
# `make run`: the stack on tap0 inside network namespace `tapstack`, in the
# foreground, with the kernel side of the tap at 192.0.2.1/24 and
# 2001:db8::1/64. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
NS=${NS:-tapstack}
TAP=${TAP:-tap0}
BIN=${TAPSTACK_BIN:-.build/release/tapstack}
ABS_BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

if [ "$(id -u)" -ne 0 ]; then
    echo "make run needs root (it creates a network namespace and a TAP device)." >&2
    exit 1
fi
if ip netns list | grep -qw "^$NS"; then
    echo "network namespace '$NS' already exists: is tapstack already running? (remove it: ip netns del $NS)" >&2
    exit 1
fi

ip netns add "$NS"
cleanup() { ip netns del "$NS" 2>/dev/null || true; }
trap cleanup EXIT
ip -n "$NS" link set lo up

# Bring the kernel side up once the stack has created the device.
(
    for _ in $(seq 100); do
        ip -n "$NS" link show "$TAP" >/dev/null 2>&1 && break
        sleep 0.05
    done
    ip -n "$NS" -6 addr add 2001:db8::1/64 dev "$TAP" nodad
    ip -n "$NS" link set "$TAP" up
    ip -n "$NS" addr add 192.0.2.1/24 dev "$TAP"
    cat >&2 <<TXT

tapstack is up in network namespace '$NS' on $TAP: 192.0.2.2/24 and 2001:db8::2/64 (fe80::ff:fe00:2), MAC 02:00:00:00:00:02.
In another shell:
    ip netns exec $NS ping -c 3 192.0.2.2
    ip netns exec $NS ping -6 -c 3 2001:db8::2
    ip netns exec $NS ping -6 -c 3 -s 4000 fe80::ff:fe00:2%$TAP   # fragmented both ways
    echo hello | ip netns exec $NS nc -u -w1 192.0.2.2 7
    echo hello | ip netns exec $NS nc -6 -u -w1 2001:db8::2 7     # the same echo socket, over IPv6
    ip netns exec $NS nc -u -l 9000             # the kernel listens on 192.0.2.1; then, in a third shell,
    echo hi | ip netns exec $NS $ABS_BIN exec -- nc -u -w1 192.0.2.1 9000   # nc over the stack, from 192.0.2.2
    ip netns exec $NS tcpdump -n -i $TAP
    $ABS_BIN ss                                 # the stack's sockets (like ss -uap)
    $ABS_BIN stats                              # its counters (--json, --prometheus)
    echo hi | $ABS_BIN send 192.0.2.1 9000      # a datagram through the running stack
Press Ctrl-C to stop.

TXT
) &

status=0
ip netns exec "$NS" "$BIN" run --interface "$TAP" --address 192.0.2.2/24 --address6 2001:db8::2/64 --mac 02:00:00:00:00:02 --echo-port 7 "$@" || status=$?
wait
echo "tapstack exited with status $status" >&2
exit $status
