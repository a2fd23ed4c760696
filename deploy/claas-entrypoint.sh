#!/bin/sh
# The claas image's entrypoint. `serve` (the default command) listens on all interfaces of the
# container, which CLaaS allows only with API keys, so the first start creates them in the data
# volume: an admin key (<data>/keys/admin.key) and, when CLAAS_ADAPTER names one, a user key for its
# tenant (<data>/keys/<tenant>.key; the gateway reads it from the shared volume). The environment
# supplies what a user usually changes; anything after `serve` is passed on as flags.
#   CLAAS_MODEL (the toy in the image)  CLAAS_PORT (8000)  CLAAS_BATCH_SIZE  CLAAS_BATCH_WAIT_MS
#   CLAAS_VLLM_URL  CLAAS_ADAPTER (tenant/name)  CLAAS_DATA (/data)
# Any other command runs the claas CLI as given (e.g. `keys list`).
set -eu

if [ "${1:-serve}" != serve ]; then exec claas "$@"; fi
[ $# -gt 0 ] && shift

data=${CLAAS_DATA:-/data}
mkdir -p "$data/keys"
chmod 0700 "$data/keys"
umask 077
# `keys create` prints the key on its last line.
if [ ! -s "$data/keys/admin.key" ]; then
  claas keys create --tenant "${CLAAS_ADMIN_TENANT:-admin}" --role admin --name container-admin --data "$data" | tail -n 1 > "$data/keys/admin.key.tmp"
  mv "$data/keys/admin.key.tmp" "$data/keys/admin.key"
  echo "created the admin API key: $data/keys/admin.key" >&2
fi
if [ -n "${CLAAS_ADAPTER:-}" ]; then
  tenant=${CLAAS_ADAPTER%%/*}
  if [ ! -s "$data/keys/$tenant.key" ]; then
    claas keys create --tenant "$tenant" --role user --name "$tenant" --data "$data" | tail -n 1 > "$data/keys/$tenant.key.tmp"
    mv "$data/keys/$tenant.key.tmp" "$data/keys/$tenant.key"
    echo "created an API key for tenant $tenant: $data/keys/$tenant.key" >&2
  fi
  # The gateway (another container, same uid) reads it.
  chmod 0711 "$data/keys"
  chmod 0644 "$data/keys/$tenant.key"
fi

set -- --host 0.0.0.0 --port "${CLAAS_PORT:-8000}" --data "$data" "$@"
if [ -n "${CLAAS_MODEL:-}" ]; then set -- --model "$CLAAS_MODEL" "$@"; fi
if [ -n "${CLAAS_BATCH_SIZE:-}" ]; then set -- --batch-size "$CLAAS_BATCH_SIZE" "$@"; fi
if [ -n "${CLAAS_BATCH_WAIT_MS:-}" ]; then set -- --batch-wait-ms "$CLAAS_BATCH_WAIT_MS" "$@"; fi
if [ -n "${CLAAS_VLLM_URL:-}" ]; then set -- --vllm-url "$CLAAS_VLLM_URL" "$@"; fi
exec claas serve "$@"
