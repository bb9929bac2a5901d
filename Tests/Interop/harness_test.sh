#!/usr/bin/env bash
# The interop harness itself: under CI=true (as .ci/run sets it) a test that
# skips fails the run, and a test run without root fails instead of skipping.
source "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)

mkdir -p "$WORK/suite"
cp "$HERE/run.sh" "$HERE/lib.sh" "$WORK/suite/"
printf '#!/usr/bin/env bash\necho "SKIP skipper: nothing to do here"\nexit 77\n' >"$WORK/suite/skipper_test.sh"

skip_passes_outside_ci() {
    local out
    out=$(env -u CI bash "$WORK/suite/run.sh" 2>&1) || { echo "$out"; return 1; }
    grep -q "1 skipped" <<<"$out"
}
skip_fails_under_ci() {
    local out
    if out=$(CI=true bash "$WORK/suite/run.sh" 2>&1); then echo "$out"; return 1; fi
    grep -q "FAIL skipper_test.sh: skipped, and CI=true forbids skipping" <<<"$out"
}
check "outside CI a skipped test is reported as skipped" skip_passes_outside_ci
check "under CI=true a skipped test fails the run" skip_fails_under_ci

not_root_fails_under_ci() {
    printf '#!/usr/bin/env bash\nsource "$(dirname "$0")/lib.sh"\nfinish\n' >"$WORK/suite/needsroot_test.sh"
    rm -f "$WORK/suite/skipper_test.sh"
    chmod -R a+rX "$WORK"
    local out status
    out=$(CI=true setpriv --reuid=65534 --regid=65534 --clear-groups bash "$WORK/suite/needsroot_test.sh" 2>&1); status=$?
    echo "$out"
    [ "$status" -ne 0 ] && [ "$status" -ne 77 ] && grep -q "CI=true forbids skipping" <<<"$out"
}
check "under CI=true a test without root fails instead of skipping" not_root_fails_under_ci
# capture_is_clean judges the stack's layers, not a test's payload: one
# frame, IPv4/UDP to port 47000 (HCrt's) with "hello group" (tshark alone
# calls it a malformed HCrt packet), once as sent and once with an IPv4
# header that claims more bytes than the frame holds.
write_udp_capture() {
    python3 - "$1" "$2" <<'PY'
import struct, sys
def checksum(b):
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
payload = b'hello group'
udp = struct.pack('!HHHH', 40001, 47000, 8 + len(payload), 0) + payload
total = 20 + len(udp) + int(sys.argv[2])
ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, total, 1, 0, 1, 17, 0, bytes([192, 0, 2, 1]), bytes([239, 1, 2, 3]))
ip = ip[:10] + struct.pack('!H', checksum(ip)) + ip[12:]
frame = bytes.fromhex('01005e010203020000000001') + b'\x08\x00' + ip + udp
with open(sys.argv[1], 'wb') as f:
    f.write(struct.pack('<IHHiIII', 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1))
    f.write(struct.pack('<IIII', 0, 0, len(frame), len(frame)) + frame)
PY
}
a_payload_on_an_applications_port_is_clean() {
    write_udp_capture "$WORK/hcrt.pcap" 0 || return 1
    capture_is_clean "$WORK/hcrt.pcap"
}
a_malformed_ipv4_header_is_not() {
    write_udp_capture "$WORK/short.pcap" 40 || return 1
    if out=$(capture_is_clean "$WORK/short.pcap"); then echo "$out"; return 1; fi
}
check "capture_is_clean: a test's payload on a port tshark gives an application is clean" a_payload_on_an_applications_port_is_clean
check "capture_is_clean: an IPv4 header longer than its frame is flagged" a_malformed_ipv4_header_is_not
finish
