import Foundation
import ToolOpsTesting

/// Test certificates made with the `openssl` CLI once per test process: a CA, a server
/// certificate for 127.0.0.1/localhost, a client certificate, and an unrelated CA.
public final class TestCertificates: Sendable {
    public static let shared: TestCertificates = {
        do { return try TestCertificates() } catch { fatalError("cannot create test certificates: \(error)") }
    }()

    public let directory: String
    public var caCert: String { directory + "/ca.crt" }
    public var serverCert: String { directory + "/server.crt" }
    public var serverKey: String { directory + "/server.key" }
    public var clientCert: String { directory + "/client.crt" }
    public var clientKey: String { directory + "/client.key" }
    public var otherCACert: String { directory + "/other-ca.crt" }

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

extension TestCertificates {
    /// The server's files, for ``RedisServer/Options/tls``.
    public var serverFiles: RedisServer.TLSFiles { .init(certificate: serverCert, key: serverKey, caCertificate: caCert) }
}
