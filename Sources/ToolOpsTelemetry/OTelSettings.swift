import OTel
import ToolOpsCore

/// The tracing part of a ``Telemetry/Configuration`` with the `OTEL_*` variables applied and
/// checked: `traces` is `nil` when no span is to be exported.
///
/// Read: `OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER` (`otlp` or `none`),
/// `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`, `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`
/// (`http/protobuf` or `http/json`; `grpc` is not built in), `OTEL_EXPORTER_OTLP_[TRACES_]HEADERS`,
/// `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`.
struct OTelSettings {
    var traces: OTel.Configuration?

    init(_ configuration: Telemetry.Configuration, environment: [String: String]) throws(ToolOpsError) {
        func value(_ name: String) -> String? {
            guard let raw = environment[name]?.trimmingSpaces, !raw.isEmpty else { return nil }
            return raw
        }
        if let disabled = value("OTEL_SDK_DISABLED") {
            guard let flag = Bool(disabled.lowercased()) else {
                throw ToolOpsError(.invalidConfiguration, "OTEL_SDK_DISABLED must be true or false, got \(disabled)")
            }
            if flag { return }
        }
        var endpoint: String?
        var signalSpecific = false
        switch configuration.tracing {
        case .disabled: return
        case .automatic: break
        case .otlp(let base): endpoint = base
        }
        if let exporter = value("OTEL_TRACES_EXPORTER")?.lowercased() {
            switch exporter {
            case "none": return
            case "otlp": if endpoint == nil { endpoint = "http://localhost:4318" }
            default:
                throw ToolOpsError(.invalidConfiguration, "OTEL_TRACES_EXPORTER=\(exporter) is not supported (otlp or none)")
            }
        }
        if let base = value("OTEL_EXPORTER_OTLP_ENDPOINT") { endpoint = base }
        if let specific = value("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            endpoint = specific
            signalSpecific = true
        }
        guard let endpoint else { return }  // automatic, and nothing asked for export

        var otel = OTel.Configuration.default
        otel.logs.enabled = false
        otel.metrics.enabled = false
        otel.traces.enabled = true
        otel.traces.exporter = .otlp
        otel.serviceName = value("OTEL_SERVICE_NAME") ?? configuration.serviceName

        let url = try Self.checkedURL(endpoint, variable: signalSpecific ? "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" : "OTEL_EXPORTER_OTLP_ENDPOINT")
        // The spec: a base URL gets the signal's path; a signal-specific one is used as is.
        otel.traces.otlpExporter.endpoint = signalSpecific ? url : (url.hasSuffix("/") ? url + "v1/traces" : url + "/v1/traces")

        let protocolVariable = value("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") != nil ? "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL" : "OTEL_EXPORTER_OTLP_PROTOCOL"
        switch value(protocolVariable)?.lowercased() ?? "http/protobuf" {
        case "http/protobuf": otel.traces.otlpExporter.protocol = .httpProtobuf
        case "http/json": otel.traces.otlpExporter.protocol = .httpJSON
        case "grpc":
            throw ToolOpsError(.invalidConfiguration, "\(protocolVariable)=grpc is not built in; use http/protobuf or http/json")
        case let other:
            throw ToolOpsError(.invalidConfiguration, "\(protocolVariable)=\(other) is not a protocol (http/protobuf or http/json)")
        }

        var headers: [(String, String)] = []
        for variable in ["OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"] {
            guard let list = value(variable) else { continue }
            // Header values are credentials: errors name the variable and the entry's position only.
            headers += try Self.pairs(list, variable: variable)
        }
        if !headers.isEmpty { otel.traces.otlpExporter.headers = headers }

        if let attributes = value("OTEL_RESOURCE_ATTRIBUTES") {
            for (key, value) in try Self.pairs(attributes, variable: "OTEL_RESOURCE_ATTRIBUTES") { otel.resourceAttributes[key] = value }
        }

        let argument = value("OTEL_TRACES_SAMPLER_ARG")
        func ratio() throws(ToolOpsError) -> Double {
            guard let argument else { return 1 }
            guard let ratio = Double(argument), ratio >= 0, ratio <= 1 else {
                throw ToolOpsError(.invalidConfiguration, "OTEL_TRACES_SAMPLER_ARG must be a number from 0 to 1, got \(argument)")
            }
            return ratio
        }
        if let sampler = value("OTEL_TRACES_SAMPLER")?.lowercased() {
            switch sampler {
            case "always_on": otel.traces.sampler = .alwaysOn
            case "always_off": otel.traces.sampler = .alwaysOff
            case "parentbased_always_on": otel.traces.sampler = .parentBasedAlwaysOn
            case "parentbased_always_off": otel.traces.sampler = .parentBasedAlwaysOff
            case "traceidratio": otel.traces.sampler = .traceIDRatio(ratio: try ratio()) ?? .alwaysOn
            case "parentbased_traceidratio": otel.traces.sampler = .parentBasedTraceIDRatio(ratio: try ratio()) ?? .parentBasedAlwaysOn
            default:
                throw ToolOpsError(
                    .invalidConfiguration,
                    "OTEL_TRACES_SAMPLER=\(sampler) is not supported (always_on, always_off, traceidratio, parentbased_always_on, "
                        + "parentbased_always_off, parentbased_traceidratio)")
            }
        }
        traces = otel
    }

