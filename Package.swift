// swift-tools-version: 6.1
import PackageDescription
import class Foundation.ProcessInfo

let package = Package(
    name: "tapstack",
    products: [
        .executable(name: "tapstack", targets: ["tapstack"]),
        .library(name: "Sockets", targets: ["Sockets"]),
        .library(name: "SocketAPI", targets: ["SocketAPI"]),
        .library(name: "TapstackClient", targets: ["TapstackClient"]),
        // SwiftNIO on tapstack: a datagram Channel and its bootstrap.
        .library(name: "TapstackNIO", targets: ["TapstackNIO"]),
        .executable(name: "nio-echo-server", targets: ["NIOEchoServer"]),
        .executable(name: "nio-client", targets: ["NIOClient"]),
        // The stack's counters into swift-metrics, for applications that embed it.
        .library(name: "TapstackMetrics", targets: ["TapstackMetrics"]),
        // LD_PRELOAD shim for `tapstack exec`: plain C, no Swift runtime.
        .library(name: "tapstack-preload", type: .dynamic, targets: ["TapstackPreload"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.0"),
    ],
    targets: [
        // C glue: eventfd and thread calls Swift cannot see from Glibc (no
        // library beyond libc, so clients can link it); TUN ioctls and io_uring.
        .target(name: "CTapstackSystem"),
        .target(name: "CTun", linkerSettings: [.linkedLibrary("uring")]),
        .systemLibrary(name: "CPcap", pkgConfig: "libpcap", providers: [.apt(["libpcap-dev"])]),

        .target(name: "Wire"),
        // Addresses, errors, readiness, the DatagramSocket protocol: what
        // every socket API shares, in-process or across processes.
        .target(name: "SocketAPI", dependencies: ["Wire", "CTapstackSystem"]),
        .target(name: "Stack", dependencies: ["Wire", "SocketAPI"]),
        .target(name: "Link", dependencies: ["Wire", "SocketAPI", "CTun", "CTapstackSystem", "CPcap"]),
        // The executor that runs the core over a link.
        .target(name: "Host", dependencies: ["Stack", "Link", "SocketAPI", "Wire", "CTapstackSystem"]),
        // The socket service's channel protocol, its client side (shared by
        // TapstackClient and the preload shim) and the service's system calls.
        .target(name: "CTapstackChannel"),
        .target(name: "TapstackPreload", dependencies: ["CTapstackChannel"],
                linkerSettings: [.linkedLibrary("dl")]),
        .target(name: "Sockets", dependencies: ["Host", "Stack", "SocketAPI", "Wire"]),
        // The service protocol's Swift side shared by the service and the client.
        .target(name: "TapstackProtocol", dependencies: ["SocketAPI", "Wire", "CTapstackChannel"]),
        .target(name: "SocketService", dependencies: ["Sockets", "Host", "Stack", "SocketAPI", "Wire", "CTapstackChannel", "TapstackProtocol"]),
        .target(name: "TapstackClient", dependencies: ["SocketAPI", "Wire", "CTapstackChannel", "TapstackProtocol"]),
        .target(name: "TapstackNIO", dependencies: [
            "Sockets", "TapstackClient", "SocketAPI", "Wire", .product(name: "NIOCore", package: "swift-nio"),
        ]),
        .target(name: "TapstackMetrics", dependencies: ["Sockets", .product(name: "CoreMetrics", package: "swift-metrics")]),
        .executableTarget(
            name: "tapstack",
            dependencies: [
                "Sockets", "SocketService", "TapstackClient", "CTapstackChannel", "Host", "Stack", "Link", "SocketAPI", "Wire",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // The README's examples, built so they stay true.
        // ExampleSupport: their command line (--help, misuse, errors in one line).
        .target(name: "ExampleSupport", path: "Examples/ExampleSupport"),
        .executableTarget(name: "EchoBlocking", dependencies: ["Sockets", "ExampleSupport"], path: "Examples/EchoBlocking"),
        .executableTarget(name: "EchoCallbacks", dependencies: ["Sockets", "ExampleSupport"], path: "Examples/EchoCallbacks"),
        .executableTarget(name: "EchoAsync", dependencies: ["Sockets", "ExampleSupport"], path: "Examples/EchoAsync"),
        .executableTarget(name: "EchoOverService", dependencies: ["TapstackClient", "Sockets", "ExampleSupport"],
                          path: "Examples/EchoOverService"),

        .executableTarget(name: "NIOEchoServer", dependencies: [
            "TapstackNIO", "Sockets", "TapstackClient", .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"), .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], path: "Examples/NIOEchoServer"),
        .executableTarget(name: "NIOClient", dependencies: [
            "TapstackNIO", "Sockets", "TapstackClient", .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"), .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], path: "Examples/NIOClient"),

        // Shared test vectors (captured frames) and helpers.
        .target(name: "TestSupport", dependencies: ["Wire"], path: "Tests/TestSupport"),
        .testTarget(name: "WireTests", dependencies: [
            "Wire", "TestSupport", .product(name: "PropertyBased", package: "swift-property-based"),
        ]),
        .testTarget(name: "LinkTests", dependencies: ["Link", "Wire", "SocketAPI", "CPcap", "TestSupport"]),
        .testTarget(name: "StackTests", dependencies: ["Stack", "SocketAPI", "Wire", "TestSupport"]),
        .testTarget(name: "SocketsTests", dependencies: ["Sockets", "Host", "SocketAPI", "Stack", "Link", "Wire", "TestSupport"]),
        .testTarget(name: "HostTests", dependencies: ["Host", "Sockets", "SocketAPI", "Stack", "Link", "Wire", "TestSupport"]),
        .testTarget(name: "TapstackNIOTests", dependencies: [
            "TapstackNIO", "Sockets", "SocketService", "TapstackClient", "TestSupport",
            .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        .testTarget(name: "TapstackMetricsTests", dependencies: [
            "TapstackMetrics", "Sockets", "TestSupport", .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "MetricsTestKit", package: "swift-metrics"),
        ]),
        .testTarget(name: "SocketServiceTests", dependencies: ["SocketService", "TapstackClient", "CTapstackChannel", "CTapstackSystem", "TapstackProtocol", "Sockets", "Stack", "Link", "Wire", "TestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)

// The in-process benchmarks (ordo-one/benchmark) build only when asked for
// (`make bench-inprocess` sets TAPSTACK_BENCHMARKS=1), so that `swift build`
// and the tests do not compile the benchmark package.
if ProcessInfo.processInfo.environment["TAPSTACK_BENCHMARKS"] != nil {
    package.dependencies.append(
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.0", traits: ["MallocInterposer"]))
    package.targets.append(
        .executableTarget(
            name: "StackBenchmarks",
            dependencies: ["Stack", "Link", "Sockets", "SocketAPI", "Wire", "TestSupport", .product(name: "Benchmark", package: "benchmark")],
            path: "Benchmarks/StackBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]))
}

// libFuzzer targets: built only by `make fuzz` (TAPSTACK_FUZZ=1), with
// -sanitize=fuzzer,address; libFuzzer provides main.
if ProcessInfo.processInfo.environment["TAPSTACK_FUZZ"] != nil {
    package.targets.append(
        .executableTarget(
            name: "tapstack-fuzz",
            dependencies: ["Stack", "Wire", "SocketAPI", "CTapstackChannel"],
            path: "Sources/tapstack-fuzz",
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]))
}
