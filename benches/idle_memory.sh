#!/usr/bin/env bash
# RSS per idle established mTLS connection: originguard holds N (default 5000) connections that
# completed the handshake and one request, and sits idle; RSS is read from /proc before and
# while they are held. Loopback only; bounded (about 40 s); cleans up by PID.
#
#   bash benches/idle_memory.sh            # N=5000
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
N=${N:-5000}
HOLD=${HOLD:-25s}
PORT=${PORT:-18291}
ulimit -n $((N * 2 + 1024)) 2>/dev/null || { echo "idle_memory.sh: cannot raise the fd limit to $((N * 2 + 1024))" >&2; exit 1; }

cargo build --release --quiet
og=$PWD/target/release/originguard
work=$(mktemp -d /tmp/originguard-idle.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$og" pki dev --out "$work/pki" --days 90 >/dev/null
python3 -c '
import http.server, socketserver, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200); self.send_header("content-length", "3"); self.end_headers(); self.wfile.write(b"ok\n")
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer): daemon_threads = True
S(("127.0.0.1", int(sys.argv[1])), H).serve_forever()' $((PORT + 1)) &
pids+=($!)
og_config "127.0.0.1:$PORT" "http://127.0.0.1:$((PORT + 1))" "max_connections = $((N + 100))" >"$work/og.toml"
"$og" serve --config "$work/og.toml" 2>"$work/og.err" &
og_pid=$!
pids+=($og_pid)
for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# Warm up allocator and pools with a short run, then take the baseline.
"$og" loadtest --quiet --target "127.0.0.1:$PORT" --server-name localhost --cert "$work/pki/client.pem" \
  --key "$work/pki/client.key" --connections 50 --handshakes 500 --max-failure-rate 1 --json >/dev/null
sleep 1
before=$(rss_kib "$og_pid")
"$og" loadtest --quiet --target "127.0.0.1:$PORT" --server-name localhost --cert "$work/pki/client.pem" \
  --key "$work/pki/client.key" --connections "$N" --duration "$HOLD" --hold --max-failure-rate 1 --json >"$work/hold.json" &
lt=$!
pids+=($lt)
held=0
for _ in $(seq 1 200); do
  sleep 0.2
  held=$(ls "/proc/$og_pid/fd" | wc -l)
  [ "$held" -ge "$N" ] && break
done
sleep 2
during=$(rss_kib "$og_pid")
fds=$(ls "/proc/$og_pid/fd" | wc -l)
wait "$lt"
ok=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["successes"])' "$work/hold.json")
python3 - "$N" "$ok" "$before" "$during" "$fds" <<'PY'
import sys
n, ok, before, during, fds = map(int, sys.argv[1:])
print(f"idle connections held: {ok} of {n} (server fds: {fds})")
print(f"RSS before: {before} KiB, while holding: {during} KiB")
print(f"RSS per idle connection: {(during - before) / max(ok, 1):.1f} KiB")
PY
