// libFuzzer target for the RESP reader (`make fuzz`). Compiled with the reader's own sources
// (no package), so it checks exactly the code the client runs.
//
// Input: byte 0 picks the limits, byte 1 the chunk size; the rest is what a server sent.
// Invariants checked (a violation crashes, which libFuzzer reports with the input):
// - the reader never crashes or traps, whatever the bytes;
// - a decoded reply respects every limit (elements, depth, bytes);
// - a rejected reply is always followed by its end before the next reply;
// - the reader never holds more undecoded bytes than it was fed.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRESPReader(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 2 else { return 0 }
    let input = UnsafeBufferPointer(start: data, count: size)
    let limits = RESPReader.Limits(bytes: 1024 + Int(input[0] & 0x0f) * 256, elements: 1 + Int(input[0] >> 4) * 4, depth: 1 + Int(input[0] & 0x07))
    let chunk = 1 + Int(input[1])
    let reader = RESPReader(limits: limits)
    var offset = 2
    var fed = 0
    var rejecting = false
    while offset < size {
        let end = min(size, offset + chunk)
        do {
            try reader.feed(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(input)[offset..<end]))
            fed += end - offset
            while let event = try reader.next() {
                switch event {
                case .reply(let value):
                    precondition(!rejecting, "a reply before the end of a rejected one")
                    let (elements, depth) = measure(value)
                    precondition(elements <= limits.elements, "a reply with \(elements) elements passed a limit of \(limits.elements)")
                    precondition(depth <= limits.depth, "a reply nested \(depth) deep passed a limit of \(limits.depth)")
                    precondition(wireSize(value) <= limits.bytes, "a reply larger than \(limits.bytes) bytes passed")
                case .rejected:
                    precondition(!rejecting, "two rejections without an end")
                    rejecting = true
                case .rejectedReplyEnded:
                    precondition(rejecting, "an end without a rejection")
                    rejecting = false
                }
            }
            precondition(reader.bufferedBytes <= fed, "the reader holds more than it was fed")
        } catch {
            precondition(error.code == .protocolError, "an error other than protocolError: \(error)")
            return 0
        }
        offset = end
    }
    return 0
}

/// Announced elements (summed over nested arrays) and nesting depth of a reply.
func measure(_ value: RESPValue) -> (elements: Int, depth: Int) {
    guard case .array(let values) = value else { return (0, 0) }
    var elements = values.count
    var deepest = 0
    for child in values {
        let (e, d) = measure(child)
        elements += e
        deepest = max(deepest, d)
    }
    return (elements, deepest + 1)
}

/// A lower bound on the reply's size on the wire (as the reader counts it). Status and error
/// lines are decoded leniently: each invalid UTF-8 byte becomes U+FFFD, three bytes decoded
/// from one on the wire, so each U+FFFD counts as one byte here.
func wireSize(_ value: RESPValue) -> Int {
    func digits(_ n: Int) -> Int { String(n).utf8.count }
    func lineBytes(_ s: String) -> Int {
        s.unicodeScalars.reduce(0) { $0 + ($1 == "\u{FFFD}" ? 1 : $1.utf8.count) }
    }
    switch value {
    case .simpleString(let s), .error(let s): return 3 + lineBytes(s)
    case .integer(let i): return 3 + String(i).utf8.count
    case .null: return 5
    case .bulkString(let bytes): return 5 + digits(bytes.count) + bytes.count
    case .array(let values): return 3 + digits(values.count) + values.reduce(0) { $0 + wireSize($1) }
    }
}
