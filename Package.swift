// swift-tools-version:6.1
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let log = Target.Dependency.product(name: "Logging", package: "swift-log")
let metrics = Target.Dependency.product(name: "Metrics", package: "swift-metrics")
let lifecycle = Target.Dependency.product(name: "ServiceLifecycle", package: "swift-service-lifecycle")
let serviceContext = Target.Dependency.product(name: "ServiceContextModule", package: "swift-service-context")
let argumentParser = Target.Dependency.product(name: "ArgumentParser", package: "swift-argument-parser")
let hummingbird = Target.Dependency.product(name: "Hummingbird", package: "hummingbird")
let tracing = Target.Dependency.product(name: "Tracing", package: "swift-distributed-tracing")
let prometheus = Target.Dependency.product(name: "Prometheus", package: "swift-prometheus")

let package = Package(
    name: "toolops",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "ToolOpsCore", targets: ["ToolOpsCore"]),
        .library(name: "ToolOpsResilience", targets: ["ToolOpsResilience"]),
        .library(name: "ToolOpsCache", targets: ["ToolOpsCache"]),
        .library(name: "ToolOpsHealth", targets: ["ToolOpsHealth"]),
        .library(name: "ToolOpsObserve", targets: ["ToolOpsObserve"]),
        .library(name: "ToolOpsAuth", targets: ["ToolOpsAuth"]),
        .library(name: "ToolOpsTelemetry", targets: ["ToolOpsTelemetry"]),
        .library(name: "ToolOpsRedis", targets: ["ToolOpsRedis"]),
        .library(name: "ToolOpsRedisBackend", targets: ["ToolOpsRedisBackend"]),
        .library(name: "ToolOpsHTTP", targets: ["ToolOpsHTTP"]),
        .library(name: "ToolOpsMCP", targets: ["ToolOpsMCP"]),
        .library(name: "ToolOpsServer", targets: ["ToolOpsServer"]),
        .library(name: "ToolOpsTesting", targets: ["ToolOpsTesting"]),
        .executable(name: "toolops", targets: ["toolops"]),
        .executable(name: "toolops-bench", targets: ["toolops-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-service-context.git", from: "1.5.1"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-distributed-tracing.git", from: "1.7.3"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        // OTLP/HTTP export only (no gRPC); only ToolOpsTelemetry (and what embeds it) builds it.
        .package(url: "https://github.com/swift-otel/swift-otel.git", from: "1.6.0", traits: ["OTLPHTTP"]),
        // JWT signatures (jwt-kit 5 needs swift-crypto 4).
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.7.1"),
        // JWKS fetching (already built for swift-otel's OTLP/HTTP exporter).
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        // SHA-256 for cache keys (BoringSSL's, with the CPU's SHA extensions where present).
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        // Only ToolOpsHTTP, ToolOpsServer and the executables depend on Hummingbird; the concern modules stay light.
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1", traits: []),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        // YAML configuration files (the server only).
        .package(url: "https://github.com/jpsim/Yams.git", from: "5.0.1"),
        // The Model Context Protocol (ToolOpsMCP only; it needs swift-system and swift-log).
        .package(url: "https://github.com/modelcontextprotocol/swift-sdk.git", exact: "0.12.1"),
    ],
    targets: [
        // MARK: system libraries

        // System hiredis (Debian 12: libhiredis-dev 0.14). Used only as the RESP codec.
        .systemLibrary(name: "CHiredis", pkgConfig: "hiredis", providers: [.apt(["libhiredis-dev"]), .brew(["hiredis"])]),
        // System OpenSSL (libssl-dev 3.x): TLS to Redis and SHA-1 for script digests.
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"]), .brew(["openssl@3"])]),

        // MARK: the core and the concerns (no Redis, no HTTP)

        .target(name: "ToolOpsCore", dependencies: [log, metrics, serviceContext, tracing, lifecycle], swiftSettings: strict),
        .target(name: "ToolOpsResilience", dependencies: ["ToolOpsCore", metrics, lifecycle], swiftSettings: strict),
        .target(
            name: "ToolOpsCache",
            dependencies: ["ToolOpsCore", metrics, .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: strict),
        .target(name: "ToolOpsHealth", dependencies: ["ToolOpsCore", log, lifecycle], swiftSettings: strict),
        // Tracing, metrics and logs of tool calls on the ecosystem's APIs (no exporter, no bootstrap).
        .target(
            name: "ToolOpsObserve", dependencies: ["ToolOpsCore", "ToolOpsResilience", "ToolOpsCache", log, metrics, tracing],
            swiftSettings: strict),
        // Who is calling and may they: authenticators, RBAC, audit (jwt-kit joins for JWT).
        .target(
            name: "ToolOpsAuth",
            dependencies: [
                "ToolOpsCore", log, serviceContext, tracing, lifecycle, .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "JWTKit", package: "jwt-kit"), .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strict),
        // The bootstrap: JSON logs, a Prometheus registry, OTLP/HTTP traces (swift-otel).
        .target(
            name: "ToolOpsTelemetry",
            dependencies: [
                "ToolOpsObserve", "ToolOpsCore", log, metrics, tracing, prometheus, lifecycle,
                .product(name: "OTel", package: "swift-otel"),
            ],
            swiftSettings: strict),

        // MARK: Redis

        .target(name: "ToolOpsRedis", dependencies: ["CHiredis", "COpenSSL", log, lifecycle, metrics, tracing], swiftSettings: strict),
        .target(
            name: "ToolOpsRedisBackend",
            dependencies: ["ToolOpsRedis", "ToolOpsCore", "ToolOpsResilience", "ToolOpsCache", "ToolOpsHealth", "ToolOpsAuth", log, lifecycle],
            swiftSettings: strict),

        // MARK: HTTP, the server, the executables

        .target(
            name: "ToolOpsMCP",
            dependencies: ["ToolOpsCore", "ToolOpsAuth", .product(name: "MCP", package: "swift-sdk"), log, serviceContext],
            swiftSettings: strict),
        .target(
            name: "ToolOpsHTTP",
            dependencies: [
                "ToolOpsCore", "ToolOpsHealth", "ToolOpsAuth", "ToolOpsResilience", hummingbird, .product(name: "NIOCore", package: "swift-nio"), log,
                prometheus, tracing, serviceContext, .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            swiftSettings: strict),
        .target(
            name: "ToolOpsServer",
            dependencies: [
                "ToolOpsCore", "ToolOpsHealth", "ToolOpsRedis", "ToolOpsRedisBackend", "ToolOpsHTTP", "ToolOpsTelemetry", "ToolOpsAuth",
                "ToolOpsResilience", "ToolOpsCache", "ToolOpsObserve", "ToolOpsMCP", .product(name: "MCP", package: "swift-sdk"), hummingbird, lifecycle, log, metrics, .product(name: "Yams", package: "Yams"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"), .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict),
        .executableTarget(
            name: "toolops",
            dependencies: [
                "ToolOpsServer", "ToolOpsHealth", "ToolOpsAuth", "ToolOpsTelemetry", "ToolOpsCore", "ToolOpsRedis", "ToolOpsRedisBackend", "ToolOpsMCP",
                .product(name: "MCP", package: "swift-sdk"), argumentParser, log, lifecycle,
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict),
        .executableTarget(
            name: "toolops-bench",
            dependencies: [
                "ToolOpsCore", "ToolOpsRedis", "ToolOpsResilience", "ToolOpsCache", "ToolOpsRedisBackend", "ToolOpsTesting",
                "ToolOpsObserve", "ToolOpsAuth", "ToolOpsHTTP", "ToolOpsServer", "CHiredis", argumentParser, log, tracing, prometheus, lifecycle,
                hummingbird, .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"), .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "OTel", package: "swift-otel"),
            ],
            path: "Benchmarks/toolops-bench",
            swiftSettings: strict),

        // MARK: testing

        // What users of ToolOps need in their own tests: a manual clock, a real redis-server, `eventually`.
        .target(name: "ToolOpsTesting", dependencies: ["ToolOpsCore"], swiftSettings: strict),
        // Helpers shared by this package's test targets only.
        .target(
            name: "ToolOpsTestSupport", dependencies: ["ToolOpsCore", "ToolOpsHealth", "ToolOpsTesting", log], path: "Tests/ToolOpsTestSupport",
            swiftSettings: strict),
        // Processes the multi-process tests start (file and Redis rate limits spent from several OS processes).
        .executableTarget(
            name: "toolops-test-probe",
            dependencies: ["ToolOpsCore", "ToolOpsResilience", "ToolOpsRedis", "ToolOpsRedisBackend", argumentParser],
            path: "Tests/ToolOpsTestProbe",
            swiftSettings: strict),

        .testTarget(
            name: "ToolOpsTestingTests", dependencies: ["ToolOpsTesting", "ToolOpsCore", "ToolOpsTestSupport"], swiftSettings: strict),
        .testTarget(
            name: "ToolOpsCoreTests",
            dependencies: [
                "ToolOpsCore", "ToolOpsTesting", serviceContext, lifecycle,
                .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict),
        .testTarget(
            name: "ToolOpsResilienceTests",
            dependencies: [
                "ToolOpsResilience", "ToolOpsCore", "ToolOpsTesting", "ToolOpsTestSupport", "toolops-test-probe",
                metrics, .product(name: "MetricsTestKit", package: "swift-metrics"),
            ],
            swiftSettings: strict),
        .testTarget(
            name: "ToolOpsCacheTests",
            dependencies: [
                "ToolOpsCache", "ToolOpsCore", "ToolOpsTesting", "ToolOpsTestSupport", serviceContext,
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict),
        .testTarget(
            name: "ToolOpsObserveTests",
            dependencies: [
                "ToolOpsObserve", "ToolOpsCore", "ToolOpsResilience", "ToolOpsCache", "ToolOpsTesting", "ToolOpsTestSupport", log, metrics,
                tracing, .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: strict),
        .testTarget(
            name: "ToolOpsAuthTests",
            dependencies: [
                "ToolOpsAuth", "ToolOpsCore", "ToolOpsResilience", "ToolOpsTesting", "ToolOpsTestSupport", log, serviceContext,
                .product(name: "JWTKit", package: "jwt-kit"), .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"), hummingbird, lifecycle, .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict),
        .testTarget(
            name: "ToolOpsTelemetryTests",
            dependencies: [
                "ToolOpsTelemetry", "ToolOpsObserve", "ToolOpsCore", "ToolOpsResilience", "ToolOpsHTTP", "ToolOpsTestSupport", log, tracing,
                prometheus, hummingbird, lifecycle, .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict),
        .testTarget(
            name: "ToolOpsHealthTests",
            dependencies: ["ToolOpsHealth", "ToolOpsCore", "ToolOpsTesting", "ToolOpsTestSupport", lifecycle, log],
            swiftSettings: strict),
        .testTarget(
            name: "ToolOpsRedisTests",
            dependencies: [
                "ToolOpsRedis", "ToolOpsTesting", "ToolOpsTestSupport", "toolops-test-probe", lifecycle, log, metrics, tracing,
                .product(name: "MetricsTestKit", package: "swift-metrics"), .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: strict),
        .testTarget(
            name: "ToolOpsRedisBackendTests",
            dependencies: [
                "ToolOpsRedisBackend", "ToolOpsRedis", "ToolOpsResilience", "ToolOpsCache", "ToolOpsCore", "ToolOpsHealth", "ToolOpsAuth",
                "ToolOpsTesting", "ToolOpsTestSupport", "toolops-test-probe", lifecycle, log, .product(name: "JWTKit", package: "jwt-kit"),
            ],
            swiftSettings: strict),
        .testTarget(
            name: "ToolOpsHTTPTests",
            dependencies: [
                "ToolOpsHTTP", "ToolOpsHealth", "ToolOpsCore", "ToolOpsTesting", "ToolOpsTestSupport", hummingbird,
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ],
            swiftSettings: strict),
        .testTarget(
            name: "ToolOpsMCPTests",
            dependencies: [
                "ToolOpsMCP", "ToolOpsCore", "ToolOpsAuth", "ToolOpsResilience", "ToolOpsCache", "ToolOpsTesting", "ToolOpsTestSupport",
                "ToolOpsServer", "ToolOpsRedisBackend", "toolops", .product(name: "MCP", package: "swift-sdk"), log, lifecycle,
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict),
        .testTarget(
            name: "ToolOpsServerTests",
            dependencies: [
                "ToolOpsServer", "ToolOpsRedisBackend", "ToolOpsRedis", "ToolOpsHealth", "ToolOpsCore", "ToolOpsTesting",
                "ToolOpsTestSupport", "ToolOpsAuth", "ToolOpsResilience", "ToolOpsHTTP", "toolops", lifecycle, log, hummingbird, tracing, serviceContext,
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict),
    ],
    swiftLanguageModes: [.v6]
)
