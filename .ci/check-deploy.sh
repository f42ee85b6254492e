#!/usr/bin/env bash
# Checks the deployment examples with real validators:
# - the Kubernetes manifests against the Kubernetes API schemas (kubernetes-validate --strict:
#   unknown fields are errors) and the checkov Kubernetes security policies (seccomp, non-root,
#   read-only root, no :latest, limits, probes, ...);
# - config/Containerfile with checkov's Dockerfile policies;
# - the systemd unit with `systemd-analyze verify` where systemd is installed.
# Each manifest's embedded originguard.toml is parsed by the real config parser in the tests
# (tests/integration/deploy.rs). The validators are installed by .ci/run into $OG_CI_VENV.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${OG_CI_VENV:-/tmp/originguard-ci-venv}

"$venv/bin/kubernetes-validate" --strict --quiet config/kubernetes/*.yaml
echo "kubernetes schemas: ok"

# --skip-download: no calls to the vendor's platform (CI has no network beyond registries).
"$venv/bin/checkov" --quiet --compact --skip-download --framework kubernetes -d config/kubernetes
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# checkov recognises Dockerfiles by name.
cp config/Containerfile "$tmp/Dockerfile"
"$venv/bin/checkov" --quiet --compact --skip-download --framework dockerfile -f "$tmp/Dockerfile"
echo "checkov: ok"

if command -v systemd-analyze >/dev/null 2>&1; then
  # verify needs the executables to exist: point them at /bin/true in a copy.
  sed 's#/usr/local/bin/originguard#/bin/true#g' config/systemd/originguard.service >"$tmp/originguard.service"
  out=$(systemd-analyze verify "$tmp/originguard.service" 2>&1 || true)
  if [ -n "$out" ]; then echo "$out"; echo "systemd unit: FAILED"; exit 1; fi
  echo "systemd unit: ok"
else
  echo "systemd unit: systemd-analyze not available, skipped"
fi
