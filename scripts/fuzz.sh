#!/usr/bin/env bash
# Fuzzes the RESP reader and the canonical-JSON parser with libFuzzer. Each target is compiled
# with swiftc from the sources it tests (no package build), with the address sanitizer. The
# seed corpus lives in Fuzz/corpus (every input there is replayed first, so a crash once found
# and added stays a regression test); new inputs libFuzzer finds go to a scratch directory, so
# the repository is never modified. A crash leaves its input in .build/fuzz/ and fails the run.
#
# Two modes:
# - FUZZ_RUNS=N (what `make test` uses): N inputs from a fixed seed (FUZZ_SEED, default 1). The
#   target is deterministic, so the same commit fuzzes the same inputs on every machine: CI
#   passes or fails reproducibly.
# - otherwise (`make fuzz`): FUZZ_SECONDS (default 20) each, from a random seed — exploration.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-20}"
if [[ -n "${FUZZ_RUNS:-}" ]]; then
    budget=(-seed="${FUZZ_SEED:-1}" -runs="$FUZZ_RUNS")
    described="seed ${FUZZ_SEED:-1}"
else
    budget=(-max_total_time="$seconds")
    described="${seconds}s from a random seed"
fi
out=.build/fuzz
mkdir -p "$out"

build() {  # name, sources...
    local name=$1; shift
    swiftc -sanitize=fuzzer,address -parse-as-library -O -package-name toolops -module-name "Fuzz$name" "$@" -o "$out/$name" 2>&1 \
        | grep -v "prohibited flag\|ld.gold: warning: Cannot export local symbol" || true
    test -x "$out/$name"
}

run() {  # name, corpus
    local name=$1 corpus=$2 scratch
    scratch=$(mktemp -d)
    # -rss_limit_mb: the reader must stay small whatever it is fed.
    # The Swift runtime's backtracer and the address sanitizer's reports get in each other's way.
    if ! SWIFT_BACKTRACE=enable=no "$out/$name" "${budget[@]}" -max_len=8192 -rss_limit_mb=512 -print_final_stats=1 \
        -artifact_prefix="$out/$name-" "$scratch" "$corpus" > "$out/$name.log" 2>&1; then
        tail -n 40 "$out/$name.log"
        echo "fuzz: $name FAILED (input saved as $out/$name-*)"
        rm -rf "$scratch"
        return 1
    fi
    echo "fuzz: $name ok — $(grep -o 'stat::number_of_executed_units: [0-9]*' "$out/$name.log" | awk '{print $2}') inputs, $described"
    rm -rf "$scratch"
}

build resp Fuzz/RESPReader/FuzzRESPReader.swift \
    Sources/ToolOpsRedis/Protocol/RESPReader.swift Sources/ToolOpsRedis/Protocol/RESPValue.swift \
    Sources/ToolOpsRedis/Client/RedisClientError.swift
build json Fuzz/CanonicalJSON/FuzzCanonicalJSON.swift \
    Sources/ToolOpsCore/Tools/JSONValue.swift Sources/ToolOpsCore/ToolOpsError.swift Sources/ToolOpsCore/Tools/ToolID.swift
run resp Fuzz/corpus/resp
run json Fuzz/corpus/json
