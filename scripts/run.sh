#!/usr/bin/env bash
# The main job: build toolops (release) and run the server in the foreground with the
# single-replica example (demo tools, every policy, state in memory). With $REDIS_URL the
# state is shared through Redis. Listens on $TOOLOPS_SERVER_HOST:$TOOLOPS_SERVER_PORT (default
# 127.0.0.1:8080; any TOOLOPS_* configuration variable applies, see Docs/server.md).
# Ctrl-C (SIGINT) or SIGTERM shuts it down gracefully.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product toolops 2>&1 | grep -v "prohibited flag" | tail -n 3
bin=.build/release/toolops
args=(serve --config examples/single-replica.json)
if [ -n "${REDIS_URL:-}" ]; then args+=(--redis "$REDIS_URL"); fi
host=${TOOLOPS_SERVER_HOST:-127.0.0.1}
port=${TOOLOPS_SERVER_PORT:-8080}
echo "toolops $($bin --version) on http://$host:$port — try:"
echo "  curl -s -X POST $host:$port/v1/tools/demo/echo -d '{\"hello\":\"world\"}'"
echo "  curl -s $host:$port/v1/tools ; curl -s $host:$port/health ; curl -s $host:$port/metrics"
exec "$bin" "${args[@]}"
