"""recvmmsg and sendmmsg through ctypes, as a C program calls them: under
`tapstack exec` the preload shim's, which Python's socket module never calls."""
import ctypes
import socket
import struct

libc = ctypes.CDLL(None, use_errno=True)


class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(iovec)),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", msghdr), ("len", ctypes.c_uint)]


def recvmmsg(s, count, size=64, flags=socket.MSG_DONTWAIT):
    """Returns recvmmsg's result and the payloads it filled in."""
    buffers = [ctypes.create_string_buffer(size) for _ in range(count)]
    parts = (iovec * count)(*[iovec(ctypes.cast(b, ctypes.c_void_p), size) for b in buffers])
    messages = (mmsghdr * count)()
    for i in range(count):
        messages[i].hdr.iov = ctypes.pointer(parts[i])
        messages[i].hdr.iovlen = 1
    n = libc.recvmmsg(s.fileno(), messages, count, flags, None)
    return n, [buffers[i].raw[:messages[i].len] for i in range(max(n, 0))]


def sendmmsg(s, datagrams, flags=0):
    """Sends (host, port, payload) triples in one call; returns its result
    and the lengths it reported sent."""
    count = len(datagrams)
    names = [ctypes.create_string_buffer(struct.pack("=H", socket.AF_INET) + struct.pack("!H", port)
                                         + socket.inet_aton(host) + bytes(8), 16) for host, port, _ in datagrams]
    payloads = [ctypes.create_string_buffer(payload, len(payload)) for _, _, payload in datagrams]
    parts = (iovec * count)(*[iovec(ctypes.cast(b, ctypes.c_void_p), len(b)) for b in payloads])
    messages = (mmsghdr * count)()
    for i in range(count):
        messages[i].hdr.name = ctypes.cast(names[i], ctypes.c_void_p)
        messages[i].hdr.namelen = 16
        messages[i].hdr.iov = ctypes.pointer(parts[i])
        messages[i].hdr.iovlen = 1
    n = libc.sendmmsg(s.fileno(), messages, count, flags)
    return n, [messages[i].len for i in range(max(n, 0))]
