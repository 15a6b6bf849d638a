/// Which master serves each of a Redis Cluster's 16,384 slots, as `CLUSTER SLOTS` reported it
/// and `MOVED` replies corrected it since. A value without I/O: the client's router keeps one
/// behind a lock and replaces it on refresh.
struct RedisClusterTopology: Sendable, Equatable {
    typealias Endpoint = RedisConfiguration.Endpoint

    /// The masters, each once, in the order first seen.
    private(set) var masters: [Endpoint]
    /// The replicas `CLUSTER SLOTS` listed (never used for decisions: see `Docs/operations.md`).
    private(set) var replicas: [Endpoint]
    /// Slot → index into ``masters``; `UInt16.max` where no master serves the slot.
    private var table: [UInt16]

    static let uncovered = UInt16.max

    /// An empty map (every slot uncovered).
    init() {
        masters = []
        replicas = []
        table = Array(repeating: Self.uncovered, count: RedisSlot.count)
    }

    /// Reads a `CLUSTER SLOTS` reply: `[[start, end, [ip, port, id, …], [replica…]…]…]`. An empty
    /// ip means the node that answered (`queried`'s host); a `?` endpoint is skipped.
    init(clusterSlots reply: RESPValue, queried: Endpoint) throws(RedisClientError) {
        self.init()
        guard case .array(let ranges) = reply else { throw Self.malformed("not an array") }
        for range in ranges {
            guard case .array(let fields) = range, fields.count >= 3,
                let start = fields[0].int, let end = fields[1].int,
                0 <= start, start <= end, end < RedisSlot.count
            else { throw Self.malformed("bad slot range") }
            guard let master = try Self.node(fields[2], queried: queried) else { continue }
            let index = self.index(of: master)
            guard index != Self.uncovered else { throw Self.malformed("more than \(Self.maximumMasters) masters") }
            for slot in Int(start)...Int(end) { table[slot] = index }
            for field in fields.dropFirst(3) {
                if let replica = try Self.node(field, queried: queried), !replicas.contains(replica) { replicas.append(replica) }
            }
        }
    }

    private static func malformed(_ what: String) -> RedisClientError {
        RedisClientError(.unexpectedReply, "CLUSTER SLOTS reply: \(what)")
    }

    private static func node(_ value: RESPValue, queried: Endpoint) throws(RedisClientError) -> Endpoint? {
        guard case .array(let parts) = value, parts.count >= 2, let host = parts[0].string, let port = parts[1].int,
            (1...65535).contains(port)
        else { throw malformed("bad node") }
        if host == "?" { return nil }
        if host.isEmpty {
            guard case .tcp(let queriedHost, _) = queried else { return nil }
            return .tcp(host: queriedHost, port: Int(port))
        }
        return .tcp(host: host, port: Int(port))
    }

    /// The most masters a map holds (Redis Cluster's own recommended bound is 1,000).
    static let maximumMasters = 16_384

    private mutating func index(of master: Endpoint) -> UInt16 {
        if let found = masters.firstIndex(of: master) { return UInt16(found) }
        // Bounded by the slots each master needs: never past UInt16 (a hostile reply could list more).
        guard masters.count < Self.maximumMasters else { return Self.uncovered }
        masters.append(master)
        return UInt16(masters.count - 1)
    }

    /// The master serving `slot`, if any.
    func master(forSlot slot: Int) -> Endpoint? {
        let index = table[slot]
        return index == Self.uncovered ? nil : masters[Int(index)]
    }

    /// Whether every slot has a master.
    var coversAllSlots: Bool { !table.contains(Self.uncovered) }

    /// Every node known: masters, then replicas.
    var nodes: [Endpoint] { masters + replicas.filter { !masters.contains($0) } }

    /// A `MOVED` reply: `slot` is now served by `endpoint`.
    mutating func moved(slot: Int, to endpoint: Endpoint) {
        guard (0..<RedisSlot.count).contains(slot) else { return }
        let position = index(of: endpoint)
        guard position != Self.uncovered else { return }
        table[slot] = position
        replicas.removeAll { $0 == endpoint }
    }
}

/// A `MOVED` or `ASK` error reply: `MOVED 3999 127.0.0.1:6381` (the slot lives there now: update
/// the map) or `ASK 3999 127.0.0.1:6381` (during a migration, for this command only: send
/// `ASKING` then the command there).
struct RedisRedirection: Sendable, Equatable {
    enum Kind: Sendable { case moved, ask }
    var kind: Kind
    var slot: Int
    var endpoint: RedisConfiguration.Endpoint

    init(kind: Kind, slot: Int, endpoint: RedisConfiguration.Endpoint) {
        self.kind = kind
        self.slot = slot
        self.endpoint = endpoint
    }

    /// Parses `message`; an empty host means the node that answered (`from`).
    init?(_ message: String, from: RedisConfiguration.Endpoint) {
        let parts = message.split(separator: " ")
        guard parts.count == 3, let slot = Int(parts[1]), (0..<RedisSlot.count).contains(slot) else { return nil }
        switch parts[0] {
        case "MOVED": kind = .moved
        case "ASK": kind = .ask
        default: return nil
        }
        let address = parts[2]
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]), (1...65535).contains(port)
        else { return nil }
        var host = String(address[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.isEmpty {
            guard case .tcp(let queried, _) = from else { return nil }
            host = queried
        }
        self.slot = slot
        self.endpoint = .tcp(host: host, port: port)
    }
}
