import CTapstackChannel
import TapstackProtocol
import Glibc
import SocketAPI
import Synchronization
import TapstackClient
import Testing
import Wire

/// A service that answers control requests as the test scripts it: the
/// client's side of the protocol under timing the real service never shows.
final class ScriptedService: @unchecked Sendable {
    let path: String
    private let listener: Int32
    private var thread: JoinableThread?

    /// `answer` gets each request and returns the reply to send (nil: none).
    init(answer: @escaping @Sendable (tsp_request) -> tsp_reply?) throws {
        let path = "/tmp/tapstack-scripted-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
        self.path = path
        let listener = socket(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        self.listener = listener
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        try #require(bound == 0 && listen(listener, 4) == 0)
        thread = JoinableThread(name: "scripted-service") {
            let control = accept(listener, nil, nil)
            guard control >= 0 else { return }
            defer { close(control) }
            var request = tsp_request()
            while withUnsafeMutableBytes(of: &request, { recv(control, $0.baseAddress, $0.count, 0) }) == MemoryLayout<tsp_request>.size {
                guard var reply = answer(request) else { continue }
                var pair: [Int32] = [-1, -1]
                var passed: Int32 = -1
                if request.op == UInt16(TSP_OPEN.rawValue) {
                    _ = socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue), 0, &pair)
                    passed = pair[0]
                }
                reply.sequence = request.sequence
                _ = tsv_send_reply(control, &reply, passed)
                if passed >= 0 { close(pair[0]) }  // the client's end stays open in the client; ours leaks with the test
            }
        }
    }

    func stop() {
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        unlink(path)
        thread?.join()
    }
}

@Suite(.serialized) struct TapstackClientTests {
    /// Issue 14 item 8: a reply that came after its request timed out was
    /// taken as the answer to the next request.
    @Test func aLateReplyIsNotTakenForTheNextRequestsAnswer() throws {
        let bindTimedOut = Event()
        let service = try ScriptedService { request in
            var reply = tsp_reply()
            switch UInt32(request.op) {
            case TSP_BIND.rawValue:
                // Answers only after the client gave up, and with an error.
                _ = bindTimedOut.wait(timeoutMilliseconds: 10_000)
                reply.error = EADDRINUSE
            case TSP_NAMES.rawValue:
                reply.local_address = tsp_address(IPv4Address(192, 0, 2, 2))
                reply.local_port = 4321
            default: break
            }
            return reply
        }
        defer {
            bindTimedOut.signal()
            service.stop()
        }
        var socket = tsc_socket()
        try #require(tsc_open(&socket, service.path, AF_INET, 0) == 0)
        defer { tsc_close(&socket) }
        // The service's patience, shortened for the test.
        var patience = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(socket.control_fd, SOL_SOCKET, SO_RCVTIMEO, &patience, socklen_t(MemoryLayout<timeval>.size))

        var any = tsp_address(IPv4Address.any)
        #expect(tsc_bind(&socket, &any, 4321) == -1 && errno == ETIMEDOUT)
        bindTimedOut.signal()  // the late EADDRINUSE reply is now on its way
        var address = tsp_address(), port: UInt16 = 0, connected: Int32 = 0, remoteAddress = tsp_address(), remotePort: UInt16 = 0
        let names = tsc_names(&socket, &address, &port, &connected, &remoteAddress, &remotePort)
        let error = errno
        #expect(names == 0, "names failed with errno \(error): the late bind reply was taken for its answer")
        #expect(port == 4321)
    }

    /// Issue 14 item 9: a send racing `close()` on another thread used the
    /// descriptor after close, when the number may name another file.
    @Test func aSendRacingCloseNeverWritesToAReusedDescriptor() throws {
        let served = try ServedHost()
        served.learnPeer()
        var strayWrites = 0, racedSends = 0
        for _ in 0..<200 {
            let socket = try TapstackClient.UDPSocket(servicePath: served.path)
            let number = socket.fileDescriptor
            let started = Event()
            let outcome = Mutex<(sentAfterClose: Bool, closed: Bool)>((false, false))
            let sender = JoinableThread(name: "sender") {
                started.signal()
                let payload: [UInt8] = [1, 2, 3, 4]
                for _ in 0..<100_000 {
                    do throws(SocketError) {
                        try socket.send(payload, to: peer)
                    } catch .closed {
                        outcome.withLock { $0.closed = true }
                        return
                    } catch {
                        // .wouldBlock when the channel is full; keep going
                    }
                }
            }
            _ = started.wait(timeoutMilliseconds: 10_000)
            socket.close()
            // The lowest free number is the one close released (if it was
            // released yet): a pair of sockets takes it, and anything the
            // sender writes after the close lands in it.
            var pair: [Int32] = [-1, -1]
            try #require(socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0, &pair) == 0)
            sender.join()
            var byte: UInt8 = 0
            for end in pair where end == number {
                let other = end == pair[0] ? pair[1] : pair[0]
                if recv(other, &byte, 1, Int32(MSG_DONTWAIT)) >= 0 { strayWrites += 1 }
            }
            if outcome.withLock({ $0.closed }) { racedSends += 1 }
            close(pair[0])
            close(pair[1])
        }
        #expect(strayWrites == 0)
        // The scenario happened: senders were running when their socket closed.
        #expect(racedSends > 100)
    }
}
