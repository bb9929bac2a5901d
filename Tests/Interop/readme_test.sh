#!/usr/bin/env bash
# The README as a newcomer follows it: `make run`'s stack (Scripts/run.sh,
# with a pcapng capture as the README's debugging section starts it), then
# every console block of the README run in its namespace, the output
# compared line for line with what the README shows.
source "$(dirname "$0")/lib.sh"

RUN_NS="${NS}r"
SOCK=$WORK/tapstack.sock
trap 'for pid in $(ip netns pids "$RUN_NS" 2>/dev/null); do kill -TERM "$pid" 2>/dev/null; done; wait; ip netns del "$RUN_NS" 2>/dev/null; cleanup' EXIT
mkdir -p "$WORK/bin" "$WORK/cwd"
ln -s "$BIN" "$WORK/bin/tapstack"
for f in libtapstack-preload.so nio-echo-server nio-client; do ln -s "$(dirname "$BIN")/$f" "$WORK/bin/$f"; done

(cd "$ROOT" && NS="$RUN_NS" TAPSTACK_BIN="$BIN" Scripts/run.sh --pcap "$WORK/run.pcapng" --socket "$SOCK" \
    >"$WORK/run.out" 2>"$WORK/run.err") &
wait_for test -S "$SOCK"
wait_for bash -c "ip netns exec '$RUN_NS' ip -4 addr show dev tap0 | grep -q 192.0.2.1"

readme_blocks_hold() {
    PATH="$WORK/bin:$PATH" TAPSTACK_SOCKET="$SOCK" python3 "$ROOT/Tests/Interop/readme.py" "$ROOT/README.md" \
        "$RUN_NS" "$WORK/cwd" "/tmp/run.pcapng=$WORK/run.pcapng"
}
check "every console block of the README gives the output it shows" readme_blocks_hold

finish
