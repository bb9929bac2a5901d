#!/usr/bin/env bash
# Frames the kernel drops on their way to the stack (its queue on the tap
# full while the stack is stopped) show up among the stack's counters as
# device.tx_dropped, equal to what `ip -s link` reports.
source "$(dirname "$0")/lib.sh"

counter() { sed -n "s/^$1 //p" "$WORK/stack.err" | tail -n 1; }

start_stack --no-socket || { echo "FAIL $TEST_NAME: stack did not start"; finish; exit 1; }
in_ns ping -c 1 -W 2 192.0.2.2 >/dev/null   # the kernel knows the stack's MAC: no ARP in the way
kill -STOP "$STACK_PID"
# 3000 datagrams into a queue that holds a few hundred: the rest are dropped.
in_ns python3 - <<'PY'
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(3000):
    try:
        s.sendto(b"x" * 64, ("192.0.2.2", 9))
    except OSError:
        pass
PY
kill -CONT "$STACK_PID"
in_ns ping -c 1 -W 2 192.0.2.2 >/dev/null   # the queue has drained: no more drops
kernel_dropped=$(ip -n "$NS" -s -j link show "$TAP" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["stats64"]["tx"]["dropped"])')
stop_stack TERM
dropped_are_reported() {
    echo "ip -s link: tx dropped $kernel_dropped; stack: device.tx_dropped $(counter device.tx_dropped)"
    [ "$kernel_dropped" -gt 0 ] && [ "$(counter device.tx_dropped)" = "$kernel_dropped" ]
}
check "the kernel's drops toward the stopped stack are in its counters, as ip -s link counts them" dropped_are_reported
check "what the stack sent is counted on the kernel's side too" bash -c "[ \"\$(sed -n 's/^device.rx_packets //p' '$WORK/stack.err' | tail -n 1)\" -ge 2 ]"
finish
