#if canImport(Glibc)
import Glibc
#endif

/// Small POSIX file helpers shared by the file-backed stores (resilience state, cache).
/// They run on the calling thread: callers keep each use to one small local-disk operation.
package enum FileIO {
    /// `mkdir -p` with mode 0700.
    package static func makeDirectories(_ path: String) throws(ToolOpsError) {
        var current = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            current += "/" + component
            if mkdir(current, 0o700) != 0 && errno != EEXIST {
                throw ToolOpsError(.invalidConfiguration, "cannot create directory \(current): \(errorText())")
            }
        }
    }

    /// The whole file, or `nil` if it does not exist, cannot be read, or exceeds `limit` bytes.
    package static func read(_ path: String, limit: Int) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            if count < 0 { return nil }
            if count == 0 { break }
            bytes.append(contentsOf: chunk[..<count])
            if bytes.count > limit { return nil }
        }
        return bytes
    }

    /// Replaces `path` with `bytes` atomically: written to a temporary file in the same
    /// directory, then renamed over it, so readers see the old or the new file, never a torn one.
    package static func writeAtomically(_ path: String, _ bytes: [UInt8]) throws(ToolOpsError) {
        let temporary = "\(path).\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw ToolOpsError(.storeUnavailable, "cannot write \(temporary): \(errorText())") }
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { buffer in
                Glibc.write(fd, buffer.baseAddress.map { $0 + offset }, buffer.count - offset)
            }
            if written < 0 && errno == EINTR { continue }
            if written <= 0 {
                let text = errorText()
                close(fd)
                unlink(temporary)
                throw ToolOpsError(.storeUnavailable, "cannot write \(temporary): \(text)")
            }
            offset += written
        }
        close(fd)
        guard rename(temporary, path) == 0 else {
            let text = errorText()
            unlink(temporary)
            throw ToolOpsError(.storeUnavailable, "cannot replace \(path): \(text)")
        }
    }

    /// The names in a directory (without `.` and `..`); empty if it cannot be read.
    package static func list(_ path: String) -> [String] {
        guard let directory = opendir(path) else { return [] }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Size and modification time (ns since the epoch) and inode, or `nil` if absent.
    package static func status(_ path: String) -> (size: Int, modified: Int64, inode: UInt64)? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return (Int(info.st_size), Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec), UInt64(info.st_ino))
    }

    package static func errorText() -> String { String(cString: strerror(errno)) }
}
