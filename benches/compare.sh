#!/usr/bin/env bash
# originguard vs nginx vs HAProxy vs Caddy, side by side on this machine, with a bare rustls
# server (benches/floor_server.rs: verifies client certificates, answers 200 itself, proxies
# nothing) as the floor: the same PKI (ECDSA P-256 dev PKI, client leaf issued directly by the
# CA), the same backend (an nginx that answers 200), the same load (`originguard loadtest`,
# TLS 1.3, HTTP/1.1).
#
# Modes, and what each figure includes:
#   full       a new connection per request: full mTLS handshake + 1 request (µs/connection)
#   resumed    the same with session resumption (µs/connection)
#   amortized  100 requests per connection: each request carries 1/100 of a full handshake
#              (the old "keep-alive" figure; µs/request)
#   keepalive  pure keep-alive: connections opened before the window, requests only inside it
#              (`loadtest --keep-alive`, server CPU read by the load generator at the window's
#              edges; µs/request). This is what Cloudflare's long-lived origin connections cost.
# With strace installed, a last step counts system calls per keep-alive request for originguard
# and nginx (`strace -c -f` over one pure keep-alive run; the 16 warm-up handshakes are included
# and negligible).
#
# Each server is pinned to SERVER_CPU with one worker; the load generator and the backend share
# LOAD_CPU. Servers run one after another, alternating, ROUNDS times per mode. Server CPU time is
# read from /proc/<pid>/stat before and after each run and divided by the successful
# connections (or requests, in keep-alive mode). Prints a table (mean and best round; ratios
# between best rounds, since on a shared machine noise only adds time) and writes
# the raw numbers to $OUT (default benches/last-compare.json).
#
# Loopback only; every server is stopped by PID on exit. Bounded: with the defaults,
# 6 servers x 4 modes x 2 rounds x 6 s ≈ 5 minutes plus builds.
#
#   bash benches/compare.sh                 # defaults
#   DURATION=10s ROUNDS=3 bash benches/compare.sh
#   MODES=keepalive ROUNDS=3 bash benches/compare.sh     # one mode
#   SERVERS="originguard floor" MODES=resumed bash benches/compare.sh   # some servers only
#   RATE=2000 MODES="full resumed" bash benches/compare.sh   # open model: every server gets the
#     same offered connection rate instead of as many as it can take (see RESULTS.md: a
#     saturated server's peer CPU idles more, and waking an idle vCPU costs the waker)
#   KEEPALIVE_RATE=20000 MODES=keepalive bash benches/compare.sh   # requests/s, open model: p99
#     latency at the same offered load for every server
#   BASELINE=/tmp/og-before SERVERS="originguard baseline floor" MODES=resumed bash benches/compare.sh
#     (A/B: another originguard binary, same config, run alternately with the others)
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

DURATION=${DURATION:-6s}
ROUNDS=${ROUNDS:-2}
CONNS=${CONNS:-16}
KEEPALIVE_REQUESTS=${KEEPALIVE_REQUESTS:-100}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
OUT=${OUT:-benches/last-compare.json}
MODES=${MODES:-full resumed amortized keepalive}
BASE_PORT=${BASE_PORT:-18080}
SERVERS=${SERVERS:-originguard nginx haproxy caddy floor originguard_nocache}
BASELINE=${BASELINE:-}
case " $SERVERS " in *" baseline "*) [ -x "$BASELINE" ] || { echo "compare.sh: server baseline needs BASELINE=/path/to/originguard" >&2; exit 1; } ;; esac

for tool in taskset python3; do
  command -v "$tool" >/dev/null || { echo "compare.sh: needs $tool" >&2; exit 1; }
done
if ! command -v nginx >/dev/null || ! command -v haproxy >/dev/null || ! command -v caddy >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx haproxy caddy >/dev/null
  else
    echo "compare.sh: install nginx, haproxy and caddy (apt-get install nginx haproxy caddy)" >&2; exit 1
  fi
fi

