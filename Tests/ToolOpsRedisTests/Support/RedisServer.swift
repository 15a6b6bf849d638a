import Foundation
import Logging
import Synchronization
import Testing
import ToolOpsRedis

/// A real `redis-server` started for a test on a free loopback port, with a temporary
/// directory and no persistence. Stopped (and its directory removed) by ``withRedisServer``.
///
/// `@unchecked Sendable`: the `Process` handle is only touched under `lock`.
final class RedisServer: @unchecked Sendable {
    struct Options: Sendable {
        var tls = false
        /// `--tls-auth-clients yes`: clients must present a certificate signed by the test CA.
        var requireClientCertificate = false
        var password: String?
        var aclUsers: [(name: String, password: String)] = []
        var extraArguments: [String] = []
        var unixSocket = false
    }

    let options: Options
    let port: Int
    let directory: URL
    private let lock = NSLock()
    private var process: Process?

    /// `redis://127.0.0.1:port`, `rediss://…` with TLS, without credentials.
    var url: String { options.tls ? "rediss://127.0.0.1:\(port)" : "redis://127.0.0.1:\(port)" }
    var socketPath: String { directory.appendingPathComponent("redis.sock").path }

    init(options: Options) throws {
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
        if options.tls {
            let certs = TestCertificates.shared
            args += ["--port", "0", "--tls-port", "\(port)",
                     "--tls-cert-file", certs.serverCert, "--tls-key-file", certs.serverKey,
                     "--tls-ca-cert-file", certs.caCert,
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
    func start() throws {
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
                throw TestFailure("redis-server exited: \(log)")
            }
            if Self.canConnect(port: port) { return }
            usleep(10_000)
        }
        throw TestFailure("redis-server did not start listening on \(port)")
    }

    /// SIGKILL: the server vanishes without closing anything gracefully.
    func kill() {
        let process = lock.withLock { () -> Process? in
            defer { self.process = nil }
            return self.process
        }
        guard let process, process.isRunning else { return }
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    func stop() { kill() }

    static let redisServerPath: String = {
        for candidate in ["/usr/bin/redis-server", "/usr/local/bin/redis-server"] where FileManager.default.isExecutableFile(atPath: candidate) {
            return candidate
        }
        return "redis-server"
    }()

    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket failed") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw TestFailure("bind failed") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    static func canConnect(port: Int) -> Bool {
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

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// `TOOLOPS_TEST_REDIS_URL`, when set, points plain tests at an existing server; tests that
/// must kill, restart or reconfigure a server still start their own.
let externalRedisURL: String? = ProcessInfo.processInfo.environment["TOOLOPS_TEST_REDIS_URL"]

/// Runs `body` with a fresh redis-server, always stopping it afterwards.
func withRedisServer<T>(
    _ options: RedisServer.Options = .init(),
    _ body: (RedisServer) async throws -> T
) async throws -> T {
    let server = try RedisServer(options: options)
    defer { server.stop() }
    return try await body(server)
}

/// Runs `body` with the URL of a plain server: the external one if configured, else a fresh one.
func withRedisURL<T>(_ body: (String) async throws -> T) async throws -> T {
    if let externalRedisURL { return try await body(externalRedisURL) }
    return try await withRedisServer { try await body($0.url) }
}

/// Test certificates made with the `openssl` CLI once per test process: a CA, a server
/// certificate for 127.0.0.1/localhost, a client certificate, and an unrelated CA.
final class TestCertificates: Sendable {
    static let shared: TestCertificates = {
        do { return try TestCertificates() } catch { fatalError("cannot create test certificates: \(error)") }
    }()

    let directory: String
    var caCert: String { directory + "/ca.crt" }
    var serverCert: String { directory + "/server.crt" }
    var serverKey: String { directory + "/server.key" }
    var clientCert: String { directory + "/client.crt" }
    var clientKey: String { directory + "/client.key" }
    var otherCACert: String { directory + "/other-ca.crt" }

    private init() throws {
        directory = NSTemporaryDirectory() + "toolops-certs-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try "subjectAltName=DNS:localhost,IP:127.0.0.1\n".write(toFile: directory + "/san.ext", atomically: true, encoding: .utf8)
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        try Self.openssl(["req", "-x509"] + ec + ["-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=ToolOps Test CA"], in: directory)
        try Self.openssl(["req", "-x509"] + ec + ["-keyout", "other-ca.key", "-out", "other-ca.crt", "-days", "2", "-subj", "/CN=Unrelated CA"], in: directory)
        for name in ["server", "client"] {
            try Self.openssl(["req"] + ec + ["-keyout", "\(name).key", "-out", "\(name).csr", "-subj", "/CN=\(name == "server" ? "localhost" : "toolops-client")"], in: directory)
            try Self.openssl(["x509", "-req", "-in", "\(name).csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                              "-out", "\(name).crt", "-days", "2", "-extfile", "san.ext"], in: directory)
        }
    }

    private static func openssl(_ arguments: [String], in directory: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = arguments
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw TestFailure("openssl \(arguments.joined(separator: " ")) failed") }
    }
}

