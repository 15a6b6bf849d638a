/// How to reach and talk to a Redis server.
///
/// ```swift
/// var config = try RedisConfiguration(url: "redis://app:s3cret@redis.internal:6379/2")
/// config.commandTimeout = .milliseconds(250)
/// let client = try RedisClient(configuration: config)
/// ```
public struct RedisConfiguration: Sendable, CustomStringConvertible {
    /// Where the server listens.
    public enum Endpoint: Sendable, Hashable, CustomStringConvertible {
        /// A TCP host name or IP address and port.
        case tcp(host: String, port: Int)
        /// A unix domain socket path.
        case unix(path: String)

        public var description: String {
            switch self {
            case .tcp(let host, let port): return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
            case .unix(let path): return "unix:\(path)"
            }
        }
    }

    /// How the servers are arranged: one server, a Redis Cluster, or a master found through Sentinel.
    public enum Topology: Sendable, Hashable {
        /// One server at ``RedisConfiguration/endpoint`` (or a name that always points at the
        /// master, such as a managed service's primary endpoint).
        case standalone
        /// A Redis Cluster reached through any of `seeds`: the client reads the slot map
        /// (`CLUSTER SLOTS`) from the first that answers, sends each command to the master of
        /// its keys' slot, follows `MOVED`/`ASK`, and refreshes the map on redirections,
        /// errors and every ``RedisConfiguration/topologyRefreshInterval``.
        case cluster(seeds: [Endpoint])
        /// A master monitored by Redis Sentinel: the client asks `sentinels` for the master
        /// of `masterName` (`SENTINEL get-master-addr-by-name`) and asks again when it cannot
        /// reach it or finds it demoted (`READONLY`).
        case sentinel(masterName: String, sentinels: [Endpoint])

        /// `true` for ``cluster(seeds:)``.
        public var isCluster: Bool {
            if case .cluster = self { return true }
            return false
        }
    }

