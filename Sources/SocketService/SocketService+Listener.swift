import CTapstackChannel
import TapstackProtocol
import FoundationEssentials
import Glibc
import Host
import SocketAPI
import Sockets
import Stack
import Synchronization
import Wire

// Accepting clients within the service's bounds (sockets, descriptors).
extension SocketService {
    func acceptAll() {
        while true {
            let fd = tsv_accept(listenFD)
            guard fd >= 0 else {
                if errno == EMFILE || errno == ENFILE {
                    // Out of descriptors: stop listening (a level-triggered
                    // listener would spin) until a client leaves.
                    counters.refusedNoDescriptor.add(1, ordering: .relaxed)
                    setListening(false)
                }
                return
            }
            // Connections beyond the socket bound are kept only to tell them
            // so (EMFILE on their open); beyond that they are closed at once.
            guard clients.count < maximumSockets + 64 else {
                counters.refusedTooMany.add(1, ordering: .relaxed)
                close(fd)
                continue
            }
            let client = RemoteSocket(id: nextID, control: fd)
            nextID += 1
            _ = tsv_peer_credentials(fd, &client.pid, &client.uid)
            clients[client.id] = client
            _ = tsv_epoll_set(epollFD, 1, fd, UInt32(TSV_IN), Self.tag(client.id, data: false))
            counters.connections.add(1, ordering: .relaxed)
        }
    }

    func setListening(_ on: Bool) {
        guard on != listening else { return }
        listening = on
        _ = tsv_epoll_set(epollFD, 2, listenFD, on ? UInt32(TSV_IN) : 0, Self.listenTag)
    }
}