cargo build --release --quiet
og=$PWD/target/release/originguard
floor=$(cargo build --release --quiet --bench floor_server --message-format=json |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "floor_server" and m.get("executable"): print(m["executable"])')
work=$(mktemp -d /tmp/originguard-compare.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

backend_port=$BASE_PORT
og_port=$((BASE_PORT + 1))
og_nocache_port=$((BASE_PORT + 2))
nginx_port=$((BASE_PORT + 3))
haproxy_port=$((BASE_PORT + 4))
caddy_port=$((BASE_PORT + 5))
floor_port=$((BASE_PORT + 6))
baseline_port=$((BASE_PORT + 7))

"$og" pki dev --out "$work/pki" --days 90 >/dev/null
cat "$work/pki/server.pem" "$work/pki/server.key" >"$work/pki/haproxy.pem"
mkdir -p "$work/nginx-tmp"

# --- backend: nginx answering 200 "ok" -------------------------------------------------------
cat >"$work/backend.conf" <<EOF
user root;
worker_processes 1;
daemon off;
pid $work/backend.pid;
error_log $work/backend-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx-tmp/b1; proxy_temp_path $work/nginx-tmp/p1;
  fastcgi_temp_path $work/nginx-tmp/f1; uwsgi_temp_path $work/nginx-tmp/u1; scgi_temp_path $work/nginx-tmp/s1;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$backend_port; location / { return 200 "ok\n"; } }
}
EOF

# --- nginx: ssl_verify_client on, depth 1, proxy to the backend with keep-alive ---------------
cat >"$work/nginx.conf" <<EOF
user root;
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $work/nginx-tmp/b2; proxy_temp_path $work/nginx-tmp/p2;
  fastcgi_temp_path $work/nginx-tmp/f2; uwsgi_temp_path $work/nginx-tmp/u2; scgi_temp_path $work/nginx-tmp/s2;
  keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:$backend_port; keepalive 64; }
  server {
    listen 127.0.0.1:$nginx_port ssl;
    ssl_certificate $work/pki/server.pem;
    ssl_certificate_key $work/pki/server.key;
    ssl_client_certificate $work/pki/ca.pem;
    ssl_verify_client on;
    ssl_verify_depth 1;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_tickets on;
    ssl_session_cache shared:SSL:10m;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-Client-Cert "Hash=\$ssl_client_fingerprint;Subject=\"\$ssl_client_s_dn\"";
    }
  }
}
EOF

# --- HAProxy: verify required, proxy to the backend with connection reuse ---------------------
cat >"$work/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4000
  log stderr format raw local0 err
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:$haproxy_port ssl crt $work/pki/haproxy.pem ca-file $work/pki/ca.pem verify required alpn http/1.1
  http-request set-header X-Forwarded-Client-Cert "Hash=%[ssl_c_sha1,hex];Subject=\"%[ssl_c_s_dn]\""
  default_backend be
backend be
  http-reuse always
  server s1 127.0.0.1:$backend_port
EOF

# --- Caddy: client_auth require_and_verify, reverse_proxy to the backend ------------------------
cat >"$work/Caddyfile" <<EOF
{
  admin off
  auto_https off
  log {
    level ERROR
  }
}
https://localhost:$caddy_port {
  bind 127.0.0.1
  tls $work/pki/server.pem $work/pki/server.key {
    client_auth {
      mode require_and_verify
      trusted_ca_cert_file $work/pki/ca.pem
    }
  }
  reverse_proxy 127.0.0.1:$backend_port {
    header_up X-Forwarded-Client-Cert "Hash={http.request.tls.client.fingerprint};Subject={http.request.tls.client.subject}"
  }
}
EOF

og_config "127.0.0.1:$og_port" "http://127.0.0.1:$backend_port" "" "verify_cache = true" >"$work/og.toml"
og_config "127.0.0.1:$og_nocache_port" "http://127.0.0.1:$backend_port" "" "verify_cache = false" >"$work/og-nocache.toml"
og_config "127.0.0.1:$baseline_port" "http://127.0.0.1:$backend_port" "" "verify_cache = true" >"$work/baseline.toml"

start() { # name cpu command...
  local name=$1 cpu=$2; shift 2
  taskset -c "$cpu" "$@" >"$work/$name.out" 2>&1 &
  pids+=($!)
  eval "pid_$name=$!"
}
start backend "$LOAD_CPU" nginx -c "$work/backend.conf" -p "$work"
start nginx "$SERVER_CPU" nginx -c "$work/nginx.conf" -p "$work"
start haproxy "$SERVER_CPU" haproxy -f "$work/haproxy.cfg"
TOKIO_WORKER_THREADS=1 start originguard "$SERVER_CPU" "$og" serve --config "$work/og.toml"
TOKIO_WORKER_THREADS=1 start originguard_nocache "$SERVER_CPU" "$og" serve --config "$work/og-nocache.toml"
GOMAXPROCS=1 XDG_DATA_HOME=$work XDG_CONFIG_HOME=$work start caddy "$SERVER_CPU" caddy run --config "$work/Caddyfile" --adapter caddyfile
if [ -n "$BASELINE" ]; then
  TOKIO_WORKER_THREADS=1 start baseline "$SERVER_CPU" "$BASELINE" serve --config "$work/baseline.toml"
