import Glibc
import Link
import Testing
import TestSupport
@testable import Sockets
@testable import Stack
@testable import Wire

/// Resources pushed to their bounds through the running stack: each stays
/// at its bound, every excess is counted, and service resumes afterwards.
@Suite(.serialized) struct ExhaustionTests {
    @Test func aSocketNeverReadStaysAtItsBoundAndRecovers() throws {
        let live = LiveHost(ringCapacity: 1024)
        let socket = UDPSocket(host: live.host)
        try socket.bind(port: 9)
        let frame = FrameBuilder.udpFrame(destinationPort: 9, payload: [UInt8](repeating: 1, count: 64))
        var injected = 0
        while injected < 50_000 {
            if live.link.inject(frame) { injected += 1 } else { sched_yield() }
        }
        // Until the executor has handled every frame injected.
        #expect(live.host.waitUntilIdle())
        let queued = live.host.withStack { stack in stack.udpEndpoints[9]?.first?.queuedDatagrams ?? -1 }
        let counters = live.host.counters
        let bound = StackConfiguration.standard.udpReceiveQueueDatagrams
        #expect(queued == bound)
        #expect(Int(counters[.udpRxDelivered]) == bound)
        #expect(Int(counters[.udpDropQueueFull]) == 50_000 - bound)
        // Reading again drains the queue, and new datagrams get through.
        for _ in 0..<bound { _ = try socket.receive() }
        #expect(throws: SocketError.wouldBlock) { try socket.receive() }
        live.link.inject(FrameBuilder.udpFrame(destinationPort: 9, payload: [42]))
        #expect(try socket.receive(timeout: .seconds(5)).payload == [42])
    }

    @Test func aSaturatedTransmitSideRefusesWithoutLossAndRecovers() throws {
        let live = LiveHost(ringCapacity: 64)
        live.learnPeer()
        let socket = UDPSocket(host: live.host)
        let peer = SocketAddress(FrameBuilder.peerIP, 9)
        var accepted = 0
        var refused = 0
        for _ in 0..<10_000 {
            do throws(SocketError) {
                try socket.send([1, 2, 3], to: peer)
                accepted += 1
            } catch .wouldBlock {
                refused += 1
            }
        }
        // Applications fill the ring but for the stack's reserve.
        let room = 64 - StackConfiguration.standard.transmitReserveFrames
        #expect(accepted == room && refused == 10_000 - room)
        #expect(live.host.counters[.udpTxDatagrams] == UInt64(room))
        #expect(live.host.counters[.ethernetTxDropLinkFull] == 0)
        // Echo requests meanwhile are still answered, from the reserve.
        live.link.inject(Captured.echoRequest)
        let deadline = ContinuousClock.now + .seconds(5)
        while live.host.counters[.icmpTxEchoReplies] == 0 && ContinuousClock.now < deadline { usleep(1000) }
        #expect(live.host.counters[.icmpTxEchoReplies] == 1)
        #expect(live.host.counters[.ethernetTxDropLinkFull] == 0)
        // The link drains: sending works again.
        var drained = 0
        while live.link.nextTransmitted(timeoutMilliseconds: 50) != nil { drained += 1 }
        #expect(drained == room + 1)
        try socket.send([4], to: peer, timeout: .seconds(5))
        #expect(live.link.nextTransmitted()?[42] == 4)
    }
}
