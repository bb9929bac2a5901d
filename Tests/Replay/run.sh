#!/usr/bin/env bash
# Replay regression: each fixture's capture (NAME.in.pcap, made by
# Scripts/record-replay-fixtures.sh from a real session) replayed into the
# stack core must give NAME.out.pcap byte for byte, and the same bytes twice;
# tcpdump and tshark must read the output cleanly. Needs no root.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${TAPSTACK_BIN:-$ROOT/.build/debug/tapstack}
WORK=$(mktemp -d /tmp/tapstack-replay.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
passed=0
failed=0
result() {  # STATUS NAME [DETAIL]
    if [ "$1" = 0 ]; then
        echo "PASS replay: $2"; passed=$((passed + 1))
    else
        echo "FAIL replay: $2${3:+ -- $3}"; failed=$((failed + 1))
    fi
}
for input in "$ROOT"/Tests/Replay/fixtures/*.in.pcap; do
    name=$(basename "$input" .in.pcap)
    expected="$ROOT/Tests/Replay/fixtures/$name.out.pcap"
    "$BIN" replay "$input" --out "$WORK/$name.1.pcap" --tail 35 2>"$WORK/$name.err"
    result $? "$name replays without error" "$(tail -n 1 "$WORK/$name.err")"
    "$BIN" replay "$input" --out "$WORK/$name.2.pcap" --tail 35 2>/dev/null
    cmp -s "$WORK/$name.1.pcap" "$WORK/$name.2.pcap"
    result $? "$name gives byte-identical output twice"
    cmp -s "$WORK/$name.1.pcap" "$expected"
    result $? "$name output matches the recorded $name.out.pcap" \
        "$(diff <(tcpdump -n -r "$expected" 2>/dev/null) <(tcpdump -n -r "$WORK/$name.1.pcap" 2>/dev/null) | head -n 5)"
    malformed=$(tshark -n -r "$WORK/$name.1.pcap" -V 2>&1 | grep -ciE "malformed|\[expert info \((error|warning)")
    tcpdump -n -r "$WORK/$name.1.pcap" >/dev/null 2>&1 && [ "$malformed" = 0 ]
    result $? "$name output reads cleanly in tcpdump and tshark" "$malformed flagged"
done
echo "replay: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
