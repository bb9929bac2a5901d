#!/usr/bin/env bash
# `make bench`: UDP echo over a TAP device, every target measured by the
# project's load generator (Benchmarks/load) in interleaved rounds, so that
# the drift of a shared machine falls on all of them alike.
#
# All targets run at once, each in a network namespace of its own made here
# (removed afterwards, also on failure). Each round visits every target once,
# starting one further along the list than the round before; a visit runs:
#   - ping-pong, 64 B: one datagram at a time, RTT p50 and p99;
#   - windowed throughput for each SIZE and WINDOW (datagrams in flight);
#   - CPU per echo: the target's CPU time (every thread of its processes,
#     from /proc/PID/task/*/schedstat) per echo at a fixed open-loop RATE,
#     the figure that moves least on a noisy machine.
# and each round ends with the scheduling floor (Benchmarks/wakechain):
# round trips between processes that only wake each other (eventfds, no
# packets), with the 2 wake-ups of an in-process echo's round trip and the
# 4 of one through the socket service, where the scheduler puts them and
# with all of them on CPU 0 (every wake-up a switch on one CPU).
# A busy-polling target is stopped (SIGSTOP) outside its own visits, so that
# its spinning does not take a CPU from the others' measurements.
#
# Targets: reflector (one blocking read() and write() per frame: the floor
#          of a stack doing one system call per frame), reflector-spin (the
#          same, busy-polling), tapstack (tapstack run's echo service),
#          tapstack-service (the echo in another process, EchoOverService,
#          through the socket service; its receives poll adaptively, as a
#          client socket's do by default), tapstack-service-busypoll (the
#          same echo polling a fixed time, TAPSTACK_BUSY_POLL=
#          CLIENT_BUSY_POLL, as a program that sets SO_BUSY_POLL; the stack
#          as tapstack: svcbp/ts), nio (nio-echo-server: SwiftNIO's UDP echo on
#          TapstackNIO, its own stack in-process) and nio-service (the
#          same through the socket service); on request tapstack-syscalls
#          (--link-io syscalls), tapstack-poll (--busy-poll auto: against
#          tapstack, poll/ts), tapstack-service-poll (both sides poll: the
#          stack --busy-poll auto, EchoOverService TAPSTACK_BUSY_POLL=
#          CLIENT_BUSY_POLL; against tapstack-poll, svcpoll/poll) and
#          tapstack-service-channel (EchoOverService with TAPSTACK_RINGS=0:
#          its datagrams on the data channel, not in shared memory) and
#          tapstack-service-sleep (EchoOverService with TAPSTACK_BUSY_POLL=0:
#          its receives sleep at once; svcsl/ts).
# Knobs: ROUNDS (5), SECONDS_PER_TEST (1), PINGPONG_COUNT (5000), SIZES
#        ("64 1400"), WINDOWS ("1 16 64"), RATE (50000), CPU_SECONDS (2),
#        CLIENT_BUSY_POLL (50 microseconds),
#        TARGETS, TAPSTACK_ARGS (extra options for every tapstack target),
#        OUT (results directory).
# Output: per figure and target, the median of the rounds with its min and
# max, and the ratio of medians to the reflector; svc/ts: service to
# in-process; nio/ts and niosvc/svc: SwiftNIO against the native API's echo.
set -uo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
SECS=${SECONDS_PER_TEST:-1}
PP_COUNT=${PINGPONG_COUNT:-5000}
SIZES=${SIZES:-"64 1400"}
WINDOWS=${WINDOWS:-"1 16 64"}
RATE=${RATE:-50000}
CPU_SECS=${CPU_SECONDS:-2}
TARGETS=${TARGETS:-"reflector reflector-spin tapstack tapstack-service tapstack-service-busypoll nio nio-service"}
EXTRA=${TAPSTACK_ARGS:-}
OUT=${OUT:-/tmp/tapstack-bench/$(date +%Y%m%d-%H%M%S)}
BENCH_BIN=.build/bench
TAPSTACK=${TAPSTACK_BIN:-.build/release/tapstack}
RELEASE_DIR=$(dirname "$TAPSTACK")
TAP=btap0
[ "$(id -u)" = 0 ] || { echo "make bench needs root (network namespaces, TAP devices)" >&2; exit 2; }
mkdir -p "$OUT" "$BENCH_BIN"
gcc -O2 -Wall -Wextra -o "$BENCH_BIN/udpecho-load" Benchmarks/load/udpecho-load.c || exit 1
gcc -O2 -Wall -Wextra -o "$BENCH_BIN/tap-reflector" Benchmarks/reflector/tap-reflector.c || exit 1
gcc -O2 -Wall -Wextra -o "$BENCH_BIN/wakechain" Benchmarks/wakechain/wakechain.c || exit 1
RESULTS=$OUT/results.txt
: >"$RESULTS"
read -ra TARGET_LIST <<<"$TARGETS"

