// `import Sockets` is all an application needs: the socket API's types
// (addresses, errors, readiness, events), the host that runs the stack, the
// links it runs on (a TAP device, or a memory link for tests) and the
// stack's configuration and counters.
@_exported import Host
@_exported import Link
@_exported import SocketAPI
@_exported import Stack
@_exported import Wire
