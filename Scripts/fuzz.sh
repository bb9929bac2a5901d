#!/usr/bin/env bash
# `make fuzz`: libFuzzer over every wire parser and the whole stack core.
# FUZZ_SECONDS per target (default 60). Seeds come from the project's own
# frames (the replay fixture's capture); inputs kept in Tests/Fuzz/regressions
# (crashes found before) are replayed first. A crash fails the run and leaves
# its input in $OUT for a new regression file.
set -uo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${FUZZ_SECONDS:-60}
TARGETS=${FUZZ_TARGETS:-"ethernet arp ipv4 icmp udp igmp ipv6 describe offload ring region stack"}
OUT=${OUT:-/tmp/tapstack-fuzz}
SCRATCH=.build-fuzz
rm -rf "$OUT"
mkdir -p "$OUT"

TAPSTACK_FUZZ=1 swift build --product tapstack-fuzz --scratch-path "$SCRATCH" --sanitize=fuzzer \
    -Xswiftc -sanitize=fuzzer,address >"$OUT/build.log" 2>&1 || { tail -n 30 "$OUT/build.log"; exit 1; }
BIN=$(TAPSTACK_FUZZ=1 swift build --product tapstack-fuzz --scratch-path "$SCRATCH" --sanitize=fuzzer \
    -Xswiftc -sanitize=fuzzer,address --show-bin-path)/tapstack-fuzz

