#if canImport(Glibc)
import Glibc
#endif

/// Decodes RESP2 replies incrementally, within limits on each reply's size.
///
/// Written in Swift rather than with hiredis' reader: hiredis 0.14 pre-allocates arrays from
/// the element count a peer announces, keeps the whole parsed tree, only bounds *unparsed*
/// bytes, gives up at 7 levels of nesting, and `memmove`s its buffer after every reply. This
/// reader allocates only for what has arrived, bounds every reply by ``Limits``, and consumes
/// its buffer as replies complete.
///
/// A reply that exceeds a limit does not break the stream: the reader reports it with
/// ``Event/rejected(_:)`` as soon as the limit is crossed (so its caller can be answered at
/// once), then skips the rest of that reply with constant memory and reports
/// ``Event/rejectedReplyEnded`` when the stream is back at a reply boundary. Bytes that are not
/// RESP (an unknown type byte, a malformed length, an unterminated line longer than the byte
/// limit) are a ``RedisClientError/Code/protocolError`` after which the reader stays failed.
///
/// Status and error lines are decoded as UTF-8 leniently (an invalid byte becomes U+FFFD), so a
/// decoded line may take up to three times its wire bytes; the limits count wire bytes.
///
/// Not thread-safe: one reader belongs to one connection's I/O thread.
public final class RESPReader {
    /// Bounds on one reply. A reply crossing any of them is rejected and skipped.
    public struct Limits: Sendable, Hashable {
        /// The most bytes one reply may occupy on the wire. Defaults to 512 MiB + 64 KiB
        /// (Redis's own bulk string limit, `proto-max-bulk-len`, plus framing).
        public var bytes: Int
        /// The most array elements one reply may announce, summed over all its nested arrays.
        /// Each element costs ~16 bytes decoded plus its payload, so the default of 4,194,304
        /// keeps a decoded reply of small values under ~200 MB.
        public var elements: Int
        /// The deepest nesting of arrays accepted; a top-level array is depth 1. Redis replies
        /// nest at most 3–4 deep (a Lua script can build deeper tables). Defaults to 64.
        public var depth: Int

        /// Creates limits; every parameter has the documented default.
        public init(bytes: Int = 512 * 1024 * 1024 + 64 * 1024, elements: Int = 4 * 1024 * 1024, depth: Int = 64) {
            self.bytes = bytes
            self.elements = elements
            self.depth = depth
        }
    }

    /// What ``next()`` found.
    public enum Event: Sendable, Equatable {
        /// A complete reply. Top-level error replies are returned as ``RESPValue/error(_:)``.
        case reply(RESPValue)
        /// The reply being read crossed a limit; the error says which. The rest of it is skipped.
        case rejected(RedisClientError)
        /// The end of a rejected reply: the next event starts a new reply.
        case rejectedReplyEnded
    }

    /// The state and the parsing, as a value: one exclusive access per call instead of one per
    /// byte (class properties are checked dynamically on every access).
    private var decoder: Decoder

    /// The limits every reply is held to.
    public var limits: Limits { decoder.limits }

    /// Creates a reader with these limits.
    public init(limits: Limits = Limits()) {
        decoder = Decoder(limits: limits)
    }

    /// Bytes received but not yet decoded (a partial reply). Bounded by the byte limit plus one
    /// read's worth when the caller drains with ``next()`` after each ``feed(_:)``.
    public var bufferedBytes: Int { decoder.bufferedBytes }

    /// Appends received bytes. Throws only once the reader has failed.
    public func feed(_ bytes: UnsafeRawBufferPointer) throws(RedisClientError) {
        try decoder.feed(bytes)
    }

    /// Convenience for tests and callers holding an array.
    public func feed(_ bytes: [UInt8]) throws(RedisClientError) {
        // `withUnsafeBytes` rethrows untyped: feed the array's bytes and keep the error typed.
        var thrown: RedisClientError?
        bytes.withUnsafeBytes { raw in
            do throws(RedisClientError) { try decoder.feed(raw) } catch { thrown = error }
        }
        if let thrown { throw thrown }
    }

