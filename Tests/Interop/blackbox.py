#!/usr/bin/env python3
"""Black-box checks of tapstack from the kernel side of its tap.

Raw Ethernet frames are injected with an AF_PACKET socket on the tap (inside
the test's network namespace) and the stack's answers are read there. The
checks follow what RFC 826, 791, 792, 768 and 1122 require of a host; they
know nothing of the stack's code. A fake host (192.0.2.77, 02:00:00:00:00:aa)
plays the peer, so the kernel's own stack stays out of the conversation.

Usage: blackbox.py IFACE [REASSEMBLY_TIMEOUT_SECONDS]
Prints PASS/FAIL per check and "N passed, M failed".
"""
import os
import random
import select
import socket
import struct
import sys

from inetsum import checksum
import time

IFACE = sys.argv[1]
REASSEMBLY_TIMEOUT = float(sys.argv[2]) if len(sys.argv) > 2 else 30.0
STACK_MAC = bytes.fromhex("020000000002")
STACK_IP = socket.inet_aton("192.0.2.2")
ME_MAC = bytes.fromhex("0200000000aa")
ME_IP = socket.inet_aton("192.0.2.77")
BROADCAST_MAC = b"\xff" * 6
SUBNET_BROADCAST = socket.inet_aton("192.0.2.255")

sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
sock.bind((IFACE, 0))
PACKET_OUTGOING = 4
# The stack leaves UDP checksums to the kernel (checksum offload): a packet
# socket then sees them partial, flagged in the auxiliary data, as on any
# NIC with offload. Such frames are completed here as the kernel would
# before checking them, so a wrong partial sum still fails the checks.
SOL_PACKET, PACKET_AUXDATA, TP_STATUS_CSUMNOTREADY = 263, 8, 1 << 3
sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
partial_checksums_seen = [0]
results = {"passed": 0, "failed": 0}


def eth(payload, dst=STACK_MAC, src=ME_MAC, ethertype=0x0800):
    return dst + src + struct.pack("!H", ethertype) + payload


def arp(op=1, sender_mac=ME_MAC, sender_ip=ME_IP, target_mac=b"\0" * 6, target_ip=STACK_IP, hlen=6, plen=4, htype=1):
    return struct.pack("!HHBBH", htype, 0x0800, hlen, plen, op) + sender_mac + sender_ip + target_mac + target_ip


def ipv4(payload, proto, src=ME_IP, dst=STACK_IP, ident=None, flags=0, offset=0, ttl=64, options=b"",
         total_length=None, version=4, ihl=None, bad_checksum=False):
    ident = random.randrange(65536) if ident is None else ident
    ihl = (20 + len(options)) // 4 if ihl is None else ihl
    total = 20 + len(options) + len(payload) if total_length is None else total_length
    header = struct.pack("!BBHHHBBH4s4s", version << 4 | ihl, 0, total, ident, flags << 13 | offset // 8,
                         ttl, proto, 0, src, dst) + options
    value = checksum(header) ^ (0x5555 if bad_checksum else 0)
    return header[:10] + struct.pack("!H", value) + header[12:] + payload


def udp(payload, sport, dport, src=ME_IP, dst=STACK_IP, zero_checksum=False, bad_checksum=False, length=None):
    length = 8 + len(payload) if length is None else length
    header = struct.pack("!HHHH", sport, dport, length, 0)
    if zero_checksum:
        return header + payload
    pseudo = src + dst + struct.pack("!BBH", 0, 17, 8 + len(payload))
    value = checksum(pseudo + header + payload) or 0xFFFF
    if bad_checksum:
        value ^= 0x0101
    return header[:6] + struct.pack("!H", value) + payload


def icmp(type_, code=0, rest=b"\0\0\0\0", payload=b"", bad_checksum=False):
    message = struct.pack("!BBH", type_, code, 0) + rest + payload
    value = checksum(message) ^ (0x1111 if bad_checksum else 0)
    return message[:2] + struct.pack("!H", value) + message[4:]


def echo_request(data, ident=0x1234, seq=1):
    return icmp(8, 0, struct.pack("!HH", ident, seq), data)


def fragments(packet, size):
    """Splits an IPv4 packet (20-byte header) into fragment packets."""
    header, payload = packet[:20], packet[20:]
    proto, src, dst, ident = header[9], header[12:16], header[16:20], struct.unpack("!H", header[4:6])[0]
    out = []
    for start in range(0, len(payload), size):
        piece = payload[start:start + size]
        more = 1 if start + size < len(payload) else 0
        out.append(ipv4(piece, proto, src=src, dst=dst, ident=ident, flags=more, offset=start))
    return out


