import Glibc
import Synchronization
import Testing
@testable import Link

/// The driver thread over a datagram socket pair standing in for the TAP fd
/// (one frame per read and write, pollable), in both I/O modes.
@Suite struct EthernetDriverTests {
    /// A driver on one end of a socket pair; the test plays the kernel on the other end.
    final class Harness {
        let driver: EthernetDriver
        let peer: Int32

        /// - Parameter startsDriver: false leaves `driver.start()` to the test
        ///   (for handlers that need the driver, set before its thread starts).
        init(mode: LinkIOMode, ringCapacity: Int = 1024, startsDriver: Bool = true,
             receiveHandler: (@Sendable () -> Bool)? = nil) {
            var fds: [Int32] = [0, 0]
            precondition(socketpair(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0, &fds) == 0)
            // The peer blocks, so the test's writes wait for the driver rather than fail.
            _ = fcntl(fds[1], F_SETFL, 0)
            var size: Int32 = 4 << 20
            for fd in fds {
                setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
                setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
            }
            driver = EthernetDriver(device: TapDevice(adopting: fds[0], name: "pair"), ringCapacity: ringCapacity, ioMode: mode)
            peer = fds[1]
            if let receiveHandler { driver.setReceiveHandler(receiveHandler) }
            if startsDriver { driver.start() }
        }

        deinit {
            driver.stop()
            close(peer)
        }

        /// The next frame the driver wrote to the device, or nil after two seconds.
        func frameFromDevice() -> [UInt8]? {
            var pollfd = Glibc.pollfd(fd: peer, events: Int16(POLLIN), revents: 0)
            guard poll(&pollfd, 1, 2000) == 1 else { return nil }
            var buffer = [UInt8](repeating: 0, count: 2048)
            let n = read(peer, &buffer, buffer.count)
            return n > 0 ? Array(buffer[0..<n]) : nil
        }

        /// Writes each frame and reads the device's answer before the next;
        /// stops at the first frame not answered within two seconds.
        func pingPong(_ frames: [[UInt8]]) -> [[UInt8]] {
            var answers: [[UInt8]] = []
            for frame in frames {
                guard write(peer, frame, frame.count) == frame.count, let answer = frameFromDevice() else { break }
                answers.append(answer)
            }
            return answers
        }

        /// Frames from the RX ring until `count` came or two seconds passed.
        func receive(_ count: Int) -> [[UInt8]] {
            var frames: [[UInt8]] = []
            let deadline = monotonicNanoseconds() + 2_000_000_000
            while frames.count < count && monotonicNanoseconds() < deadline {
                if let frame = driver.rx.pop() { frames.append(frame) } else { usleep(100) }
            }
            return frames
        }
    }

    static func frame(_ index: Int, length: Int) -> [UInt8] {
        (0..<length).map { UInt8(truncatingIfNeeded: index &* 31 &+ $0) }
    }

