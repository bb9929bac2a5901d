#!/usr/bin/env python3
"""Black-box IGMP checks from the kernel side of the tap (RFC 2236, RFC 3376).

A program under `tapstack exec` holds memberships; this script plays the
querier with raw frames on the tap (AF_PACKET) and reads the stack's
answers. It drives the member through a FIFO of commands ("drop GROUP").

Usage: igmp_blackbox.py IFACE COMMAND_FIFO
Prints PASS/FAIL per check and "N passed, M failed".
"""
import os
import select
import socket
import struct
import sys
import time

from inetsum import checksum

IFACE, COMMANDS = sys.argv[1], sys.argv[2]
STACK_MAC = bytes.fromhex("020000000002")
QUERIER_MAC = bytes.fromhex("0200000000fe")
QUERIER_IP = socket.inet_aton("192.0.2.254")
ALL_HOSTS = socket.inet_aton("224.0.0.1")
PACKET_OUTGOING = 4
results = {"passed": 0, "failed": 0}

sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
sock.bind((IFACE, 0))


def multicast_mac(group):
    return bytes([0x01, 0x00, 0x5E, group[1] & 0x7F, group[2], group[3]])


def query(group=b"\0\0\0\0", max_response=20, version=3, destination=None):
    body = struct.pack("!BBH4s", 0x11, max_response, 0, group)
    if version == 3:
        body += struct.pack("!BBH", 2, 125, 0)
    body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
    destination = destination or (ALL_HOSTS if group == b"\0\0\0\0" else group)
    options = b"\x94\x04\x00\x00"
    header = struct.pack("!BBHHHBBH4s4s", 0x46, 0xC0, 24 + len(body), 1, 0, 1, 2, 0, QUERIER_IP, destination) + options
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    sock.send(multicast_mac(destination) + QUERIER_MAC + b"\x08\x00" + header + body)


def stack_igmp(seconds):
    """The stack's IGMP messages within `seconds`: (arrival delay, IP destination, message)."""
    start = time.monotonic()
    found = []
    while True:
        left = start + seconds - time.monotonic()
        if left <= 0:
            return found
        if not select.select([sock], [], [], left)[0]:
            continue
        frame, address = sock.recvfrom(65535)
        if address[2] == PACKET_OUTGOING or frame[6:12] != STACK_MAC or frame[12:14] != b"\x08\x00":
            continue
        ip = frame[14:]
        if ip[9] != 2:
            continue
        length = (ip[0] & 0x0F) * 4
        found.append((time.monotonic() - start, ip[16:20], ip[length:struct.unpack("!H", ip[2:4])[0]], ip))


def check(name, ok, detail=""):
    results["passed" if ok else "failed"] += 1
    print(("PASS " if ok else "FAIL ") + name + ("" if ok else ": " + detail), flush=True)


def records(message):
    """A v3 report's records as (type, group)."""
    count = struct.unpack("!H", message[6:8])[0]
    at, out = 8, []
    for _ in range(count):
        kind, aux, sources = message[at], message[at + 1], struct.unpack("!H", message[at + 2:at + 4])[0]
        out.append((kind, socket.inet_ntoa(message[at + 4:at + 8])))
        at += 8 + 4 * sources + 4 * aux
    return out


def command(line):
    with open(COMMANDS, "w") as fifo:
        fifo.write(line + "\n")


G1, G2 = socket.inet_aton("239.1.2.3"), socket.inet_aton("239.1.2.5")

# Let the unsolicited join reports pass (robustness 2, within 1 s each).
stack_igmp(2.5)

query(max_response=20)  # v3 general query, 2 s
answers = stack_igmp(3.0)
v3 = [a for a in answers if a[2][0] == 0x22]
check("v3 general query answered with one v3 report to 224.0.0.22 within its 2 s",
      len(v3) == 1 and v3[0][0] <= 2.3 and v3[0][1] == socket.inet_aton("224.0.0.22"), repr(answers))
got = sorted(records(v3[0][2])) if v3 else []
check("the report holds MODE_IS_EXCLUDE for each joined group and nothing for 224.0.0.1",
      got == [(2, "239.1.2.3"), (2, "239.1.2.5")], repr(got))
check("the report carries TTL 1 and the Router Alert option",
      bool(v3) and v3[0][3][8] == 1 and v3[0][3][20:24] == b"\x94\x04\x00\x00", repr(v3[0][3][:24] if v3 else None))

query(group=G1, max_response=10)  # v3 group-specific, 1 s
answers = stack_igmp(2.0)
got = [records(a[2]) for a in answers if a[2][0] == 0x22]
check("v3 group-specific query answered for that group only within its 1 s",
      got == [[(2, "239.1.2.3")]] and answers[0][0] <= 1.3, repr(answers))

query(group=socket.inet_aton("239.9.9.9"), max_response=10)
answers = stack_igmp(1.5)
check("a query for a group the stack does not hold is not answered", not answers, repr(answers))

command("drop 239.1.2.5")
answers = stack_igmp(1.5)
got = [records(a[2]) for a in answers if a[2][0] == 0x22]
check("in v3 mode the last drop is reported as CHANGE_TO_INCLUDE {}", [(3, "239.1.2.5")] in got, repr(answers))
stack_igmp(1.5)  # its repetition

query(max_response=20, version=2)  # v2 general query, 2 s
answers = stack_igmp(3.0)
v2 = [a for a in answers if a[2][0] == 0x16]
check("v2 general query answered with a v2 report to the group within its 2 s",
      len(v2) == 1 and v2[0][1] == G1 and v2[0][2][4:8] == G1 and v2[0][0] <= 2.3, repr(answers))
check("no v3 report in v2 compatibility mode", not [a for a in answers if a[2][0] == 0x22], repr(answers))

query(group=G1, max_response=10, version=2)
answers = stack_igmp(2.0)
check("v2 group-specific query answered within its 1 s",
      len(answers) == 1 and answers[0][2][0] == 0x16 and answers[0][0] <= 1.3, repr(answers))

command("drop 239.1.2.3")
answers = stack_igmp(1.5)
leaves = [a for a in answers if a[2][0] == 0x17]
check("in v2 mode the last drop sends a leave to 224.0.0.2",
      len(leaves) == 1 and leaves[0][1] == socket.inet_aton("224.0.0.2") and leaves[0][2][4:8] == G1, repr(answers))

query(max_response=10, version=2)
answers = stack_igmp(1.5)
check("with only 224.0.0.1 left, a general query gets no report", not answers, repr(answers))

print(f"{results['passed']} passed, {results['failed']} failed")
sys.exit(1 if results["failed"] else 0)
