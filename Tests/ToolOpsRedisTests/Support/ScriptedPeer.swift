import Foundation
import Synchronization
import ToolOpsTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A misbehaving "Redis" for tests: a loopback TCP server that runs a script for each
/// connection it accepts (the n-th connection gets `script(n, connection)`), each on a thread
/// of its own. Scripts read what the client sent and write whatever bytes the test needs.
final class ScriptedPeer: Sendable {
    let port: Int
    /// Connections accepted so far.
    let accepted = Counter()
    private let listener: Int32

    /// One accepted connection, seen from the peer's side.
    final class Connection {
        let fd: Int32
        private var received: [UInt8] = []

        init(fd: Int32) { self.fd = fd }

        /// Reads until what the client sent so far contains `text`, then forgets it. `false`
        /// when the client closed first or nothing came within `seconds`.
        @discardableResult
        func waitFor(_ text: String, seconds: Double = 10) -> Bool {
            let needle = Array(text.utf8)
            let until = Date().addingTimeInterval(seconds)
            while Date() < until {
                if let range = received.firstRange(of: needle) {
                    received.removeSubrange(..<range.upperBound)
                    return true
                }
                var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&pfd, 1, 100) >= 0 else { return false }
                if pfd.revents == 0 { continue }
                var chunk = [UInt8](repeating: 0, count: 4096)
                let count = recv(fd, &chunk, chunk.count, 0)
                if count <= 0 { return false }
                received.append(contentsOf: chunk[..<count])
            }
            return false
        }

        /// Writes all of `bytes`; `false` once the client has gone.
        @discardableResult
        func write(_ bytes: [UInt8]) -> Bool {
            var offset = 0
            while offset < bytes.count {
                let sent = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if sent <= 0 { return false }
                offset += sent
            }
            return true
        }

        func write(_ text: String) -> Bool { write(Array(text.utf8)) }
    }

    init(script: @escaping @Sendable (Int, Connection) -> Void) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket() failed") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 16) == 0 else { throw TestFailure("bind/listen failed") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        port = Int(UInt16(bigEndian: address.sin_port))
        listener = fd
        let accepted = self.accepted
        Thread.detachNewThread {
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 { return }  // closed by deinit
                let index = accepted.increment() - 1
                Thread.detachNewThread {
                    script(index, Connection(fd: client))
                    close(client)
                }
            }
        }
    }

    var url: String { "redis://127.0.0.1:\(port)" }

    deinit {
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }
}

/// This process's resident memory, from /proc.
func residentBytes() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let fields = text.split(separator: " ")
    guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
}
