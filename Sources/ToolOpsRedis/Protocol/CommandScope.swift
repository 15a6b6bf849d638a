/// Commands that change or hold the connection they run on, which a connection shared by
/// every caller must never run: on a pipelined connection `CLIENT REPLY SKIP` hands each later
/// reply to the wrong caller, `MULTI` pulls other callers' commands into a transaction,
/// `SELECT` switches everyone's database, `SUBSCRIBE` turns replies into messages, and
/// `BLPOP 0` stalls everyone. ``RedisClient/send(_:)-(RedisCommand)`` refuses them with
/// ``RedisClientError/Code/connectionScopedCommand``; run them inside
/// ``RedisClient/withConnection(commandTimeout:_:)``.
enum CommandScope: Sendable, Equatable {
    /// Fine on a shared connection.
    case shared
    /// Only on a leased connection, for this reason.
    case leased(String)
    /// Never: it breaks the matching of replies to commands (`SUBSCRIBE`, `MONITOR`,
    /// `CLIENT REPLY`), for this reason.
    case never(String)

    /// Where `name` (with its arguments) may run. `argument(i)` is the i-th argument after the name.
    static func of(name: String, argumentCount: Int, argument: (Int) -> ArraySlice<UInt8>) -> CommandScope {
        guard let reason = reason(name: name, argumentCount: argumentCount, argument: argument) else { return .shared }
        let upper = name.uppercased()
        if pushMode.contains(upper) { return .never(reason) }
        if upper == "CLIENT" && String(decoding: argument(0), as: UTF8.self).uppercased() == "REPLY" {
            return .never(reason + ": replies would no longer match their commands")
        }
        return .leased(reason)
    }

    private static func reason(name: String, argumentCount: Int, argument: (Int) -> ArraySlice<UInt8>) -> String? {
        // Most names are short and upper case already: no allocation on the hot path.
        let upper = name.utf8.contains(where: { $0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z") }) ? name.uppercased() : name
        if let reason = names[upper] { return reason }
        switch upper {
        case "CLIENT":
            guard argumentCount > 0 else { return nil }
            let sub = String(decoding: argument(0), as: UTF8.self).uppercased()
            return clientSubcommands.contains(sub) ? "CLIENT \(sub) changes the connection's state" : nil
        case "XREAD", "XREADGROUP":
            for index in 0..<argumentCount where String(decoding: argument(index), as: UTF8.self).uppercased() == "BLOCK" {
                return "\(upper) BLOCK holds the connection until data arrives"
            }
            return nil
        default:
            return nil
        }
    }

    private static let pushMode: Set<String> = ["SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "MONITOR", "SYNC", "PSYNC"]

    private static let clientSubcommands: Set<String> = ["REPLY", "TRACKING", "CACHING", "SETNAME", "NO-EVICT", "NO-TOUCH", "SETINFO"]

    private static let names: [String: String] = {
        var names: [String: String] = [:]
        for name in ["MULTI", "EXEC", "DISCARD", "WATCH", "UNWATCH"] { names[name] = "\(name) is part of a transaction" }
        for name in ["SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE"] {
            names[name] = "\(name) turns the connection's replies into messages (use subscribe(to:))"
        }
        for name in ["MONITOR", "SYNC", "PSYNC", "REPLCONF"] { names[name] = "\(name) turns the connection into a stream" }
        for name in ["BLPOP", "BRPOP", "BRPOPLPUSH", "BLMOVE", "BLMPOP", "BZPOPMIN", "BZPOPMAX", "BZMPOP", "WAIT", "WAITAOF"] {
            names[name] = "\(name) holds the connection until it returns"
        }
        for name in ["SELECT", "AUTH", "HELLO", "RESET", "QUIT", "READONLY", "READWRITE", "ASKING"] {
            names[name] = "\(name) changes the connection's state"
        }
        return names
    }()
}