    /// Where the server listens. Defaults to `127.0.0.1:6379`. With a cluster, the first seed;
    /// with Sentinel, the first sentinel (the master is discovered).
    public var endpoint: Endpoint
    /// Defaults to ``Topology/standalone``; `redis-cluster://` and `redis-sentinel://` URLs set the others.
    public var topology: Topology = .standalone
    /// The password of the sentinels themselves, when they require one (`requirepass` in
    /// `sentinel.conf`); ``password`` is the master's. Defaults to `nil`.
    public var sentinelPassword: String? = nil
    /// How often a cluster client re-reads the slot map, and a Sentinel client re-asks for the
    /// master, besides doing so at once when a reply or a failure says the layout changed
    /// (while the client's service runs: ``RedisClient/run()``). Defaults to 30 s.
    public var topologyRefreshInterval: Duration = .seconds(30)
    /// How long a command may keep being retried while a cluster or Sentinel master is
    /// unavailable — `CLUSTERDOWN`, `TRYAGAIN`, a refused connection, a failover in progress —
    /// before its error is returned. Only commands that never reached a server (or that the
    /// server refused without running) are retried, so nothing runs twice. Defaults to 500 ms.
    public var unavailableRetryBudget: Duration = .milliseconds(500)
    /// The ACL user for `AUTH`. Defaults to `nil` (the `default` user when a password is set).
    public var username: String?
    /// The password for `AUTH`. Defaults to `nil` (no `AUTH`).
    public var password: String?
    /// The database selected on every connection. Defaults to `0` (no `SELECT`).
    public var database: Int
    /// TLS. Defaults to ``RedisTLSConfiguration/disabled``; `rediss://` URLs enable it.
    public var tls: RedisTLSConfiguration
    /// Time allowed for TCP connect, TLS handshake, `AUTH` and `SELECT`. Defaults to 5 s.
    public var connectTimeout: Duration
    /// Time allowed for a reply. A late reply closes and replaces the connection, failing
    /// every command in flight on it with ``RedisClientError/Code/commandTimeout``. Defaults to 5 s.
    public var commandTimeout: Duration
    /// Number of pooled connections for commands (pub/sub uses its own). Commands from
    /// concurrent callers are pipelined on each connection, so a small pool suffices.
    /// Defaults to 2.
    public var poolSize: Int
    /// Commands in flight on a connection before the pool puts new commands on another one.
    /// One connection pipelines best (bigger batches, fewer thread wake-ups); more are used
    /// only under heavy load or when one is slow (a big reply, a blocking command).
    /// Defaults to 64.
    public var spreadThreshold: Int
    /// Commands waiting or in flight on one connection before the client pushes back: when
    /// every connection of the pool has this many, commands fail at once with
    /// ``RedisClientError/Code/overloaded`` instead of queueing without bound. Defaults to 10,000.
    public var maximumCommandsPerConnection: Int
    /// Exclusive connections open at once through ``RedisClient/withConnection(commandTimeout:_:)``
    /// (each has a thread of its own). Beyond it, a lease fails with
    /// ``RedisClientError/Code/overloaded``. Defaults to 16.
    public var maximumLeasedConnections: Int
    /// How long the pub/sub connection may stay silent before it sends a `PING`; with no
    /// answer within ``commandTimeout`` it is declared lost (``RedisPubSubEvent/connectionLost(_:)``)
    /// and replaced. Keeps idle-timeouts of NATs and load balancers from silently dropping
    /// the channels, and notices a peer that vanished. Defaults to 10 s.
    public var pubSubHeartbeat: Duration
    /// Events buffered per ``RedisSubscription`` for a consumer that has not taken them yet.
    /// Beyond it the oldest are dropped and the consumer is told with a
    /// ``RedisPubSubEvent/connectionLost(_:)`` (then ``RedisPubSubEvent/restored``), as for a
    /// gap in the channel. Defaults to 10,000.
    public var maximumBufferedPubSubEvents: Int
    /// Delay between reconnect attempts after a failure. Defaults to 50 ms doubling to 2 s.
    public var reconnect: ReconnectBackoff
    /// Sent with `CLIENT SETNAME` on connect so operators can spot our connections.
    /// Defaults to `"toolops"`; `nil` skips it.
    public var clientName: String?
    /// The most bytes one reply may occupy on the wire. Defaults to 512 MiB + 64 KiB (Redis's
    /// own bulk limit plus framing). A larger reply fails its command with
    /// ``RedisClientError/Code/protocolError`` and is skipped without being buffered; the
    /// connection stays in use (see ``RESPReader``).
    public var maximumReplyBytes: Int
    /// The most array elements one reply may announce, nested arrays included. Defaults to
    /// 4,194,304 (a decoded reply of small values stays under ~200 MB). A larger reply fails
    /// its command like one over ``maximumReplyBytes``.
    public var maximumReplyElements: Int
    /// The deepest nesting of arrays in one reply. Defaults to 64. A deeper reply fails its
    /// command only; other commands on the connection are unaffected.
    public var maximumReplyDepth: Int
    /// After any socket activity, a connection's I/O thread keeps polling without sleeping
    /// for this long, so the next reply is read the moment it arrives instead of after the
    /// thread is woken. Trades CPU for latency: under steady load each busy connection keeps
    /// up to one core busy (mind CPU limits: throttling undoes the gain). Measured on a
    /// 2-core VM with 300 µs: one caller's round trips 2–2.6× faster. Defaults to zero (off).
    public var busyPoll: Duration

    /// Creates a configuration; every parameter has the documented default.
    public init(
        endpoint: Endpoint = .tcp(host: "127.0.0.1", port: 6379),
        username: String? = nil,
        password: String? = nil,
        database: Int = 0,
        tls: RedisTLSConfiguration = .disabled,
        connectTimeout: Duration = .seconds(5),
        commandTimeout: Duration = .seconds(5),
        poolSize: Int = 2,
        spreadThreshold: Int = 64,
        maximumCommandsPerConnection: Int = 10_000,
        maximumLeasedConnections: Int = 16,
        pubSubHeartbeat: Duration = .seconds(10),
        maximumBufferedPubSubEvents: Int = 10_000,
        reconnect: ReconnectBackoff = .init(),
        clientName: String? = "toolops",
        maximumReplyBytes: Int = 512 * 1024 * 1024 + 64 * 1024,
        maximumReplyElements: Int = 4 * 1024 * 1024,
        maximumReplyDepth: Int = 64,
        busyPoll: Duration = .zero
    ) {
        self.busyPoll = busyPoll
        self.endpoint = endpoint
        self.username = username
        self.password = password
        self.database = database
        self.tls = tls
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
        self.poolSize = poolSize
        self.spreadThreshold = spreadThreshold
        self.maximumCommandsPerConnection = maximumCommandsPerConnection
        self.maximumLeasedConnections = maximumLeasedConnections
        self.pubSubHeartbeat = pubSubHeartbeat
        self.maximumBufferedPubSubEvents = maximumBufferedPubSubEvents
        self.reconnect = reconnect
        self.clientName = clientName
        self.maximumReplyBytes = maximumReplyBytes
        self.maximumReplyElements = maximumReplyElements
        self.maximumReplyDepth = maximumReplyDepth
    }

