import Crypto

/// SHA-256 from swift-crypto (BoringSSL's implementation, with the CPU's SHA extensions where
/// present), fed without copying and printed as lowercase hex.
extension SHA256 {
    /// Hashes the UTF-8 bytes of `text` (in place for native strings).
    mutating func update(utf8 text: String) {
        let hashed: Void? = text.utf8.withContiguousStorageIfAvailable { update(bufferPointer: UnsafeRawBufferPointer($0)) }
        if hashed == nil { update(data: Array(text.utf8)) }
    }

    mutating func update(bytes: [UInt8]) {
        bytes.withUnsafeBytes { update(bufferPointer: $0) }
    }

    /// The digest of everything fed so far, as 64 lowercase hex digits.
    func finalizeHex() -> String {
        let digest = finalize()
        return String(unsafeUninitializedCapacity: SHA256.byteCount * 2) { out in
            let digits: StaticString = "0123456789abcdef"
            var index = 0
            digest.withUnsafeBytes { bytes in
                for byte in bytes {
                    out[index] = digits.utf8Start[Int(byte >> 4)]
                    out[index + 1] = digits.utf8Start[Int(byte & 0x0f)]
                    index += 2
                }
            }
            return index
        }
    }

    /// The hex digest of `text` alone.
    static func hex(of text: String) -> String {
        var hasher = SHA256()
        hasher.update(utf8: text)
        return hasher.finalizeHex()
    }
}
