# Shared helpers for the interop tests. Each test script sources this file,
# gets its own network namespace (removed on exit, also on failure), and
# reports checks with `check NAME CMD...`. Nothing leaves the namespace.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${TAPSTACK_BIN:-$ROOT/.build/debug/tapstack}
TEST_NAME=$(basename "$0" .sh)
NS="tst-${TEST_NAME%_test}-$$"
NS=${NS:0:30}
TAP=tap0
WORK=$(mktemp -d "/tmp/tapstack-$TEST_NAME.XXXXXX")
STACK_PID=""
PASSED=0
FAILED=0

if [ "$(id -u)" -ne 0 ]; then
    if [ "${CI:-}" = "true" ]; then
        echo "FAIL $TEST_NAME: interop tests need root (namespaces, TAP devices), and CI=true forbids skipping"
        echo "0 passed, 1 failed"
        exit 1
    fi
    echo "SKIP $TEST_NAME: needs root to create network namespaces and TAP devices"
    exit 77
fi

cleanup() {
    if [ -n "$STACK_PID" ] && kill -0 "$STACK_PID" 2>/dev/null; then
        kill -TERM "$STACK_PID" 2>/dev/null
        for _ in $(seq 30); do kill -0 "$STACK_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$STACK_PID" 2>/dev/null
    fi
    # Kill anything we started inside the namespace, by PID.
    for pid in $(ip netns pids "$NS" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    ip netns del "$NS" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
trap "exit 143" INT TERM   # so a killed test still removes its namespace

ip netns add "$NS"
ip -n "$NS" link set lo up

# in_ns CMD...: runs CMD inside the test's namespace.
in_ns() { ip netns exec "$NS" "$@"; }

# launch CMD...: starts CMD in the background, recording its PID in
# STACK_PID and, when it ends, its exit status in $WORK/status (so checks,
# which run in subshells, can still learn how it ended).
launch() {
    rm -f "$WORK/pid" "$WORK/status"
    (
        "$@" >"$WORK/stack.out" 2>"$WORK/stack.err" &
        echo $! >"$WORK/pid"
        wait $!
        echo $? >"$WORK/status"
    ) </dev/null >/dev/null 2>&1 &   # holds no caller's pipe: $(launch ...) returns
    for _ in $(seq 50); do [ -s "$WORK/pid" ] && break; sleep 0.02; done
    STACK_PID=$(cat "$WORK/pid")
}

# start_stack [ARGS...]: starts `tapstack run` in the namespace and brings the kernel side up.
start_stack() {
    launch ip netns exec "$NS" "$BIN" run --interface "$TAP" --address 192.0.2.2/24 --mac 02:00:00:00:00:02 "$@"
    wait_for_tap || { echo "stack did not create $TAP:"; cat "$WORK/stack.err"; return 1; }
    ip -n "$NS" link set "$TAP" up
    # replace, not add: a persistent device keeps its address across stacks.
    ip -n "$NS" addr replace 192.0.2.1/24 dev "$TAP"
}

wait_for_tap() {
    for _ in $(seq 100); do
        ip -n "$NS" link show "$TAP" >/dev/null 2>&1 && return 0
        kill -0 "$STACK_PID" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# stop_stack [SIGNAL]: signals the stack and waits (at most 5 s); sets STACK_STATUS.
stop_stack() {
    local sig=${1:-TERM}
    kill -"$sig" "$STACK_PID"
    for _ in $(seq 50); do kill -0 "$STACK_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$STACK_PID" 2>/dev/null; then
        STACK_STATUS=hung
        kill -KILL "$STACK_PID"
    else
        for _ in $(seq 50); do [ -s "$WORK/status" ] && break; sleep 0.02; done
        STACK_STATUS=$(cat "$WORK/status" 2>/dev/null || echo unknown)
    fi
}

# check NAME CMD...: runs CMD, reports PASS or FAIL with its output.
check() {
    local name=$1
    shift
    local output
    if output=$("$@" 2>&1); then
        echo "PASS $TEST_NAME: $name"
        [ -n "${VERBOSE:-}" ] && [ -n "$output" ] && printf '%s\n' "$output" | sed 's/^/    /' | head -n 30
        PASSED=$((PASSED + 1))
    else
        echo "FAIL $TEST_NAME: $name"
        printf '%s\n' "$output" | sed 's/^/    /' | head -n 30
        FAILED=$((FAILED + 1))
    fi
}

# capture_is_clean FILE: tcpdump and tshark both read the capture, and
# tshark finds no malformed or otherwise flagged frame in it. What UDP
# carries is shown as data: the dissectors tshark would give a UDP payload
# (by port or by heuristic) are off, as a test's payload on a port some
# application protocol owns (47000 is HCrt's) is not that protocol's, and
# its dissector would flag it as malformed. The layers the stack writes
# stay checked.
capture_is_clean() {
    local file=$1 out name
    local -a above_udp=()
    out=$(tcpdump -n -r "$file" 2>&1 >/dev/null) || { echo "tcpdump: $out"; return 1; }
    for name in $( (tshark -G decodes 2>/dev/null | awk -F'\t' '$1 == "udp.port" {print $3}'
                    tshark -G heuristic-decodes 2>/dev/null | awk -F'\t' '$1 == "udp" {print $2}') | sort -u); do
        case $name in eth|ethertype|arp|ip|ipv6|icmp|icmpv6|igmp|udp|data|frame) ;; *) above_udp+=(--disable-protocol "$name") ;; esac
    done
    out=$(tshark -n -r "$file" -V "${above_udp[@]}" 2>&1) || { echo "tshark failed: $(tail -n 3 <<<"$out")"; return 1; }
    if grep -qiE "malformed|\[expert info \((error|warning)" <<<"$out"; then
        grep -iE -B20 "malformed|\[expert info \((error|warning)" <<<"$out" | head -n 40
        return 1
    fi
    echo "$(tshark -n -r "$file" 2>/dev/null | wc -l) frames, none malformed"
}

# start_kernel_echo PORT: a UDP echo on the kernel side (192.0.2.1:PORT, no
# shim), started with ip netns exec itself so that cleanup finds it in the
# namespace and kills it by PID.
start_kernel_echo() {
    ip netns exec "$NS" python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("192.0.2.1", int(sys.argv[1])))
while True:
    data, peer = s.recvfrom(65535)
    s.sendto(data, peer)
' "$1" &
    disown
}

# wait_for CMD...: runs CMD until it succeeds, at most 10 s (every 20 ms).
# For a condition another process reaches on its own schedule.
wait_for() {
    local deadline=$((SECONDS + 10))
    until "$@"; do
        [ "$SECONDS" -ge "$deadline" ] && return 1
        sleep 0.02
    done
}

# kernel_udp_bound PORT: a kernel socket in the namespace is bound to PORT.
kernel_udp_bound() { in_ns ss -Hnul "sport = :$1" | grep -q .; }

# stack_counter NAME: the stack's counter NAME, freshly printed (SIGUSR1
# makes it print them all; this waits for that print to appear).
stack_counter() {
    local before
    before=$(grep -c "^$1 " "$WORK/stack.err")
    kill -USR1 "$STACK_PID"
    wait_for bash -c "[ \$(grep -c '^$1 ' '$WORK/stack.err') -gt $before ]" || return 1
    sed -n "s/^$1 //p" "$WORK/stack.err" | tail -n 1
}

finish() {
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ]
}
