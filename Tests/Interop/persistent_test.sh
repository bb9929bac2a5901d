#!/usr/bin/env bash
# A persistent device created beforehand for an unprivileged user: the stack
# attaches to it without root, serves ping, and leaves the device in place.
source "$(dirname "$0")/lib.sh"

ip -n "$NS" tuntap add "$TAP" mode tap user nobody
ip -n "$NS" link set "$TAP" up
ip -n "$NS" addr add 192.0.2.1/24 dev "$TAP"
# Unprivileged: a plain user (nobody) with no capabilities. /dev/net/tun is
# 0666 on a standard system; where it is not (some containers), a private
# mount namespace gets its own 0666 node for the same device, leaving the
# host's alone.
if [ "$(stat -c %a /dev/net/tun)" = 666 ]; then
    launch ip netns exec "$NS" setpriv --reuid=nobody --regid=nogroup --clear-groups --inh-caps=-all \
        "$BIN" run --interface "$TAP"
else
    launch ip netns exec "$NS" unshare --mount sh -c \
        "mount -t tmpfs -o mode=755 none /dev/net && mknod -m 666 /dev/net/tun c 10 200 &&
         exec setpriv --reuid=nobody --regid=nogroup --clear-groups --inh-caps=-all $BIN run --interface $TAP"
fi

started() {
    for _ in $(seq 50); do
        grep -q "tapstack up on $TAP (persistent)" "$WORK/stack.err" && return 0
        kill -0 "$STACK_PID" 2>/dev/null || break
        sleep 0.1
    done
    cat "$WORK/stack.err"
    return 1
}

runs_as_nobody() {
    [ "$(ps -o user= -p "$STACK_PID")" = nobody ]
}

ping_works() {
    in_ns timeout 10 ping -c 2 -i 0.2 -W 2 192.0.2.2 | grep -q "2 received"
}

stops_and_keeps_device() {
    stop_stack TERM
    [ "$STACK_STATUS" = 0 ] || { echo "exit status $STACK_STATUS"; return 1; }
    ip -n "$NS" link show "$TAP" >/dev/null
}

check "attaches to the persistent device without root" started
check "runs as an unprivileged user" runs_as_nobody
check "answers ping" ping_works
check "SIGTERM exits 0 and the persistent device stays" stops_and_keeps_device
finish
