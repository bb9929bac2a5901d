#!/usr/bin/env bash
# SwiftNIO programs on tapstack: NIO's UDP echo server with only the
# bootstrap swapped answers the kernel's nc, through a running stack's
# socket service and on a stack of its own; the NIO client reaches a kernel
# listener from the stack's address.
source "$(dirname "$0")/lib.sh"
BUILD_DIR=$(dirname "$BIN")
SOCK=$WORK/tapstack.sock

start_stack --socket "$SOCK" || { echo "FAIL $TEST_NAME: stack did not start"; finish; exit 1; }
wait_for test -S "$SOCK"

echo_server_through_service() {
    in_ns "$BUILD_DIR/nio-echo-server" --socket "$SOCK" >"$WORK/server.out" 2>&1 &
    local server=$!
    wait_for grep -q "Server started and listening on" "$WORK/server.out" || { cat "$WORK/server.out"; return 1; }
    local out
    out=$(printf 'hello nio\n' | in_ns timeout 10 nc -u -w1 192.0.2.2 9007)
    local ss
    ss=$("$BIN" ss --socket "$SOCK")
    kill -TERM "$server" 2>/dev/null; wait "$server" 2>/dev/null
    cat "$WORK/server.out"; echo "$ss"; echo "nc got: '$out'"
    [ "$out" = "hello nio" ] && grep -qE "0\.0\.0\.0:9007 .*client:\(\(\"nio-echo-server\"" <<<"$ss"
}
check "nio-echo-server --socket answers the kernel's nc -u 192.0.2.2 9007 through the running stack" echo_server_through_service

client_reaches_kernel_listener() {
    in_ns timeout 10 nc -n -u -l -v 192.0.2.1 9100 >"$WORK/listener.out" 2>"$WORK/listener.err" &
    local listener=$!
    wait_for kernel_udp_bound 9100
    printf 'from nio\n' | in_ns timeout 10 "$BUILD_DIR/nio-client" --socket "$SOCK" --wait 0 192.0.2.1 9100
    local status=$?
    wait_for grep -q "from nio" "$WORK/listener.out"
    kill "$listener" 2>/dev/null; wait "$listener" 2>/dev/null
    echo "client status $status; listener: $(cat "$WORK/listener.out") / $(cat "$WORK/listener.err")"
    [ "$status" = 0 ] && [ "$(cat "$WORK/listener.out")" = "from nio" ] && grep -q "Connection received on 192.0.2.2 " "$WORK/listener.err"
}
check "nio-client reaches a kernel listener from 192.0.2.2" client_reaches_kernel_listener

client_hears_refusal() {
    local out
    out=$(printf 'anyone?\n' | in_ns timeout 10 "$BUILD_DIR/nio-client" --socket "$SOCK" --wait 0.5 192.0.2.1 9199 2>&1)
    echo "$out"
    grep -q "error: .*[Cc]onnection refused" <<<"$out"
}
check "nio-client on a connected channel hears the kernel's port unreachable as connection refused" client_hears_refusal
stop_stack TERM

echo_server_in_process() {
    launch ip netns exec "$NS" "$BUILD_DIR/nio-echo-server" --interface "$TAP" --port 9007
    wait_for_tap || { cat "$WORK/stack.err"; return 1; }
    ip -n "$NS" link set "$TAP" up
    ip -n "$NS" addr replace 192.0.2.1/24 dev "$TAP"
    wait_for grep -q "Server started" "$WORK/stack.out"
    local out
    out=$(printf 'in process\n' | in_ns timeout 10 nc -u -w1 192.0.2.2 9007)
    stop_stack TERM
    echo "nc got: '$out'"; cat "$WORK/stack.out" "$WORK/stack.err"
    [ "$out" = "in process" ]
}
check "nio-echo-server --interface runs its own stack and answers nc" echo_server_in_process

usage_and_errors() {
    local out status
    out=$("$BUILD_DIR/nio-echo-server" --help 2>&1); status=$?
    [ "$status" = 0 ] && grep -q "USAGE: nio-echo-server" <<<"$out" || { echo "help: $status $out"; return 1; }
    out=$("$BUILD_DIR/nio-echo-server" --port 0 2>&1); status=$?
    [ "$status" = 64 ] && grep -q "port must be 1 to 65535" <<<"$out" || { echo "port 0: $status $out"; return 1; }
    out=$(in_ns "$BUILD_DIR/nio-echo-server" --socket "$WORK/none.sock" 2>&1); status=$?
    echo "$out"
    [ "$status" -ne 0 ] && grep -q "cannot bind UDP port 9007 on the stack serving $WORK/none.sock" <<<"$out"
}
check "nio-echo-server prints its usage and names a missing service" usage_and_errors
finish