def drain():
    while select.select([sock], [], [], 0)[0]:
        sock.recvfrom(65535)


def frames_from_stack(timeout):
    """Yields frames the stack sent until `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            return
        frame, ancillary, _, address = sock.recvmsg(65535, 256)
        if address[2] != PACKET_OUTGOING and frame[6:12] == STACK_MAC:
            status = next((struct.unpack("=I", data[:4])[0] for level, kind, data in ancillary
                           if level == SOL_PACKET and kind == PACKET_AUXDATA), 0)
            yield completed(frame) if status & TP_STATUS_CSUMNOTREADY else frame


def completed(frame):
    """An IPv4 UDP frame with its partial checksum completed over the datagram."""
    if frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return frame
    start = 14 + (frame[14] & 15) * 4
    end = 14 + struct.unpack("!H", frame[16:18])[0]
    partial_checksums_seen[0] += 1
    value = checksum(frame[start:end]) or 0xFFFF
    return frame[:start + 6] + struct.pack("!H", value) + frame[start + 8:]


def send(*frames_):
    for frame in frames_:
        sock.send(frame)


def parse_ip(frame):
    """(header fields, payload) of an IPv4 frame, or None."""
    if frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    ihl = (ip[0] & 15) * 4
    total = struct.unpack("!H", ip[2:4])[0]
    fields = {
        "ihl": ihl, "total": total, "id": struct.unpack("!H", ip[4:6])[0],
        "flags": ip[6] >> 5, "offset": (struct.unpack("!H", ip[6:8])[0] & 0x1FFF) * 8,
        "ttl": ip[8], "proto": ip[9], "src": ip[12:16], "dst": ip[16:20],
        "header_ok": checksum(ip[:ihl]) == 0, "header": ip[:ihl],
    }
    return fields, ip[ihl:total]


def wait_for(predicate, timeout=2.0):
    for frame in frames_from_stack(timeout):
        got = predicate(frame)
        if got:
            return got
    return None


def collect(timeout=1.0):
    return list(frames_from_stack(timeout))


def check(name, fn):
    drain()
    try:
        ok, detail = fn()
    except Exception as error:  # a check that crashes is a failure, not a stop
        ok, detail = False, "exception: %r" % (error,)
    results["passed" if ok else "failed"] += 1
    print(("PASS" if ok else "FAIL") + " blackbox: " + name + ("" if ok else " -- " + str(detail)), flush=True)


def is_announcement(frame):
    """The stack's own gratuitous ARP (sender and target both its address): not an answer."""
    return frame[12:14] == b"\x08\x06" and frame[28:32] == STACK_IP and frame[38:42] == STACK_IP


def nothing_answers(frames_, window=0.6):
    """Sends frames; passes if the stack sends nothing back to us."""
    def run():
        send(*frames_)
        got = [f for f in collect(window) if f[0:6] in (ME_MAC, BROADCAST_MAC) and not is_announcement(f)]
        return (not got), "%d unexpected frame(s), first %s" % (len(got), got[0][:60].hex() if got else "")
    return run


def icmp_reply_of(frame, type_):
    parsed = parse_ip(frame)
    if not parsed or parsed[0]["proto"] != 1 or parsed[0]["dst"] != ME_IP:
        return None
    fields, payload = parsed
    return (fields, payload) if payload and payload[0] == type_ else None


def echo_works(data=b"liveness", ident=0x4242):
    send(eth(ipv4(echo_request(data, ident), 1)))
    got = wait_for(lambda f: icmp_reply_of(f, 0))
    return bool(got and got[1][8:] == data)


# --- ARP (RFC 826, RFC 1122 2.3.2) -----------------------------------------

def arp_request_is_answered():
    send(eth(arp(), dst=BROADCAST_MAC, ethertype=0x0806))
    frame = wait_for(lambda f: f if f[12:14] == b"\x08\x06" and f[20:22] == b"\x00\x02" else None)
    if not frame:
        return False, "no ARP reply"
    body = frame[14:42]
    expected = arp(2, STACK_MAC, STACK_IP, ME_MAC, ME_IP)
    return frame[0:6] == ME_MAC and body == expected, frame[:42].hex()


def reply_to_gratuitous_is_not_needed():
    return nothing_answers([eth(arp(2, target_mac=BROADCAST_MAC, target_ip=ME_IP), dst=BROADCAST_MAC, ethertype=0x0806)])()


