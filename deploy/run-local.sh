#!/usr/bin/env bash
# `make run`: the server on its embedded default (SQLite under var/, 127.0.0.1:50051) with the
# web console on 127.0.0.1:8080, and one agent for this machine (instance i-local, region
# cn-hangzhou), in the foreground.
# Ctrl-C stops both cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
listen=${CLOUDASSIST_LISTEN:-127.0.0.1:50051}
console=${CLOUDASSIST_CONSOLE_LISTEN:-127.0.0.1:8080}
mkdir -p var
rm -f var/ready.json

"$bin/cloudassist-server" --listen "$listen" --console-listen "$console" --data-dir var \
  --ready-file var/ready.json &
server=$!
agent=""
stop() {
  trap - INT TERM EXIT
  [ -n "$agent" ] && kill -TERM "$agent" 2>/dev/null || true
  kill -TERM "$server" 2>/dev/null || true
  wait
}
trap stop INT TERM EXIT

for _ in $(seq 300); do
  [ -f var/ready.json ] && break
  kill -0 "$server" 2>/dev/null || { echo "the server did not start" >&2; exit 1; }
  sleep 0.1
done
[ -f var/ready.json ] || { echo "the server did not start within 30 s" >&2; exit 1; }

# The first run registers the local agent with a fresh activation, using the admin key the
# server wrote to var/admin.key; later runs reuse the credentials in var/agent.
register=()
if [ ! -f var/agent/credentials.json ]; then
  read -r activation_id activation_code < <(
    CLOUDASSIST_API_KEY=$(cat var/admin.key) "$bin/cloudassist" --server "$listen" \
      activations create --description "make run" --expires-in 600)
  register=(--activation-id "$activation_id" --activation-code "$activation_code")
fi
"$bin/cloudassist-agent" --server "$listen" --instance-id i-local --region cn-hangzhou \
  --state-dir var/agent "${register[@]}" &
agent=$!

cat <<TEXT

cloudassist is running: server on $listen (database var/cloudassist.db), agent i-local.
The admin API key is in var/admin.key; the CLI uses it for a local server when run from here.

Web console: http://$console/
  Sign in with the admin API key: the contents of var/admin.key (cat var/admin.key).

In another terminal:
  .venv/bin/cloudassist instances
  .venv/bin/cloudassist run -i i-local 'echo hello from \$(hostname); uname -a'
  .venv/bin/cloudassist results
Press Ctrl-C to stop both.

TEXT
wait -n "$server" "$agent"
