import Glibc

/// The command line of an example, handled as `tapstack` handles its own:
/// `--help` prints the usage (status 0); an unknown option or too many
/// arguments print an error and the usage (status 64); an error while
/// running is one line on standard error (status 1), never a backtrace.
public struct ExampleCommand: Sendable {
    /// The program's name, as invoked.
    public let name: String
    private let usage: String
    private let arguments: [String]

    /// Reads the command line; exits on `--help` or misuse.
    /// - Parameters:
    ///   - usage: what follows the program's name in the usage line.
    ///   - maximumArguments: how many positional arguments it takes.
    public init(usage: String, maximumArguments: Int) {
        name = String(CommandLine.arguments.first.map { $0.split(separator: "/").last.map(String.init) ?? $0 } ?? "example")
        self.usage = "usage: \(name) \(usage)\n"
        arguments = Array(CommandLine.arguments.dropFirst())
        if arguments.contains("--help") || arguments.contains("-h") {
            print(self.usage, terminator: "")
            exit(0)
        }
        if let option = arguments.first(where: { $0.hasPrefix("-") && $0 != "-" }) {
            fail(usage: "unknown option '\(option)'")
        }
        if arguments.count > maximumArguments {
            fail(usage: "unexpected argument '\(arguments[maximumArguments])'")
        }
    }

    /// Positional argument `index`, or nil when not given.
    public func argument(_ index: Int) -> String? {
        index < arguments.count ? arguments[index] : nil
    }

    /// Positional argument `index` converted by `parse`; nil when not given;
    /// exits with the usage when it does not convert.
    public func argument<Value>(_ index: Int, as what: String, _ parse: (String) -> Value?) -> Value? {
        guard let text = argument(index) else { return nil }
        guard let value = parse(text) else { fail(usage: "'\(text)' is not \(what)") }
        return value
    }

    /// Runs `body`; an error it throws ends the program with one line.
    public func run(_ body: () throws -> Void) -> Never {
        do {
            try body()
            exit(0)
        } catch {
            fail("\(error)")
        }
    }

    /// Runs `body`; an error it throws ends the program with one line.
    public func run(_ body: () async throws -> Void) async -> Never {
        do {
            try await body()
            exit(0)
        } catch {
            fail("\(error)")
        }
    }

    /// Prints "NAME: message" on standard error and exits with status 1.
    public func fail(_ message: String) -> Never {
        writeStandardError("\(name): \(message)\n")
        exit(1)
    }

    private func fail(usage message: String) -> Never {
        writeStandardError("\(name): \(message)\n\(usage)")
        exit(64)
    }
}

private func writeStandardError(_ text: String) {
    var bytes = Array(text.utf8)[...]
    while !bytes.isEmpty {
        let written = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        if written < 0 && errno == EINTR { continue }
        guard written > 0 else { return }
        bytes = bytes.dropFirst(written)
    }
}