# Seeds: every frame of the fixture capture (parsers get the layer they parse),
# and the whole capture as one frame sequence for the stack.
python3 - "$OUT/seeds" Tests/Replay/fixtures/*.in.pcap <<'PY'
import os, struct, sys
out, files = sys.argv[1], sys.argv[2:]
frames = []
for path in files:
    data = open(path, "rb").read()
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    offset = 24
    while offset + 16 <= len(data):
        _, _, caplen, _ = struct.unpack(endian + "IIII", data[offset:offset + 16])
        frames.append(data[offset + 16:offset + 16 + caplen])
        offset += 16 + caplen
layers = {"ethernet": [], "arp": [], "ipv4": [], "icmp": [], "udp": [], "igmp": [], "ipv6": [], "describe": [], "offload": [], "ring": [], "region": [], "stack": []}
# The shared ring: the producer's tail, then the ring's bytes (one record of 5 bytes, then one wrapped).
layers["ring"] += [struct.pack("<I", 16) + struct.pack("<I", 5) + bytes(4) + b"hello" + bytes(3),
                   struct.pack("<I", 272) + bytes(240) + struct.pack("<I", 0xFFFFFFFF) + bytes(12)]
# The service's reader of a client's region: the client's tail, its head of the other ring, then ring bytes (tiled).
layers["region"] += [struct.pack("<II", 16, 0) + struct.pack("<I", 5) + bytes(4) + b"hello" + bytes(3),
                     struct.pack("<II", 131080, 0) + struct.pack("<I", 0xFFFFFFFF) + bytes(4)]
# IPv6: a neighbour solicitation for the stack's link-local address and an echo request to it (checksums left to the target).
ll = bytes.fromhex("fe800000000000000000 00fffe000002".replace(" ", ""))
peer = bytes.fromhex("fe80000000000000bc5e63fffe13bd1b")
snm = bytes.fromhex("ff020000000000000000 0001ff000002".replace(" ", ""))
ns = bytes([135, 0, 0, 0, 0, 0, 0, 0]) + ll + bytes([1, 1, 0xbe, 0x5e, 0x63, 0x13, 0xbd, 0x1b])
echo = bytes([128, 0, 0, 0, 0x12, 0x34, 0, 1]) + b"ping six"
layers["ipv6"] += [bytes([0x60, 0, 0, 0, 0, len(ns), 58, 255]) + peer + snm + ns,
                   bytes([0x60, 0, 0, 0, 0, len(echo), 58, 64]) + peer + ll + echo]
# UDP to the dual-stack socket on port 7, behind destination options and in a first fragment; a router advertisement with a prefix.
udp6 = struct.pack("!HHHH", 5000, 7, 12, 0) + b"six!"
dest = bytes([17, 0, 0x1e, 2, 0, 0, 1, 0])
frag = bytes([17, 0, 0, 1, 0, 0, 0, 9])
prefix = bytes([3, 4, 64, 0xc0, 0, 0, 14, 16, 0, 0, 7, 8, 0, 0, 0, 0]) + bytes.fromhex("20010db8000500000000000000000000")
ra = bytes([134, 0, 0, 0, 64, 0, 7, 8, 0, 0, 0, 0, 0, 0, 0, 0]) + prefix
allnodes = bytes.fromhex("ff020000000000000000000000000001")
layers["ipv6"] += [bytes([0x60, 0, 0, 0, 0, len(udp6), 17, 64]) + peer + ll + udp6,
                   bytes([0x60, 0, 0, 0, 0, 8 + len(udp6), 60, 64]) + peer + ll + dest + udp6,
                   bytes([0x60, 0, 0, 0, 0, 8 + 16, 44, 64]) + peer + ll + frag + udp6 + bytes(4),
                   bytes([0x60, 0, 0, 0, 0, len(ra), 58, 255]) + peer + allnodes + ra]
# IGMP: v1, v2 and v3 queries (general, group- and source-specific) and reports, checksums left to the target.
layers["igmp"] += [bytes([0x11, 0, 0, 0, 0, 0, 0, 0]), bytes([0x11, 100, 0, 0, 0, 0, 0, 0]),
                   bytes([0x11, 10, 0, 0, 239, 1, 2, 3]), bytes([0x11, 20, 0, 0, 0, 0, 0, 0, 2, 125, 0, 0]),
                   bytes([0x11, 200, 0, 0, 239, 1, 2, 3, 2, 125, 0, 1, 192, 0, 2, 1]),
                   bytes([0x16, 0, 0, 0, 239, 1, 2, 3]), bytes([0x17, 0, 0, 0, 239, 1, 2, 3]),
                   bytes([0x22, 0, 0, 0, 0, 0, 0, 1, 4, 0, 0, 0, 239, 1, 2, 3])]
for f in frames:
    layers["ethernet"].append(f); layers["describe"].append(f)
    layers["igmp"].append(f[14 + 24:]) if f[12:14] == b"\x08\x00" and len(f) > 38 and f[23] == 2 else None
    # virtio-net headers: none, a partial checksum, a UDP GSO frame of 100-byte datagrams
    layers["offload"].append(bytes(10) + f)
    layers["offload"].append(struct.pack("<BBHHHH", 1, 0, 0, 0, 34, 6) + f)
    layers["offload"].append(struct.pack("<BBHHHH", 1, 5, 42, 100, 34, 6) + f)
    if f[12:14] == b"\x08\x06": layers["arp"].append(f[14:])
    if f[12:14] == b"\x08\x00" and len(f) > 34:
        ip = f[14:]; layers["ipv4"].append(ip)
        ihl = (ip[0] & 15) * 4
        if ip[9] == 1: layers["icmp"].append(ip[ihl:])
        if ip[9] == 17: layers["udp"].append(ip[ihl:])
    layers["stack"].append(struct.pack(">HB", len(f), 1) + f)
layers["stack"].append(b"".join(struct.pack(">HB", len(f), 1) + f for f in frames))
for name, items in layers.items():
    os.makedirs(os.path.join(out, name), exist_ok=True)
    for i, item in enumerate(items):
        open(os.path.join(out, name, "seed-%04d" % i), "wb").write(item)
PY

status=0
passed=0
failed=0
for target in $TARGETS; do
    corpus="$OUT/corpus/$target"
    mkdir -p "$corpus"
    regressions="Tests/Fuzz/regressions/$target"
    if [ -d "$regressions" ] && [ -n "$(ls -A "$regressions")" ]; then
        if ! FUZZ_TARGET=$target SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=detect_leaks=0 "$BIN" "$regressions"/* >"$OUT/$target.regressions.log" 2>&1; then
            echo "FAIL fuzz $target: a regression input crashes again (log: $OUT/$target.regressions.log)"
            status=1
            failed=$((failed + 1))
        fi
    fi
    FUZZ_TARGET=$target SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=detect_leaks=0 timeout -k 5 $((SECONDS_PER_TARGET + 30)) \
        "$BIN" -max_total_time="$SECONDS_PER_TARGET" -max_len=4096 -timeout=5 -rss_limit_mb=2048 \
        -artifact_prefix="$OUT/$target-" "$corpus" "$OUT/seeds/$target" >"$OUT/$target.log" 2>&1
    rc=$?
    runs=$(grep -oE "stat::number_of_executed_units: *[0-9]+|#[0-9]+" "$OUT/$target.log" | tail -n 1 | tr -dc 0-9)
    done_line=$(grep -E "^Done [0-9]+ runs" "$OUT/$target.log" | tail -n 1)
    if [ $rc -eq 0 ]; then
        echo "PASS fuzz $target: ${done_line:-$runs runs} in ${SECONDS_PER_TARGET}s, no crash"
        passed=$((passed + 1))
    else
        echo "FAIL fuzz $target: exit $rc; crash input: $(ls "$OUT"/$target-* 2>/dev/null | head -n 1) (log: $OUT/$target.log)"
        grep -E "ERROR|Fatal|precondition|SUMMARY" "$OUT/$target.log" | head -n 5
        status=1
        failed=$((failed + 1))
    fi
done
echo "fuzz: $passed passed, $failed failed"
exit $status