fi
TOKIO_WORKER_THREADS=1 FLOOR_LISTEN=127.0.0.1:$floor_port FLOOR_CERT=$work/pki/server.pem FLOOR_KEY=$work/pki/server.key \
  FLOOR_CA=$work/pki/ca.pem start floor "$SERVER_CPU" "$floor"

wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "compare.sh: nothing listens on port $1" >&2
  cat "$work"/*.out >&2 || true
  exit 1
}
for port in $backend_port $nginx_port $haproxy_port $og_port $og_nocache_port $caddy_port $floor_port ${BASELINE:+$baseline_port}; do
  wait_port "$port"
done
wanted() { case " $SERVERS " in *" $1 "*) return 0 ;; esac; return 1; }

# All PIDs of a server: the launched process and its children (nginx workers).
server_pids() { echo "$1" $(pgrep -P "$1" || true); }
cpu_us() { # pids...
  local total=0 pid fields
  for pid in "$@"; do
    fields=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
    set -- $fields
    total=$((total + (${12} + ${13}) * 10000))
  done
  echo "$total"
}

results="$work/results.jsonl"
: >"$results"
run() { # mode server port pid
  local mode=$1 server=$2 port=$3 pid=$4 extra=()
  wanted "$server" || return 0
  local pids_now before after report
  pids_now=$(server_pids "$pid")
  case $mode in
    full) extra=(--requests-per-connection 1 ${RATE:+--rate "$RATE"}) ;;
    resumed) extra=(--requests-per-connection 1 --resume ${RATE:+--rate "$RATE"}) ;;
    amortized) extra=(--requests-per-connection "$KEEPALIVE_REQUESTS") ;;
    keepalive)
      extra=(--keep-alive --warmup 1s ${KEEPALIVE_RATE:+--rate "$KEEPALIVE_RATE"})
      for p in $pids_now; do extra+=(--server-pid "$p"); done ;;
  esac
  before=$(cpu_us $pids_now)
  report=$(TOKIO_WORKER_THREADS=1 taskset -c "$LOAD_CPU" "$og" loadtest --quiet --target "127.0.0.1:$port" \
    --server-name localhost --cert "$work/pki/client.pem" --key "$work/pki/client.key" \
    --connections "$CONNS" --duration "$DURATION" --json "${extra[@]}")
  after=$(cpu_us $pids_now)
  python3 - "$mode" "$server" "$before" "$after" "$report" >>"$results" <<'PY'
import json, sys
mode, server, before, after, report = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5])
print(json.dumps({"mode": mode, "server": server, "server_cpu_us": after - before, "report": report}))
PY
  printf '  %-9s %-20s %8.0f conn/s  failures %s\n' "$mode" "$server" \
    "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["handshakes_per_s"])' "$report")" \
    "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["failures"] or "none")' "$report")"
}

echo "== warm-up"
for spec in "originguard $og_port $pid_originguard" "nginx $nginx_port $pid_nginx" "haproxy $haproxy_port $pid_haproxy" \
  "caddy $caddy_port $pid_caddy" "floor $floor_port $pid_floor" ${BASELINE:+"baseline $baseline_port"}; do
  set -- $spec
  wanted "$1" || continue
  TOKIO_WORKER_THREADS=1 "$og" loadtest --quiet --target "127.0.0.1:$2" --server-name localhost \
    --cert "$work/pki/client.pem" --key "$work/pki/client.key" --handshakes 200 --connections 4 --json >/dev/null
done

echo "== runs (server on CPU $SERVER_CPU, load + backend on CPU $LOAD_CPU, $CONNS connections, $DURATION each)"
for round in $(seq 1 "$ROUNDS"); do
  for mode in $MODES; do
    run "$mode" originguard "$og_port" "$pid_originguard"
    run "$mode" nginx "$nginx_port" "$pid_nginx"
    run "$mode" haproxy "$haproxy_port" "$pid_haproxy"
    run "$mode" caddy "$caddy_port" "$pid_caddy"
    run "$mode" floor "$floor_port" "$pid_floor"
    if [ -n "$BASELINE" ]; then run "$mode" baseline "$baseline_port" "$pid_baseline"; fi
    case $mode in full | resumed) run "$mode" originguard_nocache "$og_nocache_port" "$pid_originguard_nocache" ;; esac
  done
done

cp "$results" "$OUT"
echo
python3 - "$results" <<'PY'
import json, sys
from collections import defaultdict
rows = [json.loads(l) for l in open(sys.argv[1])]
acc = defaultdict(lambda: {"cpu": 0, "units": 0, "rate": 0.0, "elapsed": 0.0, "failed": 0, "p99": [], "rounds": []})
for r in rows:
    rep = r["report"]
    a = acc[(r["mode"], r["server"])]
    a["failed"] += sum(rep["failures"].values())
    if r["mode"] == "keepalive":
        w = rep["window"]
        a["cpu"] += w["server_cpu_us"] or 0; a["units"] += w["requests"]
        if w["requests"]: a["rounds"].append((w["server_cpu_us"] or 0) / w["requests"])
        a["rate"] += w["requests"]; a["elapsed"] += w["seconds"]; a["p99"].append(w["request_latency_us"]["p99"])
    else:
        a["cpu"] += r["server_cpu_us"]
        n = rep["requests"] if r["mode"] == "amortized" else rep["successes"]
        a["units"] += n
        if n: a["rounds"].append(r["server_cpu_us"] / n)
        a["rate"] += rep["successes"]; a["elapsed"] += rep["elapsed_s"]
# Mean over all rounds, and each server's best round: on a shared machine noise only adds CPU
# time, so the best round is the steadiest estimate; the ratios use the best rounds.
print("| mode | server | server CPU per unit (mean) | best round | ratio to nginx | ratio to floor | rate | failures |")
print("|---|---|---|---|---|---|---|---|")
units = {"full": "connection", "resumed": "connection", "amortized": "request", "keepalive": "request"}
for mode, unit in units.items():
    def per(server):
        a = acc.get((mode, server))
        return a["cpu"] / a["units"] if a and a["units"] else None
    def best(server):
        a = acc.get((mode, server))
        return min(a["rounds"]) if a and a["rounds"] else None
    nginx, floor = best("nginx"), best("floor")
    for server in ("originguard", "originguard_nocache", "baseline", "nginx", "haproxy", "caddy", "floor"):
        p, b = per(server), best(server)
        if p is None or b is None:
            continue
        a = acc[(mode, server)]
        rate = f"{a['rate'] / a['elapsed']:,.0f} {'req' if mode == 'keepalive' else 'conn'}/s"
        if mode == "keepalive":
            rate += f", p99 {max(a['p99'])} µs"
        r_nginx = f"{b / nginx:.2f}x" if nginx else "-"
        r_floor = f"{b / floor:.2f}x" if floor else "-"
        print(f"| {mode} | {server} | {p:,.1f} µs/{unit} | {b:,.1f} | {r_nginx} | {r_floor} | {rate} | {a['failed']} |")
PY

if command -v strace >/dev/null && [[ " $MODES " == *" keepalive "* ]] && wanted originguard && wanted nginx; then
  echo
  echo "== system calls per keep-alive request (strace -c -f, one pure keep-alive run each)"
  echo "| server | syscalls/request | most frequent (per request) |"
  echo "|---|---|---|"
  for spec in "originguard $og_port $pid_originguard" "nginx $nginx_port $pid_nginx"; do
    set -- $spec
    name=$1 port=$2 attach=()
    for p in $(server_pids "$3"); do attach+=(-p "$p"); done
    strace -c -f -o "$work/strace-$name.txt" "${attach[@]}" 2>/dev/null &
    st=$!
    sleep 1
    report=$(TOKIO_WORKER_THREADS=1 taskset -c "$LOAD_CPU" "$og" loadtest --quiet --target "127.0.0.1:$port" \
      --server-name localhost --cert "$work/pki/client.pem" --key "$work/pki/client.key" \
      --connections "$CONNS" --keep-alive --warmup 0s --duration 3s --json)
    kill -INT "$st"; wait "$st" 2>/dev/null || true
    python3 - "$name" "$work/strace-$name.txt" "$report" "$CONNS" <<'PY'
import json, sys
name, path, report, conns = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
requests = report["window"]["requests"] + conns
calls = {}
for line in open(path):
    f = line.split()
    if len(f) >= 5 and f[3].isdigit():
        calls[f[-1]] = int(f[3])
total = calls.pop("total", sum(calls.values()))
top = sorted(calls.items(), key=lambda kv: -kv[1])[:6]
print(f"| {name} | {total / requests:.2f} | " + ", ".join(f"{k} {v / requests:.2f}" for k, v in top) + " |")
PY
  done
fi
