#!/usr/bin/env python3
"""A one-name DNS server for tests: answers every A query with ADDRESS.

Usage: dnsanswer.py LISTEN-ADDRESS ADDRESS COUNT   (serves COUNT queries, then exits)
"""
import socket
import sys

listen, address, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
server.bind((listen, 53))
print("ready", flush=True)
for _ in range(count):
    query, client = server.recvfrom(2048)
    end = 12
    while query[end] != 0:
        end += query[end] + 1
    question = query[12:end + 5]
    header = query[:2] + b"\x81\x80" + b"\x00\x01\x00\x01\x00\x00\x00\x00"
    answer = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + socket.inet_aton(address)
    server.sendto(header + question + answer, client)
    print(f"answered {client[0]}:{client[1]}", flush=True)
