import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A real `redis-server` started for a test on a free loopback port, with a temporary
/// directory and no persistence. Stopped (and its directory removed) by ``withRedisServer``.
///
/// ```swift
/// try await withRedisServer { server in
///     let client = try RedisClient(url: server.url)
///     …
///     server.kill(); try server.start()   // a real outage and restart
/// }
/// ```
///
/// `@unchecked Sendable`: the `Process` handle is only touched under `lock`; everything else is immutable.
public final class RedisServer: @unchecked Sendable {
    /// Certificate files for a TLS server.
    public struct TLSFiles: Sendable, Hashable {
        public var certificate: String
        public var key: String
        /// The CA that client certificates must be signed by (and that clients trust).
        public var caCertificate: String
        public init(certificate: String, key: String, caCertificate: String) {
            self.certificate = certificate
            self.key = key
            self.caCertificate = caCertificate
        }
    }

    public struct Options: Sendable {
        /// Serve TLS only, with these files. Defaults to `nil` (plain TCP).
        public var tls: TLSFiles?
        /// `--tls-auth-clients yes`: clients must present a certificate signed by the CA. Defaults to `false`.
        public var requireClientCertificate: Bool
        /// `--requirepass`. Defaults to `nil`.
        public var password: String?
        /// ACL users with every permission. Defaults to none.
        public var aclUsers: [(name: String, password: String)]
        /// More `redis-server` arguments. Defaults to none.
        public var extraArguments: [String]
        /// Also listen on a unix socket (``RedisServer/socketPath``). Defaults to `false`.
        public var unixSocket: Bool

        public init(
            tls: TLSFiles? = nil, requireClientCertificate: Bool = false, password: String? = nil,
            aclUsers: [(name: String, password: String)] = [], extraArguments: [String] = [], unixSocket: Bool = false
        ) {
            self.tls = tls
            self.requireClientCertificate = requireClientCertificate
            self.password = password
            self.aclUsers = aclUsers
            self.extraArguments = extraArguments
            self.unixSocket = unixSocket
        }
    }

    public let options: Options
    /// The loopback port it listens on (kept across ``kill()`` and ``start()``).
    public let port: Int
    /// Its working directory (log, unix socket), removed when it is released.
    public let directory: URL
    private let lock = NSLock()
    private var process: Process?

    /// `redis://127.0.0.1:port`, `rediss://…` with TLS, without credentials.
    public var url: String { options.tls != nil ? "rediss://127.0.0.1:\(port)" : "redis://127.0.0.1:\(port)" }
    public var socketPath: String { directory.appendingPathComponent("redis.sock").path }

    /// Starts a server on a free loopback port and waits until it accepts connections.
    public init(options: Options = .init()) throws {
        self.options = options
        self.port = try Self.freePort()
        self.directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("toolops-redis-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try start()
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: directory)
    }

    private var arguments: [String] {
        var args = ["--save", "", "--appendonly", "no", "--enable-debug-command", "yes", "--dir", directory.path, "--bind", "127.0.0.1",
                    "--loglevel", "warning", "--logfile", directory.appendingPathComponent("redis.log").path]
        if let tls = options.tls {
            args += ["--port", "0", "--tls-port", "\(port)",
                     "--tls-cert-file", tls.certificate, "--tls-key-file", tls.key,
                     "--tls-ca-cert-file", tls.caCertificate,
                     "--tls-auth-clients", options.requireClientCertificate ? "yes" : "no"]
        } else {
            args += ["--port", "\(port)"]
        }
        if options.unixSocket { args += ["--unixsocket", socketPath, "--unixsocketperm", "700"] }
        if let password = options.password { args += ["--requirepass", password] }
        for user in options.aclUsers { args += ["--user", user.name, "on", ">\(user.password)", "~*", "&*", "+@all"] }
        return args + options.extraArguments
    }

    /// Starts the server (again, on the same port after ``kill()``) and waits until it accepts connections.
    public func start() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.redisServerPath)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        lock.withLock { self.process = process }
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if !process.isRunning {
                let log = (try? String(contentsOf: directory.appendingPathComponent("redis.log"), encoding: .utf8)) ?? ""
                throw RedisServerError("redis-server exited: \(log)")
            }
            if Self.canConnect(port: port) { return }
            usleep(10_000)
        }
        throw RedisServerError("redis-server did not start listening on \(port)")
    }

    /// SIGKILL: the server vanishes without closing anything gracefully.
    public func kill() {
        let process = lock.withLock { () -> Process? in
            defer { self.process = nil }
            return self.process
        }
        guard let process, process.isRunning else { return }
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// Stops the server (SIGKILL; it holds nothing worth saving).
    public func stop() { kill() }

    public static let redisServerPath: String = {
        for candidate in ["/usr/bin/redis-server", "/usr/local/bin/redis-server"] where FileManager.default.isExecutableFile(atPath: candidate) {
            return candidate
        }
        return "redis-server"
    }()

    /// A port the kernel just handed out on 127.0.0.1 (free at the time of asking).
    public static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw RedisServerError("socket failed") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw RedisServerError("bind failed") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Whether something accepts TCP connections on 127.0.0.1:`port`.
    public static func canConnect(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }
}

/// A redis-server that could not be started, with the reason (its log when it exited).
public struct RedisServerError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// `TOOLOPS_TEST_REDIS_URL`, when set, points plain tests at an existing server; tests that
/// must kill, restart or reconfigure a server still start their own.
public let externalRedisURL: String? = ProcessInfo.processInfo.environment["TOOLOPS_TEST_REDIS_URL"]

/// Runs `body` with a fresh redis-server, always stopping it afterwards.
public func withRedisServer<T>(
    _ options: RedisServer.Options = .init(),
    _ body: (RedisServer) async throws -> T
) async throws -> T {
    let server = try RedisServer(options: options)
    defer { server.stop() }
    return try await body(server)
}

/// Runs `body` with the URL of a plain server: the external one if configured, else a fresh one.
public func withRedisURL<T>(_ body: (String) async throws -> T) async throws -> T {
    if let externalRedisURL { return try await body(externalRedisURL) }
    return try await withRedisServer { try await body($0.url) }
}
