import CHiredis

/// A value that can be sent as one argument of a Redis command (binary-safe).
public protocol RedisArgumentConvertible: Sendable {
    /// Appends the argument's bytes to `buffer`.
    func appendRedisArgument(to buffer: inout [UInt8])
}

extension String: RedisArgumentConvertible {
    public func appendRedisArgument(to buffer: inout [UInt8]) { buffer.append(contentsOf: utf8) }
}
extension Substring: RedisArgumentConvertible {
    public func appendRedisArgument(to buffer: inout [UInt8]) { buffer.append(contentsOf: utf8) }
}
extension Array: RedisArgumentConvertible where Element == UInt8 {
    public func appendRedisArgument(to buffer: inout [UInt8]) { buffer.append(contentsOf: self) }
}
extension ArraySlice: RedisArgumentConvertible where Element == UInt8 {
    public func appendRedisArgument(to buffer: inout [UInt8]) { buffer.append(contentsOf: self) }
}
extension Int: RedisArgumentConvertible {
    public func appendRedisArgument(to buffer: inout [UInt8]) { buffer.append(contentsOf: String(self).utf8) }
}
extension Int64: RedisArgumentConvertible {
    public func appendRedisArgument(to buffer: inout [UInt8]) { buffer.append(contentsOf: String(self).utf8) }
}
extension UInt64: RedisArgumentConvertible {
    public func appendRedisArgument(to buffer: inout [UInt8]) { buffer.append(contentsOf: String(self).utf8) }
}
extension Double: RedisArgumentConvertible {
    /// Doubles are sent in Swift's shortest round-trip form (`0.1`, `1e-07`, `inf`).
    public func appendRedisArgument(to buffer: inout [UInt8]) {
        if self == .infinity {
            buffer.append(contentsOf: "+inf".utf8)
        } else if self == -.infinity {
            buffer.append(contentsOf: "-inf".utf8)
        } else {
            buffer.append(contentsOf: description.utf8)
        }
    }
}

/// One Redis command, encoded to RESP once when it is created (by hiredis'
/// `redisFormatCommandArgv`), so sending it costs no further encoding.
///
/// ```swift
/// let get = RedisCommand("GET", "user:42")
/// let set = RedisCommand("SET", "user:42", payloadBytes, "PX", 60_000)
/// ```
public struct RedisCommand: Sendable {
    /// The command name as given (for example `GET`), used in errors and logs.
    public let name: String
    /// The command's RESP encoding (empty when it is too large to send, see ``tooLarge``).
    let encoded: [UInt8]
    /// The size of a command over ``maximumBytes``: it was never encoded and is refused when sent.
    let tooLarge: Int?
    /// Where the command may run (see ``CommandScope``).
    let scope: CommandScope
    /// Which cluster node must run it (see ``CommandRouting``).
    let routing: CommandRouting

    /// The most bytes of arguments (name included) one command may carry: 512 MiB, Redis's own
    /// default bulk limit (`proto-max-bulk-len`). Larger commands are refused with
    /// ``RedisClientError/Code/commandTooLarge`` before they are encoded (hiredis 0.14 sums
    /// lengths in a C `int`: beyond 2 GiB it would crash or overflow its buffer).
    public static let maximumBytes = 512 << 20
    /// Set for `EVALSHA` commands made by ``RedisCommand/evalSHA(_:keys:arguments:)``, so a
    /// `NOSCRIPT` reply can be retried with `EVAL`.
    let script: ScriptCall?

    struct ScriptCall: Sendable {
        var script: RedisScript
        var keys: [any RedisArgumentConvertible]
        var arguments: [any RedisArgumentConvertible]
    }

    /// Creates a command from its name and arguments.
    public init(_ name: String, _ arguments: any RedisArgumentConvertible...) {
        self.init(name, arguments: arguments)
    }