# --- IPv4 and ICMP echo (RFC 791, 792, 1122 3.2.1, 3.2.2.6) ----------------

def echo_reply_is_identical():
    data = os.urandom(100)
    send(eth(ipv4(echo_request(data, 0xBEEF, 77), 1)))
    got = wait_for(lambda f: icmp_reply_of(f, 0))
    if not got:
        return False, "no echo reply"
    fields, message = got
    ok = (message[1] == 0 and message[4:8] == struct.pack("!HH", 0xBEEF, 77) and message[8:] == data
          and checksum(message) == 0 and fields["header_ok"] and fields["src"] == STACK_IP and fields["ttl"] > 0)
    return ok, fields


def echo_with_ip_options_is_answered():
    options = b"\x01\x01\x01\x00"  # NOP NOP NOP EOL
    send(eth(ipv4(echo_request(b"opts"), 1, options=options)))
    got = wait_for(lambda f: icmp_reply_of(f, 0))
    return bool(got and got[1][8:] == b"opts"), "no reply"


def identifications_differ():
    send(eth(ipv4(echo_request(b"a", seq=1), 1)), eth(ipv4(echo_request(b"b", seq=2), 1)))
    ids = []
    for frame in frames_from_stack(2.0):
        got = icmp_reply_of(frame, 0)
        if got:
            ids.append(got[0]["id"])
        if len(ids) == 2:
            break
    return len(ids) == 2 and ids[0] != ids[1], ids


def big_fragmented_echo_in_reverse_order():
    data = os.urandom(3972)
    packet = ipv4(echo_request(data, 0x7777), 1)
    send(*[eth(p) for p in reversed(fragments(packet, 1480))])
    pieces = {}
    for frame in frames_from_stack(3.0):
        parsed = parse_ip(frame)
        if parsed and parsed[0]["proto"] == 1 and parsed[0]["dst"] == ME_IP:
            fields, payload = parsed
            pieces[fields["offset"]] = (payload, fields["flags"] & 1)
            if len(frame) > 1514:
                return False, "frame of %d bytes exceeds the MTU" % len(frame)
            whole = b""
            while len(whole) in pieces:
                chunk, more = pieces[len(whole)]
                whole += chunk
                if not more:
                    ok = whole[0] == 0 and whole[4:6] == b"\x77\x77" and whole[8:] == data and checksum(whole) == 0
                    return ok and len(pieces) > 1, "reply of %d bytes in %d fragments" % (len(whole), len(pieces))
    return False, "incomplete reply, offsets %s" % sorted(pieces)


def overlapping_fragments_are_discarded():
    packet = ipv4(echo_request(os.urandom(2000)), 1, ident=0x0BAD)
    first, second = fragments(packet, 1480)
    evil = ipv4(b"\xee" * 1480, 1, ident=0x0BAD, flags=1, offset=1472)  # overlaps the first by 8 bytes
    return nothing_answers([eth(first), eth(evil), eth(second)], 1.0)()


def reassembly_timeout_sends_time_exceeded():
    packet = ipv4(echo_request(os.urandom(2000)), 1, ident=0x7E57)
    first = fragments(packet, 1480)[0]
    send(eth(first))
    got = wait_for(lambda f: icmp_reply_of(f, 11), REASSEMBLY_TIMEOUT + 3)
    if not got:
        return False, "no time exceeded"
    fields, message = got
    # Code 1 (fragment reassembly), quoting the first fragment's header and 8 bytes.
    return message[1] == 1 and message[8:] == first[:28] and checksum(message) == 0, message.hex()


def no_time_exceeded_without_first_fragment():
    packet = ipv4(echo_request(os.urandom(2000)), 1, ident=0x7E58)
    return nothing_answers([eth(fragments(packet, 1480)[1])], REASSEMBLY_TIMEOUT + 1.5)()


def oversized_reassembly_is_dropped():
    ident = 0x0F0F
    first = ipv4(echo_request(b"\0" * 1472), 1, ident=ident, flags=1, offset=0)
    beyond = ipv4(b"\0" * 16, 1, ident=ident, flags=0, offset=65528)
    return nothing_answers([eth(first), eth(beyond)], 1.0)()


# --- UDP (RFC 768, RFC 1122 4.1) -------------------------------------------

