#!/bin/sh
# The gateway image's entrypoint: waits for the CLaaS server, creates the adapter OpenClaw chats
# with if it does not exist, writes OpenClaw's config with `claas openclaw-config` (Telegram on when
# TELEGRAM_BOT_TOKEN is set), then runs the gateway on all interfaces with token auth.
#   CLAAS_URL (http://claas:8000)  CLAAS_ADAPTER (me/assistant)  CLAAS_API_KEY (default: the tenant's
#   key from the server's data volume, mounted at /claas-data)  OPENCLAW_GATEWAY_TOKEN (required)
#   OPENCLAW_PORT (18789)  OPENCLAW_ALLOW (senders who may train; "*")  FEEDBACK_BATCH_SIZE (4)
#   OPENCLAW_MAX_TOKENS (256)  OPENCLAW_SMALL_PROMPT (1: OpenClaw's compact prompt, for small models)
set -eu

url=${CLAAS_URL:-http://claas:8000}
adapter=${CLAAS_ADAPTER:-me/assistant}
tenant=${adapter%%/*}
: "${OPENCLAW_GATEWAY_TOKEN:?set OPENCLAW_GATEWAY_TOKEN: clients of the gateway authenticate with it}"

node /usr/local/lib/claas/wait-http.mjs "$url/healthz" "${CLAAS_WAIT_S:-600}"
if [ -z "${CLAAS_API_KEY:-}" ]; then
  if [ ! -r "/claas-data/keys/$tenant.key" ]; then
    echo "no CLAAS_API_KEY and no /claas-data/keys/$tenant.key (mount the claas data volume at /claas-data, or set CLAAS_API_KEY)" >&2
    exit 1
  fi
  CLAAS_API_KEY=$(cat "/claas-data/keys/$tenant.key")
fi
export CLAAS_API_KEY

CLAAS_URL=$url CLAAS_ADAPTER=$adapter node --input-type=module -e '
const { CLAAS_URL: url, CLAAS_ADAPTER: id, CLAAS_API_KEY: key } = process.env;
const headers = { authorization: `Bearer ${key}`, "content-type": "application/json" };
const got = await fetch(`${url}/v1/lora/${id}`, { headers });
if (got.status === 404) {
  const made = await fetch(`${url}/v1/lora/init`, { method: "POST", headers, body: JSON.stringify({ lora_id: id }) });
  if (!made.ok) throw new Error(`creating adapter ${id} failed: ${made.status} ${await made.text()}`);
  console.error(`created adapter ${id}`);
} else if (!got.ok) {
  throw new Error(`GET /v1/lora/${id}: ${got.status} ${await got.text()}`);
}'

set -- --url "$url" --adapter "$adapter" --allow "${OPENCLAW_ALLOW:-*}" --batch-size "${FEEDBACK_BATCH_SIZE:-4}" \
  --max-tokens "${OPENCLAW_MAX_TOKENS:-256}" --out "$OPENCLAW_STATE_DIR/openclaw.json"
if [ "${OPENCLAW_SMALL_PROMPT:-1}" = 1 ]; then set -- "$@" --small-prompt; fi
if [ -n "${TELEGRAM_BOT_TOKEN:-}" ]; then set -- "$@" --telegram; fi
claas openclaw-config "$@"

exec node /opt/openclaw/node_modules/openclaw/openclaw.mjs gateway run --allow-unconfigured --bind lan \
  --port "${OPENCLAW_PORT:-18789}" --auth token --token "$OPENCLAW_GATEWAY_TOKEN"
