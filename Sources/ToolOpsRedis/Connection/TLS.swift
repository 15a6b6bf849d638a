import COpenSSL
#if canImport(Glibc)
import Glibc
#endif

/// Collects and clears OpenSSL's thread-local error queue into one line.
func openSSLErrors() -> String {
    var messages: [String] = []
    while true {
        let code = ERR_get_error()
        if code == 0 { break }
        var buffer = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buffer, buffer.count)
        messages.append(buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
    }
    return messages.isEmpty ? "unknown TLS error" : messages.joined(separator: "; ")
}

/// An OpenSSL `SSL_CTX` configured once from ``RedisTLSConfiguration``.
///
/// `@unchecked Sendable`: the context is fully configured in `init` and never mutated
/// afterwards; OpenSSL documents `SSL_CTX` as safe to share between threads for creating
/// `SSL` objects, and reference counting inside OpenSSL is atomic.
final class TLSContext: @unchecked Sendable {
    let context: OpaquePointer
    let configuration: RedisTLSConfiguration

    init(_ configuration: RedisTLSConfiguration) throws {
        OPENSSL_init_ssl(0, nil)
        guard let context = SSL_CTX_new(TLS_client_method()) else {
            throw RedisClientError(.tlsFailure, "SSL_CTX_new: \(openSSLErrors())")
        }
        self.context = context
        self.configuration = configuration
        _ = copenssl_ctx_set_min_proto(context, TLS1_2_VERSION)
        _ = copenssl_ctx_set_mode(context, Int(SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER))
        if configuration.verification.base == .none {
            SSL_CTX_set_verify(context, SSL_VERIFY_NONE, nil)
        } else {
            SSL_CTX_set_verify(context, SSL_VERIFY_PEER, nil)
            if let caFile = configuration.caFile {
                guard SSL_CTX_load_verify_locations(context, caFile, nil) == 1 else {
                    throw RedisClientError(.tlsFailure, "cannot load CA file '\(caFile)': \(openSSLErrors())")
                }
            } else if SSL_CTX_set_default_verify_paths(context) != 1 {
                throw RedisClientError(.tlsFailure, "cannot load the system CA store: \(openSSLErrors())")
            }
        }
        if let certificateFile = configuration.certificateFile {
            guard SSL_CTX_use_certificate_chain_file(context, certificateFile) == 1 else {
                throw RedisClientError(.tlsFailure, "cannot load certificate '\(certificateFile)': \(openSSLErrors())")
            }
            let keyFile = configuration.privateKeyFile ?? certificateFile
            guard SSL_CTX_use_PrivateKey_file(context, keyFile, SSL_FILETYPE_PEM) == 1 else {
                throw RedisClientError(.tlsFailure, "cannot load private key '\(keyFile)': \(openSSLErrors())")
            }
            guard SSL_CTX_check_private_key(context) == 1 else {
                throw RedisClientError(.tlsFailure, "private key does not match certificate: \(openSSLErrors())")
            }
        }
    }

    deinit { SSL_CTX_free(context) }
}

/// One TLS session over memory BIOs: OpenSSL only transforms bytes and the connection does
/// all socket I/O itself (with `MSG_NOSIGNAL`, so a closed peer never raises SIGPIPE).
/// Confined to the connection's I/O thread.
final class TLSSession {
    private let ssl: OpaquePointer
    private let incoming: OpaquePointer  // ciphertext from the socket, read by OpenSSL
    private let outgoing: OpaquePointer  // ciphertext written by OpenSSL, for the socket
    private let context: TLSContext  // keeps the SSL_CTX alive

    init(context: TLSContext, host: String) throws {
        guard let ssl = SSL_new(context.context) else {
            throw RedisClientError(.tlsFailure, "SSL_new: \(openSSLErrors())")
        }
        guard let incoming = BIO_new(BIO_s_mem()), let outgoing = BIO_new(BIO_s_mem()) else {
            SSL_free(ssl)
            throw RedisClientError(.tlsFailure, "BIO_new: \(openSSLErrors())")
        }
        copenssl_bio_set_mem_eof_retry(incoming)
        copenssl_bio_set_mem_eof_retry(outgoing)
        SSL_set_bio(ssl, incoming, outgoing)  // ssl now owns both BIOs
        self.ssl = ssl
        self.incoming = incoming
        self.outgoing = outgoing
        self.context = context

        let configuration = context.configuration
        let name = configuration.serverName ?? host
        let isIP = Self.isIPAddress(name)
        if !isIP { _ = copenssl_set_sni(ssl, name) }
        if configuration.verification.base == .full {
            let param = SSL_get0_param(ssl)
            let ok = isIP ? X509_VERIFY_PARAM_set1_ip_asc(param, name) : X509_VERIFY_PARAM_set1_host(param, name, 0)
            guard ok == 1 else { throw RedisClientError(.tlsFailure, "invalid TLS server name '\(name)'") }
        }
        SSL_set_connect_state(ssl)
    }

    deinit { SSL_free(ssl) }

