#!/usr/bin/env bash
# `make bench`: UDP echo over a TAP device, tapstack against a minimal TAP
# reflector (the physical limit of one read and one write per frame), measured
# by the project's own load generator in the same run, several rounds,
# alternating. Prints the medians and the ratios to the reflector (and of
# the echo through the socket service to the in-process echo).
# Everything runs in a network namespace made here and removed afterwards.
#
# Targets: reflector; tapstack (default driver: io_uring batches);
#          tapstack-syscalls (--link-io syscalls: one read/write per frame);
#          tapstack-service (the echo in another process, EchoOverService,
#          through the socket service with TapstackClient);
#          optional: tapstack-stack-thread (every frame through the stack
#          thread, no busy polling: the design before the driver thread
#          handled frames itself, for comparison).
# Knobs: ROUNDS (3), SECONDS_PER_TEST (2), PINGPONG_COUNT (20000),
#        SIZES ("64 1400"), WINDOWS ("1 16 64"), TARGETS, OUT (results directory).
set -uo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
SECS=${SECONDS_PER_TEST:-2}
PP_COUNT=${PINGPONG_COUNT:-20000}
SIZES=${SIZES:-"64 1400"}
WINDOWS=${WINDOWS:-"1 16 64"}
TARGETS=${TARGETS:-"reflector tapstack tapstack-syscalls tapstack-service"}
OUT=${OUT:-/tmp/tapstack-bench/$(date +%Y%m%d-%H%M%S)}
BENCH_BIN=.build/bench
TAPSTACK=${TAPSTACK_BIN:-.build/release/tapstack}
ECHO_CLIENT=${ECHO_CLIENT_BIN:-$(dirname "$TAPSTACK")/EchoOverService}
NS="bench-$$"
TAP=btap0
[ "$(id -u)" = 0 ] || { echo "make bench needs root (network namespace, TAP device)" >&2; exit 2; }
mkdir -p "$OUT" "$BENCH_BIN"
gcc -O2 -Wall -Wextra -o "$BENCH_BIN/udpecho-load" Benchmarks/load/udpecho-load.c
gcc -O2 -Wall -Wextra -o "$BENCH_BIN/tap-reflector" Benchmarks/reflector/tap-reflector.c
RESULTS=$OUT/results.txt
: >"$RESULTS"

SERVER_PID=""
CLIENT_PID=""
cleanup() {
    if [ -n "$CLIENT_PID" ]; then
        kill -TERM "$CLIENT_PID" 2>/dev/null
        wait "$CLIENT_PID" 2>/dev/null
        CLIENT_PID=""
    fi
    if [ -n "$SERVER_PID" ]; then
        kill -TERM "$SERVER_PID" 2>/dev/null
        for _ in $(seq 30); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null
        SERVER_PID=""
    fi
    for pid in $(ip netns pids "$NS" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    ip netns del "$NS" 2>/dev/null
    return 0
}
trap 'cleanup; exit 130' INT TERM
trap cleanup EXIT

start_target() {  # reflector|tapstack|tapstack-syscalls|tapstack-service|tapstack-stack-thread
    ip netns add "$NS"
    ip -n "$NS" link set lo up
    ip netns exec "$NS" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    case $1 in
        reflector) ip netns exec "$NS" "$BENCH_BIN/tap-reflector" "$TAP" >>"$OUT/server.log" 2>&1 & ;;
        tapstack) ip netns exec "$NS" "$TAPSTACK" run --interface "$TAP" --echo-port 7 >>"$OUT/server.log" 2>&1 & ;;
        tapstack-syscalls) ip netns exec "$NS" "$TAPSTACK" run --interface "$TAP" --echo-port 7 --link-io syscalls >>"$OUT/server.log" 2>&1 & ;;
        tapstack-stack-thread) ip netns exec "$NS" env TAPSTACK_LINK_THREAD_HANDOVER=0 TAPSTACK_BUSY_POLL_NS=0 \
            "$TAPSTACK" run --interface "$TAP" --echo-port 7 >>"$OUT/server.log" 2>&1 & ;;
        tapstack-service) ip netns exec "$NS" "$TAPSTACK" run --interface "$TAP" --echo-port 0 --socket "$OUT/service.sock" >>"$OUT/server.log" 2>&1 & ;;
    esac
    SERVER_PID=$!
    if [ "$1" = tapstack-service ]; then
        for _ in $(seq 100); do [ -S "$OUT/service.sock" ] && break; sleep 0.05; done
        : >"$OUT/client.log"
        ip netns exec "$NS" "$ECHO_CLIENT" "$OUT/service.sock" 7 >>"$OUT/client.log" 2>&1 &
        CLIENT_PID=$!
        for _ in $(seq 100); do grep -q echoing "$OUT/client.log" && break; sleep 0.05; done
        grep -q echoing "$OUT/client.log" || { echo "EchoOverService did not start: $(cat "$OUT/client.log")" >&2; return 1; }
    fi
    for _ in $(seq 100); do ip -n "$NS" link show "$TAP" >/dev/null 2>&1 && break; sleep 0.05; done
    ip -n "$NS" link set "$TAP" up
    ip -n "$NS" addr add 192.0.2.1/24 dev "$TAP"
    sleep 0.3
    ip netns exec "$NS" ping -c 2 -i 0.2 -W 1 192.0.2.2 >/dev/null || { echo "$1 does not answer ping" >&2; return 1; }
}

