// swift-tools-version: 6.1
// A package that depends on tapstack as a user's would: by URL and version.
// Tests/Consumer/run.sh points TAPSTACK_URL at a tagged clone of this tree.
import PackageDescription
import class Foundation.ProcessInfo

let tapstack = ProcessInfo.processInfo.environment["TAPSTACK_URL"] ?? "https://github.com/tapstack/tapstack"

let package = Package(
    name: "Consumer",
    dependencies: [
        .package(url: tapstack, from: "0.1.0"),
    ],
    targets: [
        .executableTarget(name: "Consumer", dependencies: [.product(name: "Sockets", package: "tapstack")]),
    ],
    swiftLanguageModes: [.v6]
)
