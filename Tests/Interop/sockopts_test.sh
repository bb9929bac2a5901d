#!/usr/bin/env bash
# Socket options and control messages real UDP programs use, under
# tapstack exec: IP_PKTINFO, IP_RECVTTL, IP_RECVTOS and SO_TIMESTAMPNS on
# recvmsg; IP_PKTINFO and IP_TTL on sendmsg; dnsmasq in wildcard mode
# (it needs IP_PKTINFO to learn each query's destination and answer from it).
source "$(dirname "$0")/lib.sh"
# What the test needs, installed as CI does when this machine lacks it.
command -v dnsmasq >/dev/null || command -v /usr/sbin/dnsmasq >/dev/null || apt-get install -y -q dnsmasq-base >/dev/null 2>&1
command -v dnsmasq >/dev/null || { echo "FAIL $TEST_NAME: dnsmasq is not installed (dnsmasq-base; .ci/run installs it)"; finish; exit 1; }
command -v dig >/dev/null || { echo "FAIL $TEST_NAME: dig is not installed (bind9-dnsutils; .ci/run installs it)"; finish; exit 1; }

SOCK=$WORK/tapstack.sock
start_stack --socket "$SOCK" --pcap "$WORK/run.pcap" || { echo "FAIL $TEST_NAME: stack did not start"; finish; exit 1; }
wait_for test -S "$SOCK"
EXEC=("$BIN" exec --socket "$SOCK" --)
IFINDEX=$(in_ns cat /sys/class/net/$TAP/ifindex)

control_messages_both_ways() {
    # Stack side: reads what recvmsg says about the datagram, answers with
    # IP_PKTINFO (source 192.0.2.2) and IP_TTL 7 as control messages.
    in_ns timeout 15 "${EXEC[@]}" python3 - >"$WORK/stackside.out" 2>&1 <<'PY' &
import socket, struct, time
socket.IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)   # python 3.11 lacks these names
socket.IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)
socket.SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for option in (socket.IP_PKTINFO, socket.IP_RECVTTL, socket.IP_RECVTOS):
    s.setsockopt(socket.IPPROTO_IP, option, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_TIMESTAMPNS, 1)
print("options", s.getsockopt(socket.IPPROTO_IP, socket.IP_PKTINFO), s.getsockopt(socket.IPPROTO_IP, socket.IP_RECVTTL),
      s.getsockopt(socket.SOL_SOCKET, socket.SO_TIMESTAMPNS), flush=True)
s.bind(("0.0.0.0", 9300))
print("ready", flush=True)
data, ancillary, flags, peer = s.recvmsg(2048, 1024)
facts = {}
for level, kind, value in ancillary:
    if level == socket.IPPROTO_IP and kind == socket.IP_PKTINFO:
        index, spec, addr = struct.unpack("I4s4s", value)
        facts["pktinfo"] = (index, socket.inet_ntoa(spec), socket.inet_ntoa(addr))
    elif level == socket.IPPROTO_IP and kind == socket.IP_TTL:
        facts["ttl"] = struct.unpack("i", value)[0]
    elif level == socket.IPPROTO_IP and kind == socket.IP_TOS:
        facts["tos"] = value[0]
    elif level == socket.SOL_SOCKET and kind == socket.SO_TIMESTAMPNS:
        sec, nsec = struct.unpack("qq", value)
        facts["age"] = time.time() - (sec + nsec / 1e9)
print("got", data, "from", peer, facts, flush=True)
pktinfo = struct.pack("I4s4s", 0, socket.inet_aton("192.0.2.2"), b"\0\0\0\0")
s.sendmsg([b"answer:" + data], [(socket.IPPROTO_IP, socket.IP_PKTINFO, pktinfo),
                                 (socket.IPPROTO_IP, socket.IP_TTL, struct.pack("i", 7))], 0, peer)
