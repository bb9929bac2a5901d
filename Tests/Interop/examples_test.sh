#!/usr/bin/env bash
# The three echo servers of Examples/, each run on a real tap and answered
# by the kernel's nc; the README shows the blocking one verbatim and
# docs/SOCKET-API.md all three. Then
# EchoOverService, the echo in its own process through `tapstack run`'s
# socket service.
source "$(dirname "$0")/lib.sh"
BUILD_DIR=$(dirname "$BIN")

example_echoes() {  # NAME
    launch ip netns exec "$NS" "$BUILD_DIR/$1" "$TAP"
    wait_for_tap || { cat "$WORK/stack.err"; return 1; }
    ip -n "$NS" link set "$TAP" up
    ip -n "$NS" addr add 192.0.2.1/24 dev "$TAP"
    local out
    out=$(echo "hello from $1" | in_ns timeout 10 nc -u -w1 192.0.2.2 7)
    kill -TERM "$STACK_PID"
    for _ in $(seq 50); do ip -n "$NS" link show "$TAP" >/dev/null 2>&1 || break; sleep 0.1; done
    [ "$out" = "hello from $1" ] || { echo "got '$out'"; cat "$WORK/stack.err"; return 1; }
}

doc_shows() {  # NAME DOC: every code line of the example appears in DOC
    python3 - "$ROOT/Examples/$1/main.swift" "$ROOT/$2" <<'PY'
import sys
code = [l for l in open(sys.argv[1]).read().splitlines() if l.strip() and not l.startswith("//")]
readme = open(sys.argv[2]).read()
missing = [l for l in code if l not in readme]
print("\n".join("missing: " + l for l in missing))
sys.exit(1 if missing else 0)
PY
}

for example in EchoBlocking EchoCallbacks EchoAsync; do
    check "$example answers nc -u with the same line" example_echoes "$example"
    check "docs/SOCKET-API.md shows $example as built" doc_shows "$example" docs/SOCKET-API.md
done
check "README shows EchoBlocking as built" doc_shows EchoBlocking README.md

echo_over_service() {
    start_stack --echo-port 0 --socket "$WORK/service.sock" || return 1
    for _ in $(seq 50); do [ -S "$WORK/service.sock" ] && break; sleep 0.05; done
    ip netns exec "$NS" "$BUILD_DIR/EchoOverService" "$WORK/service.sock" 7 >"$WORK/client.out" 2>&1 &
    local client=$!
    for _ in $(seq 50); do grep -q echoing "$WORK/client.out" && break; sleep 0.05; done
    local out
    out=$(echo "hello from another process" | in_ns timeout 10 nc -u -w1 192.0.2.2 7)
    kill -TERM "$client"; wait "$client" 2>/dev/null
    stop_stack TERM
    [ "$out" = "hello from another process" ] || { echo "got '$out'"; cat "$WORK/client.out" "$WORK/stack.err"; return 1; }
}
check "EchoOverService (TapstackClient, another process) answers nc -u through the socket service" echo_over_service

# A user's first calls: --help, a mistake, no service. One line, no backtrace.
usage_and_errors() {  # NAME
    local out status
    out=$("$BUILD_DIR/$1" --help 2>&1); status=$?
    [ "$status" = 0 ] && grep -q "^usage: $1 " <<<"$out" || { echo "--help: status $status: $out"; return 1; }
    out=$("$BUILD_DIR/$1" --bogus 2>&1); status=$?
    [ "$status" = 64 ] && grep -q "^$1: unknown option '--bogus'" <<<"$out" || { echo "--bogus: status $status: $out"; return 1; }
    if [ "$1" = EchoOverService ]; then
        out=$(in_ns "$BUILD_DIR/$1" "$WORK/none.sock" 2>&1); status=$?
        [ "$status" = 1 ] && [ "$(wc -l <<<"$out")" = 1 ] && grep -q "no tapstack socket service at $WORK/none.sock" <<<"$out" \
            || { echo "no service: status $status: $out"; return 1; }
        out=$("$BUILD_DIR/$1" "$WORK/none.sock" 0 2>&1); status=$?
        [ "$status" = 64 ] && grep -q "'0' is not a port number" <<<"$out" || { echo "port 0: status $status: $out"; return 1; }
    else
        ip -n "$NS" link add veth7 type veth peer name veth8 2>/dev/null
        out=$(in_ns timeout 10 "$BUILD_DIR/$1" veth7 2>&1); status=$?
        [ "$status" = 1 ] && [ "$(wc -l <<<"$out")" = 1 ] && grep -q "^$1: cannot attach to 'veth7'" <<<"$out" \
            || { echo "veth: status $status: $out"; return 1; }
    fi
}
for example in EchoBlocking EchoCallbacks EchoAsync EchoOverService; do
    check "$example prints its usage, names a mistake and reports a failure in one line" usage_and_errors "$example"
done
finish
