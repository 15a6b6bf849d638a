#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Logging
import Synchronization

/// A `LogHandler` that writes one JSON object per line:
///
/// ```json
/// {"timestamp":"2026-11-29T19:40:00.123456Z","level":"info","label":"toolops.calls","message":"tool call",
///  "source":"ToolOpsObserve","trace_id":"4bf9…","span_id":"00f0…","metadata":{"tool":"github:search"}}
/// ```
///
/// - `timestamp` is RFC 3339 in UTC with microseconds; `level` is swift-log's name.
/// - `trace_id` and `span_id` are lifted out of the metadata when present: with swift-otel,
///   pass `OTel.makeLoggingMetadataProvider()` as the metadata provider and every line logged
///   inside a span carries its ids.
/// - Metadata is redacted at any depth (``Redaction``) as it is written.
///
/// ```swift
/// LoggingSystem.bootstrap({ label, provider in JSONLogHandler(label: label, metadataProvider: provider) },
///                         metadataProvider: OTel.makeLoggingMetadataProvider())
/// ```
public struct JSONLogHandler: LogHandler {
    public let label: String
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    public let redaction: Redaction
    let sink: JSONLogSink

    /// - Parameters:
    ///   - label: the logger's label (written as `label`).
    ///   - level: the lowest level written. Defaults to `.info`.
    ///   - redaction: the keys whose values are hidden. Defaults to ``Redaction/defaultKeys``.
    ///   - sink: where lines go. Defaults to standard output.
    ///   - metadataProvider: contextual metadata (trace ids) added to every line.
    public init(
        label: String, level: Logger.Level = .info, redaction: Redaction = Redaction(), sink: JSONLogSink = .standardOutput,
        metadataProvider: Logger.MetadataProvider? = nil
    ) {
        self.label = label
        self.logLevel = level
        self.redaction = redaction
        self.sink = sink
        self.metadataProvider = metadataProvider
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        // Metadata from three places, later ones winning: the handler's, the provider's (trace
        // ids), the call's. Written straight from them, without merging into a new dictionary.
        let provided = metadataProvider?.get() ?? [:]
        let own = event.metadata ?? [:]
        let handler = metadata
        func value(_ key: String) -> Logger.MetadataValue? {
            (own.isEmpty ? nil : own[key]) ?? (provided.isEmpty ? nil : provided[key]) ?? (handler.isEmpty ? nil : handler[key])
        }

        var line = JSONLineWriter()
        line.bytes.reserveCapacity(384)
        line.open()
        line.key("timestamp")
        line.timestamp()
        line.key("level")
        line.string(event.level.rawValue)
        line.key("label")
        line.string(label)
        line.key("message")
        line.string(event.message.description)
        line.key("source")
        line.string(event.source)
        for key in Self.liftedKeys {
            guard let id = value(key) else { continue }
            line.key(key)
            line.string(id.description)
        }
        if let error = event.error {
            line.key("error")
            line.string(String(describing: error))
        }
        var opened = false
        func write(_ source: Logger.Metadata, unless shadowed: (String) -> Bool) {
            for (key, member) in source where !Self.isLifted(key) && !shadowed(key) {
                if !opened {
                    line.key("metadata")
                    line.open()
                    opened = true
                }
                line.member(key, member, redaction)
            }
        }
        if !handler.isEmpty { write(handler) { own[$0] != nil || provided[$0] != nil } }
        if !provided.isEmpty { write(provided) { own[$0] != nil } }
        if !own.isEmpty { write(own) { _ in false } }
        if opened { line.close() }
        line.close()
        line.bytes.append(UInt8(ascii: "\n"))
        sink.write(line.bytes)
    }

    /// Written at the top level of a line rather than in `metadata`.
    static let liftedKeys = ["trace_id", "span_id"]

    static func isLifted(_ key: String) -> Bool { key == "trace_id" || key == "span_id" }
}

/// Where ``JSONLogHandler`` lines go: each call gets one complete line.
public struct JSONLogSink: Sendable {
    let write: @Sendable ([UInt8]) -> Void

    /// A sink calling `write` with each line (its bytes end with a newline).
    public init(_ write: @escaping @Sendable ([UInt8]) -> Void) { self.write = write }

    /// Standard output, one `write(2)` per line under a lock (lines never interleave).
    public static let standardOutput = JSONLogSink(descriptor: 1)
    /// Standard error, likewise.
    public static let standardError = JSONLogSink(descriptor: 2)
    /// Drops every line (for benchmarks).
    public static let discarding = JSONLogSink { _ in }

    private static let lock = Mutex(())

    init(descriptor: Int32) {
        self.write = { line in
            JSONLogSink.lock.withLock { _ in
                line.withUnsafeBytes { bytes in
                    guard let base = bytes.baseAddress else { return }
                    var offset = 0
                    while offset < bytes.count {
                        let written = systemWrite(descriptor, base + offset, bytes.count - offset)
                        if written > 0 {
                            offset += written
                        } else if written < 0 && errno == EINTR {
                            continue
                        } else {
                            return  // a closed or full descriptor: the line is lost, never the process
                        }
                    }
                }
            }
        }
    }
}

#if canImport(Glibc)
private let systemWrite = Glibc.write
#elseif canImport(Darwin)
private let systemWrite = Darwin.write
#endif

/// Builds one JSON line into bytes.
struct JSONLineWriter {
    var bytes: [UInt8] = []
    private var needsComma = false

    mutating func open() {
        bytes.append(UInt8(ascii: "{"))
        needsComma = false
    }

    mutating func close() {
        bytes.append(UInt8(ascii: "}"))
        needsComma = true
    }