    /// The reply limits as the reader takes them.
    var replyLimits: RESPReader.Limits {
        RESPReader.Limits(bytes: maximumReplyBytes, elements: maximumReplyElements, depth: maximumReplyDepth)
    }

    /// Checks that every value is usable.
    /// The endpoint and options, never the password: `redis(127.0.0.1:6379, user: app, password: ***, db: 2, tls: on)`.
    public var description: String {
        var parts: [String]
        switch topology {
        case .standalone: parts = ["\(endpoint)"]
        case .cluster(let seeds): parts = ["cluster: " + seeds.map(\.description).joined(separator: ",")]
        case .sentinel(let name, let sentinels):
            parts = ["sentinel: \(name) via " + sentinels.map(\.description).joined(separator: ",")]
            if sentinelPassword != nil { parts.append("sentinel password: ***") }
        }
        if let username { parts.append("user: \(username)") }
        if password != nil { parts.append("password: ***") }
        if database != 0 { parts.append("db: \(database)") }
        parts.append("tls: \(tls.isEnabled ? "on" : "off")")
        return "redis(\(parts.joined(separator: ", ")))"
    }

    public func validate() throws(RedisClientError) {
        func bad(_ message: String) -> RedisClientError { RedisClientError(.invalidConfiguration, message) }
        if poolSize < 1 || poolSize > 1024 { throw bad("poolSize must be 1...1024, got \(poolSize)") }
        if spreadThreshold < 1 { throw bad("spreadThreshold must be >= 1, got \(spreadThreshold)") }
        if maximumCommandsPerConnection < spreadThreshold {
            throw bad("maximumCommandsPerConnection must be >= spreadThreshold (\(spreadThreshold)), got \(maximumCommandsPerConnection)")
        }
        if pubSubHeartbeat <= .zero { throw bad("pubSubHeartbeat must be positive") }
        if maximumBufferedPubSubEvents < 16 { throw bad("maximumBufferedPubSubEvents must be >= 16, got \(maximumBufferedPubSubEvents)") }
        if maximumLeasedConnections < 0 { throw bad("maximumLeasedConnections must be >= 0, got \(maximumLeasedConnections)") }
        if busyPoll < .zero || busyPoll > .milliseconds(100) { throw bad("busyPoll must be within 0...100 ms, got \(busyPoll)") }
        if database < 0 { throw bad("database must be >= 0, got \(database)") }
        if connectTimeout <= .zero { throw bad("connectTimeout must be positive") }
        if commandTimeout <= .zero { throw bad("commandTimeout must be positive") }
        if maximumReplyBytes < 1024 || maximumReplyBytes > 1 << 40 { throw bad("maximumReplyBytes must be 1 KiB...1 TiB, got \(maximumReplyBytes)") }
        if maximumReplyElements < 1 { throw bad("maximumReplyElements must be >= 1, got \(maximumReplyElements)") }
        if maximumReplyDepth < 1 || maximumReplyDepth > 1024 { throw bad("maximumReplyDepth must be 1...1024, got \(maximumReplyDepth)") }
        if reconnect.initialDelay < .zero || reconnect.maximumDelay < reconnect.initialDelay {
            throw bad("reconnect delays must satisfy 0 <= initialDelay <= maximumDelay")
        }
        switch endpoint {
        case .tcp(let host, let port):
            if host.isEmpty { throw bad("host is empty") }
            if !(1...65535).contains(port) { throw bad("port must be 1...65535, got \(port)") }
        case .unix(let path):
            if path.isEmpty { throw bad("unix socket path is empty") }
            if path.utf8.count > 107 { throw bad("unix socket path longer than 107 bytes") }
            if tls.isEnabled { throw bad("TLS over a unix socket is not supported") }
        }
        if password == nil && username != nil { throw bad("a username needs a password") }
        if topologyRefreshInterval < .milliseconds(100) { throw bad("topologyRefreshInterval must be at least 100 ms") }
        if unavailableRetryBudget < .zero { throw bad("unavailableRetryBudget must not be negative") }
        switch topology {
        case .standalone:
            break
        case .cluster(let seeds):
            if seeds.isEmpty { throw bad("a cluster needs at least one seed") }
            if database != 0 { throw bad("a Redis Cluster has only database 0, got \(database)") }
            for seed in seeds { if case .unix = seed { throw bad("cluster seeds must be TCP endpoints") } }
        case .sentinel(let name, let sentinels):
            if sentinels.isEmpty { throw bad("Sentinel needs at least one sentinel") }
            if name.isEmpty || name.utf8.count > 256 || name.utf8.contains(where: { $0 <= 0x20 || $0 == 0x7f }) {
                throw bad("Sentinel master name must be 1...256 visible characters")
            }
        }
        if let name = tls.serverName {
            // An empty name would leave OpenSSL with no host to check: verification without
            // a name is no verification. A NUL would cut the checked name short.
            if name.isEmpty || name.utf8.count > 253 || name.utf8.contains(where: { $0 <= 0x20 || $0 == 0x7f }) {
                throw bad("TLS server name must be 1...253 visible characters, got '\(name)'")
            }
        }
    }
}

