#!/usr/bin/env bash
# Other programs on the stack through the socket service: `tapstack exec`
# runs unmodified nc and python3 with the preload shim; the kernel side of
# the TAP (192.0.2.1) talks to them as to any host at 192.0.2.2.
source "$(dirname "$0")/lib.sh"

SOCK=$WORK/tapstack.sock
start_stack --socket "$SOCK" --pcap "$WORK/run.pcap" || { echo "FAIL $TEST_NAME: stack did not start"; finish; exit 1; }
wait_for test -S "$SOCK"
EXEC=("$BIN" exec --socket "$SOCK" --)

socket_is_private() {
    local mode
    mode=$(stat -c %a "$SOCK") || return 1
    echo "mode $mode"
    [ "$mode" = 660 ]
}

start_kernel_echo 9100

nc_client_reaches_kernel_listener() {
    in_ns timeout 10 nc -n -u -l -v 192.0.2.1 9000 >"$WORK/listener.out" 2>"$WORK/listener.err" &
    local listener=$!
    wait_for kernel_udp_bound 9000
    echo "hello from tapstack exec" | in_ns timeout 10 "${EXEC[@]}" nc -u -w1 192.0.2.1 9000
    local status=$?
    wait_for grep -q "hello from tapstack exec" "$WORK/listener.out"
    kill "$listener" 2>/dev/null; wait "$listener" 2>/dev/null
    echo "exec status $status; listener got '$(cat "$WORK/listener.out")'; $(cat "$WORK/listener.err")"
    [ "$status" = 0 ] && [ "$(cat "$WORK/listener.out")" = "hello from tapstack exec" ] &&
        grep -q "Connection received on 192.0.2.2 " "$WORK/listener.err"
}

pcap_shows_the_stack_as_source() {
    local out
    out=$(tcpdump -n -r "$WORK/run.pcap" udp port 9000 2>/dev/null)
    echo "$out"
    grep -qE "192\.0\.2\.2\.[0-9]+ > 192\.0\.2\.1\.9000: " <<<"$out"
}

nc_listener_under_exec_talks_both_ways() {
    # The stack side listens (nc -l under exec); the kernel's nc sends first,
    # then the listener answers on the same flow.
    mkfifo "$WORK/reply"
    in_ns timeout 10 "${EXEC[@]}" nc -u -l 9001 <"$WORK/reply" >"$WORK/stackside.out" &
    local listener=$!
    exec 7>"$WORK/reply"   # the listener's input, written once it has heard from the kernel side
    # The kernel side sends until the stack no longer refuses the port (the
    # listener is bound), then waits for the answer.
    in_ns timeout 10 python3 - >"$WORK/kernelside.out" <<'PY' &
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("192.0.2.2", 9001))
deadline = time.time() + 9
while time.time() < deadline:
    try:
        s.send(b"hello stack side\n")
        s.settimeout(0.2)
        data = s.recv(100)
    except ConnectionRefusedError:
        time.sleep(0.02)
        continue
    except socket.timeout:
        s.settimeout(max(0.1, deadline - time.time()))
        data = s.recv(100)
    sys.stdout.write(data.decode())
    break
PY
    local kernel_side=$!
    wait_for grep -q "hello stack side" "$WORK/stackside.out"
    echo "reply from the stack side" >&7
    wait "$kernel_side"
    exec 7>&-
    kill "$listener" 2>/dev/null; wait "$listener" 2>/dev/null
    echo "stack side got '$(cat "$WORK/stackside.out")'; kernel side got '$(cat "$WORK/kernelside.out")'"
    [ "$(cat "$WORK/stackside.out")" = "hello stack side" ] && [ "$(cat "$WORK/kernelside.out")" = "reply from the stack side" ]
}

