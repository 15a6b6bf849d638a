// libFuzzer target for the JSON parser and its canonical encoding (`make fuzz`), which make
// cache keys: compiled with their own sources (no package).
//
// Invariants checked (a violation crashes, which libFuzzer reports with the input):
// - parsing never crashes or traps, whatever the bytes; failures are `invalidInput`;
// - the canonical encoding of a parsed document parses back to the same value (numbers by
//   value: the canonical form writes an integral double such as `0e308` as `0`, on purpose);
// - the canonical encoding is a fixed point (encoding its parse gives the same bytes).

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCanonicalJSON(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let limits = JSONValue.ParsingLimits(maximumDepth: 32, maximumBytes: 64 * 1024)
    let value: JSONValue
    do {
        value = try JSONValue(parsing: bytes, limits: limits)
    } catch {
        precondition(error.code == .invalidInput, "an error other than invalidInput: \(error)")
        return 0
    }
    do {
        let canonical = try value.canonicalEncoding()
        let again = try JSONValue(parsing: canonical, limits: JSONValue.ParsingLimits(maximumDepth: 64, maximumBytes: 1 << 20))
        precondition(same(again, value), "canonical form parses to a different value")
        let twice = try again.canonicalEncoding()
        precondition(twice == canonical, "canonical form is not a fixed point")
    } catch {
        // A value the canonical form refuses (it says why) is fine; a crash is not.
        precondition(error.code == .invalidInput, "canonical encoding failed with \(error)")
    }
    return 0
}

/// Equal as JSON: numbers compare by value, whether integer or double.
func same(_ a: JSONValue, _ b: JSONValue) -> Bool {
    switch (a, b) {
    case (.integer(let x), .number(let y)), (.number(let y), .integer(let x)): return Double(x) == y
    case (.array(let x), .array(let y)): return x.count == y.count && zip(x, y).allSatisfy { same($0, $1) }
    case (.object(let x), .object(let y)):
        return x.count == y.count && x.allSatisfy { key, value in y[key].map { same(value, $0) } ?? false }
    default: return a == b
    }
}