    /// The next event, or `nil` if more bytes are needed.
    public func next() throws(RedisClientError) -> Event? {
        try decoder.next()
    }
}

/// The reader's state and parser (see ``RESPReader``).
struct Decoder {
    typealias Limits = RESPReader.Limits
    typealias Event = RESPReader.Event

    /// An array being filled.
    private struct Frame {
        var values: [RESPValue]
        var remaining: Int
    }

    let limits: Limits
    private var buffer: [UInt8] = []
    /// Where parsing resumes in `buffer`.
    private var position = 0
    /// Where the search for the current line's CRLF resumes (so a line arriving in pieces is
    /// scanned once, not once per piece).
    private var scanFrom = 0
    private var frames: [Frame] = []
    /// Wire bytes of the current reply consumed so far, and array elements it announced.
    private var replyBytes = 0
    private var replyElements = 0
    /// Skipping a rejected reply: the values still to read before it ends (RESP is prefix
    /// notation, so one counter replaces a stack), and the bulk payload bytes still to drop.
    private var skipping: Int?
    private var skipBytes: Int?
    private var failed: RedisClientError?

    init(limits: Limits) {
        self.limits = limits
    }

    /// Bytes received but not yet decoded (a partial reply). Bounded by the byte limit plus one
    /// read's worth when the caller drains with ``next()`` after each ``feed(_:)``.
    var bufferedBytes: Int { buffer.count - position }

    /// Appends received bytes. Throws only once the reader has failed.
    mutating func feed(_ bytes: UnsafeRawBufferPointer) throws(RedisClientError) {
        if let failed { throw failed }
        guard bytes.count > 0 else { return }
        // Dropping a skipped bulk payload straight from the input keeps a rejected 500 MB
        // string from ever being buffered.
        var input = bytes
        if let remaining = skipBytes, remaining > 0, position == buffer.count {
            let dropped = min(remaining, input.count)
            skipBytes = remaining - dropped
            input = UnsafeRawBufferPointer(rebasing: input[dropped...])
        }
        buffer.append(contentsOf: input)
    }

    /// The next event, or `nil` if more bytes are needed.
    mutating func next() throws(RedisClientError) -> Event? {
        if let failed { throw failed }
        do {
            let event = try parse()
            if event == nil { compact() }
            return event
        } catch {
            failed = error
            buffer = []
            frames = []
            throw error
        }
    }

    // MARK: parsing

    private static let cr = UInt8(ascii: "\r")
    private static let lf = UInt8(ascii: "\n")
    /// `$`, `*` and `:` lines hold one number: anything longer is not RESP.
    private static let maximumHeaderLine = 32