    /// Creates a command from its name and an array of arguments.
    public init(_ name: String, arguments: [any RedisArgumentConvertible]) {
        var flat: [UInt8] = []
        flat.reserveCapacity(name.utf8.count + arguments.count * 16)
        var lengths: [Int] = []
        lengths.reserveCapacity(arguments.count + 1)
        flat.append(contentsOf: name.utf8)
        lengths.append(flat.count)
        for argument in arguments {
            let before = flat.count
            argument.appendRedisArgument(to: &flat)
            lengths.append(flat.count - before)
        }
        self.name = name
        self.script = nil
        // Where each argument starts in `flat` (index 0 is the name).
        var starts: [Int] = []
        starts.reserveCapacity(lengths.count)
        var offset = 0
        for length in lengths {
            starts.append(offset)
            offset += length
        }
        let argument = { (index: Int) -> ArraySlice<UInt8> in flat[starts[index + 1]..<(starts[index + 1] + lengths[index + 1])] }
        self.scope = CommandScope.of(name: name, argumentCount: lengths.count - 1, argument: argument)
        self.routing = CommandRouting.of(name: name, argumentCount: lengths.count - 1, argument: argument)
        if flat.count > Self.maximumBytes {
            self.encoded = []
            self.tooLarge = flat.count
        } else {
            self.encoded = RESPEncoder.encode(flat: flat, lengths: lengths)
            self.tooLarge = nil
        }
    }

    init(name: String, encoded: [UInt8], tooLarge: Int?, routing: CommandRouting, script: ScriptCall?) {
        self.scope = .shared
        self.routing = routing
        self.name = name
        self.encoded = encoded
        self.tooLarge = tooLarge
        self.script = script
    }

    /// The encoding, or ``RedisClientError/Code/commandTooLarge``.
    func checkedEncoding() throws(RedisClientError) -> [UInt8] {
        if let tooLarge {
            throw RedisClientError(.commandTooLarge, "\(name) carries \(tooLarge) bytes; the maximum is \(Self.maximumBytes)")
        }
        return encoded
    }

    /// `EVALSHA` of `script`; a `NOSCRIPT` reply is retried once with `EVAL` transparently.
    public static func evalSHA(
        _ script: RedisScript,
        keys: [any RedisArgumentConvertible] = [],
        arguments: [any RedisArgumentConvertible] = []
    ) -> RedisCommand {
        let command = RedisCommand(
            "EVALSHA",
            arguments: [script.sha1, keys.count] + keys + arguments
        )
        return RedisCommand(
            name: command.name,
            encoded: command.encoded,
            tooLarge: command.tooLarge,
            routing: command.routing,
            script: ScriptCall(script: script, keys: keys, arguments: arguments)
        )
    }

    /// The `EVAL` form of a script call (sends the source; Redis caches it).
    static func eval(_ call: ScriptCall) -> RedisCommand {
        RedisCommand("EVAL", arguments: [call.script.source, call.keys.count] + call.keys + call.arguments)
    }
}

/// RESP encoding through hiredis.
enum RESPEncoder {
    /// Encodes the arguments laid out back to back in `flat`, with their `lengths`.
    static func encode(flat: [UInt8], lengths: [Int]) -> [UInt8] {
        var flat = flat
        flat.append(0)  // never empty, so baseAddress is never nil
        return flat.withUnsafeBufferPointer { flatBuffer -> [UInt8] in
            let base = UnsafeRawPointer(flatBuffer.baseAddress!)
            var pointers: [UnsafePointer<CChar>?] = []
            pointers.reserveCapacity(lengths.count)
            var offset = 0
            for length in lengths {
                pointers.append(base.advanced(by: offset).assumingMemoryBound(to: CChar.self))
                offset += length
            }
            return pointers.withUnsafeMutableBufferPointer { argv in
                lengths.withUnsafeBufferPointer { argvlen in
                    var target: UnsafeMutablePointer<CChar>? = nil
                    let count = redisFormatCommandArgv(&target, Int32(lengths.count), argv.baseAddress, argvlen.baseAddress)
                    // hiredis only fails here when malloc fails.
                    guard count > 0, let target else { fatalError("redisFormatCommandArgv: out of memory") }
                    defer { redisFreeCommand(target) }
                    return [UInt8](UnsafeRawBufferPointer(start: target, count: Int(count)))
                }
            }
        }
    }
}
