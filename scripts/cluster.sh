#!/usr/bin/env bash
# A ToolOps cluster on this machine, as local processes (no containers): a redis-server, three
# `toolops serve` replicas sharing it, HAProxy in front of them and Prometheus scraping all three.
# Prints the URLs; Ctrl-C (or SIGTERM) stops everything it started.
#
#   BASE_PORT   first of the ports used (default 18000): HAProxy BASE, its stats BASE+1,
#               replicas BASE+11..13, Redis BASE+20, Prometheus BASE+30
#   TOOLOPS_BIN the toolops binary (default: build .build/release/toolops)
#   CLUSTER_DIR where configs, data and logs go (default: a new temporary directory)
set -euo pipefail
cd "$(dirname "$0")/.."
base=${BASE_PORT:-18000}
lb=$base; stats=$((base + 1)); redis_port=$((base + 20)); prom=$((base + 30))
replicas=($((base + 11)) $((base + 12)) $((base + 13)))
dir=${CLUSTER_DIR:-$(mktemp -d /tmp/toolops-cluster.XXXXXX)}
mkdir -p "$dir"
if [ -z "${TOOLOPS_BIN:-}" ]; then
    swift build -c release --product toolops 2>&1 | grep -v "prohibited flag" | tail -n 3
    TOOLOPS_BIN=.build/release/toolops
fi
for tool in redis-server haproxy prometheus; do
    command -v $tool >/dev/null || { echo "$tool is missing: run 'bash scripts/install-deps.sh test'" >&2; exit 1; }
done

pids=()
stop() {
    trap - INT TERM EXIT
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    echo "cluster stopped (logs in $dir)"
}
trap stop INT TERM EXIT

redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" > "$dir/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done

sed -e "s#redis://127.0.0.1:6379#redis://127.0.0.1:$redis_port#" examples/three-replicas-redis.json > "$dir/toolops.json"
for index in 0 1 2; do
    TOOLOPS_SERVER_PORT=${replicas[$index]} TOOLOPS_SERVER_DRAIN_DELAY=3s \
        "$TOOLOPS_BIN" serve --config "$dir/toolops.json" --replica-id "replica-$((index + 1))" > "$dir/replica-$((index + 1)).log" 2>&1 &
    pids+=($!)
done

cat > "$dir/haproxy.cfg" <<CFG
global
    log stdout format raw local0 warning
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 2
    option redispatch 1
frontend toolops
    bind 127.0.0.1:$lb
    default_backend replicas
backend replicas
    balance roundrobin
    # Readiness turns false at SIGTERM and the replica keeps serving for its drain delay (3 s):
    # two failed checks 500 ms apart take it out before it stops.
    option httpchk GET /readyz
    default-server inter 500ms fall 2 rise 2
    server replica-1 127.0.0.1:${replicas[0]} check
    server replica-2 127.0.0.1:${replicas[1]} check
    server replica-3 127.0.0.1:${replicas[2]} check
listen stats
    bind 127.0.0.1:$stats
    stats enable
    stats uri /stats
CFG
haproxy -c -q -f "$dir/haproxy.cfg"
haproxy -db -f "$dir/haproxy.cfg" > "$dir/haproxy.log" 2>&1 &
pids+=($!)

cat > "$dir/prometheus.yml" <<CFG
global:
  scrape_interval: 2s
scrape_configs:
  - job_name: toolops
    static_configs:
      - targets: ['127.0.0.1:${replicas[0]}', '127.0.0.1:${replicas[1]}', '127.0.0.1:${replicas[2]}']
CFG
prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/prometheus" \
    --web.listen-address="127.0.0.1:$prom" > "$dir/prometheus.log" 2>&1 &
pids+=($!)

for port in "${replicas[@]}" "$lb"; do
    for _ in $(seq 200); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
done
cat <<INFO
ToolOps cluster up (files in $dir)
  load balancer  http://127.0.0.1:$lb         e.g. curl -s -X POST 127.0.0.1:$lb/v1/tools/demo/echo -d '{"hi":1}'
  dashboard      http://127.0.0.1:$lb/dashboard
  replicas       ${replicas[*]/#/http://127.0.0.1:}
  haproxy stats  http://127.0.0.1:$stats/stats
  prometheus     http://127.0.0.1:$prom       e.g. sum(rate(toolops_tool_calls_total[1m])) by (tool)
  redis          redis://127.0.0.1:$redis_port   toolops status --redis redis://127.0.0.1:$redis_port
Ctrl-C stops everything.
INFO
wait
