import COpenSSL

/// A Lua script identified by its SHA-1, run with `EVALSHA`.
///
/// If the server does not know the script (`NOSCRIPT`, e.g. after a restart or
/// `SCRIPT FLUSH`), the client sends it once with `EVAL`, which also caches it, and returns
/// that result: callers never see `NOSCRIPT`.
///
/// ```swift
/// let incrBy = RedisScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
/// let value = try await client.run(incrBy, keys: ["counter"], arguments: [5])
/// ```
public struct RedisScript: Sendable, Hashable {
    /// The Lua source.
    public let source: String
    /// The lowercase hex SHA-1 of ``source``, as Redis computes it.
    public let sha1: String

    public init(_ source: String) {
        self.source = source
        self.sha1 = Self.sha1Hex(Array(source.utf8))
    }

    static func sha1Hex(_ bytes: [UInt8]) -> String {
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let ok = bytes.withUnsafeBytes { raw in
            digest.withUnsafeMutableBufferPointer { out in
                EVP_Digest(raw.baseAddress, raw.count, out.baseAddress, &length, EVP_sha1(), nil)
            }
        }
        // EVP_Digest with SHA-1 cannot fail short of memory exhaustion.
        precondition(ok == 1, "EVP_Digest(SHA-1) failed")
        let hex = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(Int(length) * 2)
        for byte in digest.prefix(Int(length)) {
            out.append(hex[Int(byte >> 4)])
            out.append(hex[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
