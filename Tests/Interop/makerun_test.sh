#!/usr/bin/env bash
# `make run` as the README shows it: root first, no rebuild when nothing
# changed, nothing but the capture on standard output with --pcap -, and the
# kernel side of its tap without IPv6 chatter.
source "$(dirname "$0")/lib.sh"

RUN_NS="${NS}r"
trap 'kill_run; ip netns del "$RUN_NS" 2>/dev/null; cleanup' EXIT
kill_run() { for pid in $(ip netns pids "$RUN_NS" 2>/dev/null); do kill -TERM "$pid" 2>/dev/null; done; }

# Built once (the tree is what the test runs); the second make finds nothing to do.
make -C "$ROOT" .build/release/tapstack >/dev/null 2>&1

not_root_is_told_first() {
    local out status
    out=$(setpriv --reuid=65534 --regid=65534 --clear-groups make -C "$ROOT" run 2>&1 </dev/null); status=$?
    echo "status $status: $out"
    [ "$status" -ne 0 ] && grep -q "make run needs root" <<<"$out" && ! grep -qiE "swift|compiling|error: " <<<"$out"
}
check "make run as a user says it needs root, before building anything" not_root_is_told_first

pipes_only_the_capture() {
    (cd "$ROOT" && NS="$RUN_NS" make --no-print-directory run ARGS="--pcap - --no-socket" 2>"$WORK/run.err" |
        timeout 20 tcpdump -n -l -r - 2>/dev/null >"$WORK/tcpdump.out") &
    local pipeline=$!
    wait_for ip netns exec "$RUN_NS" ip -4 addr show dev tap0 scope global up 2>/dev/null
    wait_for bash -c "ip netns exec '$RUN_NS' ip -4 addr show dev tap0 | grep -q 192.0.2.1"
    ip netns exec "$RUN_NS" ping -c 2 -i 0.2 -W 2 192.0.2.2 >/dev/null
    local ping=$?
    # The stack's address is usable once its duplicate address detection (a second) is over.
    wait_for bash -c "ip netns exec '$RUN_NS' ping -6 -c 1 -W 1 2001:db8::2 >/dev/null 2>&1"
    ip netns exec "$RUN_NS" ping -6 -c 2 -i 0.2 -W 2 2001:db8::2 >/dev/null
    local ping6=$?
    wait_for bash -c "[ \$(grep -c 'ICMP echo reply' '$WORK/tcpdump.out') -ge 2 ] && grep -q 'ICMP6, echo reply' '$WORK/tcpdump.out'"
    kill_run
    wait "$pipeline"
    cat "$WORK/tcpdump.out" | grep -v "IP6 fe80::.* > ff02::" | head -n 20; tail -n 3 "$WORK/run.err"
    echo "ping status $ping, ping -6 status $ping6"
    [ "$ping" = 0 ] && [ "$ping6" = 0 ] && [ "$(grep -c 'IP 192.0.2.2 > 192.0.2.1: ICMP echo reply' "$WORK/tcpdump.out")" = 2 ] &&
        grep -q "IP6 2001:db8::2 > 2001:db8::1: ICMP6, echo reply" "$WORK/tcpdump.out" &&
        grep -q "ping -6 -c 3 2001:db8::2" "$WORK/run.err" && ! grep -qE "Compiling|Building" "$WORK/run.err"
}
check "make run ARGS=\"--pcap -\" | tcpdump -r - reads the capture; ping and ping -6 answered; nothing was rebuilt" pipes_only_the_capture

finish
