#!/usr/bin/env python3
"""Black-box IPv6 checks of tapstack from the kernel side of its tap.

Raw Ethernet frames are injected with an AF_PACKET socket on the tap (inside
the test's network namespace) and the stack's answers are read there. Each
check follows a MUST of RFC 8200 (extension headers, fragments), RFC 4443
(ICMPv6 errors and when not to send them), RFC 4861 (neighbour discovery
validation), RFC 4862 (what a router advertisement may configure) and
RFC 768/8200 8.1 (UDP checksum); they know nothing of the stack's code. A
fake host (2001:db8::77, 02:00:00:00:00:bb) plays the peer. Each check also
names the counter the stack must move for it, read from the stack's SIGUSR1
dump (`name value` lines on its standard error).

Usage: ipv6_blackbox.py IFACE STACK_PID STACK_STDERR
Prints PASS/FAIL per check and "N passed, M failed".
"""
import os
import signal
import select
import socket
import struct
import sys
import time

from inetsum import checksum

IFACE, STACK_PID, STACK_ERR = sys.argv[1], int(sys.argv[2]), sys.argv[3]
STACK_MAC = bytes.fromhex("020000000002")
STACK_IP = socket.inet_pton(socket.AF_INET6, "2001:db8::2")
ME_MAC = bytes.fromhex("0200000000bb")
ME_IP = socket.inet_pton(socket.AF_INET6, "2001:db8::77")
ALL_NODES = socket.inet_pton(socket.AF_INET6, "ff02::1")
ALL_NODES_MAC = bytes.fromhex("333300000001")
PACKET_OUTGOING = 4

sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
sock.bind((IFACE, 0))
results = {"passed": 0, "failed": 0}


def eth(payload, dst=STACK_MAC, src=ME_MAC):
    return dst + src + b"\x86\xdd" + payload


def ipv6(payload, next_header, src=ME_IP, dst=STACK_IP, hop_limit=64):
    return struct.pack("!IHBB", 6 << 28, len(payload), next_header, hop_limit) + src + dst + payload


def upper_checksum(message, next_header, src=ME_IP, dst=STACK_IP):
    return checksum(src + dst + struct.pack("!IxxxB", len(message), next_header) + message)


def icmpv6(type_, code, body, src=ME_IP, dst=STACK_IP):
    message = struct.pack("!BBH", type_, code, 0) + body
    return message[:2] + struct.pack("!H", upper_checksum(message, 58, src, dst)) + message[4:]


def udp(payload, sport, dport, src=ME_IP, dst=STACK_IP, zero_checksum=False):
    header = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)
    if zero_checksum:
        return header + payload
    value = upper_checksum(header + payload, 17, src, dst) or 0xFFFF
    return header[:6] + struct.pack("!H", value) + payload


def echo(data=b"blackbox", ident=0x6666, seq=1, src=ME_IP, dst=STACK_IP):
    return icmpv6(128, 0, struct.pack("!HH", ident, seq) + data, src, dst)


