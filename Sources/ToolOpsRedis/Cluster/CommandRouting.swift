/// Where a command must run on a Redis Cluster: on the node serving its keys' slot, on any
/// node (no key), or nowhere (keys in several slots — a cluster would answer `CROSSSLOT`).
///
/// Worked out once when the command is made (``RedisCommand``), from the command's key
/// positions: most commands have their key first; `DEL`, `EXISTS`, `MGET`, `UNLINK`, … take
/// only keys; `MSET` alternates keys and values; `EVAL`/`EVALSHA`/`FCALL` declare theirs with
/// a count; `MEMORY USAGE`, `OBJECT`, `XINFO` have theirs second; `XREAD` after `STREAMS`.
/// Server-wide commands (`PING`, `INFO`, `SCRIPT`, `PUBLISH` — a cluster forwards messages to
/// every node —, …) have none.
enum CommandRouting: Sendable, Equatable {
    /// No key: any node can run it.
    case anyNode
    /// Every key is in this slot.
    case slot(Int)
    /// The keys are in several slots; the message names them.
    case crossSlot(String)

    /// The routing of `name` with `argumentCount` arguments; `argument(i)` is the i-th after the name.
    static func of(name: String, argumentCount: Int, argument: (Int) -> ArraySlice<UInt8>) -> CommandRouting {
        let keys = keyIndices(name: name, argumentCount: argumentCount, argument: argument)
        guard let first = keys.first else { return .anyNode }
        let slot = RedisSlot(key: argument(first))
        for index in keys.dropFirst() where RedisSlot(key: argument(index)) != slot {
            let listed = keys.prefix(8).map { index in
                let key = argument(index)
                return "\(String(decoding: key.prefix(80), as: UTF8.self)) (\(RedisSlot(key: key).value))"
            }
            return .crossSlot(
                "\(name)'s keys are in different cluster slots: \(listed.joined(separator: ", "))\(keys.count > 8 ? ", …" : "")")
        }
        return .slot(slot.value)
    }

    private enum Rule {
        case none, first, firstTwo, all, alternate, second, streams, subcommandKey(Set<String>)
        /// A key count at `count`, its keys right after it, and keys at `before` (a destination).
        case counted(count: Int, before: [Int])
        /// Every argument from `index` on (`BITOP op destination source…`).
        case from(Int)
    }

    private static let rules: [String: Rule] = {
        var rules: [String: Rule] = [:]
        for name in [
            "PING", "ECHO", "INFO", "TIME", "DBSIZE", "FLUSHALL", "FLUSHDB", "SCRIPT", "CLUSTER", "CONFIG", "DEBUG", "CLIENT",
            "COMMAND", "PUBLISH", "FUNCTION", "ACL", "SAVE", "BGSAVE", "BGREWRITEAOF", "LASTSAVE", "SWAPDB", "RANDOMKEY", "SCAN",
            "KEYS", "SLOWLOG", "LATENCY", "ROLE", "LOLWUT", "READONLY", "READWRITE", "ASKING", "WAIT", "WAITAOF", "MULTI", "EXEC",
            "DISCARD", "UNWATCH", "HELLO", "AUTH", "SELECT", "QUIT", "RESET", "SHUTDOWN", "REPLICAOF", "SLAVEOF", "SENTINEL",
            "MONITOR", "SUBSCRIBE", "UNSUBSCRIBE", "PSUBSCRIBE", "PUNSUBSCRIBE", "PUBSUB", "MODULE", "FAILOVER", "SYNC", "PSYNC",
        ] {
            rules[name] = Rule.none
        }
        for name in [
            "DEL", "UNLINK", "EXISTS", "MGET", "TOUCH", "WATCH", "SINTER", "SUNION", "SDIFF", "SINTERSTORE", "SUNIONSTORE",
            "SDIFFSTORE", "PFCOUNT", "PFMERGE",
        ] {
            rules[name] = .all
        }
        // Two keys, then options or a member (`SMOVE src dst member`, `LMOVE src dst LEFT RIGHT`).
        for name in ["RENAME", "RENAMENX", "COPY", "SMOVE", "RPOPLPUSH", "LMOVE", "BLMOVE", "BRPOPLPUSH", "LCS"] {
            rules[name] = .firstTwo
        }
        for name in ["MSET", "MSETNX"] { rules[name] = .alternate }
        for name in ["EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"] { rules[name] = .counted(count: 1, before: []) }
        for name in ["ZUNION", "ZINTER", "ZDIFF", "SINTERCARD", "ZINTERCARD", "LMPOP", "ZMPOP"] { rules[name] = .counted(count: 0, before: []) }
        for name in ["BLMPOP", "BZMPOP"] { rules[name] = .counted(count: 1, before: []) }
        for name in ["ZUNIONSTORE", "ZINTERSTORE", "ZDIFFSTORE"] { rules[name] = .counted(count: 1, before: [0]) }
        rules["BITOP"] = .from(1)
        for name in ["OBJECT", "XINFO", "XGROUP"] { rules[name] = .second }
        rules["MEMORY"] = .subcommandKey(["USAGE"])
        for name in ["XREAD", "XREADGROUP"] { rules[name] = .streams }
        return rules
    }()

    /// The indices of the arguments that are keys.
    static func keyIndices(name: String, argumentCount: Int, argument: (Int) -> ArraySlice<UInt8>) -> [Int] {
        // Most names are upper case already: no allocation then.
        let upper = name.utf8.contains(where: { $0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z") }) ? name.uppercased() : name
        // Commands that take only keys (`DEL a b`) end with their keys; `COPY`, `RENAME` have options after.
        switch rules[upper] ?? .first {
        case .none:
            return []
        case .first:
            return argumentCount > 0 ? [0] : []
        case .firstTwo:
            return Array(0..<min(argumentCount, 2))
        case .all:
            return Array(0..<argumentCount)
        case .from(let index):
            return index < argumentCount ? Array(index..<argumentCount) : []
        case .alternate:
            return Array(stride(from: 0, to: argumentCount, by: 2))
        case .counted(let countIndex, let before):
            let first = countIndex + 1
            // The count is bounded by the arguments present (a huge count must not overflow).
            guard argumentCount > countIndex, let count = Int(String(decoding: argument(countIndex), as: UTF8.self)), count > 0
            else { return before.filter { $0 < argumentCount } }
            return before.filter { $0 < argumentCount } + Array(first..<(first + min(count, argumentCount - first)))
        case .second:
            return argumentCount >= 2 ? [1] : []
        case .subcommandKey(let subcommands):
            guard argumentCount >= 2, subcommands.contains(String(decoding: argument(0), as: UTF8.self).uppercased()) else { return [] }
            return [1]
        case .streams:
            guard
                let streams = (0..<argumentCount).first(where: {
                    String(decoding: argument($0), as: UTF8.self).uppercased() == "STREAMS"
                })
            else { return [] }
            let rest = argumentCount - streams - 1
            return Array((streams + 1)..<(streams + 1 + rest / 2))
        }
    }
}