/// Exponential backoff with jitter between reconnect attempts.
public struct ReconnectBackoff: Sendable, Hashable {
    /// The delay before the second attempt (the first one is immediate). Defaults to 50 ms.
    public var initialDelay: Duration
    /// The upper bound of any delay. Defaults to 2 s.
    public var maximumDelay: Duration

    public init(initialDelay: Duration = .milliseconds(50), maximumDelay: Duration = .seconds(2)) {
        self.initialDelay = initialDelay
        self.maximumDelay = maximumDelay
    }

    /// The delay after `failures` consecutive failed attempts: `initialDelay · 2^(failures-1)`,
    /// capped at `maximumDelay`, with "equal jitter" (a uniform value in [d/2, d]) so replicas
    /// that lost Redis together do not reconnect in lockstep.
    public func delay<G: RandomNumberGenerator>(afterFailures failures: Int, using generator: inout G) -> Duration {
        guard failures > 0 else { return .zero }
        let exponent = min(failures - 1, 30)
        let initial = Double(initialDelay.components.seconds) + Double(initialDelay.components.attoseconds) * 1e-18
        let maximum = Double(maximumDelay.components.seconds) + Double(maximumDelay.components.attoseconds) * 1e-18
        let capped = min(maximum, initial * Double(1 << exponent))
        let jittered = capped / 2 + Double.random(in: 0...(capped / 2), using: &generator)
        return .nanoseconds(Int64(jittered * 1e9))
    }

    public func delay(afterFailures failures: Int) -> Duration {
        var generator = SystemRandomNumberGenerator()
        return delay(afterFailures: failures, using: &generator)
    }
}

/// TLS settings for connections to Redis. Verification of the server certificate and host
/// name is on unless explicitly switched off with ``Verification/insecureNone``.
public struct RedisTLSConfiguration: Sendable, Hashable {
    /// How the server's certificate is checked.
    public struct Verification: Sendable, Hashable {
        enum Base: Hashable, Sendable { case full, noHostname, none }
        let base: Base
        /// Chain against the CA file (or the system store) and host name against the
        /// certificate's SAN. The default.
        public static let full = Verification(base: .full)
        /// Chain only; any host name is accepted.
        public static let noHostnameVerification = Verification(base: .noHostname)
        /// No verification at all. Only for tests: anyone on the path can read and change traffic.
        public static let insecureNone = Verification(base: .none)
    }

    public internal(set) var isEnabled: Bool
    /// PEM file of the CA(s) that signed the server certificate; `nil` uses the system store.
    public var caFile: String?
    /// PEM client certificate chain for mutual TLS.
    public var certificateFile: String?
    /// PEM private key for ``certificateFile``.
    public var privateKeyFile: String?
    /// Name sent in SNI and checked against the certificate; defaults to the endpoint host.
    public var serverName: String?
    /// Defaults to ``Verification/full``.
    public var verification: Verification

    /// No TLS.
    public static let disabled = RedisTLSConfiguration(
        isEnabled: false, caFile: nil, certificateFile: nil, privateKeyFile: nil, serverName: nil, verification: .full)

