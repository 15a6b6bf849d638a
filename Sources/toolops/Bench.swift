import ArgumentParser

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Benchmarks (printed side by side with a reference).")
    func run() async throws { print("bench: not yet") }
}
