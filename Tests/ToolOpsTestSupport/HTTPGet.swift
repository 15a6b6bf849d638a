import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A minimal HTTP/1.1 GET against 127.0.0.1 (`Connection: close`, read to EOF, chunked bodies
/// decoded): enough to ask our own server or a local Prometheus without an HTTP client.
public func httpGet(port: Int, _ path: String) throws -> (status: Int, body: String) {
    let response = try httpRequest(port: port, "GET", path)
    return (response.status, response.body)
}

/// One HTTP/1.1 request over a fresh loopback connection (blocking, 5 s receive timeout);
/// header names in the answer are lower-cased.
public func httpRequest(
    port: Int, _ method: String, _ path: String, headers: [String: String] = [:], body: String? = nil
) throws -> (status: Int, headers: [String: String], body: String) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw TestFailure("socket failed") }
    defer { close(fd) }
    var timeout = timeval(tv_sec: 5, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = UInt16(port).bigEndian
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else { throw TestFailure("cannot connect to port \(port)") }
    var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    for (name, value) in headers { head += "\(name): \(value)\r\n" }
    let payload = Array((body ?? "").utf8)
    if body != nil { head += "Content-Length: \(payload.count)\r\n" }
    let request = Array((head + "\r\n").utf8) + payload
    var sent = 0
    while sent < request.count {
        let count = request[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        if count <= 0 { break }  // the server may answer (413) and close before reading it all
        sent += count
    }
    var response: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 16 * 1024)
    while true {
        let count = recv(fd, &buffer, buffer.count, 0)
        if count <= 0 { break }
        response += buffer[0..<count]
    }
    let text = String(decoding: response, as: UTF8.self)
    guard let headerEnd = text.range(of: "\r\n\r\n"), let status = Int(text.split(separator: " ").dropFirst().first ?? "") else {
        throw TestFailure("malformed HTTP response: \(text)")
    }
    var fields: [String: String] = [:]
    for line in text[..<headerEnd.lowerBound].split(separator: "\r\n").dropFirst() {
        guard let colon = line.firstIndex(of: ":") else { continue }
        fields[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
    }
    var responseBody = String(text[headerEnd.upperBound...])
    if fields["transfer-encoding"]?.lowercased() == "chunked" { responseBody = try dechunked(responseBody) }
    return (status, fields, responseBody)
}

/// The body of a chunked transfer encoding.
private func dechunked(_ text: String) throws -> String {
    var bytes = Substring(text).utf8[...]
    var out: [UInt8] = []
    while true {
        guard let lineEnd = bytes.firstRange(of: "\r\n".utf8) else { throw TestFailure("bad chunk") }
        let sizeText = String(decoding: bytes[..<lineEnd.lowerBound], as: UTF8.self).split(separator: ";").first ?? ""
        guard let size = Int(sizeText, radix: 16) else { throw TestFailure("bad chunk size \(sizeText)") }
        bytes = bytes[lineEnd.upperBound...]
        if size == 0 { break }
        guard bytes.count >= size else { throw TestFailure("short chunk") }
        out += bytes.prefix(size)
        bytes = bytes.dropFirst(size + 2)
    }
    return String(decoding: out, as: UTF8.self)
}

/// ``httpRequest(port:_:_:headers:body:)`` on a thread of its own, so a test waiting for the
/// answer does not hold one of the few cooperative threads the server under test needs.
public func http(
    port: Int, _ method: String, _ path: String, headers: [String: String] = [:], body: String? = nil
) async throws -> (status: Int, headers: [String: String], body: String) {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            continuation.resume(with: Result { try httpRequest(port: port, method, path, headers: headers, body: body) })
        }
        thread.start()
    }
}