    static func isIPAddress(_ text: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, text, &v4) == 1 || inet_pton(AF_INET6, text, &v6) == 1
    }

    /// Runs the handshake on the blocking-with-poll socket `fd` until `deadline`.
    func handshake(fd: Int32, deadline: ContinuousClock.Instant) throws {
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            ERR_clear_error()
            let rc = SSL_do_handshake(ssl)
            try flush(to: fd, deadline: deadline)
            if rc == 1 { return }
            let error = SSL_get_error(ssl, rc)
            guard error == SSL_ERROR_WANT_READ else {
                let verify = SSL_get_verify_result(ssl)
                if verify != X509_V_OK, let text = X509_verify_cert_error_string(verify) {
                    throw RedisClientError(.tlsVerificationFailed, "TLS certificate verification failed: \(String(cString: text))")
                }
                throw RedisClientError(.tlsFailure, "TLS handshake failed: \(openSSLErrors())")
            }
            let revents = try PosixSocket.wait(fd, events: Int16(POLLIN), deadline: deadline)
            if revents == 0 { throw RedisClientError(.connectTimeout, "TLS handshake timed out (no TLS answer: is the server listening for TLS on this port?)") }
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count == 0 { throw RedisClientError(.tlsFailure, "server closed the connection during the TLS handshake") }
            if count < 0 {
                if errno == EAGAIN || errno == EINTR { continue }
                throw RedisClientError(.tlsFailure, "TLS handshake: \(PosixSocket.errnoString())")
            }
            buffer.withUnsafeBytes { _ = BIO_write(incoming, $0.baseAddress, Int32(count)) }
        }
    }

    /// Blocking flush used only during the handshake.
    private func flush(to fd: Int32, deadline: ContinuousClock.Instant) throws {
        var pending: [UInt8] = []
        drainCiphertext(into: &pending)
        var offset = 0
        while offset < pending.count {
            let sent = pending.withUnsafeBytes { send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
            if sent > 0 { offset += sent; continue }
            if sent < 0 && (errno == EAGAIN || errno == EINTR) {
                if try PosixSocket.wait(fd, events: Int16(POLLOUT), deadline: deadline) == 0 {
                    throw RedisClientError(.connectTimeout, "TLS handshake timed out (no TLS answer: is the server listening for TLS on this port?)")
                }
                continue
            }
            throw RedisClientError(.tlsFailure, "TLS handshake: \(PosixSocket.errnoString())")
        }
    }

    /// Moves ciphertext produced by OpenSSL into `buffer`.
    func drainCiphertext(into buffer: inout [UInt8]) {
        while true {
            let available = Int(BIO_ctrl_pending(outgoing))
            if available == 0 { return }
            let start = buffer.count
            buffer.append(contentsOf: repeatElement(0, count: available))
            let read = buffer.withUnsafeMutableBytes { BIO_read(outgoing, $0.baseAddress! + start, Int32(available)) }
            buffer.removeLast(available - max(0, Int(read)))
            if read <= 0 { return }
        }
    }

    /// Encrypts plaintext; returns how many bytes OpenSSL took. Ciphertext goes to `ciphertext`.
    func encrypt(_ plaintext: UnsafeRawBufferPointer, into ciphertext: inout [UInt8]) throws -> Int {
        guard let base = plaintext.baseAddress, plaintext.count > 0 else { return 0 }
        ERR_clear_error()
        let rc = SSL_write(ssl, base, Int32(clamping: plaintext.count))
        drainCiphertext(into: &ciphertext)
        if rc > 0 { return Int(rc) }
        let error = SSL_get_error(ssl, rc)
        if error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE { return 0 }
        throw RedisClientError(.tlsFailure, "TLS write failed: \(openSSLErrors())")
    }

    /// Feeds ciphertext from the socket and hands every decrypted chunk to `body`.
    /// Any ciphertext OpenSSL wants to send in response goes to `ciphertext`.
    func decrypt(
        _ input: UnsafeRawBufferPointer, scratch: inout [UInt8], ciphertext: inout [UInt8],
        _ body: (UnsafeRawBufferPointer) throws -> Void
    ) throws {
        if let base = input.baseAddress, input.count > 0 {
            _ = BIO_write(incoming, base, Int32(input.count))
        }
        while true {
            ERR_clear_error()
            let rc = scratch.withUnsafeMutableBytes { SSL_read(ssl, $0.baseAddress, Int32($0.count)) }
            if rc > 0 {
                try scratch.withUnsafeBytes { raw in try body(UnsafeRawBufferPointer(rebasing: raw[..<Int(rc)])) }
                continue
            }
            drainCiphertext(into: &ciphertext)
            let error = SSL_get_error(ssl, rc)
            if error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE { return }
            if error == SSL_ERROR_ZERO_RETURN { throw RedisClientError(.connectionClosed, "server closed the TLS session") }
            throw RedisClientError(.tlsFailure, "TLS read failed: \(openSSLErrors())")
        }
    }
}