# Event loops on the descriptor a program holds: python asyncio's datagram
# endpoint, and epoll edge triggered (one edge per arrival after a drain to
# EAGAIN), with the datagrams in the socket's shared-memory rings.
event_loops_see_every_datagram() {
    in_ns timeout 30 "${EXEC[@]}" python3 - <<'PY'
import asyncio, errno, select, socket

async def echoes():
    loop = asyncio.get_running_loop()
    got, waiting = [], {}
    class Collect(asyncio.DatagramProtocol):
        def datagram_received(self, data, address):
            got.append(int(data))
            if waiting.get("count") == len(got):
                waiting["future"].set_result(None)
    transport, _ = await loop.create_datagram_endpoint(Collect, remote_addr=("192.0.2.1", 9100))
    for window in range(30):
        waiting["count"], waiting["future"] = len(got) + 10, loop.create_future()
        for i in range(10):
            transport.sendto(b"%d" % (window * 10 + i))
        await asyncio.wait_for(waiting["future"], 5)
    transport.close()
    assert got == list(range(300)), got[:20]
asyncio.run(echoes())

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
s.connect(("192.0.2.1", 9100))
ep = select.epoll()
ep.register(s.fileno(), select.EPOLLIN | select.EPOLLET)
received = []
for burst in range(40):
    for i in range(5):
        s.send(b"%d" % (burst * 5 + i))
    while len(received) < (burst + 1) * 5:
        assert ep.poll(5), "no edge for burst %d after %d datagrams" % (burst, len(received))
        while True:
            try:
                received.append(int(s.recv(100)))
            except BlockingIOError:
                break
assert received == list(range(200)), received[:20]
# Drained: no edge and nothing readable until the next datagram.
assert ep.poll(0.2) == [] and select.select([s], [], [], 0)[0] == []
print("asyncio 300 and epoll edge-triggered 200 echoes in order")
PY
}

python_socket_api_works() {
    in_ns timeout 20 "${EXEC[@]}" python3 - <<'PY'
import errno, os, select, socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
assert s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_DGRAM
s.bind(("0.0.0.0", 0))
address, port = s.getsockname()
assert address == "0.0.0.0" and 49152 <= port <= 65535, (address, port)
s.settimeout(2)
s.sendto(b"one" * 100, ("192.0.2.1", 9100))
data, peer = s.recvfrom(4096)
assert data == b"one" * 100 and peer == ("192.0.2.1", 9100), (data, peer)
# select: nothing waiting, then a datagram waiting.
assert select.select([s], [], [], 0.2)[0] == []
s.sendto(b"two", ("192.0.2.1", 9100))
assert select.select([s], [], [], 2)[0] == [s]
assert s.recvfrom(4096) == (b"two", ("192.0.2.1", 9100))
# recvfrom with a timeout and nothing coming: socket.timeout after about that long.
s.settimeout(0.3)
start = time.monotonic()
try:
    s.recvfrom(4096)
    raise AssertionError("expected a timeout")
except socket.timeout:
    assert 0.25 <= time.monotonic() - start < 2
# Errors POSIX reports on the call.
for destination, expected in ((("10.9.9.9", 9), errno.ENETUNREACH), (("192.0.2.255", 9), errno.EACCES)):
    try:
        s.sendto(b"x", destination)
        raise AssertionError("sendto %s should fail" % (destination,))
    except OSError as e:
        assert e.errno == expected, (destination, e)
try:
    s.sendto(b"x" * 65508, ("192.0.2.1", 9100))
    raise AssertionError("expected EMSGSIZE")
except OSError as e:
    assert e.errno == errno.EMSGSIZE, e
# A connected socket: send/recv, getpeername.
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
c.connect(("192.0.2.1", 9100))
assert c.getpeername() == ("192.0.2.1", 9100)
# As on Linux, a connected socket's name is the source address chosen (issue 14 item 14).
assert c.getsockname()[0] == "192.0.2.2", c.getsockname()
c.settimeout(2)
c.send(b"three")
assert c.recv(100) == b"three"
# A 1472-byte datagram, a fragmented 4000-byte one and the largest (too
# large for the socket's ring: it goes on the channel) come back whole.
for size in (1472, 4000, 65507):
    sent = bytes(range(256)) * (size // 256) + bytes(size % 256)
    c.send(sent)
    assert c.recv(65535) == sent, size
# A duplicate descriptor names the same socket (SO_TYPE, SO_DOMAIN and SO_PROTOCOL are
# what socket.socket(fileno=) asks), and outlives the original being closed.
d = socket.socket(fileno=os.dup(c.fileno()))
assert (d.family, d.type, d.getpeername()) == (socket.AF_INET, socket.SOCK_DGRAM, ("192.0.2.1", 9100))
c.close()
d.settimeout(2)
d.send(b"four")
assert d.recv(100) == b"four"
# To the stack's own address: delivered locally, as Linux does (issue 14 item 15).
e = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
e.bind(("0.0.0.0", 9400))
e.settimeout(2)
f = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
f.sendto(b"to myself", ("192.0.2.2", 9400))
data, source = e.recvfrom(100)
assert data == b"to myself" and source == ("192.0.2.2", f.getsockname()[1]), (data, source)
print("python socket API through tapstack exec: ok")
PY
}


killed_program_leaves_nothing_behind() {
    # A program bound to 9200 sending as fast as it can is killed with SIGKILL.
    ip netns exec "$NS" "${EXEC[@]}" python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9200))
