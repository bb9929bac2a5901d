#!/usr/bin/env bash
# A running stack seen and used from outside, through its socket service:
# `tapstack ss` lists its sockets with their owners, `tapstack stats` prints
# its counters (text, JSON, Prometheus), and `tapstack send`/`recv` use the
# running stack instead of failing on a busy device.
source "$(dirname "$0")/lib.sh"

SOCK=$WORK/tapstack.sock
start_stack --socket "$SOCK" || { echo "FAIL $TEST_NAME: stack did not start"; finish; exit 1; }
wait_for test -S "$SOCK"
SS=("$BIN" ss --socket "$SOCK")
STATS=("$BIN" stats --socket "$SOCK")

# A program under exec holding a connected socket until told to go.
mkfifo "$WORK/go"
in_ns "$BIN" exec --socket "$SOCK" -- python3 -c '
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5353)); s.connect(("192.0.2.1", 9))
print("ready", os.getpid(), flush=True)
open(sys.argv[1]).read()' "$WORK/go" >"$WORK/holder.out" 2>&1 &
HOLDER=$!
wait_for grep -q ready "$WORK/holder.out"
HOLDER_PID=$(awk '/ready/ {print $2}' "$WORK/holder.out")

ss_lists_echo_and_client() {
    local out
    out=$("${SS[@]}") || return 1
    echo "$out"
    # The echo socket is dual-stack: `*:7`, as ss shows an AF_INET6 socket bound to [::].
    grep -qE '^UNCONN +0 +0 +[0-9]+ +\*:7 +\*:\* .*in-process:\(\("tapstack",pid=[0-9]+' <<<"$out" &&
        grep -qE "^ESTAB .* 0\.0\.0\.0:5353 +192\.0\.2\.1:9 .*client:\(\(\"python3\",pid=$HOLDER_PID," <<<"$out"
}
check "ss lists the echo socket on port 7 (in-process) and the exec'd program's socket with its pid" ss_lists_echo_and_client

ss_listening_only() {
    local out
    out=$("${SS[@]}" -l) || return 1
    echo "$out"
    grep -q '\*:7 ' <<<"$out" && ! grep -q ':5353' <<<"$out"
}
check "ss -l leaves out connected sockets" ss_listening_only

ss_json_counts_a_drop() {
    # A socket under exec that never reads, with the smallest receive buffer.
    in_ns "$BIN" exec --socket "$SOCK" -- python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
s.bind(("0.0.0.0", 7000))
print("ready", flush=True)
open(sys.argv[1]).read()' "$WORK/go2" >"$WORK/sink.out" 2>&1 &
    local sink=$!
    wait_for grep -q ready "$WORK/sink.out"
    in_ns python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(40): s.sendto(b"x" * 200, ("192.0.2.2", 7000))'
    wait_for bash -c "'$BIN' ss --socket '$SOCK' --json | python3 -c 'import json,sys; r=[s for s in json.load(sys.stdin) if s[\"local_port\"]==7000][0]; sys.exit(0 if r[\"received_datagrams\"]+r[\"dropped_datagrams\"]==40 else 1)'"
    local out
    out=$("${SS[@]}" --json) || { echo > "$WORK/go2"; return 1; }
    echo >"$WORK/go2"; wait "$sink"
    echo "$out"
    python3 - "$out" <<'PY'
import json, sys
records = {r["local_port"]: r for r in json.loads(sys.argv[1])}
sink = records[7000]
assert sink["owner"]["kind"] == "client" and sink["owner"]["command"] == "python3", sink
assert sink["receive_buffer_bytes"] == 2048, sink
assert sink["dropped_datagrams"] > 0 and sink["received_datagrams"] + sink["dropped_datagrams"] == 40, sink
# What the stack queued moved on into the client's channel or still waits; either way 200 bytes each.
assert sink["queued_datagrams"] <= sink["received_datagrams"] and sink["queued_bytes"] == 200 * sink["queued_datagrams"], sink
print("received", sink["received_datagrams"], "dropped", sink["dropped_datagrams"])
PY
}
mkfifo "$WORK/go2"
check "ss --json: a socket that never reads shows its queue, its SO_RCVBUF and its drops" ss_json_counts_a_drop

stats_json_has_counters() {
    in_ns ping -c 1 -W 2 192.0.2.2 >/dev/null || return 1
    local out
    out=$("${STATS[@]}" --json) || return 1
    python3 - "$out" <<'PY'
import json, sys
counters = json.loads(sys.argv[1])
for name in ("udp.rx_datagrams", "icmp.rx_echo_requests", "link.rx_frames", "device.tx_dropped", "service.connections"):
    assert name in counters, name
assert counters["udp.rx_datagrams"] >= 40, counters["udp.rx_datagrams"]
assert counters["icmp.rx_echo_requests"] >= 1
print(len(counters), "counters; udp.rx_datagrams", counters["udp.rx_datagrams"])
PY
}
check "stats --json is one JSON object holding udp.rx_datagrams and the link, device and service counters" stats_json_has_counters

