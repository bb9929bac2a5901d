import ArgumentParser
import CTapstackChannel
import Glibc

/// `tapstack exec`: run a program whose UDP sockets are the stack's, through
/// the socket service and the LD_PRELOAD shim (as torsocks does for Tor).
struct Exec: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a program with its UDP/IPv4 sockets on a running tapstack.",
        discussion: """
        The program is run with libtapstack-preload.so preloaded: its AF_INET \
        datagram sockets are opened on the stack serving --socket (see 'tapstack \
        run --socket'), so they send from the stack's address and receive what \
        reaches it. Its other descriptors (TCP, IPv6, Unix sockets, files) are \
        the system's. Statically linked programs cannot be preloaded.

          tapstack exec -- nc -u 192.0.2.1 9000
        """
    )

    @Option(name: .long, help: ArgumentHelp("The stack's socket service. (default: $TAPSTACK_SOCKET, else /run/tapstack/INTERFACE.sock)", valueName: "path"))
    var socket: String?

    @Option(name: .long, help: ArgumentHelp("The stack's TAP device, naming its default socket /run/tapstack/NAME.sock.", valueName: "name"))
    var interface: String = "tap0"

    @Option(name: .long, help: ArgumentHelp("The preload library. (default: libtapstack-preload.so beside this executable, else in ../lib as 'make install' puts it)", valueName: "path"))
    var preload: String?

    @Option(name: .customLong("busy-poll"), help: ArgumentHelp("""
        Microseconds a blocking receive of the program polls its socket's \
        shared ring before it sleeps, as if every socket had SO_BUSY_POLL \
        (0: sleep at once), or 'auto' (the default): a window that follows \
        the gaps between datagrams, within four wake-ups as measured here, \
        none in a stream. $TAPSTACK_BUSY_POLL for the program. Its poll() \
        and select() still sleep at once.
        """, valueName: "microseconds|auto"))
    var busyPoll: String?

    @Argument(parsing: .postTerminator, help: ArgumentHelp("The program and its arguments, after --.", valueName: "command"))
    var command: [String] = []

    func validate() throws {
        guard !command.isEmpty else { throw ValidationError("give the program to run after --, e.g. tapstack exec -- nc -u 192.0.2.1 9000") }
        if let busyPoll, busyPoll != "auto", !(Int(busyPoll).map { (0...Int(TSC_BUSY_POLL_MAX_US)).contains($0) } ?? false) {
            throw ValidationError("--busy-poll takes microseconds (0 to \(TSC_BUSY_POLL_MAX_US)) or 'auto', not \(busyPoll)")
        }
    }

    /// The service path: --socket, else $TAPSTACK_SOCKET, else the interface's default.
    var servicePath: String {
        if let socket { return socket }
        if let fromEnvironment = getenv("TAPSTACK_SOCKET").map({ String(cString: $0) }), !fromEnvironment.isEmpty {
            return fromEnvironment
        }
        return "/run/tapstack/\(interface).sock"
    }

    func run() throws {
        let path = servicePath
        var status = stat()
        guard stat(path, &status) == 0 else {
            throw CleanFailure("no tapstack socket service at \(path): \(String(cString: strerror(errno))) (start 'tapstack run', or give --socket)")
        }
        guard status.st_mode & S_IFMT == S_IFSOCK else { throw CleanFailure("\(path) is not a socket") }
        let library = preload ?? Self.installedPreload()
        guard access(library, R_OK) == 0 else {
            throw CleanFailure("cannot read the preload library \(library): \(String(cString: strerror(errno))) (build it with 'swift build', or give --preload)")
        }
        let absolute = library.hasPrefix("/") ? library : Self.currentDirectory() + "/" + library
        let existing = getenv("LD_PRELOAD").map { String(cString: $0) } ?? ""
        setenv("LD_PRELOAD", existing.isEmpty ? absolute : absolute + ":" + existing, 1)
        setenv("TAPSTACK_SOCKET", path, 1)
        if let busyPoll { setenv("TAPSTACK_BUSY_POLL", busyPoll, 1) }
        // main() ignores SIGPIPE for the stack; the program gets the default back.
        signal(SIGPIPE, SIG_DFL)
        let arguments = command.map { strdup($0) } + [nil]
        execvp(command[0], arguments)
        let error = errno
        printError("tapstack: error: cannot run \(command[0]): \(String(cString: strerror(error)))\n")
        Glibc.exit(error == ENOENT ? 127 : 126)
    }

    /// The preload library beside the executable (a build), else in the
    /// `lib` directory beside its `bin` (an install).
    static func installedPreload() -> String {
        let beside = besideExecutable("libtapstack-preload.so")
        if access(beside, R_OK) == 0 { return beside }
        let installed = besideExecutable("../lib/libtapstack-preload.so")
        return access(installed, R_OK) == 0 ? installed : beside
    }

    /// `name` in the directory of the running executable.
    static func besideExecutable(_ name: String) -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard length > 0 else { return name }
        let executable = String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard let slash = executable.lastIndex(of: "/") else { return name }
        return String(executable[..<slash]) + "/" + name
    }

    static func currentDirectory() -> String {
        guard let directory = getcwd(nil, 0) else { return "." }
        defer { free(directory) }
        return String(cString: directory)
    }
}
