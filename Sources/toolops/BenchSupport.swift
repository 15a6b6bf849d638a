import ArgumentParser
import Foundation
import ToolOpsRedis

/// Runs a program to completion and returns its standard output; a non-zero exit throws.
func capture(_ executable: String, _ arguments: [String]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = FileHandle.nullDevice
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else { throw ValidationError("\(arguments.first ?? executable) failed") }
    return String(decoding: data, as: UTF8.self)
}

/// redis-benchmark's requests per second for `args` at `concurrency` — the reference every
/// Redis benchmark compares against in the same run.
func redisBenchmarkOps(host: String, port: Int, concurrency: Int, requests: Int, args: [String]) throws -> Double {
    let output = try capture(
        "/usr/bin/env", ["redis-benchmark", "-h", host, "-p", "\(port)", "-c", "\(concurrency)", "-n", "\(requests)", "--csv"] + args)
    // CSV: "test","rps",… — the second line holds the numbers.
    guard let line = output.split(separator: "\n").dropFirst().first,
        let rps = Double(line.split(separator: ",")[1].trimmingCharacters(in: CharacterSet(charactersIn: "\"")))
    else { throw ValidationError("cannot parse redis-benchmark output: \(output)") }
    return rps
}

/// Calls per command so far, from `INFO commandstats` (keys like `evalsha`, `get`).
func commandCalls(_ client: RedisClient) async throws -> [String: Int] {
    let info = try await client.send("INFO", "commandstats").string ?? ""
    var calls: [String: Int] = [:]
    for line in info.split(separator: "\r\n") where line.hasPrefix("cmdstat_") {
        guard let colon = line.firstIndex(of: ":"),
            let count = line.split(separator: "calls=").dropFirst().first?.split(separator: ",").first.flatMap({ Int($0) })
        else { continue }
        calls[String(line[line.index(line.startIndex, offsetBy: 8)..<colon])] = count
    }
    return calls
}

/// Left-aligns `text` in a column of `width` (at least one space after it).
func pad(_ text: String, _ width: Int) -> String { text.padding(toLength: max(width, text.count + 1), withPad: " ", startingAt: 0) }