while True:
    try:
        s.sendto(b"x" * 1000, ("192.0.2.1", 9300))
    except OSError:
        pass
' &
    local sender=$! sent_before
    sent_before=$(stack_counter service.tx_datagrams)
    # Killed mid-transfer: once the stack has taken its first 1000 datagrams.
    sending() { [ "$(stack_counter service.tx_datagrams)" -ge $((sent_before + 1000)) ]; }
    wait_for sending || { echo "the program never sent"; return 1; }
    kill -KILL "$sender"; wait "$sender" 2>/dev/null
    released_all() { [ "$(stack_counter service.sockets_opened)" = "$(stack_counter service.sockets_released)" ]; }
    wait_for released_all
    local opened released
    opened=$(stack_counter service.sockets_opened)
    released=$(stack_counter service.sockets_released)
    echo "opened $opened released $released"
    [ -n "$opened" ] && [ "$opened" = "$released" ] || return 1
    # Its port is free again.
    in_ns timeout 10 "${EXEC[@]}" python3 -c '
import socket
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).bind(("0.0.0.0", 9200))
print("port 9200 bound again")'
}

forked_sender_killed_mid_send_leaves_the_socket_usable() {
    # A child shares its parent's socket (fork) and sends as fast as it can,
    # datagrams too long for the shared ring, which go on the channel under
    # the region's send lock (a blocking send while the channel is full);
    # it is killed with SIGKILL, mostly while it holds that lock. The
    # parent's next send and receive must still go through. 40 rounds, each
    # bounded by an alarm.
    in_ns timeout 120 "${EXEC[@]}" python3 -c '
import os, signal, socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9210))
s.settimeout(5)
s.sendto(b"first", ("192.0.2.1", 9100))  # the peer resolved before the bursts (they overflow ARP'"'"'s queue)
assert s.recvfrom(100)[0] == b"first"
for round in range(40):
    ready, tell = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(ready)
        sent = 0
        while True:
            try:
                s.sendto(b"y" * 65000, ("192.0.2.1", 9300))
            except OSError:
                pass
            sent += 1
            if sent == 20 + round:
                os.write(tell, b"!")  # the parent kills it from here on
    os.close(tell)
    os.read(ready, 1)
    os.close(ready)
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
    signal.alarm(5)  # a lock the dead child kept would hang the parent here
    message = b"parent %d" % round
    s.sendto(message, ("192.0.2.1", 9100))
    while True:
        data, source = s.recvfrom(100)
        if data == message:
            break
    signal.alarm(0)
print("40 children killed while sending; the parent sent and received after each")'
}

two_programs_at_once() {
    local script='
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
tag = sys.argv[1].encode()
for i in range(300):
    s.sendto(tag + str(i).encode(), ("192.0.2.1", 9100))
    data, _ = s.recvfrom(100)
    assert data == tag + str(i).encode(), data
print(sys.argv[1], "300 echoes")'
    in_ns timeout 30 "${EXEC[@]}" python3 -c "$script" first &
    local a=$!
    in_ns timeout 30 "${EXEC[@]}" python3 -c "$script" second &
    local b=$!
    wait "$a" && wait "$b"
}

recvmmsg_leaves_an_error_for_the_next_call() {
    # A kernel-side peer answers twice and closes its port: the program's
    # next datagram to it brings back port unreachable, queued behind the
    # two answers. recvmmsg returns the answers; the error is the next
    # call's, as with a kernel socket (it was lost before: the shim's
    # recvmmsg took it after the answers and returned only their count).
    # The program moves on only when the test saw each step happen.
    local answered=$WORK/recvmmsg-answered errored=$WORK/recvmmsg-errored status
    mkfifo "$answered" "$errored"
    # The earlier checks' port unreachables used up the kernel's burst for
    # this host (the namespace's own setting).
    in_ns sysctl -qw net.ipv4.icmp_ratelimit=0
    local received_before errors_before
    received_before=$(stack_counter service.rx_datagrams)
    errors_before=$(stack_counter service.rx_errors_delivered)
    ip netns exec "$NS" python3 - <<'PY' &
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("192.0.2.1", 9302))
s.settimeout(10)
_, peer = s.recvfrom(100)
s.sendto(b"a", peer)
s.sendto(b"b", peer)
PY
    local peer=$!
    wait_for kernel_udp_bound 9302
    in_ns timeout 20 env PYTHONPATH="$ROOT/Tests/Interop" "${EXEC[@]}" python3 - "$answered" "$errored" >"$WORK/recvmmsg.out" 2>&1 <<'PY' &
