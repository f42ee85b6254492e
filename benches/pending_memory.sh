#!/usr/bin/env bash
# RSS per pending (unauthenticated) handshake: N peers connect and send the first bytes of a
# ClientHello, then stall; RSS is read from /proc before and while they are held. Two shapes:
# 9 bytes (a record header and the start of a handshake header) and 48 KiB (three full records of
# an oversized ClientHello that rustls must buffer). Loopback only; bounded (about 30 s).
#
#   bash benches/pending_memory.sh          # N=1000
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
N=${N:-1000}
ulimit -n $((N * 2 + 1024)) 2>/dev/null || { echo "pending_memory.sh: cannot raise the fd limit" >&2; exit 1; }

cargo build --release --quiet
og=$PWD/target/release/originguard
work=$(mktemp -d /tmp/originguard-pending.XXXXXX)
og_pid=
cleanup() { [ -n "$og_pid" ] && kill "$og_pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$og" pki dev --out "$work/pki" >/dev/null
og_config "127.0.0.1:0" "http://127.0.0.1:9" "handshake_timeout = \"60s\"
max_handshakes = $((N + 100))
max_connections = $((N + 100))" "" "format = \"json\"
level = \"info\"" >"$work/og.toml"
"$og" serve --config "$work/og.toml" 2>"$work/og.err" &
og_pid=$!
for _ in $(seq 1 100); do grep -q '"listening"' "$work/og.err" 2>/dev/null && break; sleep 0.1; done
port=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    j = json.loads(l)
    if j.get("message") == "listening": print(j["address"].rsplit(":", 1)[1]); break' "$work/og.err")

python3 - "$og_pid" "$port" "$N" <<'PY'
import socket, sys, time
pid, port, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
small = bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc])
# A ClientHello announcing 65520 bytes, sent as three 16 KiB records (48 KiB buffered).
body = bytes([0x01, 0x00, 0xff, 0xf0]) + bytes(3 * 16384 - 4)
big = b"".join(bytes([0x16, 0x03, 0x01, 0x40, 0x00]) + body[i:i + 16384] for i in range(0, len(body), 16384))
for name, payload in (("9 bytes", small), ("48 KiB", big)):
    time.sleep(1)
    before = rss()
    held = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(payload)
        held.append(s)
    time.sleep(3)
    during = rss()
    print(f"pending handshakes, ClientHello {name}: {n} held, RSS {before} -> {during} KiB, "
          f"{(during - before) / n:.1f} KiB per pending handshake")
    for s in held:
        s.close()
PY
