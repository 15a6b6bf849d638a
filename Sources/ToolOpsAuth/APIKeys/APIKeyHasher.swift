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
    /// HMAC keyed with the pepper, before any data: copied for each digest, so the key's
    /// padding blocks are hashed once, not per call.
    let keyed: HMAC<SHA256>?

    /// SHA-256.
    public static let sha256 = APIKeyHasher(keyed: nil)

    /// HMAC-SHA-256 with `pepper` (at least 32 bytes).
    public static func hmacSHA256(pepper: [UInt8]) throws(AuthError) -> APIKeyHasher {
        guard pepper.count >= 32 else {
            throw AuthError(.invalidCredentials, "an API-key pepper must be at least 32 bytes, got \(pepper.count)")
        }
        return APIKeyHasher(keyed: HMAC<SHA256>(key: SymmetricKey(data: pepper)))
    }

    init(keyed: HMAC<SHA256>?) { self.keyed = keyed }

    /// The digest of `key` (32 bytes).
    public func digest(_ key: String) -> [UInt8] {
        digestWords(key).bytes
    }

    /// The digest as four words, without allocating (the authenticator's cache key).
    func digestWords(_ key: String) -> DigestWords {
        var key = key
        return key.withUTF8 { bytes in
            if var hmac = keyed {
                hmac.update(data: UnsafeRawBufferPointer(bytes))
                return hmac.finalize().withUnsafeBytes(DigestWords.init)
            }
            return SHA256.hash(data: UnsafeRawBufferPointer(bytes)).withUnsafeBytes(DigestWords.init)
        }
    }

    /// The lookup id of a digest: its first 8 bytes in hex.
    public static func lookupID(_ digest: [UInt8]) -> String {
        APIKeyRecord.hex(Array(digest.prefix(8)))
    }

    /// Whether two digests are equal, in time that depends only on their length.
    public static func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in a.indices { difference |= a[index] ^ b[index] }
        return difference == 0
    }
}

/// A 32-byte digest as four big-endian words: hashed and compared without allocating.
struct DigestWords: Hashable, Sendable {
    var a: UInt64, b: UInt64, c: UInt64, d: UInt64

    init(_ raw: UnsafeRawBufferPointer) {
        func word(_ offset: Int) -> UInt64 {
            var value: UInt64 = 0
            for index in offset..<min(offset + 8, raw.count) { value = value << 8 | UInt64(raw[index]) }
            return value
        }
        a = word(0)
        b = word(8)
        c = word(16)
        d = word(24)
    }

    init(_ bytes: [UInt8]) {
        self = bytes.withUnsafeBytes(DigestWords.init)
    }

    var bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(32)
        for word in [a, b, c, d] {
            for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: word >> UInt64(shift))) }
        }
        return out
    }

    /// Equality in time independent of where the words differ.
    func constantTimeEquals(_ other: DigestWords) -> Bool {
        ((a ^ other.a) | (b ^ other.b) | (c ^ other.c) | (d ^ other.d)) == 0
    }
}
