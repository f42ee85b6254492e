#!/usr/bin/env bash
# The FIPS build (issue 14): compiles with --features fips (AWS-LC's FIPS module: needs cmake,
# Go and perl, installed here when missing), then proves it on what the FIPS build changes:
# `check` reports the module active, the shared Cloudflare certificate is refused (exit 78),
# and the unit tests plus the handshake and post-quantum integration tests pass with it.
# Not part of .ci/run (the FIPS module roughly doubles the build time); run it by hand:
#   bash .ci/fips.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/fips}
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v go >/dev/null 2>&1 || need+=(golang-go)
command -v perl >/dev/null 2>&1 || need+=(perl)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
fi

echo "== build (--features fips)"
time cargo build --release --locked --features fips
bin=$CARGO_TARGET_DIR/release/originguard

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$bin" pki dev --out "$tmp/pki" >/dev/null
cat >"$tmp/own-ca.toml" <<TOML
[tls]
certificate = "$tmp/pki/server.pem"
private_key = "$tmp/pki/server.key"
[client_auth]
trust = ["$tmp/pki/ca.pem"]
[upstream]
url = "http://127.0.0.1:8080"
TOML
echo "== check reports the FIPS module"
"$bin" check --config "$tmp/own-ca.toml" | tee "$tmp/check.out"
grep -q "^FIPS: active" "$tmp/check.out"
echo "== the shared Cloudflare certificate is refused"
sed 's#trust = .*#trust = ["cloudflare"]#' "$tmp/own-ca.toml" >"$tmp/cloudflare.toml"
set +e
"$bin" check --config "$tmp/cloudflare.toml" 2>"$tmp/refused.err"
code=$?
set -e
cat "$tmp/refused.err"
[ "$code" = 78 ] && grep -q "client_auth.trust" "$tmp/refused.err"

echo "== tests with the FIPS module"
cargo test --release --locked --features fips --lib
cargo test --release --locked --features fips --test integration -- handshake:: pq::
echo "== fips ok"
