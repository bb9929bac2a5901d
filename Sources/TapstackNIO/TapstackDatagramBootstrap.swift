import Glibc
import NIOCore
import SocketAPI
import Sockets
import TapstackClient

/// Makes `TapstackDatagramChannel`s as NIO's `DatagramBootstrap` makes
/// datagram channels: swap the bootstrap and the rest of a NIO UDP program
/// (handlers, `AddressedEnvelope<ByteBuffer>`, `NIOAsyncChannel`) runs on tapstack.
///
///     let channel = try await TapstackDatagramBootstrap(group: group, host: host)   // or servicePath:
///         .channelOption(.socketOption(.so_reuseaddr), value: 1)
///         .channelInitializer { channel in channel.pipeline.addHandler(EchoHandler()) }
///         .bind(host: "0.0.0.0", port: 9007).get()
///
/// Two backends: a stack in this process (`host:`), or a running stack's
/// socket service (`servicePath:`, as `tapstack exec` uses).
public final class TapstackDatagramBootstrap {
    private enum Backend {
        case inProcess(NetworkHost)
        case service(String)
    }

    private let group: EventLoopGroup
    private let backend: Backend
    private var options = ChannelOptions.Storage()
    private var initializer: (@Sendable (Channel) -> EventLoopFuture<Void>)?

    /// Channels on a stack in this process.
    public init(group: EventLoopGroup, host: NetworkHost) {
        self.group = group
        backend = .inProcess(host)
    }

    /// Channels on the stack serving `servicePath` (`tapstack run --socket`).
    public init(group: EventLoopGroup, servicePath: String = TapstackClient.UDPSocket.defaultServicePath) {
        self.group = group
        backend = .service(servicePath)
    }

    /// Sets an option on every channel made (see `TapstackDatagramChannel` for those supported).
    @discardableResult
    public func channelOption<Option: ChannelOption>(_ option: Option, value: Option.Value) -> Self {
        options.append(key: option, value: value)
        return self
    }

    /// Runs `initializer` on each channel before it binds or connects (add handlers here).
    @discardableResult
    public func channelInitializer(_ initializer: @escaping @Sendable (Channel) -> EventLoopFuture<Void>) -> Self {
        self.initializer = initializer
        return self
    }

    /// A channel bound to `host` (an address of the stack, or 0.0.0.0) and `port` (0: ephemeral).
    public func bind(host: String, port: Int) -> EventLoopFuture<Channel> {
        make(host: host, port: port) { channel, address in channel.bind(to: address) }
    }

    /// A channel connected to `host`:`port`: it sends there by default and
    /// receives only from there; ICMP errors come back as `IOError`s.
    public func connect(host: String, port: Int) -> EventLoopFuture<Channel> {
        make(host: host, port: port) { channel, address in channel.connect(to: address) }
    }

    /// `bind`, then `channelInitializer` run on the channel's loop: its
    /// result (e.g. an `NIOAsyncChannel` wrapping the channel) is returned.
    public func bind<Output: Sendable>(host: String, port: Int,
                                       channelInitializer: @escaping @Sendable (Channel) -> EventLoopFuture<Output>) async throws -> Output {
        let channel = try await bind(host: host, port: port).get()
        return try await channel.eventLoop.flatSubmit { channelInitializer(channel) }.get()
    }

    /// `connect`, then `channelInitializer` on the channel's loop, as `bind` above.
    public func connect<Output: Sendable>(host: String, port: Int,
                                          channelInitializer: @escaping @Sendable (Channel) -> EventLoopFuture<Output>) async throws -> Output {
        let channel = try await connect(host: host, port: port).get()
        return try await channel.eventLoop.flatSubmit { channelInitializer(channel) }.get()
    }

    private func make(host: String, port: Int,
                      _ finish: @escaping @Sendable (Channel, NIOCore.SocketAddress) -> EventLoopFuture<Void>) -> EventLoopFuture<Channel> {
        let loop = group.next()
        let address: NIOCore.SocketAddress
        do { address = try NIOCore.SocketAddress(ipAddress: host, port: port) } catch { return loop.makeFailedFuture(error) }
        // The channel's family follows the address, as NIO's own bootstraps open theirs.
        let family: AddressFamily
        switch address {
        case .v4: family = .ipv4
        case .v6: family = .ipv6
        default: return loop.makeFailedFuture(IOError(errnoCode: EAFNOSUPPORT, reason: "socket"))
        }
        let socketBackend: DatagramBackend
        switch backend {
        case .inProcess(let host):
            socketBackend = InProcessBackend(host: host, family: family)
        case .service(let path):
            do throws(SocketError) { socketBackend = try ServiceBackend(servicePath: path, family: family) } catch {
                return loop.makeFailedFuture(error.ioError("socket"))
            }
        }
        let channel = TapstackDatagramChannel(backend: socketBackend, eventLoop: loop)
        let options = self.options, initializer = self.initializer
        let unchecked = UncheckedChannel(channel)
        return loop.flatSubmit {
            let channel = unchecked.channel
            // As NIO's bootstraps: options, then the initializer's handlers,
            // then registration (so they see channelRegistered), then bind or connect.
            return options.applyAllChannelOptions(to: channel)
                .flatMap { initializer?(channel) ?? loop.makeSucceededVoidFuture() }
                .flatMap {
                    channel.register0(promise: nil)
                    return finish(channel, address)
                }
                .map { channel as Channel }
                .flatMapErrorThrowing { error in
                    channel.close(promise: nil)
                    throw error
                }
        }
    }
}