    /// Parses until a reply completes, a limit is crossed, or the bytes run out. A token that
    /// crosses a limit is left unconsumed: read again in skipping mode, it is counted off like
    /// any skipped value.
    private mutating func parse() throws(RedisClientError) -> Event? {
        while true {
            if let remaining = skipBytes {
                let dropped = min(remaining, buffer.count - position)
                position += dropped
                skipBytes = remaining - dropped
                if remaining > dropped { return nil }
                skipBytes = nil
                if let event = completeValue(.null) { return event }
                continue
            }
            guard position < buffer.count else { return nil }
            guard let lineEnd = try findLineEnd() else { return nil }
            let type = buffer[position]
            let payload = buffer[(position + 1)..<lineEnd]
            let lineBytes = lineEnd + 2 - position
            let skip = skipping != nil
            if !skip && replyBytes + lineBytes > limits.bytes {
                return reject("a reply larger than \(limits.bytes) bytes (the maximumReplyBytes limit)")
            }
            let value: RESPValue
            switch type {
            case UInt8(ascii: "+"):
                value = skip ? .null : .simpleString(String(decoding: payload, as: UTF8.self))
            case UInt8(ascii: "-"):
                value = skip ? .null : .error(String(decoding: payload, as: UTF8.self))
            case UInt8(ascii: ":"):
                value = .integer(try Self.integer(payload))
            case UInt8(ascii: "$"):
                let length = Int(try Self.integer(payload))
                if length == -1 { value = .null; break }
                guard length >= 0, length <= Int.max / 2 else { throw Self.invalid("bulk string length \(length)") }
                if skip {
                    // Dropped as it arrives, never buffered.
                    position = lineEnd + 2
                    skipBytes = length + 2
                    continue
                }
                if length > limits.bytes || replyBytes + lineBytes + length + 2 > limits.bytes {
                    return reject("a reply larger than \(limits.bytes) bytes (the maximumReplyBytes limit)")
                }
                let end = lineEnd + 2 + length
                guard buffer.count >= end + 2 else { return nil }
                guard buffer[end] == Self.cr, buffer[end + 1] == Self.lf else {
                    throw Self.invalid("bulk string not terminated by CRLF")
                }
                replyBytes += lineBytes + length + 2
                value = .bulkString(Array(buffer[(lineEnd + 2)..<end]))
                position = end + 2
                if let event = completeValue(value) { return event }
                continue
            case UInt8(ascii: "*"):
                let count = Int(try Self.integer(payload))
                if count == -1 { value = .null; break }
                guard count >= 0 else { throw Self.invalid("array length \(count)") }
                if !skip && frames.count >= limits.depth {
                    return reject("a reply nested deeper than \(limits.depth) arrays (the maximumReplyDepth limit)")
                }
                if count == 0 { value = skip ? .null : .array([]); break }
                if let pending = skipping {
                    // `count` more values to skip; the array itself is counted off below.
                    guard pending <= Int.max - count else { throw Self.invalid("array length \(count)") }
                    skipping = pending + count
                    value = .null
                    break
                }
                if count > limits.elements || replyElements + count > limits.elements {
                    return reject("a reply with more than \(limits.elements) elements (the maximumReplyElements limit)")
                }
                replyElements += count
                replyBytes += lineBytes
                position = lineEnd + 2
                var values: [RESPValue] = []
                // Never trust the announced count for memory: grow with what arrives.
                values.reserveCapacity(min(count, 1024))
                frames.append(Frame(values: values, remaining: count))
                continue
            default:
                throw Self.invalid("unexpected byte \(type) where a reply starts")
            }
            if !skip { replyBytes += lineBytes }
            position = lineEnd + 2
            if let event = completeValue(value) { return event }
        }
    }

    /// Drops the partial reply and starts skipping the rest: the values still owed to the
    /// arrays being filled, or the current top-level value. An outer array's count still
    /// includes the inner array being read, whose header is already consumed.
    private mutating func reject(_ what: String) -> Event {
        var pending = frames.isEmpty ? 1 : 1 - frames.count
        for frame in frames { pending += frame.remaining }
        frames = []
        skipping = pending
        return .rejected(RedisClientError(.protocolError, "Redis sent \(what); the reply was skipped"))
    }

    /// A value finished: add it to the innermost array (finishing arrays that fill up), or
    /// return it as a reply. While skipping, count it off instead.
    private mutating func completeValue(_ value: RESPValue) -> Event? {
        if let pending = skipping {
            if pending > 1 {
                skipping = pending - 1
                return nil
            }
            skipping = nil
            endReply()
            return .rejectedReplyEnded
        }
        var value = value
        while !frames.isEmpty {
            frames[frames.count - 1].values.append(value)
            frames[frames.count - 1].remaining -= 1
            if frames[frames.count - 1].remaining > 0 { return nil }
            value = .array(frames.removeLast().values)
        }
        endReply()
        return .reply(value)
    }

    private mutating func endReply() {
        replyBytes = 0
        replyElements = 0
    }

