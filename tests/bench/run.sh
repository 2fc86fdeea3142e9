#!/bin/sh
# Throughput and latency of the purchase path, measured with wrk against a
# release build on loopback: a throwaway redis-server, the mock vendor over
# HTTPS and one gateway. Prints one RESULT line per scenario:
#   fresh   every request a new client token: claim, sign, vendor call
#           over keep-alive TLS, record (the whole path)
#   replay  one token repeated: claim and replay from Redis, no vendor call
#   health  GET /healthz: the HTTP server alone, for scale
# Compare ratios within one run: the machine is shared and noisy.
# Usage: tests/bench/run.sh [seconds per scenario, default 5]
set -eu

top=$(cd "$(dirname "$0")/../.." && pwd)
build=${ACRGW_BUILD_DIR:-"$top/build-bench"}
seconds=${1:-5}
connections=${BENCH_CONNECTIONS:-32}
. "$top/tests/deps.sh"
ACRGW_PACKAGES="$ACRGW_PACKAGES wrk"
acrgw_install_deps

cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j "$(nproc)" --target acr-gateway mock-upstream \
    >/dev/null

tmp=$(mktemp -d)
pids=""
cleanup() {
	for pid in $pids; do
		kill "$pid" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_line() {
	i=0
	until grep -q "$2" "$1" 2>/dev/null; do
		i=$((i + 1))
		[ "$i" -gt 100 ] && { echo "timed out: $1" >&2; exit 1; }
		sleep 0.1
	done
}

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" \
    --appendonly no --dir "$tmp" >"$tmp/redis.log" 2>&1 &
pids="$pids $!"
wait_for_line "$tmp/redis.log" "Ready to accept connections"

openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tmp/key.pem" \
    -out "$tmp/cert.pem" -days 2 -subj /CN=localhost \
    -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" 2>/dev/null
"$build/mock-upstream" --http-port 0 --https-port 0 \
    --cert "$tmp/cert.pem" --key "$tmp/key.pem" \
    --access-key bench-id:bench-secret \
    >"$tmp/mock.out" 2>"$tmp/mock.log" &
pids="$pids $!"
wait_for_line "$tmp/mock.out" '"event":"listening"'
https_port=$(sed -n 's/.*"https_port":\([0-9]*\).*/\1/p' "$tmp/mock.out")

api_key=bench-key-0123456789
key_hash=$(printf %s "$api_key" | sha256sum | cut -d' ' -f1)
cat >"$tmp/gateway.json" <<JSON
{
  "listen": {"address": "127.0.0.1", "port": 0},
  "server": {"workers": 2},
  "redis": {"host": "127.0.0.1", "port": $redis_port},
  "upstream": {"url": "https://127.0.0.1:$https_port",
               "ca_file": "$tmp/cert.pem"},
  "log": {"level": "info"},
  "accounts": {"main": {"site": "cn", "access_key_id": "bench-id",
               "access_key_secret": "bench-secret"}},
  "tenants": {"bench": {"account": "main"}},
  "api_keys": [{"tenant": "bench", "sha256": "$key_hash"}]
}
JSON
"$build/acr-gateway" --config "$tmp/gateway.json" 2>"$tmp/gateway.log" &
pids="$pids $!"
wait_for_line "$tmp/gateway.log" '"event":"listening"'
port=$(sed -n 's/.*"event":"listening".*"port":\([0-9]*\).*/\1/p' \
    "$tmp/gateway.log" | head -n 1)
i=0
until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do
	i=$((i + 1))
	[ "$i" -gt 100 ] && { echo "gateway not ready" >&2; exit 1; }
	sleep 0.1
done

echo "acr-gateway bench: $seconds s per scenario, $connections connections," \
    "2 wrk threads, 2 gateway workers, access log on"
url="http://127.0.0.1:$port"
run_id=$(date +%s)
for mode in fresh replay; do
	MODE=$mode API_KEY=$api_key RUN_ID=$run_id wrk -t2 \
	    -c"$connections" -d"${seconds}s" --latency \
	    -s "$top/tests/bench/purchase.lua" "$url/v1/instances" |
	    grep '^RESULT'
done
wrk -t2 -c"$connections" -d"${seconds}s" "$url/healthz" |
    awk '/Requests\/sec/ { printf "RESULT mode=health rps=%.0f\n", $2 }'
orders=$(curl -s "http://127.0.0.1:$(sed -n \
    's/.*"http_port":\([0-9]*\).*/\1/p' "$tmp/mock.out")/_mock/stats" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["orders"])')
echo "mock orders created: $orders"