    mutating func key(_ key: String) {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
        string(key)
        bytes.append(UInt8(ascii: ":"))
        needsComma = false
    }

    mutating func string(_ text: String) {
        bytes.append(UInt8(ascii: "\""))
        var text = text
        text.withUTF8 { utf8 in
            // Runs that need no escaping are copied whole; eight bytes are checked at a time.
            var runStart = 0
            var index = 0
            if let base = UnsafeRawPointer(utf8.baseAddress) {
                while index + 8 <= utf8.count && !Self.needsEscape(base.loadUnaligned(fromByteOffset: index, as: UInt64.self)) {
                    index += 8
                }
            }
            while index < utf8.count {
                defer { index += 1 }
                let byte = utf8[index]
                guard byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") || byte == 0x7f else { continue }
                if runStart < index { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart..<index])) }
                escape(byte)
                runStart = index + 1
            }
            if runStart < utf8.count { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart...])) }
        }
        bytes.append(UInt8(ascii: "\""))
        needsComma = true
    }

    private mutating func escape(_ byte: UInt8) {
        bytes.append(UInt8(ascii: "\\"))
        switch byte {
        case UInt8(ascii: "\""): bytes.append(UInt8(ascii: "\""))
        case UInt8(ascii: "\\"): bytes.append(UInt8(ascii: "\\"))
        case UInt8(ascii: "\n"): bytes.append(UInt8(ascii: "n"))
        case UInt8(ascii: "\r"): bytes.append(UInt8(ascii: "r"))
        case UInt8(ascii: "\t"): bytes.append(UInt8(ascii: "t"))
        default:
            bytes.append(contentsOf: [UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0")])
            bytes.append(Self.hex[Int(byte >> 4)])
            bytes.append(Self.hex[Int(byte & 15)])
        }
    }

    private static let hex = Array("0123456789abcdef".utf8)

    /// Whether any of the eight bytes is a control byte, `"`, `\\` or DEL (SWAR: a zero byte in
    /// `x` shows as a set high bit in `(x − 0x01…) & ~x & 0x80…`).
    @inline(__always)
    static func needsEscape(_ word: UInt64) -> Bool {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highs: UInt64 = 0x8080_8080_8080_8080
        func hasZero(_ x: UInt64) -> Bool { (x &- ones) & ~x & highs != 0 }
        let below0x20 = (word &- ones &* 0x20) & ~word & highs != 0
        return below0x20 || hasZero(word ^ (ones &* 0x22)) || hasZero(word ^ (ones &* 0x5c)) || hasZero(word ^ (ones &* 0x7f))
    }

    /// `"key":value`, the value hidden if the key is secret, nested keys likewise.
    mutating func member(_ name: String, _ value: Logger.MetadataValue, _ redaction: Redaction) {
        key(name)
        if redaction.isSecret(name) {
            string(Redaction.placeholder)
            return
        }
        self.value(value, redaction)
    }

    mutating func value(_ value: Logger.MetadataValue, _ redaction: Redaction) {
        switch value {
        case .string(let text): string(text)
        case .stringConvertible(let convertible): string(convertible.description)
        case .dictionary(let members):
            open()
            for (name, member) in members { self.member(name, member, redaction) }
            close()
        case .array(let elements):
            bytes.append(UInt8(ascii: "["))
            needsComma = false
            for element in elements {
                if needsComma { bytes.append(UInt8(ascii: ",")) }
                self.value(element, redaction)
            }
            bytes.append(UInt8(ascii: "]"))
            needsComma = true
        }
    }

    /// The current time, RFC 3339 UTC with microseconds. The part up to the seconds is formatted
    /// once per second and kept.
    mutating func timestamp() {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let seconds = now.tv_sec
        let prefix = Self.secondPrefix.withLock { cached -> [UInt8] in
            if cached.second == seconds { return cached.prefix }
            var writer = JSONLineWriter()
            writer.formatSecond(seconds)
            cached = (seconds, writer.bytes)
            return writer.bytes
        }
        bytes.append(UInt8(ascii: "\""))
        bytes.append(contentsOf: prefix)
        bytes.append(UInt8(ascii: "."))
        digits(Int(now.tv_nsec) / 1000, 6)
        bytes.append(UInt8(ascii: "Z"))
        bytes.append(UInt8(ascii: "\""))
        needsComma = true
    }

    private static let secondPrefix = Mutex<(second: Int, prefix: [UInt8])>((-1, []))

    /// `2026-11-29T19:50:00` for `seconds` since the epoch.
    private mutating func formatSecond(_ seconds: Int) {
        var time = seconds
        var parts = tm()
        gmtime_r(&time, &parts)
        digits(Int(parts.tm_year) + 1900, 4)
        bytes.append(UInt8(ascii: "-"))
        digits(Int(parts.tm_mon) + 1, 2)
        bytes.append(UInt8(ascii: "-"))
        digits(Int(parts.tm_mday), 2)
        bytes.append(UInt8(ascii: "T"))
        digits(Int(parts.tm_hour), 2)
        bytes.append(UInt8(ascii: ":"))
        digits(Int(parts.tm_min), 2)
        bytes.append(UInt8(ascii: ":"))
        digits(Int(parts.tm_sec), 2)
    }

    private mutating func digits(_ value: Int, _ width: Int) {
        var divisor = 1
        for _ in 1..<width { divisor *= 10 }
        var rest = value
        while divisor > 0 {
            bytes.append(UInt8(ascii: "0") + UInt8((rest / divisor) % 10))
            rest %= divisor
            divisor /= 10
        }
    }
}
