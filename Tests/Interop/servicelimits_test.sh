#!/usr/bin/env bash
# The socket service when the stack process runs out of descriptors: calls
# fail within the reply timeout instead of hanging, the service does not spin
# while it cannot accept, and it serves again once sockets are closed.
source "$(dirname "$0")/lib.sh"

SOCK=$WORK/tapstack.sock
# 64 descriptors in all for the stack process: room for ~20 client sockets.
launch ip netns exec "$NS" prlimit --nofile=64:64 "$BIN" run --interface "$TAP" --address 192.0.2.2/24 \
    --mac 02:00:00:00:00:02 --socket "$SOCK"
wait_for_tap || { echo "FAIL $TEST_NAME: stack did not start"; cat "$WORK/stack.err"; finish; exit 1; }
ip -n "$NS" link set "$TAP" up
ip -n "$NS" addr add 192.0.2.1/24 dev "$TAP"
for _ in $(seq 50); do [ -S "$SOCK" ] && break; sleep 0.05; done
EXEC=("$BIN" exec --socket "$SOCK" --)

start_kernel_echo 9100

exhaustion_fails_calls_then_recovers() {
    # One program opens sockets until one fails; it must fail (not hang).
    in_ns timeout 60 "${EXEC[@]}" python3 - <<'PY'
import socket, sys, time
held = []
start = time.monotonic()
error = None
while len(held) < 200:
    try:
        held.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    except OSError as e:
        error = e
        break
took = time.monotonic() - start
print("opened %d sockets, then: %s after %.1f s" % (len(held), error, took))
assert error is not None, "the descriptor limit never showed"
assert took < 20, "the failing call took too long"
# Sockets already open still work.
s = held[0]
s.settimeout(2)
s.sendto(b"still", ("192.0.2.1", 9100))
assert s.recvfrom(100)[0] == b"still"
for s in held:
    s.close()
time.sleep(0.5)
# Accepting resumed: a new socket opens and echoes.
t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
t.settimeout(2)
t.sendto(b"again", ("192.0.2.1", 9100))
assert t.recvfrom(100)[0] == b"again"
print("served again after the sockets were closed")
PY
}

counted() {
    kill -USR1 "$STACK_PID"; sleep 0.3
    grep -E "^service.refused_no_descriptor [1-9]" "$WORK/stack.err"
}

check "out of descriptors: calls fail in time, open sockets keep working, service recovers" exhaustion_fails_calls_then_recovers
check "the refusals are counted in service.refused_no_descriptor" counted
finish
