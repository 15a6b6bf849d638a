import ArgumentParser
import Foundation
import ToolOpsCore

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
/// Redis benchmark compares against in the same run. `options` go before the command
/// (`-r 10000`, `--cluster`).
func redisBenchmarkOps(host: String, port: Int, concurrency: Int, requests: Int, options: [String] = [], args: [String]) throws -> Double {
    let output = try capture(
        "/usr/bin/env",
        ["redis-benchmark", "-h", host, "-p", "\(port)", "-c", "\(concurrency)", "-n", "\(requests)", "--csv"] + options + args)
    // CSV: "test","rps",… then one row per test; in cluster mode a description of the masters
    // comes first. The first data row holds the numbers.
    let rows = output.split(separator: "\n").filter { $0.hasPrefix("\"") && !$0.hasPrefix("\"test\"") }
    guard let fields = rows.first?.split(separator: ","), fields.count > 1,
        let rps = Double(fields[1].trimmingCharacters(in: CharacterSet(charactersIn: "\"")))
    else { throw ValidationError("cannot parse redis-benchmark output: \(output)") }
    return rps
}


/// Left-aligns `text` in a column of `width` (at least one space after it).
func pad(_ text: String, _ width: Int) -> String { text.padding(toLength: max(width, text.count + 1), withPad: " ", startingAt: 0) }

/// Wall-clock nanoseconds per call of `pipeline` with `concurrency` tasks calling back to back
/// (`calls` in all, after a warm-up of up to 1,000 each).
func measurePipeline(_ pipeline: ToolPipeline, _ call: ToolCall, calls: Int, concurrency: Int) async throws -> Double {
    let perTask = max(1, calls / concurrency)
    try await withThrowingTaskGroup(of: Void.self) { group in
        for _ in 0..<concurrency { group.addTask { for _ in 0..<min(1000, perTask) { _ = try await pipeline.run(call) } } }
        try await group.waitForAll()
    }
    let start = ContinuousClock.now
    try await withThrowingTaskGroup(of: Void.self) { group in
        for _ in 0..<concurrency { group.addTask { for _ in 0..<perTask { _ = try await pipeline.run(call) } } }
        try await group.waitForAll()
    }
    return (ContinuousClock.now - start).secondsDouble * 1e9 / Double(perTask * concurrency)
}
