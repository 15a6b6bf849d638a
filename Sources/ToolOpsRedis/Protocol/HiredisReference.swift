import CHiredis

/// hiredis' own reader, with the conversion to ``RESPValue`` the client made before it decoded
/// replies itself: the reference ``RESPReader`` is tested (differentially) and benchmarked against.
package enum HiredisReference {
    package struct Failure: Error {}

    /// Every complete reply in `bytes`.
    package static func decode(_ bytes: [UInt8]) throws(Failure) -> [RESPValue] {
        guard let reader = redisReaderCreate() else { throw Failure() }
        defer { redisReaderFree(reader) }
        let fed = bytes.withUnsafeBufferPointer { raw in
            raw.baseAddress.map { redisReaderFeed(reader, UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self), raw.count) } ?? REDIS_OK
        }
        guard fed == REDIS_OK else { throw Failure() }
        var values: [RESPValue] = []
        while true {
            var raw: UnsafeMutableRawPointer?
            guard redisReaderGetReply(reader, &raw) == REDIS_OK else { throw Failure() }
            guard let raw else { return values }
            values.append(convert(raw.assumingMemoryBound(to: redisReply.self)))
            freeReplyObject(raw)
        }
    }

    package static func convert(_ pointer: UnsafePointer<redisReply>) -> RESPValue {
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
        case REDIS_REPLY_ARRAY:
            return .array((0..<reply.elements).map { index in reply.element?[index].map { convert($0) } ?? .null })
        default: return .null
        }
    }
}