try:
    bad = struct.pack("I4s4s", 0, socket.inet_aton("192.0.2.99"), b"\0\0\0\0")
    s.sendmsg([b"x"], [(socket.IPPROTO_IP, socket.IP_PKTINFO, bad)], 0, peer)
    print("foreign source accepted", flush=True)
except OSError as error:
    print("foreign source:", error.errno, flush=True)
PY
    local stackside=$!
    wait_for grep -q ready "$WORK/stackside.out" || { cat "$WORK/stackside.out"; return 1; }
    # Kernel side: sends with TTL 42 and TOS 0x20, reads the answer's TTL.
    in_ns timeout 10 python3 - >"$WORK/kernelside.out" 2>&1 <<'PY'
import socket, struct
socket.IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)
socket.SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 42)
s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x20)
s.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTTL, 1)
s.settimeout(8)
s.sendto(b"question", ("192.0.2.2", 9300))
data, ancillary, flags, peer = s.recvmsg(2048, 256)
ttl = [struct.unpack("i", v)[0] for l, k, v in ancillary if k == socket.IP_TTL]
print("answer", data, "from", peer, "ttl", ttl)
PY
    wait "$stackside"
    cat "$WORK/stackside.out" "$WORK/kernelside.out"
    grep -q "options 1 1 1" "$WORK/stackside.out" &&
        grep -q "'pktinfo': ($IFINDEX, '192.0.2.2', '192.0.2.2')" "$WORK/stackside.out" &&
        grep -q "'ttl': 42" "$WORK/stackside.out" && grep -q "'tos': 32" "$WORK/stackside.out" &&
        python3 -c "import re,sys; age=float(re.search(r\"'age': ([-0-9.e]+)\", open(sys.argv[1]).read()).group(1)); sys.exit(not -1 < age < 5)" "$WORK/stackside.out" &&
        grep -q "foreign source: 22" "$WORK/stackside.out" &&
        grep -q "answer b'answer:question' from ('192.0.2.2', 9300) ttl \[7\]" "$WORK/kernelside.out"
}
check "recvmsg reports IP_PKTINFO, IP_TTL, IP_TOS and SO_TIMESTAMPNS; sendmsg takes IP_PKTINFO and IP_TTL" control_messages_both_ways

dnsmasq_wildcard_answers() {
    in_ns timeout 30 "${EXEC[@]}" dnsmasq --no-daemon --port=53 --no-resolv --no-hosts --pid-file= --user=root \
        --address=/printer.test/192.0.2.77 --log-queries --log-facility=- >"$WORK/dnsmasq.out" 2>&1 &
    local server=$!
    wait_for grep -q "started" "$WORK/dnsmasq.out" || { cat "$WORK/dnsmasq.out"; kill "$server"; return 1; }
    local out
    out=$(in_ns timeout 10 dig +tries=2 +time=2 @192.0.2.2 printer.test 2>&1)
    kill "$server" 2>/dev/null; wait "$server" 2>/dev/null
    echo "$out"; cat "$WORK/dnsmasq.out"
    grep -qE "^printer\.test\..*IN.*A.*192\.0\.2\.77" <<<"$out" && grep -q "SERVER: 192.0.2.2#53" <<<"$out" &&
        grep -q "query\[A\] printer.test from 192.0.2.1" "$WORK/dnsmasq.out"
}
check "dnsmasq in wildcard mode under exec answers the kernel's dig" dnsmasq_wildcard_answers

answer_in_capture() { tcpdump -n -r "$WORK/run.pcap" udp port 53 2>/dev/null | grep -qE "192\.0\.2\.2\.53 > "; }
answer_from_the_queried_address() {
    local out
    wait_for answer_in_capture   # the capture is written as frames pass; the answer may trail dig's exit
    out=$(tcpdump -n -r "$WORK/run.pcap" udp port 53 2>/dev/null)
    echo "$out"
    grep -qE "192\.0\.2\.1\.[0-9]+ > 192\.0\.2\.2\.53: .*A\? printer\.test" <<<"$out" &&
        grep -qE "192\.0\.2\.2\.53 > 192\.0\.2\.1\.[0-9]+: .*A 192\.0\.2\.77" <<<"$out"
}
check "the capture shows dnsmasq's answer leaving from 192.0.2.2:53, where the query went" answer_from_the_queried_address

