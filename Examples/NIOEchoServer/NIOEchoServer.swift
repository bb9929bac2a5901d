// SwiftNIO's own UDP echo server (NIOUDPEchoServer), on tapstack: only the
// bootstrap differs. By default on the running stack's socket service (the
// path `tapstack exec` uses); with --interface, on a stack in this process.
import ArgumentParser
import Glibc
import NIOCore
import NIOPosix
import Sockets
import TapstackClient
import TapstackNIO

private final class EchoHandler: ChannelInboundHandler {
    public typealias InboundIn = AddressedEnvelope<ByteBuffer>
    public typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // As we are not really interested getting notified on success or failure we just pass nil as promise to
        // reduce allocations.
        context.write(data, promise: nil)
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    public func errorCaught(context: ChannelHandlerContext, error: Error) {
        print("error: ", error)
        // A datagram socket outlives a peer's ICMP error; NIO's example closes, an echo server keeps serving.
    }
}

@main
struct NIOEchoServer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nio-echo-server",
        abstract: "SwiftNIO's UDP echo server on tapstack.")

    @Option(help: ArgumentHelp("The running stack's socket service. (default: $TAPSTACK_SOCKET, else /run/tapstack/tap0.sock)", valueName: "path"))
    var socket: String = TapstackClient.UDPSocket.defaultServicePath

    @Option(help: ArgumentHelp("Bring up a stack in this process on this TAP device instead (root), as 192.0.2.2/24.", valueName: "name"))
    var interface: String?

    @Option(help: "UDP port to echo on.")
    var port: Int = 9007

    func validate() throws {
        guard (1...65535).contains(port) else { throw ValidationError("--port must be 1 to 65535, not \(port)") }
    }

    func run() throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        // The one change from NIO's example: TapstackDatagramBootstrap instead of DatagramBootstrap.
        let bootstrap: TapstackDatagramBootstrap
        if let interface {
            bootstrap = TapstackDatagramBootstrap(group: group, host: try NetworkHost.start(interface: interface))
        } else {
            bootstrap = TapstackDatagramBootstrap(group: group, servicePath: socket)
        }
        bootstrap
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(EchoHandler())
                }
            }
        defer { try! group.syncShutdownGracefully() }

        let channel: Channel
        do { channel = try bootstrap.bind(host: "0.0.0.0", port: port).wait() } catch {
            throw Failure("cannot bind UDP port \(port) on \(interface.map { "a stack on \($0)" } ?? "the stack serving \(socket)"): \(error)")
        }
        print("Server started and listening on \(channel.localAddress!)")
        fflush(nil)
        try channel.closeFuture.wait()
        print("Server closed")
    }
}

/// A failure at run time (not a misuse): one line, exit status 1.
struct Failure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
