#!/usr/bin/env bash
# TUN mode (`tapstack run --mode tun`): the stack on an IFF_TUN device,
# IP packets without Ethernet and no ARP or neighbour discovery, as VPNs and
# overlays run it. The kernel pings it over IPv4 and IPv6, echoes through it
# with nc -u and nc -6 -u, programs under tapstack exec talk through it in
# both families, and tcpdump reads its raw-IP capture.
source "$(dirname "$0")/lib.sh"
TAP=tun0

SOCK=$WORK/tapstack.sock
start_stack --mode tun --socket "$SOCK" --pcap "$WORK/run.pcap" --address6 2001:db8::2/64 ||
    { echo "FAIL $TEST_NAME: stack did not start"; finish; exit 1; }
wait_for test -S "$SOCK"
in_ns ip -6 addr add 2001:db8::1/64 dev "$TAP" nodad

device_is_tun() {
    local flags
    flags=$(cat "/sys/class/net/$TAP/tun_flags" 2>/dev/null || in_ns cat "/sys/class/net/$TAP/tun_flags")
    echo "tun_flags $flags; $(in_ns ip -d link show "$TAP" | head -n 3)"
    # IFF_TUN is 0x0001; IFF_TAP 0x0002.
    [ $((flags & 3)) -eq 1 ] && in_ns ip -d link show "$TAP" | grep -q "link/none"
}
check "the device is a TUN device (no link-layer address)" device_is_tun

ping_answers() {
    local out
    out=$(in_ns ping -c 3 -i 0.2 -W 2 192.0.2.2 2>&1)
    echo "$out"
    grep -q "3 received" <<<"$out"
}
check "ping 192.0.2.2 through the TUN device: 3 of 3" ping_answers

nc_echo() {
    local out
    out=$(echo "hello over tun" | in_ns timeout 5 nc -u -w1 192.0.2.2 7)
    echo "echo: '$out'"
    [ "$out" = "hello over tun" ]
}
check "nc -u to the stack's echo port gets its line back" nc_echo

start_kernel_echo 9100   # here, not inside a check: its output would hold the check's pipe open
# exec_program_talks_to FAMILY HOST PORT MESSAGE: a python program of that
# family under tapstack exec sends MESSAGE to the kernel side's echo at
# HOST:PORT and prints what comes back and from where.
exec_program_talks_to() {
    local out
    out=$(in_ns timeout 10 "$BIN" exec --socket "$SOCK" -- python3 -c '
import socket, sys
family, host, port, message = sys.argv[1:]
s = socket.socket(getattr(socket, family), socket.SOCK_DGRAM)
s.settimeout(5)
s.sendto(message.encode(), (host, int(port)))
data, peer = s.recvfrom(100)
print(data.decode(), peer[:2])' "$@" 2>&1)
    echo "$out"
    grep -qF "$4 ('$2', $3)" <<<"$out"
}
exec_program_talks() {
    wait_for kernel_udp_bound 9100
    exec_program_talks_to AF_INET 192.0.2.1 9100 "through exec"
}
check "a program under tapstack exec talks to the kernel side through the TUN device" exec_program_talks

ping6_answers() {
    local out ok=0 size
    for size in 56 3000; do
        out=$(in_ns ping -6 -c 2 -i 0.2 -W 2 -s "$size" 2001:db8::2 2>&1)
        echo "size $size: $(grep received <<<"$out")"
        grep -q "2 received" <<<"$out" && ok=$((ok + 1))
    done
    [ "$ok" = 2 ]
}
check "ping -6 2001:db8::2 through the TUN device, 56 and 3000 bytes (fragmented): answered" ping6_answers

nc6_echo() {
    local out
    out=$(echo "hello over tun six" | in_ns timeout 5 nc -6 -u -w1 2001:db8::2 7)
    echo "echo: '$out'"
    [ "$out" = "hello over tun six" ]
}
check "nc -6 -u to the stack's echo port gets its line back" nc6_echo

# A kernel-side IPv6 echo, started here (not in a check, whose pipe it would hold).
ip netns exec "$NS" timeout 60 python3 -c '
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("2001:db8::1", 9101))
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(data, peer)' </dev/null >/dev/null 2>&1 &
disown $!   # cleanup kills it (by PID, in the namespace) without a "Killed" line
exec_program_talks6() {
    wait_for bash -c "ip netns exec $NS ss -u -l -n | grep -q '\[2001:db8::1\]:9101'"
    exec_program_talks_to AF_INET6 2001:db8::1 9101 "through exec six"
}
check "an AF_INET6 program under tapstack exec talks to the kernel side through the TUN device" exec_program_talks6

no_arp_sent() {
    local arp
    arp=$(stack_counter arp.tx_requests)
    echo "arp.tx_requests $arp; ethernet.rx_frames $(stack_counter ethernet.rx_frames)"
    [ "$arp" = 0 ]
}
check "no ARP in TUN mode" no_arp_sent

stop_stack TERM
capture_reads_as_raw_ip() {
    local out
    out=$(tcpdump -n -r "$WORK/run.pcap" 2>&1)
    echo "$out" | head -n 12
    grep -q "link-type RAW" <<<"$out" && grep -qE "IP 192\.0\.2\.1 > 192\.0\.2\.2: ICMP echo request" <<<"$out" &&
        grep -qE "IP6 2001:db8::2 > 2001:db8::1: ICMP6, echo reply" <<<"$out" &&
        grep -qE "IP6 2001:db8::2 > 2001:db8::1: frag \(0\|" <<<"$out" &&
        grep -qE "IP 192\.0\.2\.2 > 192\.0\.2\.1: ICMP echo reply" <<<"$out" &&
        grep -qE "IP 192\.0\.2\.2\.7 > 192\.0\.2\.1\.[0-9]+: UDP, length 15" <<<"$out"
}
check "tcpdump reads the capture as raw IP (LINKTYPE_RAW): pings of both families, fragments and the echo" capture_reads_as_raw_ip
check "the capture is clean" capture_is_clean "$WORK/run.pcap"

replay_answers_the_same() {
    local out
    out=$("$BIN" replay "$WORK/run.pcap" --address 192.0.2.2/24 --address6 2001:db8::2/64 --out "$WORK/replayed.pcap" 2>&1) || { echo "$out"; return 1; }
    echo "$out" | head -n 3
    local original replayed
    original=$(tcpdump -n -r "$WORK/run.pcap" src 192.0.2.2 or src 2001:db8::2 2>/dev/null | cut -d' ' -f2- | grep -E "ICMP6?,? echo reply|\.7 > ")
    replayed=$(tcpdump -n -r "$WORK/replayed.pcap" 2>/dev/null | cut -d' ' -f2- | grep -E "ICMP6?,? echo reply|\.7 > ")
    echo "original:"; echo "$original"; echo "replayed:"; echo "$replayed"
    [ -n "$original" ] && [ "$original" = "$replayed" ] && ! grep -qE "^arp\.tx_requests [1-9]" <<<"$out"
}
check "tapstack replay of the raw-IP capture answers the pings and the echoes of both families as the run did, without ARP" replay_answers_the_same
finish
