#!/usr/bin/env bash
# pcapng captures: the interface described (name, address, MAC), each frame's
# direction, and the stack's reason on every frame it dropped, as Wireshark
# shows them; a replay takes the stack's identity from the capture.
source "$(dirname "$0")/lib.sh"

start_stack --no-socket --pcap "$WORK/run.pcapng" || { echo "FAIL $TEST_NAME: stack did not start"; finish; exit 1; }
in_ns ping -c 1 -W 2 192.0.2.2 >/dev/null
echo hello | in_ns nc -u -w1 -p 40001 192.0.2.2 7 >/dev/null
echo lost | in_ns nc -u -w1 -p 40002 192.0.2.2 9999 >/dev/null
stop_stack TERM

tshark_v() { tshark -n -r "$WORK/run.pcapng" -V "$@" 2>/dev/null; }

drop_reason_on_the_frame() {
    local out
    out=$(tshark_v -Y "udp.dstport == 9999 && !icmp")
    printf '%s\n' "$out" | head -n 20
    grep -q "dropped by the stack: udp.drop_no_port" <<<"$out" && grep -q "Direction: Inbound" <<<"$out" &&
        [ "$(grep -c '^Frame ' <<<"$out")" = 1 ]
}
check "tshark -V shows the drop reason (udp.drop_no_port) and the direction on the datagram to a closed port" drop_reason_on_the_frame

only_dropped_frames_have_comments() {
    local commented
    commented=$(tshark -n -r "$WORK/run.pcapng" -Y "frame.comment" -T fields -e udp.dstport -e frame.comment 2>/dev/null)
    echo "$commented"
    # The echo request, the ping and the ARP were not dropped: no comment on them.
    ! tshark -n -r "$WORK/run.pcapng" -Y "frame.comment && (icmp || arp || udp.dstport == 7)" 2>/dev/null | grep -q . &&
        grep -qP '^9999\tdropped by the stack: udp.drop_no_port$' <<<"$commented"
}
check "only frames the stack dropped carry a comment" only_dropped_frames_have_comments

directions_are_right() {
    local out
    out=$(tshark -n -r "$WORK/run.pcapng" -T fields -e frame.packet_flags_direction -e eth.src -e _ws.col.Info 2>/dev/null)
    echo "$out"
    # Every frame from the stack's MAC is outbound, every other inbound.
    awk -F'\t' '$1 !~ /^0x0000000[12]$/ || ($2 == "02:00:00:00:00:02") != ($1 == "0x00000002") { bad = 1 } END { exit bad }' <<<"$out" &&
        grep -q "Echo (ping) reply" <<<"$out" && grep -q "Port unreachable" <<<"$out"
}
check "every frame carries its direction: the stack's own outbound, the rest inbound" directions_are_right

interface_is_described() {
    local out
    out=$(tshark_v -c 1)
    grep -E "Interface (name|description)" <<<"$out"
    grep -q "Interface name: $TAP" <<<"$out" &&
        grep -q "Interface description: tapstack .* on $TAP: 192.0.2.2/24 02:00:00:00:00:02, UDP echo on port 7" <<<"$out"
}
check "the interface description names the device, the stack's address and MAC and its echo port" interface_is_described

check "tcpdump and tshark read the pcapng cleanly" capture_is_clean "$WORK/run.pcapng"

replay_takes_the_identity() {
    # Replayed as another stack (MAC 02:..:09, echo on 9999): the capture's
    # identity is used unless flags say otherwise, with a warning then.
    "$BIN" replay "$WORK/run.pcapng" >"$WORK/replay.out" 2>"$WORK/replay.err" || { cat "$WORK/replay.err"; return 1; }
    cat "$WORK/replay.out" "$WORK/replay.err"
    grep -q "as 192.0.2.2/24 02:00:00:00:00:02, echo on port 7" "$WORK/replay.err" && ! grep -q warning "$WORK/replay.err" &&
        grep -qE '^[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6} IP 192\.0\.2\.2\.7 > 192\.0\.2\.1\.40001: UDP, length 6$' "$WORK/replay.out" &&
        grep -qE '^[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6} IP 192\.0\.2\.2 > 192\.0\.2\.1: ICMP udp port unreachable, length 36$' "$WORK/replay.out"
}
check "replay reads pcapng, takes the stack's address, MAC and echo port from it, and prints tcpdump-style times" replay_takes_the_identity

replay_warns_on_disagreement() {
    "$BIN" replay "$WORK/run.pcapng" --echo-port 9999 --address 192.0.2.2/24 >"$WORK/replay2.out" 2>"$WORK/replay2.err" || return 1
    cat "$WORK/replay2.err"
    grep -q "warning: --echo-port 9999 differs from 7 in the capture" "$WORK/replay2.err" &&
        [ "$(grep -c warning "$WORK/replay2.err")" = 1 ] &&
        ! grep -q "udp port 9999 unreachable" "$WORK/replay2.out"
}
check "replay warns once for a flag that disagrees with the capture, and follows the flag" replay_warns_on_disagreement

replay_pcapng_output() {
    "$BIN" replay "$WORK/run.pcapng" --out "$WORK/replayed.pcapng" 2>/dev/null || return 1
    tshark -n -r "$WORK/replayed.pcapng" 2>&1 | head -n 5
    capture_is_clean "$WORK/replayed.pcapng" >/dev/null &&
        [ "$(tshark -n -r "$WORK/replayed.pcapng" 2>/dev/null | wc -l)" = "$(grep -c . "$WORK/replay.out")" ]
}
check "replay --out FILE.pcapng writes pcapng that tshark reads" replay_pcapng_output

finish
