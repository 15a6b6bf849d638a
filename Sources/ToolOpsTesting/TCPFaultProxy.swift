import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A TCP proxy on loopback for network-fault tests: it forwards connections to a local port and
/// can be told to **stall** (stop forwarding in both directions, keeping every connection open,
/// as a dead link or a stuck middlebox does) or to **drop** (close every connection and refuse
/// new ones, as a restarted load balancer does), then to pass traffic again.
///
/// ```swift
/// let proxy = try TCPFaultProxy(targetPort: server.port)
/// let client = try RedisClient(url: "redis://127.0.0.1:\(proxy.port)")
/// proxy.mode = .stall      // commands now time out
/// proxy.mode = .pass       // and recover
/// ```
///
/// `@unchecked Sendable`: its mutable state (mode, open sockets) is only touched under `lock`;
/// each connection's forwarding runs on a thread of its own.
public final class TCPFaultProxy: @unchecked Sendable {
    public enum Mode: Sendable, Equatable {
        /// Forward bytes both ways.
        case pass
        /// Forward nothing; connections stay open.
        case stall
        /// Close every connection; accept and close new ones at once.
        case drop
    }

    /// The port it listens on (127.0.0.1).
    public let port: Int
    public let targetPort: Int
    private let listener: Int32
    private let lock = NSLock()
    private var currentMode = Mode.pass
    private var stopped = false
    private var sockets: Set<Int32> = []
    /// Connections accepted so far.
    public private(set) var accepted = 0

    public var mode: Mode {
        get { lock.withLock { currentMode } }
        set {
            let closing: Set<Int32> = lock.withLock {
                currentMode = newValue
                return newValue == .drop ? sockets : []
            }
            // shutdown() wakes the forwarding threads; they close the descriptors.
            for socket in closing { Glibc.shutdown(socket, Int32(SHUT_RDWR)) }
        }
    }

    public init(targetPort: Int) throws {
        self.targetPort = targetPort
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw RedisServerError("socket failed") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 128) == 0 else {
            close(fd)
            throw RedisServerError("bind/listen failed")
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        self.listener = fd
        self.port = Int(UInt16(bigEndian: address.sin_port))
        Thread.detachNewThread { [self] in acceptLoop() }
    }

    deinit { stop() }

    /// Stops accepting and closes every connection.
    public func stop() {
        let closing: Set<Int32>? = lock.withLock {
            if stopped { return nil }
            stopped = true
            return sockets
        }
        guard let closing else { return }
        for socket in closing { Glibc.shutdown(socket, Int32(SHUT_RDWR)) }
        Glibc.shutdown(listener, Int32(SHUT_RDWR))
    }

    private func acceptLoop() {
        defer { close(listener) }
        while !lock.withLock({ stopped }) {
            var poller = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 50) > 0 else { continue }
            let client = accept(listener, nil, nil)
            guard client >= 0 else { continue }
            lock.withLock { accepted += 1 }
            if mode == .drop {
                close(client)
                continue
            }
            guard let upstream = connectToTarget() else {
                close(client)
                continue
            }
            lock.withLock {
                sockets.insert(client)
                sockets.insert(upstream)
            }
            Thread.detachNewThread { [self] in forward(client, upstream) }
        }
    }

    private func connectToTarget() -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(targetPort).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if connected != 0 {
            close(fd)
            return nil
        }
        return fd
    }

    /// Copies bytes between the two sockets while passing; holds them while stalled.
    private func forward(_ a: Int32, _ b: Int32) {
        defer {
            lock.withLock {
                sockets.remove(a)
                sockets.remove(b)
            }
            close(a)
            close(b)
        }
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let (mode, stopped) = lock.withLock { (currentMode, self.stopped) }
            if stopped || mode == .drop { return }
            if mode == .stall {
                usleep(5_000)
                continue
            }
            var pollers = [pollfd(fd: a, events: Int16(POLLIN), revents: 0), pollfd(fd: b, events: Int16(POLLIN), revents: 0)]
            guard poll(&pollers, 2, 20) >= 0 else { return }
            // Mode may have changed while polling: a stall must not forward what just arrived.
            if self.mode != .pass { continue }
            for (from, to) in [(pollers[0], b), (pollers[1], a)] where from.revents != 0 {
                let count = read(from.fd, &buffer, buffer.count)
                if count <= 0 { return }
                var sent = 0
                while sent < count {
                    let written = buffer.withUnsafeBytes { write(to, $0.baseAddress!.advanced(by: sent), count - sent) }
                    if written <= 0 { return }
                    sent += written
                }
            }
        }
    }
}
