#!/usr/bin/env bash
# The offloads with the kernel over the virtio-net header, and the paths taken
# when the kernel refuses them: the same traffic must come back intact with
# checksums and UDP segmentation offloaded (--offload on), with checksums only
# (checksum: what a kernel without USO grants), with neither (off), and with
# io_uring refused by the kernel (kernel.io_uring_disabled, restored after).
# The counters must show which path carried the traffic, the kernel must see
# no bad checksum, and the stack's own capture must show every datagram on
# its own with a correct checksum.
source "$(dirname "$0")/lib.sh"

# 3000 datagrams of 200 bytes from one socket, 32 in flight: every one must
# come back byte for byte (the echoes of a burst form runs of one flow).
burst_echoed() {
    in_ns timeout 60 python3 - <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect(("192.0.2.2", 7))
sent, received = {}, 0
def take():
    global received
    data = s.recv(2048)
    key = int.from_bytes(data[:4], "big")
    if sent.pop(key, None) != data:
        sys.exit(f"echo {key} is wrong or repeated")
    received += 1
for i in range(3000):
    payload = i.to_bytes(4, "big") * 50
    sent[i] = payload
    s.send(payload)
    if i >= 31:
        take()
while sent:
    take()
print(f"{received} of 3000 echoed intact")
PY
}

counter() { sed -n "s/^$1 //p" "$WORK/stack.err" | tail -n 1; }

kernel_saw_no_bad_checksum() {
    local errors
    errors=$(in_ns nstat -az UdpInCsumErrors | awk '/UdpInCsumErrors/ {print $2}')
    echo "UdpInCsumErrors ${errors:-?}"
    [ "${errors:-1}" = 0 ]
}

# every UDP frame of the capture is one datagram with a correct checksum
capture_checksums_correct() {
    local bad frames
    frames=$(tshark -n -r "$WORK/run.pcap" -Y udp -T fields -e udp.length 2>/dev/null | wc -l)
    bad=$(tshark -n -r "$WORK/run.pcap" -o udp.check_checksum:TRUE -Y 'udp.checksum.status == "Bad"' 2>/dev/null | wc -l)
    big=$(tshark -n -r "$WORK/run.pcap" -Y 'udp.length > 1480' 2>/dev/null | wc -l)
    echo "$frames UDP frames captured, $bad with a bad checksum, $big larger than one datagram"
    [ "$frames" -ge 6000 ] && [ "$bad" = 0 ] && [ "$big" = 0 ]
}

run_case() {  # NAME EXPECTATION ARGS...
    local name=$1 expect=$2
    shift 2
    in_ns nstat -n >/dev/null 2>&1   # reset the kernel's counters' history
    start_stack --pcap "$WORK/run.pcap" "$@" || { echo "FAIL $TEST_NAME: stack did not start ($name)"; return; }
    check "$name: ping gets 3 replies" bash -c "ip netns exec $NS ping -c 3 -i 0.2 -W 2 192.0.2.2 | grep -q '3 received'"
    check "$name: 3000 echoes with 32 in flight come back intact" burst_echoed
    check "$name: the kernel saw no bad UDP checksum" kernel_saw_no_bad_checksum
    stop_stack TERM
    check "$name: the capture shows each datagram with a correct checksum" capture_checksums_correct
    check "$name: the counters show the path taken" "$expect"
    ip -n "$NS" link del "$TAP" 2>/dev/null
}

offloads_all() {
    echo "coalesced writes $(counter link.tx_coalesced_writes), segments $(counter link.tx_coalesced_segments), partial checksums $(counter link.rx_checksums_partial), io_uring enters $(counter link.io_uring_enters)"
    [ "$(counter link.tx_coalesced_writes)" -gt 0 ] && [ "$(counter link.tx_coalesced_segments)" -gt "$(counter link.tx_coalesced_writes)" ] \
        && [ "$(counter link.rx_checksums_partial)" -gt 0 ] && [ "$(counter link.io_uring_enters)" -gt 0 ]
}
offloads_checksum_only() {
    echo "coalesced writes $(counter link.tx_coalesced_writes), partial checksums $(counter link.rx_checksums_partial)"
    [ "$(counter link.tx_coalesced_writes)" = 0 ] && [ "$(counter link.rx_checksums_partial)" -gt 0 ]
}
offloads_none() {
    echo "coalesced writes $(counter link.tx_coalesced_writes), partial checksums $(counter link.rx_checksums_partial)"
    [ "$(counter link.tx_coalesced_writes)" = 0 ] && [ "$(counter link.rx_checksums_partial)" = 0 ]
}
io_uring_refused() {
    grep -m1 "io_uring unavailable" "$WORK/stack.err" || { echo "no notice"; return 1; }
    echo "io_uring enters $(counter link.io_uring_enters), coalesced writes $(counter link.tx_coalesced_writes)"
    [ "$(counter link.io_uring_enters)" = 0 ] && [ "$(counter link.tx_coalesced_writes)" -gt 0 ]
}

run_case "offload on" offloads_all
run_case "offload checksum (as without USO)" offloads_checksum_only --offload checksum
run_case "offload off" offloads_none --offload off

# io_uring refused: the sysctl is global, so set it only for this case and
# restore it whatever happens.
if [ -w /proc/sys/kernel/io_uring_disabled ]; then
    previous=$(cat /proc/sys/kernel/io_uring_disabled)
    trap 'echo "$previous" >/proc/sys/kernel/io_uring_disabled; cleanup' EXIT
    echo 2 >/proc/sys/kernel/io_uring_disabled
    run_case "io_uring refused by the kernel" io_uring_refused
    echo "$previous" >/proc/sys/kernel/io_uring_disabled
else
    check "io_uring refused by the kernel: kernel.io_uring_disabled can be set" false
fi
finish