declare -a NS PIDS SPINS
cleanup() {
    local i pid
    for i in "${!NS[@]}"; do
        for pid in ${PIDS[$i]:-}; do kill -CONT "$pid" 2>/dev/null; kill -TERM "$pid" 2>/dev/null; done
    done
    sleep 0.3
    for i in "${!NS[@]}"; do
        for pid in ${PIDS[$i]:-}; do kill -KILL "$pid" 2>/dev/null; done
        for pid in $(ip netns pids "${NS[$i]}" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
        ip netns del "${NS[$i]}" 2>/dev/null
    done
    return 0
}
trap 'cleanup; exit 130' INT TERM
trap cleanup EXIT

# start TARGET INDEX: starts the target in namespace NS[INDEX]; sets PIDS[INDEX].
start() {
    local target=$1 i=$2 ns=${NS[$2]} log=$OUT/$1.log pid
    ip netns add "$ns" || return 1
    ip -n "$ns" link set lo up
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    SPINS[$i]=0
    case $target in
        reflector) ip netns exec "$ns" "$BENCH_BIN/tap-reflector" "$TAP" >>"$log" 2>&1 & ;;
        reflector-spin) ip netns exec "$ns" "$BENCH_BIN/tap-reflector" --spin "$TAP" >>"$log" 2>&1 & SPINS[$i]=1 ;;
        tapstack) ip netns exec "$ns" "$TAPSTACK" run --interface "$TAP" --echo-port 7 --no-socket $EXTRA >>"$log" 2>&1 & ;;
        tapstack-syscalls) ip netns exec "$ns" "$TAPSTACK" run --interface "$TAP" --echo-port 7 --no-socket --link-io syscalls $EXTRA >>"$log" 2>&1 & ;;
        tapstack-poll) ip netns exec "$ns" "$TAPSTACK" run --interface "$TAP" --echo-port 7 --no-socket --busy-poll auto $EXTRA >>"$log" 2>&1 & ;;
        nio) ip netns exec "$ns" "$RELEASE_DIR/nio-echo-server" --interface "$TAP" --port 7 >>"$log" 2>&1 & ;;
        tapstack-service-poll) ip netns exec "$ns" "$TAPSTACK" run --interface "$TAP" --echo-port 0 --socket "$OUT/$target.sock" --busy-poll auto $EXTRA >>"$log" 2>&1 & ;;
        tapstack-service|tapstack-service-busypoll|tapstack-service-channel|tapstack-service-sleep|nio-service) ip netns exec "$ns" "$TAPSTACK" run --interface "$TAP" --echo-port 0 --socket "$OUT/$target.sock" $EXTRA >>"$log" 2>&1 & ;;
        *) echo "unknown target $target" >&2; return 1 ;;
    esac
    pid=$!
    PIDS[$i]=$pid
    for _ in $(seq 100); do ip -n "$ns" link show "$TAP" >/dev/null 2>&1 && break; sleep 0.05; done
    ip -n "$ns" link set "$TAP" up || return 1
    ip -n "$ns" addr add 192.0.2.1/24 dev "$TAP"
    if [ "$target" = tapstack-service ] || [ "$target" = tapstack-service-poll ] || [ "$target" = tapstack-service-busypoll ] \
        || [ "$target" = tapstack-service-channel ] || [ "$target" = tapstack-service-sleep ] || [ "$target" = nio-service ]; then
        for _ in $(seq 100); do [ -S "$OUT/$target.sock" ] && break; sleep 0.05; done
        if [ "$target" = tapstack-service ]; then  # the default poll, whatever the caller exported
            TAPSTACK_BUSY_POLL=auto ip netns exec "$ns" "$RELEASE_DIR/EchoOverService" "$OUT/$target.sock" 7 >>"$log.client" 2>&1 &
        elif [ "$target" = tapstack-service-sleep ]; then
            TAPSTACK_BUSY_POLL=0 ip netns exec "$ns" "$RELEASE_DIR/EchoOverService" "$OUT/$target.sock" 7 >>"$log.client" 2>&1 &
        elif [ "$target" = tapstack-service-poll ] || [ "$target" = tapstack-service-busypoll ]; then
            TAPSTACK_BUSY_POLL=${CLIENT_BUSY_POLL:-50} ip netns exec "$ns" "$RELEASE_DIR/EchoOverService" "$OUT/$target.sock" 7 >>"$log.client" 2>&1 &
        elif [ "$target" = tapstack-service-channel ]; then
            # The same echo with its datagrams on the data channel (no shared-memory rings).
            TAPSTACK_RINGS=0 ip netns exec "$ns" "$RELEASE_DIR/EchoOverService" "$OUT/$target.sock" 7 >>"$log.client" 2>&1 &
        else
            ip netns exec "$ns" "$RELEASE_DIR/nio-echo-server" --socket "$OUT/$target.sock" --port 7 >>"$log.client" 2>&1 &
        fi
        PIDS[$i]="$pid $!"
    fi
    for _ in $(seq 50); do
        ip netns exec "$ns" ping -c 1 -W 1 192.0.2.2 >/dev/null 2>&1 && break
    done
    local probe
    for _ in $(seq 50); do
        probe=$(echo bench-probe | timeout 2 ip netns exec "$ns" nc -u -w 1 192.0.2.2 7 2>/dev/null)
        [ "$probe" = bench-probe ] && break
    done
    [ "$probe" = bench-probe ] || { echo "$target does not echo: $(tail -n 5 "$log" "$log.client" 2>/dev/null)" >&2; return 1; }
    [ "${SPINS[$i]}" = 1 ] && kill -STOP $pid
    return 0
}

