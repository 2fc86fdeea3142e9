#!/bin/sh
# Local demo: installs what is missing, builds, starts a throwaway
# redis-server and the mock vendor on free loopback ports, runs the gateway
# on them, sends one sample CreateInstance with curl, prints the answer,
# and keeps the gateway in the foreground until Ctrl-C. Everything it
# starts is stopped and its temp dir removed on exit.
set -eu

top=$(cd "$(dirname "$0")/../.." && pwd)
build=${ACRGW_BUILD_DIR:-"$top/build-local"}
. "$top/tests/deps.sh"
acrgw_install_deps

cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j "$(nproc)" --target acr-gateway mock-upstream \
    >/dev/null

tmp=$(mktemp -d)
pids=""
# Stops what was started, newest first: the gateway drains while Redis
# and the mock are still there to finish its purchases.
cleanup() {
	reversed=""
	for pid in $pids; do
		reversed="$pid $reversed"
	done
	for pid in $reversed; do
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until FILE has a line matching PATTERN, or gives up after 10 s.
wait_for_line() {
	i=0
	until grep -q "$2" "$1" 2>/dev/null; do
		i=$((i + 1))
		if [ "$i" -gt 100 ]; then
			echo "timed out waiting for $2 in $1" >&2
			cat "$1" >&2
			exit 1
		fi
		sleep 0.1
	done
}

# Redis and the mock run in sessions of their own, so the Ctrl-C that
# starts the gateway's drain does not stop them under it; cleanup does.
# Redis: a throwaway instance, nothing on disk.
redis_port=$(free_port)
setsid redis-server --port "$redis_port" --bind 127.0.0.1 --save "" \
    --appendonly no --dir "$tmp" >"$tmp/redis.log" 2>&1 &
pids="$pids $!"
wait_for_line "$tmp/redis.log" "Ready to accept connections"

# The mock vendor, over HTTPS with a certificate made for this run.
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tmp/key.pem" \
    -out "$tmp/cert.pem" -days 2 -subj /CN=localhost \
    -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" 2>/dev/null
setsid "$build/mock-upstream" --http-port 0 --https-port 0 \
    --cert "$tmp/cert.pem" --key "$tmp/key.pem" \
    --access-key demo-access-key-id:demo-access-key-secret \
    >"$tmp/mock.out" 2>"$tmp/mock.log" &
pids="$pids $!"
wait_for_line "$tmp/mock.out" '"event":"listening"'
https_port=$(sed -n 's/.*"https_port":\([0-9]*\).*/\1/p' "$tmp/mock.out")

# The gateway: the example config's shape, pointed at the throwaway parts.
printf %s demo-access-key-secret >"$tmp/secret"
key_hash=$(printf %s demo-key-team-a | sha256sum | cut -d' ' -f1)
cat >"$tmp/gateway.json" <<JSON
{
  "listen": {"address": "127.0.0.1", "port": 0},
  "redis": {"host": "127.0.0.1", "port": $redis_port},
  "upstream": {"url": "https://127.0.0.1:$https_port",
               "ca_file": "$tmp/cert.pem"},
  "accounts": {"main": {"site": "cn",
               "access_key_id": "demo-access-key-id",
               "access_key_secret_file": "$tmp/secret"}},
  "tenants": {"team-a": {"account": "main"}},
  "api_keys": [{"tenant": "team-a", "sha256": "$key_hash",
                "comment": "demo-key-team-a, local demo only"}]
}
JSON
"$build/acr-gateway" --config "$tmp/gateway.json" 2>"$tmp/gateway.log" &
gateway=$!
pids="$pids $gateway"
wait_for_line "$tmp/gateway.log" '"event":"listening"'
port=$(sed -n 's/.*"event":"listening".*"port":\([0-9]*\).*/\1/p' \
    "$tmp/gateway.log" | head -n 1)
i=0
until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do
	i=$((i + 1))
	if [ "$i" -gt 100 ] || ! kill -0 "$gateway" 2>/dev/null; then
		echo "gateway not ready; its log:" >&2
		cat "$tmp/gateway.log" >&2
		exit 1
	fi
	sleep 0.1
done

echo "gateway on http://127.0.0.1:$port (redis $redis_port, mock https $https_port)"
echo "sample: POST /v1/instances"
curl -sS -i "http://127.0.0.1:$port/v1/instances" \
    -H "Authorization: Bearer demo-key-team-a" \
    -H "Content-Type: application/json" \
    -d '{"client_token": "demo-0001", "instance_type": "Standard",
         "instance_name": "demo-registry", "region": "cn-shanghai",
         "default_oss_bucket": true, "period": 12}'
echo
echo "API key for more requests: demo-key-team-a (tenant team-a)"
echo "gateway log: $tmp/gateway.log; Ctrl-C stops everything"
tail -f "$tmp/gateway.log" &
pids="$pids $!"
wait "$gateway"