    /// `text` if it is an http(s) URL with a host; the error shows it without any user info.
    static func checkedURL(_ text: String, variable: String) throws(ToolOpsError) -> String {
        let lower = text.lowercased()
        let scheme = lower.hasPrefix("https://") ? "https://" : lower.hasPrefix("http://") ? "http://" : nil
        guard let scheme else {
            throw ToolOpsError(.invalidConfiguration, "\(variable) must be an http:// or https:// URL")
        }
        let rest = text.dropFirst(scheme.count)
        let authority = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        guard !authority.contains("@") else {
            throw ToolOpsError(.invalidConfiguration, "\(variable) must not carry credentials in the URL; use OTEL_EXPORTER_OTLP_HEADERS")
        }
        guard !authority.isEmpty, !authority.hasPrefix(":") else {
            throw ToolOpsError(.invalidConfiguration, "\(variable) has no host")
        }
        return text
    }

    /// `key=value` pairs separated by commas, values percent-decoded (W3C Baggage style).
    static func pairs(_ list: String, variable: String) throws(ToolOpsError) -> [(String, String)] {
        var pairs: [(String, String)] = []
        for (index, entry) in list.split(separator: ",", omittingEmptySubsequences: true).enumerated() {
            guard let equals = entry.firstIndex(of: "=") else {
                throw ToolOpsError(.invalidConfiguration, "\(variable): entry \(index + 1) is not key=value")
            }
            let key = String(entry[..<equals]).trimmingSpaces
            guard !key.isEmpty else { throw ToolOpsError(.invalidConfiguration, "\(variable): entry \(index + 1) has no key") }
            guard let value = String(entry[entry.index(after: equals)...]).trimmingSpaces.percentDecoded else {
                throw ToolOpsError(.invalidConfiguration, "\(variable): entry \(index + 1) (\(key)) is not percent-encoded correctly")
            }
            pairs.append((key, value))
        }
        return pairs
    }
}

extension String {
    var trimmingSpaces: String {
        var slice = Substring(self)
        while let first = slice.first, first == " " || first == "\t" { slice = slice.dropFirst() }
        while let last = slice.last, last == " " || last == "\t" { slice = slice.dropLast() }
        return String(slice)
    }

    /// `%XX` sequences decoded; `nil` if one is malformed or the result is not UTF-8.
    var percentDecoded: String? {
        var bytes: [UInt8] = []
        var iterator = utf8.makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard let high = iterator.next().flatMap(Self.hexValue), let low = iterator.next().flatMap(Self.hexValue) else { return nil }
            bytes.append(high << 4 | low)
        }
        return String(validating: bytes, as: UTF8.self)
    }

    static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