stats_text_matches_json() {
    local text
    text=$("${STATS[@]}") || return 1
    grep -qE '^udp\.rx_datagrams [0-9]+$' <<<"$text" && grep -qE '^ethernet\.rx_frames [0-9]+$' <<<"$text"
}
check "stats prints name value lines" stats_text_matches_json

prometheus_parses() {
    local out
    out=$("${STATS[@]}" --prometheus) || return 1
    printf '%s\n' "$out" > "$WORK/metrics.prom"
    if command -v promtool >/dev/null; then
        promtool check metrics < "$WORK/metrics.prom" || return 1
    fi
    # The Prometheus project's Python client parses it (Debian's python3-prometheus-client).
    /usr/bin/python3 - "$WORK/metrics.prom" <<'PY'
import sys
from prometheus_client.parser import text_string_to_metric_families
families = list(text_string_to_metric_families(open(sys.argv[1]).read()))
by_name = {f.name: f for f in families}
udp = by_name["tapstack_udp_rx_datagrams"]
assert udp.type == "counter", udp.type
sample = udp.samples[0]
assert sample.name == "tapstack_udp_rx_datagrams_total" and sample.labels == {"interface": "tap0"}, sample
assert sample.value >= 40, sample
assert all(f.type == "counter" and f.documentation for f in families)
print(len(families), "counter families parsed; udp.rx_datagrams", sample.value)
PY
}
check "stats --prometheus parses as the Prometheus text format (promtool if present, the Python client's parser)" prometheus_parses

send_through_running_stack() {
    in_ns timeout 10 nc -n -u -l 192.0.2.1 9001 >"$WORK/nc.out" &
    local listener=$!
    wait_for kernel_udp_bound 9001
    local before
    before=$("${STATS[@]}" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["service.tx_datagrams"])')
    printf 'one\ntwo\n' | in_ns "$BIN" send 192.0.2.1 9001 2>"$WORK/send.err"
    local status=$?
    # No --socket: it found the service at the interface's default path only
    # if one is there; here it must be told (the stack serves $SOCK).
    printf 'three\n' | in_ns "$BIN" send --socket "$SOCK" 192.0.2.1 9001 2>>"$WORK/send.err"
    local status2=$?
    wait_for grep -q three "$WORK/nc.out"
    kill "$listener" 2>/dev/null; wait "$listener" 2>/dev/null
    cat "$WORK/send.err"; echo "listener got: $(tr '\n' ' ' <"$WORK/nc.out")"
    local after
    after=$("${STATS[@]}" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["service.tx_datagrams"])')
    echo "status $status (own stack on the busy tap0), $status2 (through the service); service.tx_datagrams $before -> $after"
    [ "$status" = 1 ] && grep -q "busy" "$WORK/send.err" && grep -q "no running tapstack serves /run/tapstack/tap0.sock" "$WORK/send.err" &&
        [ "$status2" = 0 ] && [ "$(cat "$WORK/nc.out")" = "three" ] && [ "$after" -eq $((before + 1)) ]
}
check "send with the device busy says no stack serves its default path; with --socket it goes through the running stack" send_through_running_stack

recv_through_running_stack() {
    in_ns timeout 10 "$BIN" recv --socket "$SOCK" --count 1 --show-source 6000 >"$WORK/recv.out" 2>"$WORK/recv.err" &
    local receiver=$!
    wait_for bash -c "'$BIN' ss --socket '$SOCK' | grep -q '0.0.0.0:6000 '"
    echo "over the tap" | in_ns nc -u -w1 -p 40000 192.0.2.2 6000
    wait "$receiver"
    local status=$?
    cat "$WORK/recv.err"
    echo "status $status: $(cat "$WORK/recv.out")"
    [ "$status" = 0 ] && [ "$(cat "$WORK/recv.out")" = "192.0.2.1:40000 over the tap" ]
}
check "recv --socket binds on the running stack and prints what the kernel side sent" recv_through_running_stack

missing_service_is_named() {
    local out status
    out=$("$BIN" ss --socket "$WORK/nothing.sock" 2>&1); status=$?
    echo "$out"
    [ "$status" = 1 ] && grep -q "no tapstack serves $WORK/nothing.sock" <<<"$out"
}
check "ss without a running stack says so in one line" missing_service_is_named

echo >"$WORK/go"
wait "$HOLDER"
stop_stack TERM
finish
