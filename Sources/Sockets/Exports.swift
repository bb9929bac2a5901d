// `import Sockets` is all an application needs: the socket API's types
// (addresses, errors, readiness, events) and the host that runs the stack.
@_exported import Host
@_exported import SocketAPI