    @Test(arguments: LinkIOMode.allCases)
    func framesFromTheDeviceReachTheRXRingInOrderAndIntact(mode: LinkIOMode) {
        let harness = Harness(mode: mode)
        let sent = (0..<500).map { Self.frame($0, length: 60 + $0 % 1400) }
        for frame in sent { #expect(write(harness.peer, frame, frame.count) == frame.count) }
        let received = harness.receive(sent.count)
        #expect(received == sent)
        #expect(harness.driver.counters.rxFrames.load(ordering: .relaxed) == 500)
        #expect(harness.driver.ioMode == mode)
    }

    @Test(arguments: LinkIOMode.allCases)
    func framesFromTheTXRingReachTheDeviceInOrderAndIntact(mode: LinkIOMode) {
        let harness = Harness(mode: mode)
        let sent = (0..<500).map { Self.frame($0, length: 42 + $0 % 1472) }
        var received: [[UInt8]] = []
        var next = 0
        while received.count < sent.count {
            // Keep the ring topped up while reading, as the stack would.
            while next < sent.count, sent[next].withUnsafeBytes({ harness.driver.tx.push($0) }) { next += 1 }
            harness.driver.transmitted()
            guard let frame = harness.frameFromDevice() else { break }
            received.append(frame)
        }
        #expect(received == sent)
        #expect(harness.driver.counters.txFrames.load(ordering: .relaxed) == 500)
    }

    @Test(arguments: LinkIOMode.allCases)
    func aFullRXRingDropsAndCountsWhatDoesNotFit(mode: LinkIOMode) {
        let harness = Harness(mode: mode, ringCapacity: 8)
        let sent = (0..<20).map { Self.frame($0, length: 64) }
        for frame in sent { #expect(write(harness.peer, frame, frame.count) == frame.count) }
        let deadline = monotonicNanoseconds() + 2_000_000_000
        while harness.driver.counters.rxFrames.load(ordering: .relaxed) < 20 && monotonicNanoseconds() < deadline { usleep(100) }
        // The first eight fill the ring; the other twelve were read and dropped, counted.
        #expect(harness.receive(8) == Array(sent[0..<8]))
        #expect(harness.driver.counters.rxRingFull.load(ordering: .relaxed) == 12)
    }

    /// The stack's hand-over runs on the driver thread right after frames
    /// arrive; what it queues for transmission goes out in the same loop.
    @Test(arguments: LinkIOMode.allCases)
    func theReceiveHandlerTakesFramesOnTheDriverThreadAndItsAnswersGoOut(mode: LinkIOMode) {
        let testThread = UInt(bitPattern: Int(bitPattern: UInt(pthread_self())))
        let onOtherThread = Atomic<Int>(0)
        let ringsBox = RingsBox()
        let harness = Harness(mode: mode, startsDriver: false) {
            if UInt(pthread_self()) != testThread { onOtherThread.add(1, ordering: .relaxed) }
            return ringsBox.echoAll()
        }
        ringsBox.driver = harness.driver
        harness.driver.start()
        let sent = (0..<300).map { Self.frame($0, length: 60 + $0 % 1400) }
        #expect(harness.pingPong(sent) == sent)
        #expect(onOtherThread.load(ordering: .relaxed) > 0)
        #expect(harness.driver.counters.rxBatchesInline.load(ordering: .relaxed) > 0)
        #expect(harness.driver.counters.rxBatchesToStackThread.load(ordering: .relaxed) == 0)
        // One frame at a time is light traffic: io_uring gave way to read()/write().
        let switches = harness.driver.counters.ioModeSwitches.load(ordering: .relaxed)
        #expect(mode == .ioUring && harness.driver.ioMode == .ioUring ? switches == 1 : switches == 0)
    }

    /// After a ping-pong moved the driver to read()/write(), a burst moves it
    /// back to io_uring, and no frame is lost or reordered on either change.
    @Test func aBurstAfterAPingPongGoesBackToIoUring() throws {
        let ringsBox = RingsBox()
        let harness = Harness(mode: .ioUring, startsDriver: false) { ringsBox.echoAll() }
        ringsBox.driver = harness.driver
        harness.driver.start()
        try #require(harness.driver.ioMode == .ioUring, "io_uring is refused here: \(harness.driver.ioUringUnavailableReason ?? "")")
        let pingPong = (0..<100).map { Self.frame($0, length: 64) }
        #expect(harness.pingPong(pingPong) == pingPong)
        #expect(harness.driver.counters.ioModeSwitches.load(ordering: .relaxed) == 1)
        let submissionsBefore = harness.driver.counters.batchSubmissions.load(ordering: .relaxed)

        // Bursts of 200 written before any echo is read: many frames per pass.
        var burstEchoed: [[UInt8]] = []
        var burstSent: [[UInt8]] = []
        for round in 0..<10 {
            let burst = (0..<200).map { Self.frame(1000 + round * 200 + $0, length: 60 + $0 % 1400) }
            for frame in burst { #expect(write(harness.peer, frame, frame.count) == frame.count) }
            burstSent += burst
            for _ in burst {
                guard let echo = harness.frameFromDevice() else { break }
                burstEchoed.append(echo)
            }
        }
        #expect(burstEchoed == burstSent)
        #expect(harness.driver.counters.ioModeSwitches.load(ordering: .relaxed) == 2)
        #expect(harness.driver.counters.batchSubmissions.load(ordering: .relaxed) > submissionsBefore)
    }

    /// A hand-over that cannot take the frames (the stack thread is busy)
    /// leaves them in the RX ring, and the stack thread is told.
    @Test(arguments: LinkIOMode.allCases)
    func framesTheHandlerDeclinesStayForTheStackThread(mode: LinkIOMode) {
        let harness = Harness(mode: mode) { false }
        let sent = (0..<50).map { Self.frame($0, length: 64) }
        for frame in sent { #expect(write(harness.peer, frame, frame.count) == frame.count) }
        #expect(harness.receive(sent.count) == sent)
        #expect(harness.driver.counters.rxBatchesInline.load(ordering: .relaxed) == 0)
        #expect(harness.driver.counters.rxBatchesToStackThread.load(ordering: .relaxed) > 0)
    }
}

/// Lets a handler made before the driver reach it once it exists.
private final class RingsBox: @unchecked Sendable {
    // Set before the driver thread starts; read on that thread.
    var driver: EthernetDriver?

    /// Echoes every frame in the RX ring into the TX ring, as a stack
    /// answering on the driver thread would; true when RX is then empty.
    func echoAll() -> Bool {
        guard let driver else { return false }
        while let frame = driver.rx.peek() {
            guard driver.tx.push(frame) else { break }
            driver.rx.release()
        }
        return driver.rx.isEmpty
    }
}
