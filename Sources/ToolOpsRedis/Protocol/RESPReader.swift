import CHiredis

/// Decodes RESP2 replies with hiredis' `redisReader` and converts them to ``RESPValue``.
///
/// Not thread-safe: one reader belongs to one connection's I/O thread. Any malformed input
/// becomes ``RedisClientError/Code/protocolError``; after that the reader is unusable.
public final class RESPReader {
    private let reader: UnsafeMutablePointer<redisReader>
    /// Unparsed bytes allowed in the reader before the stream is declared broken. Protects
    /// against a peer announcing a gigantic bulk string.
    public let maximumBufferedBytes: Int
    private var failed: RedisClientError?

    /// Creates a reader. `maximumBufferedBytes` defaults to 512 MiB + 64 KiB (Redis' own
    /// bulk string limit plus framing).
    public init(maximumBufferedBytes: Int = 512 * 1024 * 1024 + 64 * 1024) {
        // redisReaderCreate only returns nil when malloc fails.
        guard let reader = redisReaderCreate() else { fatalError("redisReaderCreate: out of memory") }
        self.reader = reader
        self.maximumBufferedBytes = maximumBufferedBytes
    }

    deinit { redisReaderFree(reader) }

    /// Appends received bytes.
    public func feed(_ bytes: UnsafeRawBufferPointer) throws(RedisClientError) {
        if let failed { throw failed }
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        let buffered = reader.pointee.len - reader.pointee.pos
        if buffered + bytes.count > maximumBufferedBytes {
            let error = RedisClientError(.protocolError, "reply larger than \(maximumBufferedBytes) bytes")
            failed = error
            throw error
        }
        if redisReaderFeed(reader, base.assumingMemoryBound(to: CChar.self), bytes.count) != REDIS_OK {
            let error = RedisClientError(.protocolError, "reader: \(Self.errorString(reader))")
            failed = error
            throw error
        }
    }

    /// Convenience for tests and callers holding an array.
    public func feed(_ bytes: [UInt8]) throws(RedisClientError) {
        let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 1)
        defer { copy.deallocate() }
        copy.copyBytes(from: bytes)
        try feed(UnsafeRawBufferPointer(copy))
    }

    /// The next complete reply, or `nil` if more bytes are needed.
    /// Top-level error replies are returned as ``RESPValue/error(_:)``.
    public func next() throws(RedisClientError) -> RESPValue? {
        if let failed { throw failed }
        var raw: UnsafeMutableRawPointer? = nil
        guard redisReaderGetReply(reader, &raw) == REDIS_OK else {
            let error = RedisClientError(.protocolError, "invalid RESP: \(Self.errorString(reader))")
            failed = error
            throw error
        }
        guard let raw else { return nil }
        defer { freeReplyObject(raw) }
        return Self.convert(raw.assumingMemoryBound(to: redisReply.self))
    }

    private static func convert(_ pointer: UnsafePointer<redisReply>) -> RESPValue {
        let reply = pointer.pointee
        func bytes() -> [UInt8] {
            guard let str = reply.str, reply.len > 0 else { return [] }
            return [UInt8](UnsafeRawBufferPointer(start: str, count: reply.len))
        }
        switch reply.type {
        case REDIS_REPLY_STRING: return .bulkString(bytes())
        case REDIS_REPLY_STATUS: return .simpleString(String(decoding: bytes(), as: UTF8.self))
        case REDIS_REPLY_ERROR: return .error(String(decoding: bytes(), as: UTF8.self))
        case REDIS_REPLY_INTEGER: return .integer(Int64(reply.integer))
        case REDIS_REPLY_NIL: return .null
        case REDIS_REPLY_ARRAY:
            var values: [RESPValue] = []
            values.reserveCapacity(reply.elements)
            for index in 0..<reply.elements {
                if let child = reply.element?[index] { values.append(convert(child)) } else { values.append(.null) }
            }
            return .array(values)
        default:
            return .error("unknown reply type \(reply.type)")
        }
    }

    private static func errorString(_ reader: UnsafeMutablePointer<redisReader>) -> String {
        withUnsafeBytes(of: reader.pointee.errstr) { raw in
            let chars = raw.bindMemory(to: UInt8.self)
            let end = chars.firstIndex(of: 0) ?? chars.count
            return String(decoding: chars[..<end], as: UTF8.self)
        }
    }
}
