// swift-tools-version:6.1
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "toolops",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "ToolOpsRedis", targets: ["ToolOpsRedis"]),
        .library(name: "ToolOpsCore", targets: ["ToolOpsCore"]),
        .library(name: "ToolOpsResilience", targets: ["ToolOpsResilience"]),
        .library(name: "ToolOpsCache", targets: ["ToolOpsCache"]),
        .library(name: "ToolOpsHealth", targets: ["ToolOpsHealth"]),
        .library(name: "ToolOpsRedisBackend", targets: ["ToolOpsRedisBackend"]),
        .library(name: "ToolOpsHTTP", targets: ["ToolOpsHTTP"]),
        .executable(name: "toolops", targets: ["toolops"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-service-context.git", from: "1.5.1"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        // Only ToolOpsHTTP (and the executable) depend on Hummingbird; the concern modules stay light.
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1", traits: []),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        // System hiredis (Debian 12: libhiredis-dev 0.14). Used only as the RESP codec.
        .systemLibrary(
            name: "CHiredis",
            pkgConfig: "hiredis",
            providers: [.apt(["libhiredis-dev"]), .brew(["hiredis"])]
        ),
        // System OpenSSL (libssl-dev 3.x): TLS to Redis and SHA-1 for script digests.
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"]), .brew(["openssl@3"])]
        ),
        .target(
            name: "ToolOpsRedis",
            dependencies: [
                "CHiredis",
                "COpenSSL",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "ToolOpsCore",
            dependencies: [
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceContextModule", package: "swift-service-context"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "ToolOpsResilience",
            dependencies: ["ToolOpsCore", .product(name: "Metrics", package: "swift-metrics")],
            swiftSettings: strict
        ),
        .target(
            name: "ToolOpsCache",
            dependencies: ["ToolOpsCore", .product(name: "Metrics", package: "swift-metrics")],
            swiftSettings: strict
        ),
        .target(
            name: "ToolOpsHealth",
            dependencies: [
                "ToolOpsCore",
                "ToolOpsResilience",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "ToolOpsRedisBackend",
            dependencies: [
                "ToolOpsRedis", "ToolOpsCore", "ToolOpsResilience", "ToolOpsCache", "ToolOpsHealth",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "ToolOpsHTTP",
            dependencies: [
                "ToolOpsCore",
                "ToolOpsHealth",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "toolops",
            dependencies: [
                "ToolOpsRedis",
                "ToolOpsCore",
                "ToolOpsResilience",
                "ToolOpsRedisBackend",
                "ToolOpsCache",
                "ToolOpsHealth",
                "ToolOpsHTTP",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ToolOpsRedisTests",
            dependencies: [
                "ToolOpsTestSupport",
                "ToolOpsRedis",
                "ToolOpsRedisBackend",
                "ToolOpsResilience",
                "ToolOpsCache",
                "ToolOpsCore",
                "ToolOpsHealth",
                "ToolOpsHTTP",
                "toolops",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // Helpers shared by the test targets.
        .target(
            name: "ToolOpsTestSupport",
            dependencies: [.product(name: "Logging", package: "swift-log")],
            path: "Tests/ToolOpsTestSupport",
            swiftSettings: strict
        ),
        .testTarget(
            name: "ToolOpsHealthTests",
            dependencies: [
                "ToolOpsTestSupport",
                "ToolOpsHealth",
                "ToolOpsHTTP",
                "ToolOpsCore",
                "ToolOpsResilience",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ToolOpsCacheTests",
            dependencies: ["ToolOpsCache", "ToolOpsCore", .product(name: "ServiceContextModule", package: "swift-service-context")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ToolOpsCoreTests",
            dependencies: ["ToolOpsCore", .product(name: "ServiceContextModule", package: "swift-service-context")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ToolOpsResilienceTests",
            dependencies: [
                "ToolOpsTestSupport",
                "ToolOpsResilience", "ToolOpsCore", "toolops",
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: strict
        ),
    ],
    swiftLanguageModes: [.v6]
)
