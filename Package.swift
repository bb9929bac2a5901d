// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "tapstack",
    products: [
        .executable(name: "tapstack", targets: ["tapstack"]),
        .library(name: "Sockets", targets: ["Sockets"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        // C glue: TUN ioctls and eventfd, which Swift cannot see from Glibc.
        .target(name: "CTun"),
        .systemLibrary(name: "CPcap", pkgConfig: "libpcap", providers: [.apt(["libpcap-dev"])]),

        .target(name: "Wire"),
        .target(name: "Link", dependencies: ["Wire", "CTun", "CPcap"]),
        .target(name: "Stack", dependencies: ["Wire"]),
        .target(name: "Sockets", dependencies: ["Stack", "Link", "Wire", "CTun"]),
        .executableTarget(
            name: "tapstack",
            dependencies: [
                "Sockets", "Stack", "Link", "Wire",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        .testTarget(name: "WireTests", dependencies: ["Wire"]),
        .testTarget(name: "LinkTests", dependencies: ["Link", "Wire"]),
        .testTarget(name: "StackTests", dependencies: ["Stack", "Wire"]),
        .testTarget(name: "SocketsTests", dependencies: ["Sockets", "Stack", "Link", "Wire"]),
    ],
    swiftLanguageModes: [.v6]
)