    /// TLS 1.2+ with the given trust and identity.
    public static func enabled(
        caFile: String? = nil,
        certificateFile: String? = nil,
        privateKeyFile: String? = nil,
        serverName: String? = nil,
        verification: Verification = .full
    ) -> RedisTLSConfiguration {
        RedisTLSConfiguration(
            isEnabled: true, caFile: caFile, certificateFile: certificateFile,
            privateKeyFile: privateKeyFile, serverName: serverName, verification: verification)
    }
}

extension RedisConfiguration {
    /// Parses a Redis URL:
    ///
    /// - `redis://[[user]:password@]host[:port][/db]` (port defaults to 6379)
    /// - `rediss://…` the same over TLS (verification on; set ``tls`` to add a CA file)
    /// - `unix:///path/to/redis.sock[?db=N&user=U&password=P]`
    ///
    /// User and password may be percent-encoded. IPv6 hosts go in brackets (`redis://[::1]:6379`).
    /// Any other form throws ``RedisClientError/Code/invalidURL`` naming the problem.
    public init(url: String) throws(RedisClientError) {
        self.init()
        func bad(_ message: String) -> RedisClientError { RedisClientError(.invalidURL, "\(message) in '\(Self.redact(url))'") }
        guard let schemeEnd = url.firstRange(of: "://") else { throw bad("missing scheme (expected redis://, rediss:// or unix://)") }
        let scheme = url[..<schemeEnd.lowerBound].lowercased()
        var rest = url[schemeEnd.upperBound...]
        // The user info ends at the *last* '@': a password may hold '/', '?', ':' or '@' (it
        // should be percent-encoded, but often is not), and none of it may leak into a message.
        var userInfo: Substring? = nil
        if scheme != "unix", let at = Self.userInfoEnd(rest) {
            userInfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
        }

        var query: [String: String] = [:]
        if let q = rest.firstIndex(of: "?") {
            for pair in rest[rest.index(after: q)...].split(separator: "&") where !pair.isEmpty {
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                guard parts.count == 2, let key = Self.percentDecode(parts[0]), let value = Self.percentDecode(parts[1]) else {
                    // The key only: the value may be a password.
                    throw bad("malformed query parameter '\(parts[0])'")
                }
                query[key] = value
            }
            rest = rest[..<q]
        }
        for key in query.keys where !["db", "user", "password"].contains(key) {
            throw bad("unknown query parameter '\(key)'")
        }

        switch scheme {
        case "unix":
            guard rest.hasPrefix("/") else { throw bad("unix socket path must be absolute (unix:///path)") }
            endpoint = .unix(path: String(rest))
        case "redis", "rediss", "redis-cluster", "rediss-cluster", "redis-sentinel", "rediss-sentinel":
            if scheme.hasPrefix("rediss") { tls = .enabled() }
            var hostPart = rest
            var dbPart: Substring? = nil
            if let slash = rest.firstIndex(of: "/") {
                hostPart = rest[..<slash]
                dbPart = rest[rest.index(after: slash)...]
            }
            var masterName: String? = nil
            if scheme.hasSuffix("-sentinel") {
                // redis-sentinel://s1:26379,s2:26379/<master name>[/<db>]
                guard let path = dbPart, let name = path.split(separator: "/", omittingEmptySubsequences: false).first, !name.isEmpty,
                    let decoded = Self.percentDecode(name)
                else { throw bad("missing master name (redis-sentinel://host:port,…/<master name>)") }
                masterName = decoded
                dbPart = path.dropFirst(name.count + 1)
            }
            if let userInfo {
                let pieces = userInfo.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
                if pieces.count == 2 {
                    guard let user = Self.percentDecode(pieces[0]), let pass = Self.percentDecode(pieces[1]) else {
                        throw bad("malformed percent-encoding in user info")
                    }
                    username = user.isEmpty ? nil : user
                    password = pass
                } else {
                    // "redis://secret@host" — a lone value is the password (redis-cli convention).
                    guard let pass = Self.percentDecode(pieces[0]) else { throw bad("malformed percent-encoding in user info") }
                    password = pass
                }
            }
            let defaultPort = masterName == nil ? 6379 : 26379
            var endpoints: [Endpoint] = []
            for part in hostPart.split(separator: ",", omittingEmptySubsequences: false) {
                endpoints.append(try Self.hostAndPort(part, defaultPort: defaultPort, bad: bad))
            }
            guard let first = endpoints.first else { throw bad("missing host") }
            endpoint = first
            if let masterName {
                topology = .sentinel(masterName: masterName, sentinels: endpoints)
            } else if scheme.hasSuffix("-cluster") {
                topology = .cluster(seeds: endpoints)
            } else if endpoints.count > 1 {
                throw bad("several hosts need redis-cluster:// or redis-sentinel://")
            }
            if let dbPart, !dbPart.isEmpty {
                guard let db = Int(dbPart), db >= 0 else { throw bad("invalid database '\(dbPart)'") }
                database = db
            }
        default:
            throw bad("unsupported scheme '\(scheme)' (expected redis://, rediss://, redis-cluster://, redis-sentinel:// or unix://)")
        }
        if let db = query["db"] {
            guard let value = Int(db), value >= 0 else { throw bad("invalid database '\(db)'") }
            database = value
        }
        if let user = query["user"] { username = user }
        if let pass = query["password"] { password = pass }
        do { try validate() } catch { throw RedisClientError(.invalidURL, "\(error.message) in '\(Self.redact(url))'") }
    }