def udp_reply_of(frame, sport):
    parsed = parse_ip(frame)
    if not parsed or parsed[0]["proto"] != 17 or parsed[0]["dst"] != ME_IP:
        return None
    fields, datagram = parsed
    return (fields, datagram) if struct.unpack("!H", datagram[2:4])[0] == sport else None


def udp_echo_with_valid_checksum():
    data = os.urandom(200)
    send(eth(ipv4(udp(data, 40001, 7), 17)))
    got = wait_for(lambda f: udp_reply_of(f, 40001))
    if not got:
        return False, "no echo"
    fields, datagram = got
    sport, dport, length, value = struct.unpack("!HHHH", datagram[:8])
    pseudo = STACK_IP + ME_IP + struct.pack("!BBH", 0, 17, length)
    ok = sport == 7 and length == 208 and datagram[8:] == data and value != 0 and checksum(pseudo + datagram) == 0
    return ok, (sport, dport, length, hex(value))


def udp_zero_checksum_is_accepted():
    send(eth(ipv4(udp(b"nocsum", 40002, 7, zero_checksum=True), 17)))
    got = wait_for(lambda f: udp_reply_of(f, 40002))
    return bool(got and got[1][8:] == b"nocsum"), "no echo"


def closed_port_gets_port_unreachable():
    packet = ipv4(udp(b"anyone?", 40003, 9999), 17)
    send(eth(packet))
    got = wait_for(lambda f: icmp_reply_of(f, 3))
    if not got:
        return False, "no ICMP"
    fields, message = got
    return message[1] == 3 and message[8:] == packet[:28] and checksum(message) == 0, message.hex()


def unknown_protocol_gets_protocol_unreachable():
    packet = ipv4(b"\0" * 20, 253)
    send(eth(packet))
    got = wait_for(lambda f: icmp_reply_of(f, 3))
    return bool(got and got[1][1] == 2 and got[1][8:] == packet[:28]), got


def icmp_errors_are_rate_limited():
    send(*[eth(ipv4(udp(b"x", 41000 + i, 9999), 17)) for i in range(200)])
    count = sum(1 for f in frames_from_stack(1.5) if icmp_reply_of(f, 3))
    return 0 < count < 200, "%d ICMP errors for 200 datagrams" % count


# --- Hostile and malformed input: silence, then still alive ---------------

def still_alive():
    return echo_works(), "no echo after the hostile input"


def truncations():
    good = eth(ipv4(echo_request(b"truncate me"), 1))
    # Cut at every header boundary and inside each header. (A frame shorter
    # than the 14-byte Ethernet header cannot be sent through a tap at all.)
    return [good[:n] for n in (14, 15, 20, 33, 34, 35, 41)]