# cpu_ns INDEX: CPU time so far of every thread of the target's processes, in ns.
cpu_ns() {
    local pid total=0 f
    for pid in ${PIDS[$1]}; do
        for f in /proc/"$pid"/task/*/schedstat; do
            [ -r "$f" ] && total=$((total + $(cut -d' ' -f1 "$f")))
        done
    done
    echo "$total"
}

load() { local ns=$1; shift; timeout -k 2 60 ip netns exec "$ns" "$BENCH_BIN/udpecho-load" "$@"; }
kv() { tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p"; }
record() { echo "$1 $2 $3" >>"$RESULTS"; }

for i in "${!TARGET_LIST[@]}"; do
    NS[$i]="bench-$$-$i"
    start "${TARGET_LIST[$i]}" "$i" || { echo "${TARGET_LIST[$i]} did not start" >&2; exit 1; }
done

for round in $(seq "$ROUNDS"); do
    for k in "${!TARGET_LIST[@]}"; do
        i=$(( (k + round - 1) % ${#TARGET_LIST[@]} ))
        target=${TARGET_LIST[$i]} ns=${NS[$i]}
        echo "round $round/$ROUNDS: $target" >&2
        [ "${SPINS[$i]}" = 1 ] && kill -CONT ${PIDS[$i]}
        line=$(load "$ns" pingpong 192.0.2.2 7 64 "$PP_COUNT" $((SECS * 5)))
        echo "$target $line" >>"$OUT/raw.txt"
        record "$target" pp64_p50_us "$(kv p50_us "$line")"
        record "$target" pp64_p99_us "$(kv p99_us "$line")"
        for size in $SIZES; do
            for w in $WINDOWS; do
                line=$(load "$ns" window 192.0.2.2 7 "$size" "$w" "$SECS")
                echo "$target $line" >>"$OUT/raw.txt"
                record "$target" "tput_${size}B_W${w}_pps" "$(kv pps "$line")"
                [ "$(kv bad "$line")" = 0 ] || echo "WARNING: $target returned corrupt echoes: $line" >&2
            done
        done
        before=$(cpu_ns "$i")
        line=$(load "$ns" rate 192.0.2.2 7 64 "$RATE" "$CPU_SECS")
        after=$(cpu_ns "$i")
        echo "$target $line" >>"$OUT/raw.txt"
        ok=$(kv ok "$line")
        [ "${ok:-0}" -gt 0 ] && record "$target" "cpu_us_per_echo_${RATE}pps" \
            "$(python3 -c "print(f'{($after - $before) / 1000 / $ok:.3f}')")"
        [ "${SPINS[$i]}" = 1 ] && kill -STOP ${PIDS[$i]}
    done
    for hops in 2 4; do
        line=$(timeout -k 2 60 "$BENCH_BIN/wakechain" "$hops" "$PP_COUNT")
        echo "wakechain-$hops $line" >>"$OUT/raw.txt"
        record "wakechain-$hops" p50_us "$(kv p50_us "$line")"
        line=$(timeout -k 2 60 taskset -c 0 "$BENCH_BIN/wakechain" "$hops" "$PP_COUNT")
        echo "wakechain-$hops-cpu0 $line" >>"$OUT/raw.txt"
        record "wakechain-$hops-cpu0" p50_us "$(kv p50_us "$line")"
    done
done

python3 - "$RESULTS" "$ROUNDS" "${TARGET_LIST[@]}" <<'PY' | tee "$OUT/summary.txt"
import collections, os, platform, statistics, sys
values = collections.defaultdict(list)
for line in open(sys.argv[1]):
    parts = line.split()
    if len(parts) == 3 and parts[2]:
        values[(parts[0], parts[1])].append(float(parts[2]))
targets = [t for t in sys.argv[3:] if any(k[0] == t for k in values)]
base = "reflector" if "reflector" in targets else targets[0]
others = [t for t in targets if t != base]
metrics = sorted({m for t, m in values if t in targets}, key=lambda m: (not m.startswith("pp"), not m.startswith("tput"), m))
print(f"UDP echo over a TAP device: median [min-max] of {sys.argv[2]} interleaved rounds "
      f"({platform.machine()}, {os.cpu_count()} CPUs); ratios are of medians, to {base}")
short = {"reflector": "refl", "reflector-spin": "spin", "tapstack": "ts", "tapstack-service": "svc", "tapstack-service-channel": "chan",
         "tapstack-syscalls": "sys", "tapstack-poll": "poll", "tapstack-service-poll": "svcpoll", "tapstack-service-busypoll": "svcbp", "tapstack-service-sleep": "svcsl", "nio": "nio", "nio-service": "niosvc"}
# Each pair: the first against the second (SwiftNIO on tapstack against the native API's echo, same place).
pairs = [(a, b) for a, b in (("tapstack-service", "tapstack"), ("tapstack-service-channel", "tapstack"), ("tapstack-poll", "tapstack"),
                             ("tapstack-service-poll", "tapstack-poll"), ("tapstack-service-busypoll", "tapstack"), ("tapstack-service-sleep", "tapstack"),
                             ("nio", "tapstack"), ("nio-service", "tapstack-service"))
         if a in targets and b in targets]
head = f"{'metric':<26}" + "".join(f"{t:>30}" for t in targets) + "".join(f"{short.get(t, t[:5]) + '/' + short.get(base, 'base'):>13}" for t in others)
print(head + "".join(f"{short[a] + '/' + short[b]:>13}" for a, b in pairs))
def cell(v):
    return f"{statistics.median(v):.1f} [{min(v):.1f}-{max(v):.1f}]" if v else "-"
for m in metrics:
    row = f"{m:<26}" + "".join(f"{cell(values.get((t, m))):>30}" for t in targets)
    med = {t: statistics.median(values[(t, m)]) for t in targets if values.get((t, m))}
    row += "".join(f"{med[t] / med[base]:>12.2f}x" if base in med and t in med and med[base] else f"{'-':>13}" for t in others)
    for a, b in pairs:
        row += f"{med[a] / med[b]:>12.2f}x" if a in med and b in med and med[b] else f"{'-':>13}"
    print(row)
print("(pp: latency in us, lower is better; tput: echoes per second, higher is better;")
print(" cpu: the target's CPU time per echo in us at a fixed rate, lower is better)")
chains = {k: values.get((f"wakechain-{k}", "p50_us")) for k in ("2", "4", "2-cpu0", "4-cpu0")}
if all(chains.values()):
    extra = statistics.median(chains["4-cpu0"]) - statistics.median(chains["2-cpu0"])
    print("scheduling floor: round trips between processes that only wake each other, p50 us, with the 2 wake-ups of an")
    print(f" in-process echo's and the 4 of one through the socket service: {cell(chains['2'])} and {cell(chains['4'])}"
          f" where the scheduler puts them, {cell(chains['2-cpu0'])} and {cell(chains['4-cpu0'])} all on CPU 0;")
    print(f" so with every wake-up a switch on one CPU a service round trip pays {extra:.1f} us more, before any work")
PY
echo "raw results in $OUT" >&2
