#!/usr/bin/env bash
# perf profile of originguard under pure keep-alive load (or MODE=full / resumed): the server
# pinned to CPU 0 with one worker thread, an nginx backend and the load generator on CPU 1.
# Prints the top symbols (self time). Loopback only; bounded (~20 s).
#
#   bash benches/profile.sh                # keep-alive requests
#   MODE=full bash benches/profile.sh      # full handshakes, one request each
#   MODE=resumed PERF_DATA=/tmp/p.data bash benches/profile.sh   # keep perf.data for perf report
#   SERVER=floor MODE=resumed bash benches/profile.sh   # the bare rustls floor, for a diff
#   RATE=15000 bash benches/profile.sh     # keep-alive at a fixed rate (open model), not saturated
# The last line gives the server's samples per connection (or request) in µs, so two profiles
# compare symbol by symbol: µs per unit = percent / 100 * that figure.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
MODE=${MODE:-keepalive}
SERVER=${SERVER:-originguard}
PORT=${PORT:-18190}
command -v perf >/dev/null || { echo "profile.sh: needs perf (apt-get install linux-perf)" >&2; exit 1; }
cargo build --release --quiet
og=$PWD/target/release/originguard
work=$(mktemp -d /tmp/originguard-profile.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
"$og" pki dev --out "$work/pki" >/dev/null
mkdir -p "$work/tmp"
cat >"$work/backend.conf" <<EOC
worker_processes 1; daemon off; pid $work/backend.pid; error_log $work/backend.err warn;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  client_body_temp_path $work/tmp/b; proxy_temp_path $work/tmp/p; fastcgi_temp_path $work/tmp/f;
  uwsgi_temp_path $work/tmp/u; scgi_temp_path $work/tmp/s;
  server { listen 127.0.0.1:$((PORT + 1)); location / { return 200 "ok\n"; } } }
EOC
taskset -c 1 nginx -c "$work/backend.conf" -p "$work" & pids+=($!)
og_config "127.0.0.1:$PORT" "http://127.0.0.1:$((PORT + 1))" >"$work/og.toml"
case $SERVER in
  originguard) TOKIO_WORKER_THREADS=1 taskset -c 0 "$og" serve --config "$work/og.toml" 2>"$work/og.err" & og_pid=$! ;;
  floor)
    floor=$(cargo build --release --quiet --bench floor_server --message-format=json | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "floor_server" and m.get("executable"): print(m["executable"])')
    TOKIO_WORKER_THREADS=1 FLOOR_LISTEN=127.0.0.1:$PORT FLOOR_CERT=$work/pki/server.pem FLOOR_KEY=$work/pki/server.key \
      FLOOR_CA=$work/pki/ca.pem taskset -c 0 "$floor" 2>"$work/og.err" & og_pid=$! ;;
  *) echo "profile.sh: SERVER is originguard or floor" >&2; exit 1 ;;
esac
pids+=($og_pid)
for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
case $MODE in
  keepalive) load=(--keep-alive --warmup 1s --duration 14s --server-pid "$og_pid" ${RATE:+--rate "$RATE"}) ;;
  full) load=(--duration 14s) ;;
  resumed) load=(--duration 14s --resume) ;;
esac
load+=(--json)
TOKIO_WORKER_THREADS=1 taskset -c 1 "$og" loadtest --quiet --target "127.0.0.1:$PORT" --server-name localhost \
  --cert "$work/pki/client.pem" --key "$work/pki/client.key" --connections 16 "${load[@]}" >"$work/load.txt" & lt=$!
sleep 2
cpu_before=$(sed 's/.*) //' "/proc/$og_pid/stat" | awk '{print $12 + $13}')
perf record -q -F ${FREQ:-2000} ${CALLGRAPH:--g} -o "$work/perf.data" -p "$og_pid" -- sleep 8 2>/dev/null
cpu_after=$(sed 's/.*) //' "/proc/$og_pid/stat" | awk '{print $12 + $13}')
wait "$lt"
[ -n "${PERF_DATA:-}" ] && cp "$work/perf.data" "$PERF_DATA"
python3 - "$work/load.txt" "$((cpu_after - cpu_before))" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); ticks = int(sys.argv[2])
units = r["window"]["requests"] / r["window"]["seconds"] if r.get("window") else r["successes"] / r["elapsed_s"]
unit = "request" if r.get("window") else "connection"
print(f"rate {units:,.0f} {unit}s/s; server CPU while profiled: {ticks / 100 / 8:.2f} cores;"
      f" 100 % of the profile = {ticks * 10000 / 8 / units:.1f} µs per {unit}")
PY
perf report -i "$work/perf.data" ${CHILDREN:+--children} ${CHILDREN:---no-children} --sort dso,symbol -g none --stdio 2>/dev/null | grep -E "^ +[0-9]" | sed -E "s/ +/ /g" | cut -c1-150 | head -${TOP:-60}
