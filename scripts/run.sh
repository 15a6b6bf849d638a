#!/usr/bin/env bash
# The main job: build toolops (release) and run the server in the foreground.
# State is in memory unless $REDIS_URL is set. Listens on $TOOLOPS_HOST:$TOOLOPS_PORT
# (default 127.0.0.1:8080). Ctrl-C (SIGINT) or SIGTERM shuts it down gracefully.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product toolops 2>&1 | grep -v "prohibited flag" | tail -n 3
bin=.build/release/toolops
host=${TOOLOPS_HOST:-127.0.0.1}
port=${TOOLOPS_PORT:-8080}
args=(serve --host "$host" --port "$port")
if [ -n "${REDIS_URL:-}" ]; then args+=(--redis "$REDIS_URL"); fi
echo "toolops $($bin --version) on http://$host:$port — try: curl -s $host:$port/health ; curl -s $host:$port/cluster"
exec "$bin" "${args[@]}"
