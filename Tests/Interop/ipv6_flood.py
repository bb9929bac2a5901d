#!/usr/bin/env python3
"""Floods tapstack's IPv6 state from the kernel side of its tap (raw frames):
COUNT neighbour solicitations from COUNT different sources and MACs (each
makes a neighbour cache entry), then COUNT first fragments of datagrams that
never complete (each makes a reassembly entry). Bounded in count; sends
nothing outside the test's namespace.

Usage: ipv6_flood.py IFACE COUNT
"""
import socket
import struct
import sys
import time

from inetsum import checksum

IFACE, COUNT = sys.argv[1], int(sys.argv[2])
STACK_MAC = bytes.fromhex("020000000002")
STACK_IP = socket.inet_pton(socket.AF_INET6, "2001:db8::2")
SOLICITED = socket.inet_pton(socket.AF_INET6, "ff02::1:ff00:2")

sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.bind((IFACE, 0))


def packet(src, dst, next_header, payload, hop_limit=255):
    return struct.pack("!IHBB", 6 << 28, len(payload), next_header, hop_limit) + src + dst + payload


for i in range(COUNT):
    mac = bytes([2, 0x77, 0, 0, i >> 8 & 0xFF, i & 0xFF])
    src = socket.inet_pton(socket.AF_INET6, "2001:db8::1:%x" % (i + 1))
    message = struct.pack("!BBHI", 135, 0, 0, 0) + STACK_IP + bytes([1, 1]) + mac
    value = checksum(src + SOLICITED + struct.pack("!IxxxB", len(message), 58) + message)
    message = message[:2] + struct.pack("!H", value) + message[4:]
    if i % 200 == 199:
        time.sleep(0.02)  # the tap's queue holds 1000 frames: paced so that the stack, not the kernel, drops
    sock.send(bytes.fromhex("3333ff000002") + mac + b"\x86\xdd" + packet(src, SOLICITED, 58, message))

for i in range(COUNT):
    src = socket.inet_pton(socket.AF_INET6, "2001:db8::2:%x" % (i + 1))
    if i % 200 == 199:
        time.sleep(0.02)
    fragment = struct.pack("!BBHI", 17, 0, 0 | 1, i) + b"\0" * 512
    sock.send(STACK_MAC + bytes.fromhex("0200000000cc") + b"\x86\xdd" + packet(src, STACK_IP, 44, fragment, 64))
print(f"sent {COUNT} solicitations and {COUNT} first fragments")
