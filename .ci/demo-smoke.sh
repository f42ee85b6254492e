#!/usr/bin/env bash
# Runs `originguard demo` and the curl lines it prints: with the client certificate -> 200 from
# the echo backend with the verified identity; without -> the TLS handshake fails. Bounded.
set -euo pipefail
bin=${1:-target/release/originguard}
port=$((20000 + RANDOM % 20000))
log=$(mktemp)
"$bin" demo --listen "127.0.0.1:$port" >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -f "$log"' EXIT

for _ in $(seq 1 100); do
  grep -q "Ctrl-C to stop" "$log" && break
  sleep 0.1
done
ok_cmd=$(grep -A1 '^succeeds' "$log" | tail -1)
fail_cmd=$(grep -A1 '^fails' "$log" | tail -1)
[ -n "$ok_cmd" ] && [ -n "$fail_cmd" ] || { cat "$log"; echo "demo did not print its curl lines"; exit 1; }

out=$(timeout 10 bash -c "$ok_cmd -sS")
echo "$out" | grep -q "x-forwarded-client-cert: Hash=" || { echo "$out"; echo "FAIL: no identity header"; exit 1; }
if timeout 10 bash -c "$fail_cmd -sS" >/dev/null 2>&1; then
  echo "FAIL: request without a client certificate succeeded"; exit 1
fi
kill -TERM "$pid"
wait "$pid" || { echo "FAIL: demo did not exit 0 on SIGTERM"; exit 1; }
trap 'rm -f "$log"' EXIT
echo "demo smoke test passed"
