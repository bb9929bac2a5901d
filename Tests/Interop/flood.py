#!/usr/bin/env python3
"""Bounded floods of hostile input at the stack through its tap.

Usage: flood.py IFACE KIND COUNT
KIND: malformed (random and half-valid frames), arp (ARP requests from COUNT
distinct senders), fragments (COUNT incomplete fragment sets), udp (COUNT
datagrams to port 7, never read back). Sends exactly COUNT frames and exits.
"""
import os
import random
import socket
import struct
import sys

from inetsum import checksum

IFACE, KIND, COUNT = sys.argv[1], sys.argv[2], int(sys.argv[3])
STACK_MAC = bytes.fromhex("020000000002")
STACK_IP = socket.inet_aton("192.0.2.2")
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
sock.bind((IFACE, 0))
sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)


def ipv4(payload, proto, src, ident, flags=0, offset=0):
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, flags << 13 | offset // 8, 64, proto, 0,
                         src, STACK_IP)
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:] + payload


def mac_for(i):
    return bytes([0x02, 0x10]) + struct.pack("!I", i)


def source_for(i):
    # 192.0.2.0/24 has only 253 usable peers; rotate through them, and
    # through off-subnet sources too (which the stack must not learn from ARP).
    return socket.inet_aton("192.0.2.%d" % (3 + i % 250)) if i % 2 else struct.pack("!I", 0x0A000000 + i)


def frame(i):
    if KIND == "malformed":
        choice = i % 4
        if choice == 0:
            return STACK_MAC + mac_for(i) + os.urandom(random.randrange(2, 200))
        if choice == 1:  # IPv4 with a random header
            return STACK_MAC + mac_for(i) + b"\x08\x00" + os.urandom(random.randrange(1, 100))
        if choice == 2:  # ARP with random body
            return b"\xff" * 6 + mac_for(i) + b"\x08\x06" + os.urandom(random.randrange(1, 60))
        good = ipv4(struct.pack("!HHHH", 1000, 7, 8 + 32, 0) + os.urandom(32), 17, source_for(i), i & 0xFFFF)
        corrupt = bytearray(good)
        corrupt[random.randrange(len(corrupt))] ^= 1 << random.randrange(8)
        return STACK_MAC + mac_for(i) + b"\x08\x00" + bytes(corrupt)
    if KIND == "arp":
        sender_ip = struct.pack("!I", 0xC0000200 | (3 + i % 250)) if i % 3 == 0 else struct.pack("!I", 0x0A000000 + i)
        body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac_for(i) + sender_ip + b"\0" * 6 + STACK_IP
        return b"\xff" * 6 + mac_for(i) + b"\x08\x06" + body
    if KIND == "fragments":
        src = socket.inet_aton("192.0.2.%d" % (3 + i % 250))
        return STACK_MAC + mac_for(i) + b"\x08\x00" + ipv4(os.urandom(1480), 17, src, i & 0xFFFF, flags=1, offset=0)
    if KIND == "udp":
        src = socket.inet_aton("192.0.2.1")
        return STACK_MAC + mac_for(1) + b"\x08\x00" + ipv4(struct.pack("!HHHH", 1000, 7, 8 + 64, 0) + os.urandom(64), 17,
                                                           src, i & 0xFFFF)
    raise SystemExit("unknown kind " + KIND)


sent = 0
for i in range(COUNT):
    try:
        sock.send(frame(i))
        sent += 1
    except OSError:
        pass  # the tap's queue is full: the kernel drops, as a wire would
print("sent %d %s frames" % (sent, KIND))
