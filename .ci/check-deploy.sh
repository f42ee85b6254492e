#!/usr/bin/env bash
# Checks the deployment examples: the Kubernetes manifest parses as YAML (and its embedded
# config as TOML), and the systemd unit passes `systemd-analyze verify` where available.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 - <<'PY'
import tomllib, yaml
docs = list(yaml.safe_load_all(open("config/kubernetes/sidecar.yaml")))
kinds = [d["kind"] for d in docs]
assert kinds == ["ConfigMap", "Deployment", "Service", "NetworkPolicy"], kinds
tomllib.loads(docs[0]["data"]["originguard.toml"])
print("kubernetes manifest: ok", kinds)
PY
if command -v systemd-analyze >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  # verify needs the executables to exist: point them at /bin/true in a copy.
  sed 's#/usr/local/bin/originguard#/bin/true#g' config/systemd/originguard.service >"$tmp/originguard.service"
  out=$(systemd-analyze verify "$tmp/originguard.service" 2>&1 || true)
  rm -rf "$tmp"
  if [ -n "$out" ]; then echo "$out"; echo "systemd unit: FAILED"; exit 1; fi
  echo "systemd unit: ok"
else
  echo "systemd unit: systemd-analyze not available, skipped"
fi