load() { timeout -k 2 $((SECS + 20)) ip netns exec "$NS" "$BENCH_BIN/udpecho-load" "$@"; }
kv() { tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p"; }

read -ra TARGET_LIST <<<"$TARGETS"
for round in $(seq "$ROUNDS"); do
    # Each round starts with the next target, so no target always runs
    # right after the same one (the machine's load drifts over a run).
    for index in "${!TARGET_LIST[@]}"; do
        target=${TARGET_LIST[$(( (index + round - 1) % ${#TARGET_LIST[@]} ))]}
        echo "round $round: $target" >&2
        start_target "$target" || { cleanup; continue; }
        line=$(load pingpong 192.0.2.2 7 64 "$PP_COUNT" "$((SECS * 3))")
        echo "$target $line" >>"$OUT/raw.txt"
        echo "$target pp64_p50_us $(kv p50_us "$line")" >>"$RESULTS"
        echo "$target pp64_p99_us $(kv p99_us "$line")" >>"$RESULTS"
        for size in $SIZES; do
            for w in $WINDOWS; do
                line=$(load window 192.0.2.2 7 "$size" "$w" "$SECS")
                echo "$target $line" >>"$OUT/raw.txt"
                echo "$target tput_${size}B_W${w}_pps $(kv pps "$line")" >>"$RESULTS"
                [ "$(kv bad "$line")" = 0 ] || echo "WARNING: $target returned corrupt echoes: $line" >&2
            done
        done
        cleanup
    done
done

python3 - "$RESULTS" "$ROUNDS" $TARGETS <<'PY' | tee "$OUT/summary.txt"
import statistics, sys, collections, platform, os
values = collections.defaultdict(list)
for line in open(sys.argv[1]):
    target, metric, value = line.split()
    if value:
        values[(target, metric)].append(float(value))
targets = [t for t in sys.argv[3:] if any(k[0] == t for k in values)]
others = [t for t in targets if t != "reflector"]
extra = "tapstack-service" in targets and "tapstack" in targets
metrics = sorted({m for _, m in values}, key=lambda m: (not m.startswith("pp"), m))
print("UDP echo over a TAP device, medians of %s rounds (%s, %d cores); ratio = target / reflector" % (sys.argv[2], platform.machine(), os.cpu_count()))
labels = {"tapstack": "ts/refl", "tapstack-syscalls": "sys/refl", "tapstack-service": "svc/refl",
          "tapstack-stack-thread": "st/refl"}
print("%-20s" % "metric" + "".join("%22s" % t for t in targets) + "".join("%10s" % labels.get(t, t[:9]) for t in others)
      + ("%10s" % "svc/ts" if extra else ""))
for metric in metrics:
    medians = {t: statistics.median(values[(t, metric)]) for t in targets if values.get((t, metric))}
    row = "%-20s" % metric + "".join("%22s" % ("%.1f" % medians[t] if t in medians else "-") for t in targets)
    r = medians.get("reflector")
    row += "".join("%9.2fx" % (medians[t] / r) if r and t in medians else "%10s" % "-" for t in others)
    if extra:
        row += "%9.2fx" % (medians["tapstack-service"] / medians["tapstack"]) if medians.get("tapstack") and "tapstack-service" in medians else "%10s" % "-"
    print(row)
print("(latency: lower is better, ratio <= 1.5 wanted; throughput: higher is better, ratio >= 0.8 wanted;")
print(" svc/ts: the echo in another process through the socket service against the in-process echo)")
PY
echo "raw results in $OUT" >&2
