import Crypto

/// Turns an API key into what is stored: never the key itself.
///
/// With a pepper (a server-side secret, the same on every replica), HMAC-SHA-256: a stolen
/// store cannot be brute-forced without it. Without, SHA-256 (API keys are long random
/// strings, so no salt is needed against dictionaries).
///
/// A digest has two uses: its first 8 bytes, in hex, are the **lookup id** under which the
/// record is stored (not secret: it identifies the record, as a username would), and the full
/// 32 bytes are compared in constant time with the record's. A timing difference in the lookup
/// reveals at most something about a public index, never about the key.
public struct APIKeyHasher: Sendable {
    let pepper: SymmetricKey?

    /// SHA-256.
    public static let sha256 = APIKeyHasher(pepper: nil)

    /// HMAC-SHA-256 with `pepper` (at least 32 bytes).
    public static func hmacSHA256(pepper: [UInt8]) throws(AuthError) -> APIKeyHasher {
        guard pepper.count >= 32 else {
            throw AuthError(.invalidCredentials, "an API-key pepper must be at least 32 bytes, got \(pepper.count)")
        }
        return APIKeyHasher(pepper: SymmetricKey(data: pepper))
    }

    init(pepper: SymmetricKey?) { self.pepper = pepper }

    /// The digest of `key` (32 bytes).
    public func digest(_ key: String) -> [UInt8] {
        let bytes = Array(key.utf8)
        if let pepper { return Array(HMAC<SHA256>.authenticationCode(for: bytes, using: pepper)) }
        return Array(SHA256.hash(data: bytes))
    }

    /// The lookup id of a digest: its first 8 bytes in hex.
    public static func lookupID(_ digest: [UInt8]) -> String {
        let hex = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(16)
        for byte in digest.prefix(8) {
            out.append(hex[Int(byte >> 4)])
            out.append(hex[Int(byte & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Whether two digests are equal, in time that depends only on their length.
    public static func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in a.indices { difference |= a[index] ^ b[index] }
        return difference == 0
    }
}