def main():
    print("blackbox: reassembly timeout %gs" % REASSEMBLY_TIMEOUT, flush=True)
    check("ARP request for our address gets an exact reply", arp_request_is_answered)
    check("ARP request for another address is ignored",
          nothing_answers([eth(arp(target_ip=socket.inet_aton("192.0.2.99")), dst=BROADCAST_MAC, ethertype=0x0806)]))
    check("ARP with odd hardware length is ignored",
          nothing_answers([eth(arp(hlen=8, sender_mac=ME_MAC + b"\0\0", target_mac=b"\0" * 8), dst=BROADCAST_MAC, ethertype=0x0806)]))
    check("ARP with a non-Ethernet hardware type is ignored",
          nothing_answers([eth(arp(htype=6), dst=BROADCAST_MAC, ethertype=0x0806)]))
    check("ARP from a broadcast sender MAC is ignored",
          nothing_answers([eth(arp(sender_mac=BROADCAST_MAC), dst=BROADCAST_MAC, src=ME_MAC, ethertype=0x0806)]))
    check("gratuitous ARP reply draws no answer", reply_to_gratuitous_is_not_needed)
    check("echo reply carries identifier, sequence and data unchanged", echo_reply_is_identical)
    check("echo request with IP options is answered", echo_with_ip_options_is_answered)
    check("each datagram gets its own IP identification", identifications_differ)
    check("echo with a bad IP header checksum is dropped", nothing_answers([eth(ipv4(echo_request(b"x"), 1, bad_checksum=True))]))
    check("echo with a bad ICMP checksum is dropped", nothing_answers([eth(ipv4(echo_request(b"x")[:2] + b"\0\0" + echo_request(b"x")[4:], 1))]))
    check("echo to the subnet broadcast is not answered",
          nothing_answers([eth(ipv4(echo_request(b"x"), 1, dst=SUBNET_BROADCAST), dst=BROADCAST_MAC)]))
    check("echo to 255.255.255.255 is not answered",
          nothing_answers([eth(ipv4(echo_request(b"x"), 1, dst=b"\xff" * 4), dst=BROADCAST_MAC)]))
    for label, source in (("127.0.0.1", "127.0.0.1"), ("224.0.0.1", "224.0.0.1"), ("192.0.2.255", "192.0.2.255"),
                          ("our own address", "192.0.2.2"), ("0.0.0.0", "0.0.0.0"), ("240.0.0.1", "240.0.0.1")):
        check("echo from martian source %s is dropped" % label,
              nothing_answers([eth(ipv4(echo_request(b"x"), 1, src=socket.inet_aton(source)))]))
    check("a packet for another address is neither forwarded nor answered",
          nothing_answers([eth(ipv4(echo_request(b"x"), 1, dst=socket.inet_aton("192.0.2.99")))]))
    check("IP version 6 in an IPv4 frame is dropped",
          nothing_answers([eth(ipv4(echo_request(b"x"), 1, version=6))]))
    check("IHL below 5 is dropped", nothing_answers([eth(ipv4(echo_request(b"x"), 1, ihl=4))]))
    check("IHL beyond the packet is dropped", nothing_answers([eth(ipv4(echo_request(b"x"), 1, ihl=15))]))
    check("total length beyond the frame is dropped", nothing_answers([eth(ipv4(echo_request(b"x"), 1, total_length=1000))]))
    check("total length below the header is dropped", nothing_answers([eth(ipv4(echo_request(b"x"), 1, total_length=12))]))
    check("frames truncated at every header boundary are dropped", nothing_answers(truncations(), 1.0))
    check("the stack still answers after malformed input", still_alive)
    check("a fragmented 4000-byte echo sent in reverse order gets a fragmented reply", big_fragmented_echo_in_reverse_order)
    check("overlapping fragments discard the datagram", overlapping_fragments_are_discarded)
    check("fragments beyond 65535 bytes are dropped", oversized_reassembly_is_dropped)
    check("UDP echo swaps ports and sends a valid non-zero checksum", udp_echo_with_valid_checksum)
    check("the echo's UDP checksum was left to the kernel (checksum offload)",
          lambda: (partial_checksums_seen[0] > 0, "every checksum came complete: offload off?"))
    check("UDP with a zero checksum is accepted", udp_zero_checksum_is_accepted)
    check("UDP with a bad checksum is dropped silently", nothing_answers([eth(ipv4(udp(b"x", 40004, 7, bad_checksum=True), 17))]))
    check("UDP length beyond the IP payload is dropped silently", nothing_answers([eth(ipv4(udp(b"x", 40005, 7, length=100), 17))]))
    check("UDP length below 8 is dropped silently", nothing_answers([eth(ipv4(udp(b"x", 40006, 7, length=4), 17))]))
    check("UDP to a closed port gets port unreachable quoting header and 8 bytes", closed_port_gets_port_unreachable)
    check("an unknown protocol gets protocol unreachable", unknown_protocol_gets_protocol_unreachable)
    check("no ICMP error for UDP to the subnet broadcast",
          nothing_answers([eth(ipv4(udp(b"x", 40007, 9999, dst=SUBNET_BROADCAST), 17, dst=SUBNET_BROADCAST), dst=BROADCAST_MAC)]))
    check("no ICMP error for a link-layer broadcast",
          nothing_answers([eth(ipv4(udp(b"x", 40008, 9999), 17), dst=BROADCAST_MAC)]))
    check("no ICMP error about an ICMP error",
          nothing_answers([eth(ipv4(icmp(3, 3, payload=ipv4(udp(b"x", 7, 40009, src=STACK_IP, dst=ME_IP), 17, src=STACK_IP, dst=ME_IP)[:28]), 1))]))
    check("no ICMP error about a non-initial fragment",
          nothing_answers([eth(ipv4(b"\0" * 16, 253, flags=0, offset=1480))], 1.0))
    check("ICMP errors are rate-limited", icmp_errors_are_rate_limited)
    check("incomplete fragments without the first draw no time exceeded", no_time_exceeded_without_first_fragment)
    check("reassembly timeout sends time exceeded (code 1) quoting the first fragment", reassembly_timeout_sends_time_exceeded)
    check("the stack still answers at the end", still_alive)
    print("%d passed, %d failed" % (results["passed"], results["failed"]))
    return 0 if results["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
