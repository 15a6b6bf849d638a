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
/// - Metadata is redacted at any depth (``Redaction``); keys are written sorted, so lines diff.
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
        var merged = metadata
        if let provided = metadataProvider?.get(), !provided.isEmpty { merged.merge(provided) { _, new in new } }
        if let own = event.metadata, !own.isEmpty { merged.merge(own) { _, new in new } }
        var line = JSONLineWriter()
        line.bytes.reserveCapacity(256)
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
        for key in ["trace_id", "span_id"] {
            guard let value = merged.removeValue(forKey: key) else { continue }
            line.key(key)
            line.string(value.description)
        }
        if let error = event.error {
            line.key("error")
            line.string(String(describing: error))
        }
        if !merged.isEmpty {
            line.key("metadata")
            line.metadata(redaction.redact(merged))
        }
        line.close()
        line.bytes.append(UInt8(ascii: "\n"))
        sink.write(line.bytes)
    }
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
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
            case UInt8(ascii: "\\"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
            case UInt8(ascii: "\n"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
            case UInt8(ascii: "\r"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
            case UInt8(ascii: "\t"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
            case 0..<0x20, 0x7f:
                let hex = Array("0123456789abcdef".utf8)
                bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0")])
                bytes.append(hex[Int(byte >> 4)])
                bytes.append(hex[Int(byte & 15)])
            default: bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
        needsComma = true
    }

    mutating func metadata(_ metadata: Logger.Metadata) {
        open()
        for name in metadata.keys.sorted() {
            key(name)
            value(metadata[name] ?? .string(""))
        }
        close()
    }

    mutating func value(_ value: Logger.MetadataValue) {
        switch value {
        case .string(let text): string(text)
        case .stringConvertible(let convertible): string(convertible.description)
        case .dictionary(let members): metadata(members)
        case .array(let elements):
            bytes.append(UInt8(ascii: "["))
            needsComma = false
            for element in elements {
                if needsComma { bytes.append(UInt8(ascii: ",")) }
                self.value(element)
            }
            bytes.append(UInt8(ascii: "]"))
            needsComma = true
        }
    }

    /// The current time, RFC 3339 UTC with microseconds.
    mutating func timestamp() {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = now.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        bytes.append(UInt8(ascii: "\""))
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
        bytes.append(UInt8(ascii: "."))
        digits(Int(now.tv_nsec) / 1000, 6)
        bytes.append(contentsOf: [UInt8(ascii: "Z"), UInt8(ascii: "\"")])
        needsComma = true
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
