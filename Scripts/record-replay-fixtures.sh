#!/usr/bin/env bash
# Records the replay regression fixtures (as root, in a namespace of its
# own): a real session's capture (ARP, pings small and fragmented, UDP echo,
# a closed port, malformed frames, incomplete fragments) as NAME.in.pcap, and
# what `tapstack replay` makes of it as NAME.out.pcap. Review the output
# (tcpdump -n -r) before committing new fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${TAPSTACK_BIN:-.build/debug/tapstack}
OUT=Tests/Replay/fixtures
NS="fixtures-$$"
ip netns add "$NS"
trap 'kill $PID 2>/dev/null || true; ip netns del "$NS" 2>/dev/null || true' EXIT
ip -n "$NS" link set lo up
ip netns exec "$NS" "$BIN" run --pcap "$OUT/session.in.pcap" 2>/dev/null &
PID=$!
for _ in $(seq 100); do ip -n "$NS" link show tap0 >/dev/null 2>&1 && break; sleep 0.05; done
ip -n "$NS" link set tap0 up
ip -n "$NS" addr add 192.0.2.1/24 dev tap0
sleep 2.5   # the second gratuitous ARP goes out once the link is up
ip netns exec "$NS" ping -c 2 -i 0.2 192.0.2.2 >/dev/null
ip netns exec "$NS" ping -c 1 -s 4000 192.0.2.2 >/dev/null
echo hello | ip netns exec "$NS" nc -u -w1 192.0.2.2 7 >/dev/null
echo nobody | ip netns exec "$NS" nc -u -w1 192.0.2.2 9999 >/dev/null || true
ip netns exec "$NS" python3 Tests/Interop/flood.py tap0 malformed 40 >/dev/null
ip netns exec "$NS" python3 Tests/Interop/flood.py tap0 fragments 3 >/dev/null
sleep 0.5
kill -TERM $PID
wait $PID
"$BIN" replay "$OUT/session.in.pcap" --out "$OUT/session.out.pcap" --tail 35
echo "recorded $OUT/session.in.pcap and $OUT/session.out.pcap"
