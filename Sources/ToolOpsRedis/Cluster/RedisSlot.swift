/// Redis Cluster's key → slot mapping: CRC16 (XMODEM: polynomial 0x1021, initial value 0) of
/// the key's hash tag — the part between the first `{` and the next `}` when that part is not
/// empty — or of the whole key, modulo 16384.
///
/// ```swift
/// RedisSlot(key: "foo").value                                           // 12182
/// RedisSlot(key: "toolops:bh:{t}") == RedisSlot(key: "toolops:bhq:{t}")  // true: same tag
/// ```
///
/// Keys a command or script touches together must share a slot on a cluster; ToolOps' key
/// schema gives them one hash tag (`Docs/redis-keys.md`).
public struct RedisSlot: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The number of slots of a Redis Cluster.
    public static let count = 16_384

    /// 0 ..< 16384.
    public let value: Int

    public init(key: some Collection<UInt8>) {
        value = Int(Self.crc16(Self.hashTag(of: key)) & 0x3FFF)
    }

    public init(key: String) {
        self.init(key: Array(key.utf8))
    }

    public static func < (lhs: RedisSlot, rhs: RedisSlot) -> Bool { lhs.value < rhs.value }

    public var description: String { "slot \(value)" }

    /// The bytes that are hashed: the first non-empty `{…}` tag, or the whole key.
    static func hashTag<Bytes: Collection<UInt8>>(of key: Bytes) -> Bytes.SubSequence {
        guard let open = key.firstIndex(of: UInt8(ascii: "{")) else { return key[...] }
        let afterOpen = key.index(after: open)
        guard let close = key[afterOpen...].firstIndex(of: UInt8(ascii: "}")), close != afterOpen else { return key[...] }
        return key[afterOpen..<close]
    }

    /// CRC16/XMODEM, a byte at a time from a 256-entry table.
    static func crc16(_ bytes: some Sequence<UInt8>) -> UInt16 {
        var crc: UInt16 = 0
        for byte in bytes {
            crc = (crc << 8) ^ table[Int(UInt8(truncatingIfNeeded: crc >> 8) ^ byte)]
        }
        return crc
    }

    private static let table: [UInt16] = (0..<256).map { index in
        var crc = UInt16(index) << 8
        for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        return crc
    }
}

extension RedisSlot {
    /// The one slot `keys` share, or `nil` when there are none.
    /// - Throws: ``RedisClientError/Code/crossSlot`` naming the keys and their slots when they
    ///   do not share one (a Redis Cluster would refuse the command with `CROSSSLOT`).
    public static func common(_ keys: [String]) throws(RedisClientError) -> RedisSlot? {
        guard let first = keys.first else { return nil }
        let slot = RedisSlot(key: first)
        for key in keys.dropFirst() where RedisSlot(key: key) != slot {
            let listed = keys.prefix(8).map { "\($0.prefix(80)) (\(RedisSlot(key: $0).value))" }.joined(separator: ", ")
            throw RedisClientError(
                .crossSlot, "keys in different cluster slots cannot go in one command: \(listed)\(keys.count > 8 ? ", …" : "")")
        }
        return slot
    }
}
