#!/usr/bin/env bash
# dig and host (bind9-dnsutils, libuv inside) under tapstack exec: libuv
# sends with a raw sendmmsg system call the preload shim never sees, on a
# connected socket, and reads with a raw recvmmsg; the data channel carries
# bare payloads for connected sockets, so the query reaches the wire and the
# answer reaches dig. The kernel side answers: dnsmasq bound to 192.0.2.1.
source "$(dirname "$0")/lib.sh"
command -v dnsmasq >/dev/null || apt-get install -y -q dnsmasq-base >/dev/null 2>&1   # as CI does
command -v dig >/dev/null || { echo "FAIL $TEST_NAME: dig is not installed (bind9-dnsutils; .ci/run installs it)"; finish; exit 1; }
command -v dnsmasq >/dev/null || { echo "FAIL $TEST_NAME: dnsmasq is not installed (dnsmasq-base; .ci/run installs it)"; finish; exit 1; }

SOCK=$WORK/tapstack.sock
start_stack --socket "$SOCK" --pcap "$WORK/run.pcap" || { echo "FAIL $TEST_NAME: stack did not start"; finish; exit 1; }
wait_for test -S "$SOCK"
in_ns dnsmasq --no-daemon --port=53 --listen-address=192.0.2.1 --bind-interfaces --no-resolv --no-hosts --pid-file= \
    --user=root --address=/printer.test/192.0.2.77 --log-queries --log-facility=- >"$WORK/dns.out" 2>&1 &
DNS=$!
wait_for grep -q "started" "$WORK/dns.out" || { echo "FAIL $TEST_NAME: dnsmasq did not start"; cat "$WORK/dns.out"; finish; exit 1; }
EXEC=("$BIN" exec --socket "$SOCK" --)

dig_resolves() {
    local out
    out=$(in_ns timeout 20 "${EXEC[@]}" dig +tries=1 +time=3 +short @192.0.2.1 printer.test 2>&1)
    echo "dig: $out"; cat "$WORK/dns.out"
    [ "$out" = 192.0.2.77 ] && grep -q "query\[A\] printer.test from 192.0.2.2" "$WORK/dns.out"
}
check "dig @192.0.2.1 under exec resolves through the stack (its query from 192.0.2.2)" dig_resolves

host_resolves() {
    local out
    out=$(in_ns timeout 20 "${EXEC[@]}" host -W 3 -t A printer.test 192.0.2.1 2>&1)
    echo "$out"
    grep -q "printer.test has address 192.0.2.77" <<<"$out"
}
check "host under exec resolves through the stack" host_resolves

query_on_the_wire() {
    local out
    out=$(tcpdump -n -r "$WORK/run.pcap" udp port 53 2>/dev/null)
    echo "$out"
    grep -qE "192\.0\.2\.2\.[0-9]+ > 192\.0\.2\.1\.53: .*A\? printer\.test" <<<"$out" &&
        grep -qE "192\.0\.2\.1\.53 > 192\.0\.2\.2\.[0-9]+: .*A 192\.0\.2\.77" <<<"$out"
}
check "the capture shows the query from 192.0.2.2 and the answer" query_on_the_wire

kill "$DNS" 2>/dev/null; wait "$DNS" 2>/dev/null
stop_stack TERM
finish