import socket, sys
from mmsg import recvmmsg
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("192.0.2.1", 9302))
s.send(b"hi")
open(sys.argv[1]).read()  # both answers reached this socket, and the peer's port is closed
s.send(b"x")
open(sys.argv[2]).read()  # the stack passed the port unreachable on
n, payloads = recvmmsg(s, 8)
events = [payload.decode() for payload in payloads]
s.settimeout(0.5)
for _ in range(3):
    try:
        events.append(s.recv(64).decode())
    except ConnectionRefusedError:
        events.append("refused")
    except socket.timeout:
        events.append("nothing")
        break
print(n, events)
PY
    local program=$!
    delivered() { [ "$(stack_counter service.rx_datagrams)" -ge $((received_before + 2)) ] 2>/dev/null; }
    reported() { [ "$(stack_counter service.rx_errors_delivered)" -gt "$errors_before" ] 2>/dev/null; }
    # Each hand-over bounded: a program that died before opening its fifo never reads it.
    wait_for delivered && wait "$peer" && timeout 10 bash -c 'echo >"$1"' _ "$answered" &&
        wait_for reported && timeout 10 bash -c 'echo >"$1"' _ "$errored"
    wait "$program"; status=$?
    kill "$peer" 2>/dev/null; wait "$peer" 2>/dev/null
    cat "$WORK/recvmmsg.out"
    [ "$status" = 0 ] && grep -qx "2 \['a', 'b', 'refused', 'nothing'\]" "$WORK/recvmmsg.out"
}

sendmmsg_sends_in_order_and_stops_at_a_refusal() {
    # The shim sends all but the first datagram of a sendmmsg as one batch
    # in the socket's ring; the kernel side sees them in order, and a call
    # stops at the first the stack refuses, returning how many went.
    ip netns exec "$NS" python3 - >"$WORK/sendmmsg-kernel.out" 2>&1 <<'PY' &
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("192.0.2.1", 9303))
s.settimeout(10)
got = []
while len(got) < 3:
    got.append(s.recv(100).decode())
print(got, flush=True)
PY
    local kernel=$! status
    wait_for kernel_udp_bound 9303
    in_ns timeout 20 env PYTHONPATH="$ROOT/Tests/Interop" "${EXEC[@]}" python3 - <<'PY'
import socket
from mmsg import sendmmsg
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
first = sendmmsg(s, [("192.0.2.1", 9303, b"one"), ("192.0.2.1", 9303, b"two"), ("10.9.9.9", 9, b"bad"), ("192.0.2.1", 9303, b"four")])
second = sendmmsg(s, [("192.0.2.1", 9303, b"four")])
print(first, second)
assert first == (2, [3, 3]) and second == (1, [4]), (first, second)
PY
    status=$?
    wait "$kernel"
    cat "$WORK/sendmmsg-kernel.out"
    [ "$status" = 0 ] && grep -qx "\['one', 'two', 'four'\]" "$WORK/sendmmsg-kernel.out"
}

missing_service_is_a_clear_error() {
    local out status
    out=$(in_ns "$BIN" exec --socket "$WORK/nothing.sock" -- true 2>&1); status=$?
    echo "$out (status $status)"
    [ "$status" != 0 ] && [ "$(wc -l <<<"$out")" = 1 ] && grep -q "no tapstack socket service at $WORK/nothing.sock" <<<"$out"
}

check "the service socket has mode 0660" socket_is_private
check "tapstack exec -- nc -u 192.0.2.1 9000 reaches the kernel's nc -u -l from 192.0.2.2" nc_client_reaches_kernel_listener
check "the stack's pcap shows 192.0.2.2 sending to 192.0.2.1:9000" pcap_shows_the_stack_as_source
check "tapstack exec -- nc -u -l 9001 receives from the kernel and answers it" nc_listener_under_exec_talks_both_ways
check "python3 sendto, recvfrom with timeout, select and errors through tapstack exec" python_socket_api_works
check "asyncio's datagram endpoint and epoll edge triggered see every datagram in order under exec" event_loops_see_every_datagram
check "a program killed mid-transfer leaves no socket or port behind" killed_program_leaves_nothing_behind
check "a forked sender killed mid-send leaves the socket usable for the others" forked_sender_killed_mid_send_leaves_the_socket_usable
check "two programs use the stack at once" two_programs_at_once
check "sendmmsg under exec sends in order and stops at the first refused datagram" sendmmsg_sends_in_order_and_stops_at_a_refusal
check "recvmmsg under exec returns the datagrams and leaves the error behind them for the next call" recvmmsg_leaves_an_error_for_the_next_call
check "exec without a service fails with one line" missing_service_is_a_clear_error
stop_stack TERM
check "the socket file is removed at exit" test ! -e "$SOCK"
finish