def options_header(next_header, options):
    body = struct.pack("!BB", next_header, 0) + options
    body += b"\x00" * (-len(body) % 8) if len(body) % 8 != 1 else b""
    padding = -len(body) % 8
    if padding == 1:
        body += b"\x00"  # Pad1
    elif padding:
        body += bytes([1, padding - 2]) + b"\x00" * (padding - 2)  # PadN
    return body[:1] + bytes([len(body) // 8 - 1]) + body[2:]


def frames_from_stack(timeout):
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            return
        frame, address = sock.recvfrom(65535)
        if address[2] != PACKET_OUTGOING and frame[6:12] == STACK_MAC and frame[12:14] == b"\x86\xdd":
            yield frame


def drain():
    while select.select([sock], [], [], 0)[0]:
        sock.recvfrom(65535)


def icmp_from_stack(type_, timeout=1.5):
    """The first ICMPv6 message of `type_` the stack sends to us: (code, rest-of-header, quoted bytes)."""
    for frame in frames_from_stack(timeout):
        ip = frame[14:]
        if ip[6] == 58 and ip[24:40] == ME_IP and ip[40] == type_:
            assert upper_checksum(ip[40:40 + struct.unpack("!H", ip[4:6])[0]], 58, ip[8:24], ip[24:40]) == 0, "bad checksum"
            return ip[41], struct.unpack("!I", ip[44:48])[0], ip[48:]
    return None


def nothing_from_stack(timeout=1.0):
    """No answer to us but neighbour discovery (the stack checks our reachability now and then)."""
    def answer(frame):
        ip = frame[14:]
        return ip[24:40] == ME_IP and ip[6] in (17, 44, 58) and not (ip[6] == 58 and 133 <= ip[40] <= 137)
    return not any(answer(frame) for frame in frames_from_stack(timeout))


def counter(name):
    """The stack's counter `name` now: asks for a dump and waits for its line."""
    def lines():
        with open(STACK_ERR, errors="replace") as f:
            return [line.split()[1] for line in f if line.startswith(name + " ") and len(line.split()) == 2]
    before = len(lines())
    os.kill(STACK_PID, signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        seen = lines()
        if len(seen) > before:
            return int(seen[-1])
        time.sleep(0.02)
    raise RuntimeError(f"no {name} line in the stack's dump")


def check(name, ok, detail=""):
    results["passed" if ok else "failed"] += 1
    print(("PASS " if ok else "FAIL ") + name + (f" ({detail})" if detail else ""), flush=True)


def run(name, packet, expect, moves=None):
    """Sends `packet`, checks the answer with `expect`, and that counter `moves` went up."""
    before = counter(moves) if moves else 0
    drain()
    sock.send(eth(packet))
    ok, detail = expect()
    if moves:
        after = counter(moves)
        ok = ok and after > before
        detail += f"; {moves} {before} -> {after}"
    check(name, ok, detail)


# The stack must know our MAC first: an unsolicited neighbour advertisement
# creates no entry (RFC 4861 7.2.5), a solicitation with our MAC does.
ns = icmpv6(135, 0, b"\0\0\0\0" + STACK_IP + bytes([1, 1]) + ME_MAC,
            dst=socket.inet_pton(socket.AF_INET6, "ff02::1:ff00:2"))
sock.send(eth(ipv6(ns, 58, dst=socket.inet_pton(socket.AF_INET6, "ff02::1:ff00:2"), hop_limit=255),
              dst=bytes.fromhex("3333ff000002")))
na = next((f for f in frames_from_stack(2) if f[14 + 6] == 58 and f[14 + 40] == 136), None)
check("RFC 4861 7.2.4: a solicitation from our address is answered, solicited flag set, with the target's MAC",
      na is not None and na[14 + 44] & 0x40 != 0 and na[14 + 40 + 24:14 + 40 + 32] == bytes([2, 1]) + STACK_MAC)

# A working echo first: the checks below that expect silence mean something only if this answers.
def echoed():
    for frame in frames_from_stack(1.5):
        ip = frame[14:]
        if ip[6] == 58 and ip[40] == 129:
            return ip[44:48] == struct.pack("!HH", 0x6666, 1) and ip[48:] == b"blackbox", "reply"
    return False, "no echo reply"
run("an echo request to 2001:db8::2 is answered", ipv6(echo(), 58), echoed)


def parameter_problem(code, pointer):
    def expect():
        got = icmp_from_stack(4)
        if got is None:
            return False, "no parameter problem"
        return got[0] == code and got[1] == pointer and got[2][:4] == b"\x60\0\0\0", f"code {got[0]} pointer {got[1]}"
    return expect


# RFC 8200 4 / RFC 4443 3.4: an unknown next header → parameter problem code 1, pointer to the field naming it.
run("RFC 8200 4: unknown next header 253 → parameter problem code 1 pointing at byte 6",
    ipv6(b"\0" * 8, 253), parameter_problem(1, 6), "ipv6.drop_unsupported_next_header")

# Behind a destination options header, the pointer names that header's next-header byte (offset 40).
run("RFC 8200 4: unknown next header after destination options → code 1 pointing at byte 40",
    ipv6(options_header(253, b"") + b"\0" * 8, 60), parameter_problem(1, 40), "icmpv6.tx_parameter_problems")

# RFC 8200 4.2: option type 10xxxxxx → discard and parameter problem code 2 pointing at the option.
# (Types 0x1e, 0x5e, 0x9e and 0xde are RFC 4727's experimental ones: no dissector calls them malformed.)
run("RFC 8200 4.2: option type 0x9e → parameter problem code 2 pointing at the option (byte 42)",
    ipv6(options_header(58, bytes([0x9E, 2, 0, 0])) + echo(), 60), parameter_problem(2, 42), "ipv6.drop_unknown_option")

# Option type 01xxxxxx → discarded silently.
run("RFC 8200 4.2: option type 0x5e → discarded without an answer",
    ipv6(options_header(58, bytes([0x5E, 2, 0, 0])) + echo(), 60), lambda: (nothing_from_stack(), "silence"),
    "ipv6.drop_unknown_option")

# Option type 00xxxxxx → skipped: the echo inside is answered.
run("RFC 8200 4.2: option type 0x1e (skip) → the packet is processed, the echo answered",
    ipv6(options_header(58, bytes([0x1E, 2, 0, 0])) + echo(), 60), echoed, "icmpv6.tx_echo_replies")

# Option type 11xxxxxx to a multicast destination → discarded, no error (RFC 8200 4.2, RFC 4443 2.4 e.3).
run("RFC 8200 4.2: option type 0xde to ff02::1 → discarded without an error",
    ipv6(options_header(58, bytes([0xDE, 2, 0, 0])) + echo(dst=ALL_NODES), 60, dst=ALL_NODES),
    lambda: (nothing_from_stack(), "silence"), "ipv6.drop_unknown_option")

# Hop-by-hop options anywhere but first → unknown next header (RFC 8200 4.1).
run("RFC 8200 4.1: hop-by-hop options after another header → parameter problem code 1 at byte 40",
    ipv6(options_header(0, b"") + options_header(58, b"") + echo(), 60), parameter_problem(1, 40),
    "ipv6.drop_bad_extension_header")

# RFC 8200 4.4: a routing header with segments left, for a host that does not route → code 0 at the routing type.
routing = struct.pack("!BBBB", 58, 0, 253, 1) + b"\0" * 4
run("RFC 8200 4.4: routing header with segments left 1 → parameter problem code 0 at byte 42",
    ipv6(routing + echo(), 43), parameter_problem(0, 42), "ipv6.drop_routing_header")
routing_done = struct.pack("!BBBB", 58, 0, 253, 0) + b"\0" * 4
run("RFC 8200 4.4: routing header with segments left 0 → skipped, the echo answered", ipv6(routing_done + echo(), 43), echoed,
    "icmpv6.tx_echo_replies")


def fragment_header(next_header, offset, more, ident):
    return struct.pack("!BBHI", next_header, 0, offset | more, ident)


# RFC 8200 4.5: reassembly of a 3000-byte echo in three fragments, sent out of order.
big = echo(bytes(range(256)) * 11 + b"tail", seq=7)
pieces = [(0, big[:1232]), (1232, big[1232:2464]), (2464, big[2464:])]
drain()
for offset, data in reversed(pieces):
    sock.send(eth(ipv6(fragment_header(58, offset, 1 if offset < 2464 else 0, 0xABCD) + data, 44)))
reply = bytearray()
seen_fragments = 0
for frame in frames_from_stack(2):
    ip = frame[14:]
    if ip[6] == 44:
        seen_fragments += 1
        offset = struct.unpack("!H", ip[42:44])[0] & 0xFFF8
        data = ip[48:40 + struct.unpack("!H", ip[4:6])[0]]
        reply[offset:offset + len(data)] = data
        if not struct.unpack("!H", ip[42:44])[0] & 1 and len(reply) >= len(big):
            break
check("RFC 8200 4.5: a 2828-byte echo in 3 fragments (out of order) is answered in fragments that reassemble to the reply",
      seen_fragments >= 2 and bytes(reply[4:]) == big[4:] and reply[0] == 129, f"{seen_fragments} fragments")

# RFC 8200 4.5: a non-final fragment whose length is not a multiple of 8 → code 0 pointing at the payload length.
run("RFC 8200 4.5: a non-final fragment of 13 bytes → parameter problem code 0 at byte 4",
    ipv6(fragment_header(58, 0, 1, 0x1111) + echo()[:13], 44), parameter_problem(0, 4), "ipv6.drop_fragment_bad_length")

# Beyond 65535 bytes → code 0 pointing at the fragment offset field (byte 42).
run("RFC 8200 4.5: a fragment reaching past 65 535 bytes → parameter problem code 0 at byte 42",
    ipv6(fragment_header(58, 65528, 0, 0x2222) + b"\0" * 16, 44), parameter_problem(0, 42), "ipv6.drop_reassembly_oversize")

# RFC 5722: overlapping fragments → the whole datagram silently discarded.
first = echo(b"A" * 64, seq=9)
overlaps = counter("ipv6.drop_reassembly_overlap")
drain()
sock.send(eth(ipv6(fragment_header(58, 0, 1, 0x3333) + first[:48], 44)))
sock.send(eth(ipv6(fragment_header(58, 40, 0, 0x3333) + first[40:], 44)))
check("RFC 5722: overlapping fragments → discarded, no reply",
      nothing_from_stack() and counter("ipv6.drop_reassembly_overlap") > overlaps, "silence; ipv6.drop_reassembly_overlap moved")

# RFC 6946: an atomic fragment (offset 0, M 0) is processed on its own.
run("RFC 6946: an atomic fragment is processed at once: the echo inside answered",
    ipv6(fragment_header(58, 0, 0, 0x4444) + echo(), 44), echoed, "ipv6.rx_fragments")

# UDP: checksum 0 is invalid over IPv6 (RFC 8200 8.1): dropped, no port unreachable either.
run("RFC 8200 8.1: UDP with checksum 0 → dropped silently (even to a closed port)",
    ipv6(udp(b"zero", 5000, 9, zero_checksum=True), 17), lambda: (nothing_from_stack(), "silence"), "udp.drop_zero_checksum")

# RFC 4443 3.1: UDP to a closed port → destination unreachable code 4 quoting the packet.
probe = ipv6(udp(b"knock", 5000, 9), 17)
def port_unreachable():
    got = icmp_from_stack(1)
    if got is None:
        return False, "no unreachable"
    return got[0] == 4 and got[2] == probe, f"code {got[0]}, quote {len(got[2])} bytes"
run("RFC 4443 3.1: UDP to a closed port → unreachable code 4, quoting the whole packet", probe, port_unreachable,
    "icmpv6.tx_destination_unreachable")

# RFC 4443 2.4 (e.3): no error for a packet to a multicast address.
run("RFC 4443 2.4 e.3: UDP to a closed port at ff02::1 → no error",
    ipv6(udp(b"multi", 5000, 9, dst=ALL_NODES), 17, dst=ALL_NODES), lambda: (nothing_from_stack(), "silence"),
    "udp.drop_multicast_no_member")

# RFC 4443 2.4 (e.1): no error about an ICMPv6 error (an error with an unknown option must stay unanswered).
bogus_error = icmpv6(1, 4, b"\0\0\0\0" + b"\x60" + b"\0" * 39)
run("RFC 4443 2.4 e.1: an ICMPv6 error behind an option that would earn a parameter problem → no error about it",
    ipv6(options_header(58, bytes([0xDE, 2, 0, 0])) + bogus_error, 60), lambda: (nothing_from_stack(), "silence"),
    "icmpv6.tx_errors_suppressed")

# RFC 4861 7.1.1: a solicitation with hop limit below 255 is discarded: no advertisement.
bad_ns = icmpv6(135, 0, b"\0\0\0\0" + STACK_IP + bytes([1, 1]) + ME_MAC)
no_advertisement = lambda: (not any(f[14 + 6] == 58 and f[14 + 40] == 136 for f in frames_from_stack(1)), "no advertisement")
run("RFC 4861 7.1.1: a neighbour solicitation with hop limit 64 → discarded, no advertisement",
    ipv6(bad_ns, 58, hop_limit=64), no_advertisement, "icmpv6.drop_invalid_neighbor_discovery")

# RFC 4861 7.1.1: an option of length 0 → discarded.
zero_option = icmpv6(135, 0, b"\0\0\0\0" + STACK_IP + bytes([1, 0]) + ME_MAC)
run("RFC 4861 7.1.1: a solicitation with a zero-length option → discarded, no advertisement",
    ipv6(zero_option, 58, hop_limit=255), no_advertisement, "icmpv6.drop_invalid_neighbor_discovery")

# RFC 4861 7.1.2: a solicited advertisement to a multicast address → discarded (it would poison the cache).
bogus_na = icmpv6(136, 0, bytes([0x60, 0, 0, 0]) + STACK_IP + bytes([2, 1]) + ME_MAC, dst=ALL_NODES)
run("RFC 4861 7.1.2: an advertisement with the solicited flag sent to all nodes → discarded",
    ipv6(bogus_na, 58, dst=ALL_NODES, hop_limit=255), lambda: (nothing_from_stack(), "silence"),
    "icmpv6.drop_invalid_neighbor_discovery")


def router_advertisement(prefix, length=64, flags=0xC0, valid=3600, preferred=1800, src=None, hop_limit=255):
    info = struct.pack("!BBBBIII", 3, 4, length, flags, valid, preferred, 0) + socket.inet_pton(socket.AF_INET6, prefix)
    body = struct.pack("!BBHII", 64, 0, 0, 0, 0) + info
    source = src or socket.inet_pton(socket.AF_INET6, "fe80::bb")
    return ipv6(icmpv6(134, 0, body, src=source, dst=ALL_NODES), 58, src=source, dst=ALL_NODES, hop_limit=hop_limit)


def address_not_taken(prefix_address):
    """The stack starts no duplicate address detection for an address it
    must not configure: an address it took would be probed at once (a
    solicitation from :: for it), so watching the frames for 1.5 s tells.
    The valid RA of ipv6_test.sh shows the probe does come when it should."""
    target = socket.inet_pton(socket.AF_INET6, prefix_address)
    probed = any(f[14 + 6] == 58 and f[14 + 40] == 135 and f[14 + 8:14 + 24] == bytes(16)
                 and f[14 + 48:14 + 64] == target for f in frames_from_stack(1.5))
    return (not probed, "no probe for it")


# RFC 4862 5.5.3: only a prefix whose length fits the 64-bit identifier, with
# preferred <= valid lifetime, from a link-local router at hop limit 255, configures an address.
# First the positive case, so that silence below means something: a valid
# prefix is probed at once (and counted as autoconfigured).
run("RFC 4862 5.5.3: a valid /64 autonomous prefix is taken: its address is probed at once",
    router_advertisement("2001:db8:64::"), lambda: (not address_not_taken("2001:db8:64::ff:fe00:2")[0], "probed"),
    "ipv6.addresses_autoconfigured")
drain()
sock.send(eth(router_advertisement("2001:db8:48::", length=48)))
check("RFC 4862 5.5.3: a /48 autonomous prefix configures no address", address_not_taken("2001:db8:48::ff:fe00:2")[0])
drain()
sock.send(eth(router_advertisement("2001:db8:77::", valid=100, preferred=200)))
check("RFC 4862 5.5.3 c: preferred lifetime beyond the valid one → ignored", address_not_taken("2001:db8:77::ff:fe00:2")[0])
run("RFC 4861 6.1.2: an advertisement from a global source → discarded, configures nothing",
    router_advertisement("2001:db8:66::", src=ME_IP), lambda: address_not_taken("2001:db8:66::ff:fe00:2"),
    "icmpv6.drop_invalid_neighbor_discovery")
run("RFC 4861 6.1.2: an advertisement at hop limit 64 → discarded, configures nothing",
    router_advertisement("2001:db8:65::", hop_limit=64), lambda: address_not_taken("2001:db8:65::ff:fe00:2"),
    "icmpv6.drop_invalid_neighbor_discovery")

# RFC 3810 5.1, 6.2: a general MLD query (hop limit 1, Router Alert) is
# answered within its maximum response delay with an MLDv2 report to
# ff02::16 naming the stack's solicited-node groups.
router = socket.inet_pton(socket.AF_INET6, "fe80::bb")
query = icmpv6(130, 0, struct.pack("!HH", 500, 0) + bytes(16) + bytes(4), src=router, dst=ALL_NODES)
hop_by_hop = bytes([58, 0, 5, 2, 0, 0, 1, 0])
def mld_report():
    for frame in frames_from_stack(2):
        ip = frame[14:]
        if ip[24:40] == socket.inet_pton(socket.AF_INET6, "ff02::16") and ip[6] == 0 and ip[48] == 143:
            groups = {ip[48 + 8 + 20 * i + 4:48 + 8 + 20 * i + 20] for i in range(struct.unpack("!H", ip[54:56])[0])}
            return (ip[7] == 1 and socket.inet_pton(socket.AF_INET6, "ff02::1:ff00:2") in groups,
                    f"{len(groups)} group record(s), hop limit {ip[7]}")
    return False, "no report"
run("RFC 3810 6.2: a general MLD query is answered with an MLDv2 report of the solicited-node groups",
    ipv6(hop_by_hop + query, 0, src=router, dst=ALL_NODES, hop_limit=1), mld_report, "icmpv6.rx_mld_queries")

print(f"{results['passed']} passed, {results['failed']} failed")
sys.exit(1 if results["failed"] else 0)