    /// `host[:port]` or `[v6]:port`.
    private static func hostAndPort(
        _ hostPart: Substring, defaultPort: Int, bad: (String) -> RedisClientError
    ) throws(RedisClientError) -> Endpoint {
        var host: Substring
        var portText: Substring? = nil
        if hostPart.hasPrefix("[") {
            guard let close = hostPart.firstIndex(of: "]") else { throw bad("unterminated IPv6 address") }
            host = hostPart[hostPart.index(after: hostPart.startIndex)..<close]
            let after = hostPart[hostPart.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw bad("unexpected '\(after)' after IPv6 address") }
                portText = after.dropFirst()
            }
        } else if let colon = hostPart.lastIndex(of: ":") {
            host = hostPart[..<colon]
            portText = hostPart[hostPart.index(after: colon)...]
        } else {
            host = hostPart
        }
        guard !host.isEmpty else { throw bad("missing host") }
        guard host.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == "_" || $0 == ":" || $0 == "%" }) else {
            throw bad("invalid character in host '\(host)'")
        }
        var port = defaultPort
        if let portText {
            guard let value = Int(portText), (1...65535).contains(value) else { throw bad("invalid port '\(portText)'") }
            port = value
        }
        return .tcp(host: String(host), port: port)
    }

    /// The URL with any password replaced by `***`, for logs and error messages.
    public static func redact(_ url: String) -> String {
        guard let schemeEnd = url.firstRange(of: "://") else { return url }
        let scheme = url[..<schemeEnd.upperBound]
        let afterScheme = url[schemeEnd.upperBound...]
        var result = url
        if let at = userInfoEnd(afterScheme) {
            let userInfo = afterScheme[..<at]
            let tail = afterScheme[afterScheme.index(after: at)...]
            if userInfo.contains("?") {
                // A '?' in the user info: the password holds one (hide all of it with the rest).
                result = scheme + "***@" + tail
            } else {
                let user = userInfo.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
                result = scheme + (user.count == 2 ? "\(user[0]):***" : "***") + "@" + tail
            }
        }
        // Every `password=` value, up to the next '&' (rebuilt, not edited in place).
        var redacted = ""
        var remaining = Substring(result)
        while let range = remaining.firstRange(of: "password=") {
            redacted += remaining[..<range.upperBound] + "***"
            remaining = remaining[range.upperBound...]
            remaining = remaining[(remaining.firstIndex(of: "&") ?? remaining.endIndex)...]
        }
        return redacted + remaining
    }

    /// Where the user info of `redis://[userinfo@]host…` ends: the last '@' (a password may
    /// contain '@', '/' or '?'; host, port and database never do). An '@' inside a query value
    /// (`?password=p@ss`) does not end any user info.
    static func userInfoEnd(_ afterScheme: Substring) -> Substring.Index? {
        guard let at = afterScheme.lastIndex(of: "@") else { return nil }
        if let question = afterScheme[..<at].firstIndex(of: "?") {
            let query = afterScheme[afterScheme.index(after: question)..<at]
            let keys = query.split(separator: "&").map { $0.split(separator: "=", maxSplits: 1).first ?? "" }
            if query.contains("="), keys.contains(where: { ["db", "user", "password"].contains($0) }) { return nil }
        }
        return at
    }

    static func percentDecode(_ text: Substring) -> String? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%") {
                guard let high = iterator.next(), let low = iterator.next(),
                    let h = hexValue(high), let l = hexValue(low)
                else { return nil }
                bytes.append(h << 4 | l)
            } else {
                bytes.append(byte)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
