#!/usr/bin/env bash
# The main job for now: build toolops, print its version, and PING Redis through our client.
# Uses $REDIS_URL when set; otherwise starts a throwaway redis-server on a free port.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product toolops 2>&1 | grep -v "prohibited flag" | tail -n 3
bin=.build/release/toolops
echo "toolops $($bin --version)"
if [ -n "${REDIS_URL:-}" ]; then
    exec "$bin" ping --redis "$REDIS_URL"
fi
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || shuf -i 20000-60000 -n 1)
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
trap 'kill -9 "$(cat "$dir/redis.pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
"$bin" ping --redis "redis://127.0.0.1:$port"
