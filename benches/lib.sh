# Shared by the bench scripts (sourced): the originguard config they all run with.

# og_config ADDRESS UPSTREAM_URL [LISTENER_LINES] [CLIENT_AUTH_LINES] [LOG_LINES]: the dev PKI
# in $work/pki, the CA trusted, no access log, warn-level logs unless LOG_LINES say otherwise.
# Extra lines go into their tables.
og_config() {
  local log=${5:-'level = "warn"'}
  cat <<EOF
[listener]
address = "$1"
${3:-}
[tls]
certificate = "$work/pki/server.pem"
private_key = "$work/pki/server.key"
[client_auth]
trust = ["$work/pki/ca.pem"]
${4:-}
[upstream]
url = "$2"
[log]
$log
access_log = false
EOF
}