    /// The index of the CR ending the line at `position`, or `nil` if it has not arrived.
    private mutating func findLineEnd() throws(RedisClientError) -> Int? {
        let start = max(scanFrom, position + 1)
        let count = buffer.count
        // memchr for each CR: a lone CR is part of the line, as in hiredis.
        let found: Int? = buffer.withUnsafeBufferPointer { bytes in
            guard let base = bytes.baseAddress else { return nil }
            var index = start
            while index + 1 < count {
                guard let hit = memchr(base + index, Int32(Self.cr), count - index - 1) else { return nil }
                let at = base.distance(to: hit.assumingMemoryBound(to: UInt8.self))
                if bytes[at + 1] == Self.lf { return at }
                index = at + 1
            }
            return nil
        }
        if let found {
            scanFrom = 0
            return found
        }
        scanFrom = max(position + 1, count - 1)
        // An unterminated line: headers are short, and status or error lines count against
        // the byte limit (they cannot be skipped without finding their end).
        let length = count - position
        let type = buffer[position]
        if (type == UInt8(ascii: "$") || type == UInt8(ascii: "*") || type == UInt8(ascii: ":")) && length > Self.maximumHeaderLine {
            throw Self.invalid("a length line longer than \(Self.maximumHeaderLine) bytes")
        }
        if replyBytes + length > limits.bytes {
            throw Self.invalid("a status or error line longer than \(limits.bytes) bytes")
        }
        if type != UInt8(ascii: "+") && type != UInt8(ascii: "-") && type != UInt8(ascii: "$")
            && type != UInt8(ascii: "*") && type != UInt8(ascii: ":")
        {
            throw Self.invalid("unexpected byte \(type) where a reply starts")
        }
        return nil
    }

    /// A signed decimal without leading `+`, as RESP writes it.
    private static func integer(_ digits: ArraySlice<UInt8>) throws(RedisClientError) -> Int64 {
        var result: Result<Int64, RedisClientError> = .failure(invalid("empty number"))
        digits.withUnsafeBufferPointer { result = integer($0) }
        return try result.get()
    }

    private static func integer(_ digits: UnsafeBufferPointer<UInt8>) -> Result<Int64, RedisClientError> {
        do throws(RedisClientError) { return .success(try parseInteger(digits)) } catch { return .failure(error) }
    }

    private static func parseInteger(_ digits: UnsafeBufferPointer<UInt8>) throws(RedisClientError) -> Int64 {
        var index = digits.startIndex
        let negative = index < digits.endIndex && digits[index] == UInt8(ascii: "-")
        if negative { index += 1 }
        guard index < digits.endIndex else { throw invalid("empty number") }
        var magnitude: UInt64 = 0
        while index < digits.endIndex {
            let digit = digits[index] &- UInt8(ascii: "0")
            guard digit < 10 else { throw invalid("malformed number") }
            let (times10, o1) = magnitude.multipliedReportingOverflow(by: 10)
            let (sum, o2) = times10.addingReportingOverflow(UInt64(digit))
            guard !o1, !o2 else { throw invalid("number out of range") }
            magnitude = sum
            index += 1
        }
        if negative {
            guard magnitude <= UInt64(Int64.max) + 1 else { throw invalid("number out of range") }
            return magnitude == UInt64(Int64.max) + 1 ? Int64.min : -Int64(magnitude)
        }
        guard magnitude <= UInt64(Int64.max) else { throw invalid("number out of range") }
        return Int64(magnitude)
    }

    private static func invalid(_ what: String) -> RedisClientError {
        RedisClientError(.protocolError, "invalid RESP from the server: \(what)")
    }

    /// Drops consumed bytes: all of them when the buffer is used up, otherwise once they are
    /// at least half of it (amortised linear, never a `memmove` per reply).
    private mutating func compact() {
        if position == buffer.count {
            // A huge reply's buffer is not kept for the connection's lifetime.
            if buffer.capacity > 4 << 20 { buffer = [] } else { buffer.removeAll(keepingCapacity: true) }
            position = 0
            scanFrom = 0
        } else if position > 0 && position >= buffer.count - position {
            buffer.removeFirst(position)
            if scanFrom > 0 { scanFrom -= position }
            position = 0
        }
    }
}
