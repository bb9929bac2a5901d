// A SwiftNIO UDP client on tapstack: each line of standard input goes to
// HOST PORT from the stack's address; replies are printed as they come,
// until --wait seconds pass after the last line.
import ArgumentParser
import Glibc
import NIOCore
import NIOPosix
import Sockets
import TapstackClient
import TapstackNIO

private final class PrintHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        print("\(envelope.remoteAddress): \(String(buffer: envelope.data))", terminator: envelope.data.readableBytesView.last == 10 ? "" : "\n")
        fflush(nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        print("error: \(error)")  // e.g. connection refused: nothing listens there
        fflush(nil)
    }
}

@main
struct NIOClient: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nio-client",
        abstract: "Send standard input's lines as UDP datagrams from tapstack, with SwiftNIO.")

    @Argument(help: "Destination IPv4 address.")
    var host: String

    @Argument(help: "Destination UDP port.")
    var port: Int

    @Option(help: ArgumentHelp("The running stack's socket service. (default: $TAPSTACK_SOCKET, else /run/tapstack/tap0.sock)", valueName: "path"))
    var socket: String = TapstackClient.UDPSocket.defaultServicePath

    @Option(help: "Seconds to wait for replies after the last line.")
    var wait: Double = 1

    func validate() throws {
        guard (1...65535).contains(port) else { throw ValidationError("port must be 1 to 65535, not \(port)") }
        guard (0...3600).contains(wait) else { throw ValidationError("--wait must be 0 to 3600 seconds") }
    }

    func run() throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try! group.syncShutdownGracefully() }
        let channel: Channel
        do {
            channel = try TapstackDatagramBootstrap(group: group, servicePath: socket)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(PrintHandler()) }
                }
                .connect(host: host, port: port).wait()
        } catch {
            throw Failure("cannot reach \(host):\(port) through the stack serving \(socket): \(error)")
        }
        let remote = channel.remoteAddress!
        while let line = readLine(strippingNewline: false) {
            let buffer = channel.allocator.buffer(string: line)
            try channel.writeAndFlush(AddressedEnvelope(remoteAddress: remote, data: buffer)).wait()
        }
        usleep(useconds_t(wait * 1_000_000))
        try channel.close().wait()
    }
}

/// A failure at run time (not a misuse): one line, exit status 1.
struct Failure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