unknown_option_errno() {
    in_ns timeout 10 "${EXEC[@]}" python3 - <<'PY'
import errno, socket
socket.IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.setsockopt(socket.IPPROTO_IP, 16, 1)   # IP_IPSEC_POLICY: not supported here
except OSError as error:
    print("unknown:", errno.errorcode[error.errno])
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"tap0")
print("bound to", s.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16))
try:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth9")
except OSError as error:
    print("other device:", error.errno == errno.ENODEV)
s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 9)
s.setsockopt(socket.IPPROTO_IP, socket.IP_FREEBIND, 1)
print("ttl", s.getsockopt(socket.IPPROTO_IP, socket.IP_TTL), "freebind", s.getsockopt(socket.IPPROTO_IP, socket.IP_FREEBIND))
s.bind(("198.51.100.7", 5353))
print("freebind bound", s.getsockname())
PY
}
unknown_option_errno_checked() {
    local out
    out=$(unknown_option_errno 2>&1)
    echo "$out"
    grep -q "unknown: ENOPROTOOPT" <<<"$out" && grep -q "bound to b'tap0" <<<"$out" && grep -q "other device: True" <<<"$out" &&
        grep -q "ttl 9 freebind 1" <<<"$out" && grep -q "freebind bound ('198.51.100.7', 5353)" <<<"$out"
}
check "SO_BINDTODEVICE names only the stack's interface; IP_TTL and IP_FREEBIND read back; unknown options fail" unknown_option_errno_checked

icmp_error_queue() {
    in_ns timeout 15 "${EXEC[@]}" python3 - <<'PY'
import errno, select, socket, struct
socket.IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_RECVERR, 1)
print("recverr", s.getsockopt(socket.IPPROTO_IP, socket.IP_RECVERR))
s.sendto(b"probe", ("192.0.2.1", 9))          # nobody listens there: the kernel answers port unreachable
select.select([s], [], [], 5)
data, ancillary, flags, name = s.recvmsg(512, 512, socket.MSG_ERRQUEUE)
print("data", data, "name", name, "errqueue flag", bool(flags & socket.MSG_ERRQUEUE))
for level, kind, value in ancillary:
    ee_errno, origin, icmp_type, icmp_code, pad, info, data_ = struct.unpack("IBBBBII", value[:16])
    family, port, offender = struct.unpack("HH4s", value[16:24])
    print("cmsg", level, kind, errno.errorcode[ee_errno], "origin", origin, "type", icmp_type, "code", icmp_code,
          "offender", socket.inet_ntoa(offender))
try:
    s.recvmsg(512, 512, socket.MSG_ERRQUEUE)
except OSError as error:
    print("again:", errno.errorcode[error.errno])
s.settimeout(0.3)
try:
    s.recvfrom(100)
except socket.timeout:
    print("pending error cleared by reading the queue")
except OSError as error:
    print("still pending:", errno.errorcode[error.errno])
PY
}
icmp_error_queue_checked() {
    local out
    out=$(icmp_error_queue 2>&1)
    echo "$out"
    grep -q "recverr 1" <<<"$out" && grep -q "data b'probe' name ('192.0.2.1', 9) errqueue flag True" <<<"$out" &&
        grep -q "cmsg 0 11 ECONNREFUSED origin 2 type 3 code 3 offender 192.0.2.1" <<<"$out" &&
        grep -q "again: EAGAIN" <<<"$out" && grep -q "pending error cleared" <<<"$out"
}
check "IP_RECVERR: an unconnected socket reads the kernel's port unreachable from MSG_ERRQUEUE as sock_extended_err" icmp_error_queue_checked

stop_stack TERM
finish
