SHELL := /bin/bash
# ToolOps — the two set-up commands on a fresh Debian 12 machine are `make run` and `make test`.
.PHONY: deps test-deps run test bench build fuzz cluster

deps:
	@bash scripts/install-deps.sh

test-deps:
	@bash scripts/install-deps.sh test

build: deps
	swift build

# The main job: the server (health probes, replica registry), in memory unless REDIS_URL is set.
run: deps
	@bash scripts/run.sh

# A local cluster: redis-server, three replicas, HAProxy and Prometheus as processes (Ctrl-C stops it).
cluster: test-deps
	@bash scripts/cluster.sh

# All tests, one at a time (timing assertions stay meaningful on a 2-core machine).
# Each Redis test starts its own redis-server on a free loopback port
# (or set TOOLOPS_TEST_REDIS_URL to use an existing server for the plain ones).
# The fuzzers run first (a fixed seed and input count: reproducible), so the test runner's
# summary stays the last line.
test: test-deps
	@FUZZ_RUNS=250000 bash scripts/fuzz.sh
	timeout 1800 swift test --no-parallel 2>&1 | grep -v "prohibited flag"; exit $${PIPESTATUS[0]}

# libFuzzer on the RESP reader and the canonical-JSON parser, FUZZ_SECONDS (default 20) each
# from a random seed (exploration); seeds in Fuzz/corpus, crashing inputs left in .build/fuzz/
# (add them to Fuzz/corpus once fixed).
fuzz: deps
	@bash scripts/fuzz.sh

# Benchmarks (their own executable, not shipped), side by side with their references in the same run.
bench: test-deps
	swift build -c release --product toolops-bench 2>&1 | grep -v "prohibited flag" | tail -n 3
	.build/release/toolops-bench redis
	.build/release/toolops-bench decode
	.build/release/toolops-bench resilience
	.build/release/toolops-bench ratelimit
	.build/release/toolops-bench breaker
	.build/release/toolops-bench cache
	.build/release/toolops-bench observe
	.build/release/toolops-bench auth
	.build/release/toolops-bench pipeline
	.build/release/toolops-bench handler
	.build/release/toolops-bench http
